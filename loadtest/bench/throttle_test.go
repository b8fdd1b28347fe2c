package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestPacer: each step is due n/rate after the one before; a step that
// went out late, by less than the slack, is made up by the next one's
// earlier due time, and a connection new or idle for longer starts
// afresh, with at most the slack's worth of burst.
func TestPacer(t *testing.T) {
	const rate = 1e6 // 1 MB/s: 1,000 bytes are 1 ms
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	type step struct {
		at  float64 // ms after the start, when the step went out
		n   int64
		due float64 // ms after the start, when the next may go
	}
	for _, tc := range []struct {
		name  string
		fresh bool // a new connection; otherwise a step is due at the start
		steps []step
	}{
		// A new connection may send the slack's worth (5 steps) and one
		// step more at once.
		{"a new connection", true, []step{{0, 1000, -4}, {0, 1000, -3}, {0, 1000, -2}, {0, 1000, -1}, {0, 1000, 0}, {0, 1000, 1}}},
		{"on schedule", false, []step{{0, 1000, 1}, {1, 1000, 2}, {2, 2000, 4}}},
		// The second step went out 2 ms late (a sleep overran): the third
		// is due on the schedule, 1 ms after the late one, not 2 ms.
		{"a late step is made up", false, []step{{0, 1000, 1}, {3, 1000, 2}, {3.2, 1000, 3}}},
		// Behind by more than the 5 ms slack: the schedule restarts at
		// now − slack, so the connection may catch up 5 ms, no more.
		{"idle: at most the slack's worth of burst", false, []step{{0, 1000, 1}, {100, 1000, 96}, {100.1, 1000, 97}, {100.2, 4000, 101}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			p := pacer{rate: rate, slack: 5 * time.Millisecond}
			if !tc.fresh {
				p.next = start
			}
			for i, s := range tc.steps {
				got := p.after(start.Add(ms(s.at)), s.n).Sub(start)
				if d := got - ms(s.due); d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("step %d (%d bytes at %v ms): next due at %v, want %v ms", i, s.n, s.at, got, s.due)
				}
			}
		})
	}
}

// throttled serves body at /blob and records when each request reached
// it; the client goes through a throttle in front of it.
func throttled(t *testing.T, body []byte, rate float64, latency time.Duration) (base string, arrived <-chan time.Time) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan time.Time, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch <- time.Now()
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(ln) }()
	th, err := newThrottle(ln.Addr().String(), rate, latency)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { th.close(); srv.Close() })
	return "http://" + th.addr(), ch
}

// TestThrottleRate: a response through the throttle takes at least its
// size at the rate (less the allowed burst), and not much longer.
func TestThrottleRate(t *testing.T) {
	for _, tc := range []struct {
		name string
		rate float64
		size int
	}{
		{"10 MB/s, 64 KiB steps", 10e6, 2 << 20},
		{"100 MiB/s, 2 ms steps", 100 << 20, 40 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := throttled(t, bytes.Repeat([]byte{'x'}, tc.size), tc.rate, 0)
			c := &http.Client{Transport: &http.Transport{Proxy: nil}}
			defer c.CloseIdleConnections()
			t0 := time.Now()
			resp, err := c.Get(base + "/blob")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			elapsed := time.Since(t0)
			if err != nil || n != int64(tc.size) {
				t.Fatalf("read %d of %d bytes: %v", n, tc.size, err)
			}
			burst := tc.rate*paceSlack.Seconds() + float64(paceStep(tc.rate))
			least := time.Duration((float64(tc.size) - burst) / tc.rate * float64(time.Second))
			ideal := time.Duration(float64(tc.size) / tc.rate * float64(time.Second))
			if elapsed < least {
				t.Errorf("%d bytes in %v: faster than the rate allows (at least %v)", tc.size, elapsed, least)
			}
			// Generous: the machine may be busy, the race detector on.
			if elapsed > 3*ideal+time.Second {
				t.Errorf("%d bytes in %v: the rate is %v", tc.size, elapsed, ideal)
			}
			t.Logf("%d bytes in %v (%.1f MB/s; at the rate %v)", tc.size, elapsed, float64(tc.size)/elapsed.Seconds()/1e6, ideal)
		})
	}
}

// TestThrottleLatency: every request on a kept-alive connection reaches
// the server at least the latency after the client sent it, and the
// delay is a delay line, not a queue: a request does not wait for the
// previous one's delay as well.
func TestThrottleLatency(t *testing.T) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
	}{
		{"no latency", 0},
		{"20 ms", 20 * time.Millisecond},
		{"50 ms", 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, arrived := throttled(t, []byte("ok"), 100<<20, tc.latency)
			c := &http.Client{Transport: &http.Transport{Proxy: nil, MaxConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			for i := range 3 {
				t0 := time.Now()
				resp, err := c.Get(base + "/blob")
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				rtt := time.Since(t0)
				at := <-arrived
				if d := at.Sub(t0); d < tc.latency {
					t.Errorf("request %d reached the server %v after it was sent, want ≥ %v", i, d, tc.latency)
				}
				if rtt < tc.latency {
					t.Errorf("request %d: round trip %v, want ≥ %v", i, rtt, tc.latency)
				}
				t.Logf("request %d: at the server after %v, round trip %v", i, at.Sub(t0), rtt)
			}
			if tc.latency == 0 {
				return
			}
			// Two writes close together are delayed alike.
			conn, err := net.Dial("tcp", base[len("http://"):])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			t0 := time.Now()
			for range 2 {
				if _, err := conn.Write([]byte("GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(tc.latency / 4)
			}
			first, second := (<-arrived).Sub(t0), (<-arrived).Sub(t0)
			if first < tc.latency || second < tc.latency+tc.latency/4 {
				t.Errorf("pipelined requests at the server after %v and %v, want ≥ %v and ≥ %v", first, second, tc.latency, tc.latency+tc.latency/4)
			}
			if second >= 2*tc.latency+tc.latency/4 {
				t.Errorf("second request at the server after %v: it waited for the first one's delay too", second)
			}
		})
	}
}
