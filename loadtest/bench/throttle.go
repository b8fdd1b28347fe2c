package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// throttle is a TCP relay on loopback shaped like an upstream that is
// farther away than loopback: it limits every connection's
// upstream-to-client direction to a fixed rate, and can delay what the
// client sends by a fixed latency.
//
// The rate alone (herd_slow) is a stand-in for a registry where a blob
// takes long enough to arrive that one can see whether a proxy streams it
// to waiting clients while it arrives or only after. Rate and latency
// together (wan) are a registry across a WAN: each connection gets at most
// the rate, and each request reaches the upstream latency after the client
// sent it, so every request/response exchange takes latency longer than
// on loopback. Responses are not delayed (the added round trip is all on
// the way in), and the TCP handshake, TLS and slow start are not
// modelled: a client that opens many connections pays nothing extra for
// them. Response bytes are moved with splice (io.CopyN between TCP
// connections), so the relay costs the harness little CPU.
type throttle struct {
	ln      net.Listener
	backend string
	rate    float64       // bytes per second per connection
	latency time.Duration // added to every byte the client sends
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

// newThrottle relays to backend at bytesPerSecond per connection, each
// request delayed by latency (0: not delayed).
func newThrottle(backend string, bytesPerSecond float64, latency time.Duration) (*throttle, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &throttle{ln: ln, backend: backend, rate: bytesPerSecond, latency: latency, conns: map[net.Conn]struct{}{}}
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
		if t.latency > 0 {
			delayed(backend, client, t.latency)
		} else {
			_, _ = io.Copy(backend, client) // requests: not limited
		}
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

// limited copies src to dst at the rate, in steps of paceStep(rate)
// bytes, each due when the pacer says.
func (t *throttle) limited(dst, src net.Conn) {
	step := paceStep(t.rate)
	p := pacer{rate: t.rate, slack: paceSlack}
	for {
		n, err := io.CopyN(dst, src, step)
		if n > 0 {
			time.Sleep(time.Until(p.after(time.Now(), n)))
		}
		if err != nil {
			return
		}
	}
}

// paceStep is the bytes the relay sends at once: 64 KiB, or 2 ms' worth
// at high rates, so that a 100 MiB/s connection wakes the relay 500 times
// a second rather than 1,600 (the relay shares the machine with what it
// measures).
func paceStep(rate float64) int64 {
	return max(64<<10, int64(rate*0.002))
}

// paceSlack is how far a connection may fall behind its schedule and
// still make it up: a sleep that overran, or a step the backend was late
// with, is caught up on, so the rate is kept rather than eroded by every
// late wake-up; longer idle spells are not, so a connection never bursts
// more than paceSlack × rate plus one step.
const paceSlack = 5 * time.Millisecond

// pacer spaces out one connection's sends: each step of n bytes is due
// n/rate after the one before, or after now−slack when that is later.
type pacer struct {
	rate  float64 // bytes per second
	slack time.Duration
	next  time.Time
}

// after records n bytes sent at now and returns when the next step may go.
func (p *pacer) after(now time.Time, n int64) time.Time {
	if floor := now.Add(-p.slack); p.next.Before(floor) {
		p.next = floor
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	return p.next
}

// delayed copies src to dst, writing what each read returned latency
// after the read: a delay line, so bytes that follow one another closely
// are delayed alike rather than one after the other. A request of HTTP/1.1
// is one write of its client, hence one read here, and reaches dst latency
// after it was sent. It returns when src ends; after a failed write it
// keeps reading and drops what it reads, so that src's sender is not
// blocked.
func delayed(dst io.Writer, src io.Reader, latency time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(latency)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range ch {
		if failed {
			continue
		}
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			failed = true
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
