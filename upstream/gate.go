package upstream

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// CircuitState is the circuit breaker's state.
type CircuitState int

const (
	CircuitClosed CircuitState = iota
	CircuitOpen
	CircuitHalfOpen
)

func (s CircuitState) String() string {
	switch s {
	case CircuitOpen:
		return "open"
	case CircuitHalfOpen:
		return "half-open"
	}
	return "closed"
}

// gate decides whether a try may go to the upstream now. It holds two
// things that can keep requests back:
//
//   - the circuit breaker, opened when enough requests failed because the
//     upstream is down (refused, reset, timed out, 502/503/504) and closed
//     by the first try that gets any answer;
//   - the rate limit, set by a 429 (or Docker Hub's ratelimit-remaining:
//     0) until the time the upstream gave.
//
// Each is a hold: until its time nothing is sent; after it, one try goes
// as its probe and the others wait for the probe's verdict, so a recovered
// upstream is asked once, not by every waiting request at the same moment.
type gate struct {
	name   string
	policy Policy
	clock  Clock
	log    *slog.Logger

	mu      sync.Mutex
	circuit hold
	limit   hold
	// failedProbes counts probes that found the upstream still down.
	failedProbes int
	// openFor is the circuit's current open time: OpenMin, doubled by
	// each failed probe up to OpenMax.
	openFor time.Duration
	// downCause is the last "upstream is down" cause, as "circuit open
	// after …" names it.
	downCause string
	// unhinted counts consecutive 429s that said nothing of when to come
	// back; their hold doubles like the open time.
	unhinted int
	// failing is set by a try that found the upstream down and cleared by
	// one that got an answer, which wakes every retry loop waiting out a
	// backoff: the upstream is back, there is no reason to wait.
	failing bool
	// answers counts the tries that got an answer. A try that found the
	// upstream down, observed after an answer that came in since the try
	// was admitted, is older news than that answer (its 503 was on the
	// wire while the upstream came back): it must not mark the upstream
	// failing and send its request into a backoff that nothing would end.
	answers uint64
	// While failing, retries of every request share one schedule: the
	// next may go at paceAt, which moves by a full-jitter backoff doubling
	// with each try that found the upstream down (paceN), so a thousand
	// waiting requests cost a down upstream one retry per backoff, not a
	// thousand. First tries are not paced: each is news.
	paceAt time.Time
	paceN  int
	rnd    func() float64
	// lastError is the last transient cause, for the status page.
	lastError string
	window    window
	// changed is closed and replaced whenever a hold changes or the
	// upstream comes back.
	changed chan struct{}
	// onHold is told of every hold the client's own findings set or end
	// (Config.OnHold).
	onHold func(Hold)
	// heardUntil ignores other clients' open circuits until then: this
	// client's own probe found the upstream answering while it held with
	// theirs, so the fault is theirs alone (a replica's broken route),
	// and must not keep this one from an upstream it reaches.
	heardUntil time.Time
}

// hold is one reason to keep requests back.
type hold struct {
	active  bool
	until   time.Time
	probing bool   // a try is out as the probe and nobody else may go
	cause   string // what the refusal says: "answered 429 Too Many Requests"
	heard   bool   // set by another client's finding (Client.Hold)
}

func newGate(name string, p Policy, clock Clock, rnd func() float64, log *slog.Logger) *gate {
	if rnd == nil {
		rnd = jitter
	}
	return &gate{name: name, policy: p, clock: clock, rnd: rnd, log: log, window: newWindow(p.Breaker.Window), changed: make(chan struct{})}
}

// waited is what one request has seen of the gate across its tries.
type waited struct {
	metCircuit   bool
	failedProbes int // the gate's count when the request met the open circuit
	// held: the request waited at the gate — for a hold's end or a
	// probe's verdict — before a try went.
	held bool
}

// ticket is an admitted try: which holds it probes.
type ticket struct {
	circuit, limit bool
	// answers is the gate's count of answers when the try was admitted.
	answers uint64
}

// admit waits until a try may go to the upstream, or returns the refusal
// when it may not within deadline (or at once when wait is false). Before
// waiting it calls onWait with the refusal it would give now, so that a
// caller with something to fall back on need not wait. It returns ctx's
// error if ctx ends first.
//
// A request waits for one probe's verdict, not for every probe its
// deadline could hold: when a probe fails after the request first met the
// open circuit, it is refused at once, so that during a long outage
// clients hear of it within the open time rather than at their deadline.
// w carries what the request has seen across its tries.
func (g *gate) admit(ctx context.Context, deadline time.Time, wait bool, w *waited, onWait func(*Error)) (ticket, *Error, error) {
	for {
		g.mu.Lock()
		now := g.clock.Now()
		if g.circuit.active {
			if !w.metCircuit {
				w.metCircuit, w.failedProbes = true, g.failedProbes
			} else if g.failedProbes > w.failedProbes {
				g.mu.Unlock()
				return ticket{}, g.circuitRefusal(), nil
			}
		}
		h := g.blocking(now)
		if h == nil {
			t := ticket{circuit: g.circuit.active, limit: g.limit.active, answers: g.answers}
			g.circuit.probing = g.circuit.probing || t.circuit
			g.limit.probing = g.limit.probing || t.limit
			if t.circuit {
				g.log.Debug("circuit breaker probe", "upstream", g.name)
			}
			g.mu.Unlock()
			return t, nil, nil
		}
		// Until the hold's time nothing may go; after it, only the probe,
		// whose verdict comes within a try.
		var left time.Duration
		if now.Before(h.until) {
			left = h.until.Sub(now)
		}
		refusal := g.refusalLocked(h, left)
		// A wait that ends at the deadline leaves no time for the try.
		if !wait || (left > 0 && !h.until.Before(deadline)) || !now.Before(deadline) {
			g.mu.Unlock()
			return ticket{}, refusal, nil
		}
		changed := g.changed
		g.mu.Unlock()
		if onWait != nil {
			onWait(refusal)
		}
		timeout := deadline.Sub(now)
		if left > 0 {
			timeout = left
		}
		w.held = true
		select {
		case <-changed:
		case <-g.clock.After(timeout):
		case <-ctx.Done():
			return ticket{}, nil, ctx.Err()
		}
	}
}

// circuitRefusal is the answer for a request that heard a probe fail.
func (g *gate) circuitRefusal() *Error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refusalLocked(&g.circuit, max(g.circuit.until.Sub(g.clock.Now()), 0))
}

// blocking returns the hold that keeps a try back now, if any: the rate
// limit first, since a try would only be refused.
func (g *gate) blocking(now time.Time) *hold {
	for _, h := range []*hold{&g.limit, &g.circuit} {
		if h.active && (now.Before(h.until) || h.probing) {
			return h
		}
	}
	return nil
}

func (g *gate) refusalLocked(h *hold, left time.Duration) *Error {
	e := &Error{Upstream: g.name, Transient: true, RetryAfter: left, Cause: h.cause, Err: ErrCircuitOpen}
	if h == &g.limit {
		e.Err = ErrRateLimited
	}
	if left <= 0 {
		// A probe is out; its verdict is due within a try.
		e.RetryAfter = g.policy.Breaker.OpenMin
	}
	return e
}

// observe takes one try's verdict. o is what the try said of the
// upstream; cause names it; limitHold, when positive, is how long the
// upstream asked to be left alone (a 429's Retry-After, or Docker Hub's
// window once no pulls are left), already capped.
//
// It reports a stale failure: the try found the upstream down, but another
// try got an answer after this one was admitted. Such a failure neither
// marks the upstream failing nor moves the shared retry schedule, and its
// request may retry at once (once: a retry that fails again waits).
func (g *gate) observe(t ticket, o outcome, cause string, limitHold time.Duration) (stale bool) {
	var told []Hold
	defer func() { g.tell(told) }()
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock.Now()
	changed := false
	if t.circuit {
		g.circuit.probing = false
		changed = true
	}
	if t.limit {
		g.limit.probing = false
		changed = true
	}
	if o.transient() {
		g.lastError = cause
	}

	if limitHold <= 0 && o == rateLimited {
		// A 429 that does not say when: back off like the circuit does.
		g.unhinted++
		limitHold = doubling(g.policy.Breaker.OpenMin, g.policy.Breaker.OpenMax, g.unhinted)
	} else if o == rateLimited {
		g.unhinted = 0
	}
	switch {
	case limitHold > 0:
		until := now.Add(limitHold)
		if !g.limit.active || until.After(g.limit.until) {
			if !g.limit.active {
				g.log.Warn("upstream rate limited: nothing is sent to it until the time it gave",
					"upstream", g.name, "cause", cause, "retry_after", limitHold.String())
			}
			g.limit = hold{active: true, until: until, cause: limitCause(cause)}
			changed = true
			told = append(told, Hold{Kind: HoldRateLimit, Until: until, Cause: g.limit.cause})
		}
	case g.limit.active && t.limit:
		// The probe after the hold was not refused: the limit is over.
		g.limit = hold{}
		g.unhinted = 0
		g.log.Info("upstream rate limit over", "upstream", g.name)
		changed = true
	}

	switch {
	case o == down && !t.circuit && g.answers != t.answers:
		stale = true
	case o == down:
		g.failing = true
		g.paceN++
		g.downCause = shortCause(cause)
		if t.circuit {
			g.failedProbes++
			g.openFor = min(g.openFor*2, g.policy.Breaker.OpenMax)
			g.openLocked(now)
			told = append(told, g.circuitHoldLocked())
		}
	default:
		// Any answer, even a 429 or a 500, says the upstream is up.
		g.answers++
		if g.circuit.active {
			if g.circuit.heard && t.circuit {
				g.heardUntil = now.Add(g.policy.Breaker.OpenMax)
			}
			g.closeLocked()
			changed = true
			told = append(told, Hold{Kind: HoldCircuit})
		}
		if g.failing {
			g.failing = false
			g.paceN, g.paceAt = 0, time.Time{}
			changed = true
		}
	}
	if changed {
		g.notifyLocked()
	}
	return stale
}

// tell passes holds to onHold, outside the gate's lock.
func (g *gate) tell(holds []Hold) {
	if g.onHold == nil {
		return
	}
	for _, h := range holds {
		g.onHold(h)
	}
}

// circuitHoldLocked is the open circuit as other clients should hold it.
func (g *gate) circuitHoldLocked() Hold {
	return Hold{Kind: HoldCircuit, Until: g.circuit.until, Cause: g.circuit.cause}
}

// holdCircuit opens the circuit until until, with cause as its refusal, as
// another client of the same upstream found it down; a hold already over
// says that client's probe was answered, and closes this circuit too. A
// probe of this client's own that is out decides for itself.
func (g *gate) holdCircuit(until time.Time, cause string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock.Now()
	if !until.After(now) {
		if !g.circuit.active || g.circuit.probing {
			return
		}
		g.log.Info("upstream answering again, as another replica found", "upstream", g.name)
		g.closeLocked()
		g.failing = false
		g.paceN, g.paceAt = 0, time.Time{}
		g.notifyLocked()
		return
	}
	if g.circuit.active && !until.After(g.circuit.until) {
		return
	}
	if now.Before(g.heardUntil) && !g.circuit.active {
		g.log.Debug("another replica's open circuit ignored: this one's probe found the upstream answering", "upstream", g.name)
		return
	}
	if !g.circuit.active {
		g.log.Warn("circuit breaker open, as another replica found: nothing is sent to the upstream until its probe",
			"upstream", g.name, "cause", cause, "until", until.Format(time.RFC3339Nano))
		if g.openFor == 0 {
			g.openFor = g.policy.Breaker.OpenMin
		}
	}
	g.circuit = hold{active: true, until: until, probing: g.circuit.probing, cause: cause, heard: !g.circuit.active || g.circuit.heard}
	g.notifyLocked()
}

// holdLimit holds the client back until until, as if the upstream had
// answered it with cause: another client of the same upstream (a fleet's
// replica) met the limit. A hold already longer stays.
func (g *gate) holdLimit(until time.Time, cause string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !until.After(g.clock.Now()) || (g.limit.active && !until.After(g.limit.until)) {
		return
	}
	if !g.limit.active {
		g.log.Warn("upstream rate limited, as another replica heard: nothing is sent to it until the time it gave",
			"upstream", g.name, "cause", cause, "until", until.Format(time.RFC3339))
	}
	g.limit = hold{active: true, until: until, cause: cause}
	g.notifyLocked()
}

// pace waits for the next retry slot of a failing upstream. It returns
// false when the slot comes too late for deadline, and ctx's error if ctx
// ends first. An upstream that is not failing (any more) lets the retry go
// at once.
func (g *gate) pace(ctx context.Context, deadline time.Time) (bool, error) {
	for {
		g.mu.Lock()
		now := g.clock.Now()
		if !g.failing || !now.Before(g.paceAt) {
			if g.failing {
				g.paceAt = now.Add(time.Duration(g.rnd() * float64(g.policy.Retry.backoffCeiling(g.paceN))))
			}
			g.mu.Unlock()
			return true, nil
		}
		if !g.paceAt.Before(deadline) {
			g.mu.Unlock()
			return false, nil
		}
		wait, changed := g.paceAt.Sub(now), g.changed
		g.mu.Unlock()
		select {
		case <-changed:
		case <-g.clock.After(wait):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// release gives back the probes of a try that ended without a verdict
// (its caller went away).
func (g *gate) release(t ticket) {
	if !t.circuit && !t.limit {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.circuit {
		g.circuit.probing = false
	}
	if t.limit {
		g.limit.probing = false
	}
	g.notifyLocked()
}

// finish counts one request's outcome after its retries: only "down"
// counts as a failure, so that neither a rate limit nor one repository's
// 500 can open the circuit, and a request counts once however many tries
// it made.
func (g *gate) finish(o outcome) {
	if o != down && o != answered {
		return
	}
	var told []Hold
	defer func() { g.tell(told) }()
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock.Now()
	g.window.add(now, o == down)
	if o != down || g.circuit.active {
		return
	}
	ok, failed := g.window.counts(now)
	b := g.policy.Breaker
	if ok+failed >= b.MinRequests && failed*100 >= b.FailurePercent*(ok+failed) {
		g.openFor = b.OpenMin
		g.openLocked(now)
		g.notifyLocked()
		told = append(told, g.circuitHoldLocked())
	}
}

func (g *gate) openLocked(now time.Time) {
	from := g.circuitStateLocked()
	g.circuit = hold{active: true, until: now.Add(g.openFor), cause: "circuit open after " + g.downCause}
	ok, failed := g.window.counts(now)
	level := slog.LevelWarn
	if from == CircuitHalfOpen {
		level = slog.LevelInfo // still down; the first opening said so
	}
	g.log.Log(context.Background(), level, "circuit breaker", "upstream", g.name, "from", from.String(), "to", CircuitOpen.String(),
		"cause", g.downCause, "open_for", g.openFor.String(), "requests_ok", ok, "requests_failed", failed)
}

func (g *gate) closeLocked() {
	from := g.circuitStateLocked()
	g.circuit = hold{}
	g.window.reset()
	g.log.Info("circuit breaker", "upstream", g.name, "from", from.String(), "to", CircuitClosed.String())
}

func (g *gate) circuitStateLocked() CircuitState {
	switch {
	case !g.circuit.active:
		return CircuitClosed
	case g.circuit.probing || !g.clock.Now().Before(g.circuit.until):
		return CircuitHalfOpen
	}
	return CircuitOpen
}

func (g *gate) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// changes returns a channel closed at the next change: a retry loop
// waiting out its backoff wakes when the upstream is back.
func (g *gate) changes() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// limitCause is the rate limit's refusal text; it always names 429 Too
// Many Requests, which Flyte and others key on.
func limitCause(cause string) string {
	if cause == statusCause(429) {
		return cause
	}
	return cause + ": 429 Too Many Requests"
}

// Health is what the gate knows of the upstream now.
type Health struct {
	Circuit CircuitState
	// CircuitRetryAfter is how long until the circuit's next probe may go.
	CircuitRetryAfter time.Duration
	// RateLimited reports a rate limit in force; RateLimitRetryAfter is
	// how long until the upstream may be asked again.
	RateLimited         bool
	RateLimitRetryAfter time.Duration
	// LastError is the last transient cause seen.
	LastError string
}

func (g *gate) health() Health {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clock.Now()
	h := Health{Circuit: g.circuitStateLocked(), RateLimited: g.limit.active, LastError: g.lastError}
	if g.circuit.active {
		h.CircuitRetryAfter = max(g.circuit.until.Sub(now), 0)
	}
	if g.limit.active {
		h.RateLimitRetryAfter = max(g.limit.until.Sub(now), 0)
	}
	return h
}
