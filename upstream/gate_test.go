package upstream

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func testGate(clk Clock) *gate {
	p := Policy{Breaker: Breaker{Window: 30 * time.Second, MinRequests: 5, FailurePercent: 50, OpenMin: time.Second, OpenMax: 4 * time.Second},
		Retry: Retry{MaxRetryAfter: time.Hour}}.withDefaults()
	return newGate("docker.io", p, clk, func() float64 { return 0.999 }, slog.New(slog.DiscardHandler))
}

// admitNow asks for a try that may not wait.
func admitNow(t *testing.T, g *gate) (ticket, *Error) {
	t.Helper()
	tk, refusal, err := g.admit(context.Background(), g.clock.Now().Add(time.Hour), false, &waited{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tk, refusal
}

type admitResult struct {
	t       ticket
	refusal *Error
	err     error
	waited  bool
}

// asyncAdmit is an admit running in its own goroutine.
type asyncAdmit struct {
	ch  chan admitResult
	got *admitResult
}

// admitAsync asks for a try with budget in a goroutine.
func admitAsync(g *gate, budget time.Duration) *asyncAdmit {
	a := &asyncAdmit{ch: make(chan admitResult, 1)}
	deadline := g.clock.Now().Add(budget)
	go func() {
		var r admitResult
		r.t, r.refusal, r.err = g.admit(context.Background(), deadline, true, &waited{}, func(*Error) { r.waited = true })
		a.ch <- r
	}()
	return a
}

// pending reports whether the admit is still waiting after a moment.
func (a *asyncAdmit) pending() bool {
	if a.got != nil {
		return false
	}
	select {
	case r := <-a.ch:
		a.got = &r
		return false
	case <-time.After(20 * time.Millisecond):
		return true
	}
}

func (a *asyncAdmit) result(t *testing.T) admitResult {
	t.Helper()
	if a.got != nil {
		return *a.got
	}
	select {
	case r := <-a.ch:
		a.got = &r
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("admit did not return")
		return admitResult{}
	}
}

// firstOf returns the admit that returns first, and the other.
func firstOf(t *testing.T, a, b *asyncAdmit) (first, other *asyncAdmit) {
	t.Helper()
	for range 250 {
		if !a.pending() {
			return a, b
		}
		if !b.pending() {
			return b, a
		}
	}
	t.Fatal("neither admit returned")
	return nil, nil
}

// TestBreakerCountsRequests: the circuit opens on the failure ratio of
// requests in the window, with a minimum volume, and only on "down".
func TestBreakerCountsRequests(t *testing.T) {
	cases := []struct {
		name     string
		outcomes []outcome
		open     bool
	}{
		{"four down: below the minimum volume", []outcome{down, down, down, down}, false},
		{"five down", []outcome{down, down, down, down, down}, true},
		{"two ok, three down: 60%", []outcome{answered, answered, down, down, down}, true},
		{"three ok, two down: 40%", []outcome{answered, answered, answered, down, down}, false},
		{"429s never count", []outcome{rateLimited, rateLimited, rateLimited, rateLimited, rateLimited, rateLimited}, false},
		{"500s never count", []outcome{troubled, troubled, troubled, troubled, troubled, troubled}, false},
		{"500s do not make the volume", []outcome{troubled, troubled, troubled, down, down, down}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := testGate(newManualClock())
			for _, o := range tc.outcomes {
				g.finish(o)
			}
			if got := g.health().Circuit != CircuitClosed; got != tc.open {
				t.Errorf("open = %v, want %v (%v)", got, tc.open, g.health())
			}
		})
	}
}

// TestBreakerWindowForgets: failures older than the window do not count.
func TestBreakerWindowForgets(t *testing.T) {
	clk := newManualClock()
	g := testGate(clk)
	for range 4 {
		g.finish(down)
	}
	clk.Advance(31 * time.Second)
	g.finish(down)
	if h := g.health(); h.Circuit != CircuitClosed {
		t.Errorf("four failures 31 s ago and one now opened the circuit: %+v", h)
	}
}

func openCircuit(t *testing.T, g *gate) {
	t.Helper()
	g.observe(ticket{}, down, "answered 503 Service Unavailable", 0)
	for range 5 {
		g.finish(down)
	}
	if h := g.health(); h.Circuit != CircuitOpen || h.CircuitRetryAfter != time.Second {
		t.Fatalf("after five failed requests: %+v, want open for 1s", h)
	}
}

// TestCircuitProbes: while open, a request whose budget covers the open
// time waits for it instead of failing; the first try after it is the one
// probe, the others wait for its verdict; a failed probe doubles the open
// time up to OpenMax; an answered probe closes the circuit at once.
func TestCircuitProbes(t *testing.T) {
	clk := newManualClock()
	g := testGate(clk)
	openCircuit(t, g)

	// No room to wait: refused at once, with the cause and the time left.
	_, refusal := admitNow(t, g)
	if refusal == nil || !errors.Is(refusal, ErrCircuitOpen) || refusal.Cause != "circuit open after 503 Service Unavailable" || refusal.RetryAfter != time.Second {
		t.Fatalf("refusal %+v", refusal)
	}
	// A budget shorter than the open time: refused at once too.
	if r := admitAsync(g, 500*time.Millisecond).result(t); r.refusal == nil || r.waited {
		t.Fatalf("budget 0.5s under a 1s open time: %+v", r)
	}

	// Budget 10 s: both wait; after 1 s one becomes the probe.
	n := clk.timersStarted()
	a := admitAsync(g, 10*time.Second)
	b := admitAsync(g, 10*time.Second)
	if !clk.awaitTimers(n+2, 5*time.Second) {
		t.Fatal("the requests did not wait")
	}
	clk.Advance(time.Second)
	fa, b := firstOf(t, a, b)
	first := fa.result(t)
	if first.refusal != nil || !first.t.circuit || !first.waited {
		t.Fatalf("first after the open time: %+v, want the probe", first)
	}
	if h := g.health(); h.Circuit != CircuitHalfOpen {
		t.Errorf("with the probe out: %v, want half-open", h.Circuit)
	}
	if !b.pending() {
		t.Fatal("a second request went out while the probe was out")
	}

	// The probe fails: open again for 2 s. b waited for that verdict and
	// hears it at once, rather than waiting out the next probes too.
	g.observe(first.t, down, "unreachable: connection refused", 0)
	if h := g.health(); h.Circuit != CircuitOpen || h.CircuitRetryAfter != 2*time.Second {
		t.Fatalf("after a failed probe: %+v, want open for 2s", h)
	}
	if r := b.result(t); r.refusal == nil || r.refusal.Cause != "circuit open after connection refused" || r.refusal.RetryAfter != 2*time.Second {
		t.Fatalf("b after the failed probe: %+v %+v, want refused naming the probe's cause", r, r.refusal)
	}
	// A request that comes now waits for the next probe, and is it.
	n = clk.timersStarted()
	b = admitAsync(g, 10*time.Second)
	if !clk.awaitTimers(n+1, 5*time.Second) {
		t.Fatal("the request did not wait")
	}
	clk.Advance(2 * time.Second)
	second := b.result(t)
	if second.refusal != nil || !second.t.circuit {
		t.Fatalf("a new request after 2s: %+v, want the probe", second)
	}
	g.observe(second.t, down, "answered 503 Service Unavailable", 0)
	if h := g.health(); h.CircuitRetryAfter != 4*time.Second {
		t.Errorf("after two failed probes: open for %v, want 4s", h.CircuitRetryAfter)
	}
	clk.Advance(4 * time.Second)
	tk, _ := admitNow(t, g)
	g.observe(tk, down, "answered 503 Service Unavailable", 0)
	if h := g.health(); h.CircuitRetryAfter != 4*time.Second {
		t.Errorf("after three failed probes: open for %v, want 4s (the cap)", h.CircuitRetryAfter)
	}

	// The upstream is back: the probe's answer closes the circuit and
	// lets every waiting request go at once.
	n = clk.timersStarted()
	c := admitAsync(g, 10*time.Second)
	d := admitAsync(g, 10*time.Second)
	if !clk.awaitTimers(n+2, 5*time.Second) {
		t.Fatal("the requests did not wait")
	}
	clk.Advance(4 * time.Second)
	pa, oa := firstOf(t, c, d)
	probe := pa.result(t)
	if !probe.t.circuit {
		t.Fatalf("probe %+v", probe)
	}
	if !oa.pending() {
		t.Fatal("both went out during the probe")
	}
	g.observe(probe.t, answered, "", 0)
	if h := g.health(); h.Circuit != CircuitClosed {
		t.Fatalf("after an answered probe: %v", h.Circuit)
	}
	if other := oa.result(t); other.refusal != nil || other.t.circuit {
		t.Errorf("the waiting request after the circuit closed: %+v", other)
	}
	// Closed means closed: the old failures are forgotten.
	g.finish(down)
	if h := g.health(); h.Circuit != CircuitClosed {
		t.Errorf("one failure after closing reopened it")
	}
}

// TestProbeVerdicts: any answer closes the circuit; a probe whose caller
// went away lets the next request probe.
func TestProbeVerdicts(t *testing.T) {
	for _, o := range []outcome{answered, rateLimited, troubled} {
		clk := newManualClock()
		g := testGate(clk)
		openCircuit(t, g)
		clk.Advance(time.Second)
		tk, _ := admitNow(t, g)
		g.observe(tk, o, "x", 0)
		if h := g.health(); h.Circuit != CircuitClosed {
			t.Errorf("probe outcome %d left the circuit %v", o, h.Circuit)
		}
	}

	clk := newManualClock()
	g := testGate(clk)
	openCircuit(t, g)
	clk.Advance(time.Second)
	tk, _ := admitNow(t, g)
	w := admitAsync(g, 10*time.Second)
	if !w.pending() {
		t.Fatal("went out beside the probe")
	}
	g.release(tk)
	if r := w.result(t); !r.t.circuit {
		t.Errorf("after the probe was released: %+v, want to be the next probe", r)
	}
}

// TestRateLimitGate: a 429's Retry-After is obeyed: nothing goes before
// it; a request is held if it fits its budget and refused at once, with
// the seconds really left, if it does not.
func TestRateLimitGate(t *testing.T) {
	clk := newManualClock()
	g := testGate(clk)
	g.observe(ticket{}, rateLimited, "answered 429 Too Many Requests", 15*time.Second)
	if h := g.health(); !h.RateLimited || h.RateLimitRetryAfter != 15*time.Second || h.Circuit != CircuitClosed {
		t.Fatalf("after a 429 with Retry-After 15: %+v", h)
	}
	// Budget 10 s: answered at once.
	r := admitAsync(g, 10*time.Second).result(t)
	if r.refusal == nil || r.waited || !errors.Is(r.refusal, ErrRateLimited) || r.refusal.RetryAfter != 15*time.Second ||
		!strings.Contains(r.refusal.Cause, "429 Too Many Requests") {
		t.Fatalf("budget 10s: %+v", r.refusal)
	}
	clk.Advance(3 * time.Second)
	if _, refusal := admitNow(t, g); refusal.RetryAfter != 12*time.Second {
		t.Errorf("3 s later: retry after %v, want 12s", refusal.RetryAfter)
	}
	// Budget 20 s: held until the time, then the probe.
	n := clk.timersStarted()
	held := admitAsync(g, 20*time.Second)
	if !clk.awaitTimers(n+1, 5*time.Second) {
		t.Fatal("the request was not held")
	}
	clk.Advance(11 * time.Second)
	if !held.pending() {
		t.Fatal("went out a second before the upstream's time")
	}
	clk.Advance(time.Second)
	r = held.result(t)
	if r.refusal != nil || !r.t.limit || !r.waited {
		t.Fatalf("at the upstream's time: %+v", r)
	}
	g.observe(r.t, answered, "", 0)
	if h := g.health(); h.RateLimited {
		t.Errorf("after an answered probe: still rate limited %+v", h)
	}
	if tk, refusal := admitNow(t, g); refusal != nil || tk.limit {
		t.Errorf("after the limit: %+v %+v", tk, refusal)
	}
}

// TestRateLimitWithoutHint: a 429 that does not say when backs off like
// the circuit: 1 s, 2 s, 4 s, 4 s; an answer resets it.
func TestRateLimitWithoutHint(t *testing.T) {
	clk := newManualClock()
	g := testGate(clk)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		tk, refusal := admitNow(t, g)
		if refusal != nil {
			t.Fatalf("429 number %d: refused before its time: %+v", i+1, refusal)
		}
		g.observe(tk, rateLimited, "answered 429 Too Many Requests", 0)
		if h := g.health(); h.RateLimitRetryAfter != want {
			t.Errorf("after 429 number %d: hold %v, want %v", i+1, h.RateLimitRetryAfter, want)
		}
		clk.Advance(want)
	}
	tk, _ := admitNow(t, g)
	g.observe(tk, answered, "", 0)
	tk, _ = admitNow(t, g)
	g.observe(tk, rateLimited, "answered 429 Too Many Requests", 0)
	if h := g.health(); h.RateLimitRetryAfter != time.Second {
		t.Errorf("after an answer and a new 429: hold %v, want 1s", h.RateLimitRetryAfter)
	}
}

// TestNoPullsLeft: Docker Hub's ratelimit-remaining: 0 on a success holds
// the next requests, and the refusal names 429 Too Many Requests.
func TestNoPullsLeft(t *testing.T) {
	g := testGate(newManualClock())
	g.observe(ticket{}, answered, "has no pulls left (ratelimit-remaining: 0)", time.Hour)
	_, refusal := admitNow(t, g)
	if refusal == nil || refusal.Cause != "has no pulls left (ratelimit-remaining: 0): 429 Too Many Requests" || refusal.RetryAfter != time.Hour {
		t.Fatalf("refusal %+v", refusal)
	}
}

// TestRecoveryWakes: the answer that ends a run of failures wakes whoever
// waits on the gate's changes.
func TestRecoveryWakes(t *testing.T) {
	g := testGate(newManualClock())
	ch := g.changes()
	g.observe(ticket{}, down, "answered 503 Service Unavailable", 0)
	select {
	case <-ch:
		t.Fatal("a failure woke the sleepers")
	default:
	}
	ch = g.changes()
	g.observe(ticket{}, answered, "", 0)
	select {
	case <-ch:
	default:
		t.Fatal("the recovery did not wake the sleepers")
	}
}
