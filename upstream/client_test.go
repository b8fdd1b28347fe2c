package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// testPolicy is the default policy with the breaker out of the way; tests
// of the breaker set their own.
func testPolicy() Policy {
	p := DefaultPolicy()
	p.Breaker.MinRequests = 1 << 20
	return p
}

func newTestClient(t *testing.T, url string, clk Clock, p Policy) *Client {
	t.Helper()
	level := slog.LevelError
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	c, err := New(Config{
		Name: "docker.io", URL: url, Policy: p, Clock: clk,
		// The top of each backoff range: the slowest retries, so a test
		// that passes shows the worst case.
		Rand:   func() float64 { return 0.999 },
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seededUpstream is a real registry with library/app:v1.
func seededUpstream(t *testing.T) *testupstream.Upstream {
	t.Helper()
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/app:v1", img)
	return up
}

// outage makes the upstream answer status to requests whose path contains
// pathPart while clk reads before end.
func outage(up *testupstream.Upstream, clk Clock, pathPart string, end time.Time, status int, header ...string) {
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, pathPart) || !clk.Now().Before(end) {
			return false
		}
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"scripted"}]}`)
		return true
	})
}

func getManifest(c *Client, opts ...CallOption) (*http.Response, error) {
	resp, err := c.Manifest(context.Background(), "library/app", "v1", nil, opts...)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// TestRideOutOutages: a request with a client waiting keeps retrying
// through an outage shorter than its deadline, whenever in the outage it
// starts, and succeeds soon after the upstream recovers.
func TestRideOutOutages(t *testing.T) {
	cases := []struct {
		name       string
		length     time.Duration // of the outage
		startAfter time.Duration // the request starts this far into it
		status     int
		header     []string
	}{
		{"1.5 s burst, from its start", 1500 * time.Millisecond, 0, 503, nil},
		{"4 s outage, 1 s in", 4 * time.Second, time.Second, 503, nil},
		{"4 s of 502", 4 * time.Second, 0, 502, nil},
		{"4 s of 504", 4 * time.Second, 0, 504, nil},
		{"6 s of 503 Retry-After 1", 6 * time.Second, 0, 503, []string{"Retry-After", "1"}},
		{"15 s outage", 15 * time.Second, 0, 503, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newAutoClock()
			up := seededUpstream(t)
			c := newTestClient(t, up.URL, clk, testPolicy())
			end := clk.Now().Add(tc.length)
			outage(up, clk, "/manifests/", end, tc.status, tc.header...)
			clk.Advance(tc.startAfter)
			if _, err := getManifest(c); err != nil {
				t.Fatalf("not ridden out: %v", err)
			}
			late := clk.Now().Sub(end)
			if late < 0 || late > c.policy.Retry.MaxDelay {
				t.Errorf("succeeded %v after the upstream recovered, want within max_delay (%v)", late, c.policy.Retry.MaxDelay)
			}
		})
	}
}

// TestRetryOutcomes: what is retried, how often, and what comes back.
func TestRetryOutcomes(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		header    []string
		policy    func(*Policy)
		wantTries int // 0: more than 5
		wantErr   string
		transient bool
		wantCode  string
	}{
		{name: "503 forever: until the deadline", status: 503, wantErr: "answered 503 Service Unavailable", transient: true},
		{name: "500 forever", status: 500, wantErr: "answered 500 Internal Server Error", transient: true},
		{name: "408 forever", status: 408, wantErr: "answered 408 Request Timeout", transient: true},
		{name: "attempts cap", status: 503, policy: func(p *Policy) { p.Retry.Attempts = 3 }, wantTries: 3,
			wantErr: "answered 503 Service Unavailable", transient: true},
		{name: "404 not retried", status: 404, wantTries: 1, wantErr: "answered 404 Not Found", wantCode: "UNAVAILABLE"},
		{name: "401 not retried", status: 401, wantTries: 1, wantErr: "answered 401 Unauthorized"},
		{name: "403 not retried", status: 403, wantTries: 1, wantErr: "answered 403 Forbidden"},
		{name: "400 not retried", status: 400, wantTries: 1, wantErr: "answered 400 Bad Request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := newAutoClock()
			up := seededUpstream(t)
			p := testPolicy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			c := newTestClient(t, up.URL, clk, p)
			start := clk.Now()
			outage(up, clk, "/manifests/", start.Add(time.Hour), tc.status, tc.header...)
			_, err := getManifest(c)
			e, ok := AsError(err)
			if !ok {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			tries := up.Count(http.MethodGet, "/manifests/")
			switch {
			case tc.wantTries > 0 && tries != tc.wantTries:
				t.Errorf("%d tries, want %d", tries, tc.wantTries)
			case tc.wantTries == 0 && tries <= 5:
				t.Errorf("%d tries: gave up before the deadline", tries)
			}
			if e.Cause != tc.wantErr || e.Transient != tc.transient || e.Status != tc.status {
				t.Errorf("error %+v, want cause %q transient %v status %d", e, tc.wantErr, tc.transient, tc.status)
			}
			if tc.wantCode != "" && (e.Code != tc.wantCode || e.Message != "scripted") {
				t.Errorf("upstream's code and message: %q %q", e.Code, e.Message)
			}
			if e.Path != "/v2/library/app/manifests/v1" || e.Method != http.MethodGet {
				t.Errorf("request %s %s", e.Method, e.Path)
			}
			if took := clk.Now().Sub(start); took > c.policy.Retry.Deadline {
				t.Errorf("took %v, past the deadline %v", took, c.policy.Retry.Deadline)
			}
		})
	}
}

// TestRateLimitObeyed: a 429's Retry-After is obeyed, in seconds or as a
// date: a request that can wait that long is held and asks once after it;
// one that cannot is answered at once, and nothing is sent upstream
// until then.
func TestRateLimitObeyed(t *testing.T) {
	t.Run("Retry-After 1", func(t *testing.T) {
		clk := newAutoClock()
		up := seededUpstream(t)
		c := newTestClient(t, up.URL, clk, testPolicy())
		start := clk.Now()
		outage(up, clk, "/manifests/", start.Add(time.Second), 429, "Retry-After", "1")
		if _, err := getManifest(c); err != nil {
			t.Fatal(err)
		}
		if n := up.Count(http.MethodGet, "/manifests/"); n != 2 {
			t.Errorf("%d tries, want 2: one refused, one after the Retry-After", n)
		}
		if took := clk.Now().Sub(start); took != time.Second {
			t.Errorf("took %v, want exactly the Retry-After", took)
		}
	})
	t.Run("Retry-After as an HTTP date", func(t *testing.T) {
		clk := newAutoClock()
		up := seededUpstream(t)
		c := newTestClient(t, up.URL, clk, testPolicy())
		start := clk.Now()
		outage(up, clk, "/manifests/", start.Add(3*time.Second), 429, "Retry-After", start.Add(3*time.Second).Format(http.TimeFormat))
		if _, err := getManifest(c); err != nil {
			t.Fatal(err)
		}
		if n, took := up.Count(http.MethodGet, "/manifests/"), clk.Now().Sub(start); n != 2 || took != 3*time.Second {
			t.Errorf("%d tries over %v, want 2 over 3s", n, took)
		}
	})
	t.Run("Retry-After 15 beyond the deadline", func(t *testing.T) {
		clk := newAutoClock()
		up := seededUpstream(t)
		p := testPolicy()
		p.Retry.Deadline = 10 * time.Second
		c := newTestClient(t, up.URL, clk, p)
		start := clk.Now()
		outage(up, clk, "/manifests/", start.Add(time.Hour), 429, "Retry-After", "15")
		_, err := getManifest(c)
		e, _ := AsError(err)
		if e == nil || !errors.Is(err, ErrRateLimited) || e.RetryAfter != 15*time.Second || !strings.Contains(e.Cause, "429 Too Many Requests") {
			t.Fatalf("error %v, want rate limited with retry after 15s", err)
		}
		if clk.Now() != start {
			t.Errorf("held the request %v although the Retry-After is beyond its deadline", clk.Now().Sub(start))
		}
		// Until then nothing goes upstream, whoever asks: a request whose
		// deadline ends before it is answered at once, with the seconds
		// really left...
		head := func() error {
			_, err := c.HeadBlob(context.Background(), "library/other", digest.Digest("sha256:"+strings.Repeat("a", 64)))
			return err
		}
		for _, at := range []time.Duration{time.Second, 4 * time.Second} {
			clk.Advance(at - clk.Now().Sub(start))
			err := head()
			e, _ := AsError(err)
			if e == nil || !errors.Is(err, ErrRateLimited) || e.RetryAfter != 15*time.Second-at {
				t.Errorf("%v after the 429: %v, want rate limited, retry after %v", at, err, 15*time.Second-at)
			}
		}
		// ...and one whose deadline covers it is held until then, and
		// asks once.
		clk.Advance(2 * time.Second)
		up.SetHook(nil)
		if err := head(); !strings.Contains(fmt.Sprint(err), "404 Not Found") {
			t.Errorf("held request: %v, want the registry's own answer", err)
		}
		if at := clk.Now().Sub(start); at != 15*time.Second {
			t.Errorf("the held request went at %v, want at the Retry-After, 15s", at)
		}
		if n := up.Count("", "/manifests/") + up.Count("", "/blobs/"); n != 2 {
			t.Errorf("%d requests reached the upstream, want the 429 and the held one", n)
		}
	})
	t.Run("ratelimit-remaining 0", func(t *testing.T) {
		clk := newAutoClock()
		up := seededUpstream(t)
		c := newTestClient(t, up.URL, clk, testPolicy())
		up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("RateLimit-Limit", "100;w=21600")
			w.Header().Set("RateLimit-Remaining", "0;w=21600")
			return false
		})
		if _, err := getManifest(c); err != nil {
			t.Fatalf("the pull that spent the last one: %v", err)
		}
		n := up.Count("", "/manifests/")
		_, err := getManifest(c)
		e, _ := AsError(err)
		if e == nil || !errors.Is(err, ErrRateLimited) || e.RetryAfter != time.Hour || !strings.Contains(e.Cause, "429 Too Many Requests") {
			t.Errorf("with no pulls left: %v, want refused for an hour (the cap)", err)
		}
		if up.Count("", "/manifests/") != n {
			t.Error("a request went upstream with no pulls left")
		}
		if c.RateLimitRemaining() != 0 {
			t.Errorf("remaining %d", c.RateLimitRemaining())
		}
	})
}

// TestHandshakeRetryAfter: a registry that rate-limits its very first
// request (the /v2/ ping) has its Retry-After obeyed too.
func TestHandshakeRetryAfter(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	c := newTestClient(t, up.URL, clk, testPolicy())
	start := clk.Now()
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/" || !clk.Now().Before(start.Add(2*time.Second)) {
			return false
		}
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(429)
		return true
	})
	if _, err := getManifest(c); err != nil {
		t.Fatal(err)
	}
	if took := clk.Now().Sub(start); took != 2*time.Second {
		t.Errorf("took %v, want the ping's Retry-After, 2s", took)
	}
}

// A handshake that hangs holds no request past its own deadline, and goes
// on for the requests after it.
func TestHandshakeHoldsNobodyPastTheirDeadline(t *testing.T) {
	up := seededUpstream(t)
	release := make(chan struct{})
	var once sync.Once
	answer := func() { once.Do(func() { close(release) }) }
	t.Cleanup(answer)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	// The real clock: the wait is the transport's, not the retry loop's.
	c := newTestClient(t, up.URL, nil, testPolicy())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Manifest(ctx, "library/app", "v1", nil); err == nil {
		t.Fatal("a request got its manifest while the handshake hung")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a request with a 200ms deadline took %v during a hung handshake (attempt timeout %v)", took, c.Policy().Retry.AttemptTimeout)
	}
	answer()
	if _, err := getManifest(c); err != nil {
		t.Fatalf("after the handshake answered: %v", err)
	}
}

// TestUnreachable: an upstream that refuses connections is named by the
// cause in its standard spelling, and the circuit that opens after it
// keeps that cause, in its refusals and on the status page: a user reads
// "circuit open after connection refused", not a bare "circuit open".
func TestUnreachable(t *testing.T) {
	clk := newAutoClock()
	p := DefaultPolicy()
	p.Retry.Deadline = 3 * time.Second
	p.Breaker.Window = time.Minute // the requests of 3 s each fit in it
	c := newTestClient(t, "http://"+testupstream.FreeAddr(t), clk, p)
	const cause = "unreachable: connection refused"
	for i := range p.Breaker.MinRequests {
		_, err := getManifest(c)
		e, _ := AsError(err)
		if e == nil || e.Cause != cause || !e.Transient || e.Status != 0 || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("request %d: %v, want %q", i+1, err, cause)
		}
	}
	if h := c.Health(); h.Circuit != CircuitOpen || h.LastError != cause {
		t.Fatalf("after %d requests that found it unreachable: %+v, want the circuit open and %q", p.Breaker.MinRequests, h, cause)
	}
	_, err := getManifest(c)
	e, _ := AsError(err)
	if e == nil || !errors.Is(err, ErrCircuitOpen) || e.Cause != "circuit open after connection refused" || e.RetryAfter <= 0 {
		t.Errorf("while open: %v, want the circuit open after connection refused, and when to ask again", err)
	}
}

// TestOnDelay: the caller hears of the first failure at once, while the
// call goes on; a call answered at once says nothing.
func TestOnDelay(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	c := newTestClient(t, up.URL, clk, testPolicy())
	var heard []*Error
	note := OnDelay(func(e *Error) { heard = append(heard, e) })
	if _, err := getManifest(c, note); err != nil || len(heard) != 0 {
		t.Fatalf("healthy: %v, heard %v", err, heard)
	}
	outage(up, clk, "/manifests/", clk.Now().Add(3*time.Second), 503)
	if _, err := getManifest(c, note); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 1 || heard[0].Cause != "answered 503 Service Unavailable" {
		t.Errorf("heard %v, want the first 503 once", heard)
	}
}

// TestBreakerOnlyForDown: one repository answering 500 does not shut out
// the registry; five requests that found it down do, and then a request
// waits for the probe, which closes the circuit once the upstream is back.
func TestBreakerOnlyForDown(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	p := DefaultPolicy()
	// Five requests of 20 s each fit in the window.
	p.Breaker.Window = 2 * time.Minute
	c := newTestClient(t, up.URL, clk, p)
	outage(up, clk, "/broken/", clk.Now().Add(time.Hour), 500)
	for range 10 {
		if _, err := c.Manifest(context.Background(), "library/broken", "v1", nil); err == nil {
			t.Fatal("the broken repository answered")
		}
	}
	if h := c.Health(); h.Circuit != CircuitClosed {
		t.Fatalf("ten 500s from one repository: circuit %v", h.Circuit)
	}
	if _, err := getManifest(c); err != nil {
		t.Fatalf("another repository: %v", err)
	}

	outage(up, clk, "/manifests/", clk.Now().Add(time.Hour), 503)
	for range 5 {
		_, _ = getManifest(c)
	}
	if h := c.Health(); h.Circuit != CircuitOpen {
		t.Fatalf("five requests that found the upstream down: circuit %v", h.Circuit)
	}
	n := up.Count("", "/manifests/")
	_, err := getManifest(c)
	e, _ := AsError(err)
	if e == nil || !errors.Is(err, ErrCircuitOpen) || e.Cause != "circuit open after 503 Service Unavailable" {
		t.Fatalf("while open and down: %v", err)
	}
	// The request waited for the one probe due within its budget and
	// heard its verdict, instead of waiting out probe after probe.
	if probes := up.Count("", "/manifests/") - n; probes != 1 {
		t.Errorf("%d probes for one request, want 1", probes)
	}
	if e.RetryAfter <= 0 || e.RetryAfter > c.policy.Breaker.OpenMax {
		t.Errorf("retry after %v, want the time to the next probe", e.RetryAfter)
	}

	up.SetHook(nil)
	start := clk.Now()
	if _, err := getManifest(c); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if h := c.Health(); h.Circuit != CircuitClosed {
		t.Errorf("after recovery: circuit %v", h.Circuit)
	}
	if took := clk.Now().Sub(start); took > c.policy.Breaker.OpenMax {
		t.Errorf("the first request after recovery took %v, want at most open_max (%v)", took, c.policy.Breaker.OpenMax)
	}
}

// TestRecoveryWakesWaiters runs on the real clock: a request waiting out
// a long backoff is woken by another request's success and succeeds at
// once, instead of after its backoff.
func TestRecoveryWakesWaiters(t *testing.T) {
	up := seededUpstream(t)
	p := testPolicy()
	p.Retry.BaseDelay, p.Retry.MaxDelay = 5*time.Second, 5*time.Second
	c := newTestClient(t, up.URL, nil, p)
	var failing sync.Mutex
	down := true
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		failing.Lock()
		defer failing.Unlock()
		if down && strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(503)
			return true
		}
		return false
	})
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := getManifest(c); done <- err }()
	for up.Count(http.MethodGet, "/manifests/") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	failing.Lock()
	down = false
	failing.Unlock()
	// Another request finds the upstream back.
	if _, err := c.Manifest(context.Background(), "library/app", "v1", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("woke after %v, not at the other request's success", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request did not finish")
	}
}

// TestStaleFailureRetriesAtOnce: a 503 that reaches the client after
// another request already got an answer is older news. Its request must
// not start a backoff that no recovery will end (the recovery was seen
// before it): it retries at once, and gets the manifest.
func TestStaleFailureRetriesAtOnce(t *testing.T) {
	up := seededUpstream(t)
	p := testPolicy()
	p.Retry.BaseDelay, p.Retry.MaxDelay = 5*time.Second, 5*time.Second
	c := newTestClient(t, up.URL, nil, p)
	var n atomic.Int32
	otherAnswered := make(chan struct{})
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") || n.Add(1) != 1 {
			return false
		}
		<-otherAnswered // the first try's 503 leaves after the other's 200
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := getManifest(c); done <- err }()
	for n.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := getManifest(c); err != nil {
		t.Fatal(err)
	}
	close(otherAnswered)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("took %v: the stale 503 started a backoff", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request with the stale 503 did not finish")
	}
	if got := up.Count(http.MethodGet, "/manifests/"); got != 3 {
		t.Errorf("%d manifest GETs upstream, want 3 (the stale try, the other request, the retry)", got)
	}
}

// TestDeadlineKeepsTheCause: a try cut short by the request's own
// deadline does not hide what the upstream did before it.
func TestDeadlineKeepsTheCause(t *testing.T) {
	up := seededUpstream(t)
	p := testPolicy()
	p.Retry.Deadline = 2 * time.Second
	p.Retry.BaseDelay, p.Retry.MaxDelay = 10*time.Millisecond, 10*time.Millisecond
	c := newTestClient(t, up.URL, nil, p)
	var n int
	var mu sync.Mutex
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if !first {
			// Every later try hangs past the deadline.
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return true
		}
		w.WriteHeader(503)
		return true
	})
	_, err := getManifest(c)
	e, _ := AsError(err)
	if e == nil || e.Cause != "answered 503 Service Unavailable" {
		t.Fatalf("error %v, want the 503 the upstream sent before the deadline", err)
	}
}

// TestAbsurdRetryAfter: a Retry-After of days is taken as max_retry_after,
// in the hold and in what the caller is told.
func TestAbsurdRetryAfter(t *testing.T) {
	for _, status := range []int{429, 503} {
		clk := newAutoClock()
		up := seededUpstream(t)
		p := testPolicy()
		p.Retry.Attempts = 1
		c := newTestClient(t, up.URL, clk, p)
		outage(up, clk, "/manifests/", clk.Now().Add(time.Hour), status, "Retry-After", "864000")
		_, err := getManifest(c)
		e, _ := AsError(err)
		if e == nil || e.RetryAfter != time.Hour {
			t.Errorf("%d with Retry-After of 10 days: %v, want retry after 1h (the cap)", status, err)
		}
		if status == 429 {
			if h := c.Health(); h.RateLimitRetryAfter != time.Hour {
				t.Errorf("rate limit held for %v, want 1h", h.RateLimitRetryAfter)
			}
		}
	}
}

// TestRetriesPacedPerUpstream: requests waiting out the same down
// upstream share one retry schedule: it sees their first tries and one
// loop's retries, not each request's, and every request goes as soon as
// one retry finds it back.
func TestRetriesPacedPerUpstream(t *testing.T) {
	const clients = 16
	up := seededUpstream(t)
	p := testPolicy()
	p.Retry.BaseDelay, p.Retry.MaxDelay, p.Retry.Deadline = 50*time.Millisecond, 200*time.Millisecond, 10*time.Second
	c, err := New(Config{Name: "docker.io", URL: up.URL, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	end := time.Now().Add(1500 * time.Millisecond)
	refused := 0
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") || time.Now().After(end) {
			return false
		}
		mu.Lock()
		refused++
		mu.Unlock()
		w.WriteHeader(503)
		return true
	})
	var wg sync.WaitGroup
	var lastDone atomic.Int64
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every request is for a tag of its own: nothing coalesces them.
			_, err := c.Manifest(context.Background(), "library/app", fmt.Sprintf("t%d", i), nil)
			if e, ok := AsError(err); !ok || e.Status != 404 {
				t.Errorf("request %d: %v, want the registry's 404 once it is back", i, err)
			}
			lastDone.Store(time.Now().UnixNano())
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	// Unpaced, each request would retry about every 100 ms: some 15 tries
	// each over 1.5 s, 240 in all.
	if refused > clients+30 {
		t.Errorf("%d requests made %d tries through a 1.5 s outage, want their first tries and one shared schedule's retries", clients, refused)
	}
	if late := time.Unix(0, lastDone.Load()).Sub(end); late > time.Second {
		t.Errorf("the last request ended %v after the upstream came back", late)
	}
	t.Logf("%d tries refused; last request done %v after recovery", refused, time.Unix(0, lastDone.Load()).Sub(end))
}

// TestRateLimitShared: a 429 one client meets is told to OnHold with its
// end and cause; another client of the same upstream, held with them by
// Hold, sends nothing until then and answers as the first did.
func TestRateLimitShared(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	p := testPolicy()
	p.Retry.Deadline = 10 * time.Second
	heard := make(chan Hold, 4)
	first, err := New(Config{Name: "docker.io", URL: up.URL, Policy: p, Clock: clk, Rand: func() float64 { return 0.999 },
		OnHold: func(h Hold) { heard <- h }})
	if err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	outage(up, clk, "/manifests/", start.Add(time.Hour), 429, "Retry-After", "15")
	if _, err := getManifest(first); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("first: %v, want rate limited", err)
	}
	var h Hold
	select {
	case h = <-heard:
	default:
		t.Fatal("OnHold was not told of the 429")
	}
	if h.Kind != HoldRateLimit || !h.Until.Equal(start.Add(15*time.Second)) || h.Cause != "answered 429 Too Many Requests" {
		t.Fatalf("OnHold(%s, %v, %q), want a rate limit of %v and the cause", h.Kind, h.Until.Sub(start), h.Cause, 15*time.Second)
	}

	other := seededUpstream(t) // the same registry, as another replica reaches it
	second := newTestClient(t, other.URL, clk, p)
	second.Hold(h)
	_, err = getManifest(second)
	e, _ := AsError(err)
	if e == nil || !errors.Is(err, ErrRateLimited) || e.RetryAfter != 15*time.Second || !strings.Contains(e.Cause, "429 Too Many Requests") {
		t.Fatalf("second, held: %v, want rate limited with retry after 15s", err)
	}
	if n := other.Count("", "/v2/"); n != 0 {
		t.Errorf("the held client sent %d requests", n)
	}
	// A shorter hold changes nothing: two seconds on, the 15 s hold still
	// refuses, with the seconds left.
	second.Hold(Hold{Kind: HoldRateLimit, Until: start.Add(time.Second), Cause: h.Cause})
	clk.Advance(2 * time.Second)
	_, err = getManifest(second)
	if e, _ := AsError(err); e == nil || !errors.Is(err, ErrRateLimited) || e.RetryAfter != 13*time.Second {
		t.Fatalf("second, after a shorter hold was heard: %v, want rate limited with retry after 13s", err)
	}
	if n := other.Count("", "/v2/"); n != 0 {
		t.Errorf("the held client sent %d requests", n)
	}
	// After the hold the client asks again.
	clk.Advance(14 * time.Second)
	if _, err := getManifest(second); err != nil {
		t.Fatalf("second, after the hold: %v", err)
	}
}

// TestCircuitShared: the circuit one client opens is told to OnHold, and
// another client of the same upstream that holds with it meets the down
// upstream with one probe instead of the failures it would take to open
// its own circuit, refusing with the first client's cause; when the first
// client's probe is answered, the close it tells ends the second's
// circuit at once, without waiting for its open time.
func TestCircuitShared(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	p := DefaultPolicy()
	p.Breaker.Window = 2 * time.Minute
	heard := make(chan Hold, 16)
	first, err := New(Config{Name: "docker.io", URL: up.URL, Policy: p, Clock: clk, Rand: func() float64 { return 0.999 },
		OnHold: func(h Hold) { heard <- h }})
	if err != nil {
		t.Fatal(err)
	}
	other := seededUpstream(t) // the same registry, as another replica reaches it
	second := newTestClient(t, other.URL, clk, p)
	for _, u := range []*testupstream.Upstream{up, other} {
		outage(u, clk, "/manifests/", clk.Now().Add(time.Hour), 503)
	}
	for range 5 {
		_, _ = getManifest(first)
	}
	var open Hold
	select {
	case open = <-heard:
	default:
		t.Fatal("OnHold was not told of the circuit opening")
	}
	const cause = "circuit open after 503 Service Unavailable"
	if open.Kind != HoldCircuit || !open.Until.After(clk.Now()) || open.Cause != cause {
		t.Fatalf("OnHold(%s, %v from now, %q), want an open circuit with %q", open.Kind, open.Until.Sub(clk.Now()), open.Cause, cause)
	}

	second.Hold(open)
	if h := second.Health(); h.Circuit != CircuitOpen {
		t.Fatalf("second, held: circuit %v", h.Circuit)
	}
	_, err = getManifest(second)
	if e, _ := AsError(err); e == nil || !errors.Is(err, ErrCircuitOpen) || e.Cause != cause {
		t.Fatalf("second, held: %v, want the circuit open with %q", err, cause)
	}
	if n := other.Count("", "/manifests/"); n != 1 {
		t.Errorf("the held client sent the down upstream %d requests, want its one probe", n)
	}

	for _, u := range []*testupstream.Upstream{up, other} {
		u.SetHook(nil)
	}
	for len(heard) > 0 {
		<-heard
	}
	if _, err := getManifest(first); err != nil {
		t.Fatalf("first, after recovery: %v", err)
	}
	var closed Hold
	for len(heard) > 0 {
		closed = <-heard
	}
	if closed.Kind != HoldCircuit || closed.Until.After(clk.Now()) {
		t.Fatalf("OnHold after the probe was answered: %s until %v, want the circuit closed", closed.Kind, closed.Until)
	}
	if h := second.Health(); h.Circuit != CircuitOpen || h.CircuitRetryAfter <= 0 {
		t.Fatalf("second before it heard: %+v, want still open", h)
	}
	second.Hold(closed)
	start := clk.Now()
	if _, err := getManifest(second); err != nil {
		t.Fatalf("second, after the close: %v", err)
	}
	if took := clk.Now().Sub(start); took != 0 {
		t.Errorf("second waited %v after the close was heard", took)
	}
}

// TestCircuitSharedContradicted: a client whose own probe finds the
// upstream answering while it holds with another client's open circuit
// stops taking that client's word for a while: the fault is that client's
// alone (a replica's broken route), and must not keep this one from an
// upstream it reaches.
func TestCircuitSharedContradicted(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	p := DefaultPolicy()
	c := newTestClient(t, up.URL, clk, p)
	open := Hold{Kind: HoldCircuit, Until: clk.Now().Add(p.Breaker.OpenMin), Cause: "circuit open after unreachable: no route to host"}
	c.Hold(open)
	if h := c.Health(); h.Circuit != CircuitOpen {
		t.Fatalf("held: circuit %v", h.Circuit)
	}
	// The request waits for the probe, whose answer closes the circuit.
	if _, err := getManifest(c); err != nil {
		t.Fatalf("the probe: %v", err)
	}
	if n := up.Count("", "/manifests/"); n != 1 {
		t.Fatalf("%d manifest requests, want the one probe", n)
	}
	again := Hold{Kind: HoldCircuit, Until: clk.Now().Add(p.Breaker.OpenMin), Cause: open.Cause}
	c.Hold(again)
	if h := c.Health(); h.Circuit != CircuitClosed {
		t.Fatalf("the same open circuit heard again after this client's probe was answered: circuit %v", h.Circuit)
	}
	// Once the while is over, another client's finding counts again.
	clk.Advance(p.Breaker.OpenMax)
	c.Hold(Hold{Kind: HoldCircuit, Until: clk.Now().Add(p.Breaker.OpenMin), Cause: open.Cause})
	if h := c.Health(); h.Circuit != CircuitOpen {
		t.Fatalf("heard after open_max: circuit %v", h.Circuit)
	}
}

// TestRateLimitCountShared: the count of pulls left an answer says is told
// to OnRemaining; another client of the same upstream hears it through
// HearRateLimit, newer counts only, and its own newer answer wins again.
func TestRateLimitCountShared(t *testing.T) {
	clk := newAutoClock()
	up := seededUpstream(t)
	remaining := "76"
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", remaining+";w=21600")
		return false
	})
	heard := make(chan RateLimitCount, 4)
	first, err := New(Config{Name: "docker.io", URL: up.URL, Policy: testPolicy(), Clock: clk,
		OnRemaining: func(n RateLimitCount) { heard <- n }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := getManifest(first); err != nil {
		t.Fatal(err)
	}
	var n RateLimitCount
	select {
	case n = <-heard:
	default:
		t.Fatal("OnRemaining was not told of the count")
	}
	if n.Remaining != 76 || n.Limit != 100 || n.Window != 6*time.Hour || !n.At.Equal(clk.Now()) {
		t.Fatalf("OnRemaining(%+v), want 76 of 100 in 6h, now", n)
	}
	if _, err := getManifest(first); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 0 {
		t.Errorf("told again of an unchanged count")
	}

	second := newTestClient(t, up.URL, clk, testPolicy())
	second.HearRateLimit(n)
	if got := second.RateLimitRemaining(); got != 76 {
		t.Fatalf("after hearing 76: %d", got)
	}
	second.HearRateLimit(RateLimitCount{Remaining: 90, Limit: 100, At: n.At.Add(-time.Second)})
	if got := second.RateLimitRemaining(); got != 76 {
		t.Errorf("an older count was taken: %d", got)
	}
	clk.Advance(time.Second)
	remaining = "12"
	if _, err := getManifest(second); err != nil {
		t.Fatal(err)
	}
	if got := second.RateLimitRemaining(); got != 12 {
		t.Errorf("its own newer answer: %d, want 12", got)
	}
}

// TestHeldTryCutShort: a request that waited at the gate — here for a
// rate limit's end, as another replica reported it — until little of its
// deadline was left, and whose try the deadline then cut before a slow
// upstream answered, fails as "slow", transient, and is no verdict: with a
// breaker that opens on one failure the circuit stays closed and the next
// request is answered.
func TestHeldTryCutShort(t *testing.T) {
	up := seededUpstream(t)
	p := DefaultPolicy()
	p.Retry.Deadline = time.Second
	p.Retry.AttemptTimeout = 10 * time.Second
	p.Breaker.MinRequests, p.Breaker.FailurePercent = 1, 1
	p.Breaker.OpenMin, p.Breaker.OpenMax = time.Minute, time.Minute
	c := newTestClient(t, up.URL, nil, p)
	var slow atomic.Bool
	slow.Store(true)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") && slow.Swap(false) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
			return true
		}
		return false
	})
	c.Hold(Hold{Kind: HoldRateLimit, Until: time.Now().Add(700 * time.Millisecond), Cause: "answered 429 Too Many Requests"})
	_, err := getManifest(c)
	e, ok := AsError(err)
	if !ok || !strings.HasPrefix(e.Cause, "slow: no answer in the ") || !e.Transient || e.RetryAfter != time.Second {
		t.Fatalf("a try left short by the hold: %v, want transient 'slow: no answer in the …', retry after 1s", err)
	}
	if h := c.Health(); h.Circuit != CircuitClosed {
		t.Fatalf("circuit %v after the cut try, want closed: it is no verdict", h.Circuit)
	}
	if _, err := getManifest(c); err != nil {
		t.Fatalf("the next request: %v", err)
	}
}
