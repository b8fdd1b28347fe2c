package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// throttle is a TCP relay on loopback that limits every connection's
// upstream-to-client direction to a fixed rate: a stand-in for a registry
// that is farther away than loopback, where a blob takes long enough to
// arrive that one can see whether a proxy streams it to waiting clients
// while it arrives or only after. Bytes are moved with splice (io.CopyN
// between TCP connections), so the relay costs the harness little CPU.
type throttle struct {
	ln      net.Listener
	backend string
	rate    float64 // bytes per second per connection
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

func newThrottle(backend string, bytesPerSecond float64) (*throttle, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &throttle{ln: ln, backend: backend, rate: bytesPerSecond, conns: map[net.Conn]struct{}{}}
	t.wg.Add(1)
	go t.accept()
	return t, nil
}

func (t *throttle) addr() string { return t.ln.Addr().String() }

func (t *throttle) track(c net.Conn, add bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		t.conns[c] = struct{}{}
	} else {
		delete(t.conns, c)
	}
}

func (t *throttle) accept() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.relay(c)
		}()
	}
}

func (t *throttle) relay(client net.Conn) {
	defer client.Close()
	backend, err := net.DialTimeout("tcp", t.backend, 5*time.Second)
	if err != nil {
		return
	}
	defer backend.Close()
	t.track(client, true)
	t.track(backend, true)
	defer t.track(client, false)
	defer t.track(backend, false)
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(backend, client) // requests: not limited
		if tc, ok := backend.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		t.limited(client, backend)
		if tc, ok := client.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// limited copies src to dst in 64 KiB steps at the rate: each step is
// due n/rate after the previous one (or after now, when the connection sat
// idle), so a burst is never more than one step.
func (t *throttle) limited(dst, src net.Conn) {
	const step = 64 << 10
	var next time.Time
	for {
		n, err := io.CopyN(dst, src, step)
		if n > 0 {
			if now := time.Now(); next.Before(now) {
				next = now
			}
			next = next.Add(time.Duration(float64(n) / t.rate * float64(time.Second)))
			time.Sleep(time.Until(next))
		}
		if err != nil {
			return
		}
	}
}

// close stops accepting and cuts every relayed connection.
func (t *throttle) close() {
	t.ln.Close()
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}
