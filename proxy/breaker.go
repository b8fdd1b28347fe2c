package proxy

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// BreakerPolicy configures a circuit breaker.
type BreakerPolicy struct {
	// Failures is how many consecutive failed tries open the circuit.
	Failures int
	// Cooldown is how long the circuit stays open before one probe.
	Cooldown time.Duration
}

// DefaultBreakerPolicy is what Breakwater uses when configured with nothing.
func DefaultBreakerPolicy() BreakerPolicy {
	return BreakerPolicy{Failures: 5, Cooldown: 30 * time.Second}
}

// breakerState is the circuit's state.
type breakerState int

const (
	breakerClosed breakerState = iota
	breakerOpen
	breakerHalfOpen
)

func (s breakerState) String() string {
	switch s {
	case breakerOpen:
		return "open"
	case breakerHalfOpen:
		return "half-open"
	}
	return "closed"
}

// breaker stops Breakwater from hammering an upstream that keeps failing:
// after Failures consecutive failed tries it answers at once for Cooldown,
// then lets one probe through; the probe's outcome closes or reopens it.
type breaker struct {
	upstream string
	policy   BreakerPolicy
	log      *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	state    breakerState
	failures int
	openedAt time.Time
	probing  bool
	lastErr  string
}

func newBreaker(upstream string, p BreakerPolicy, log *slog.Logger, now func() time.Time) *breaker {
	d := DefaultBreakerPolicy()
	if p.Failures < 1 {
		p.Failures = d.Failures
	}
	if p.Cooldown <= 0 {
		p.Cooldown = d.Cooldown
	}
	return &breaker{upstream: upstream, policy: p, log: log, now: now}
}

// allow reports whether a try may go upstream now. When it may not, wait
// says how long until the next probe. A caller that is allowed must report
// the outcome with record.
func (b *breaker) allow() (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerOpen:
		left := b.policy.Cooldown - b.now().Sub(b.openedAt)
		if left > 0 {
			return false, left
		}
		b.transition(breakerHalfOpen)
		b.probing = true
		return true, 0
	case breakerHalfOpen:
		if b.probing {
			// One probe at a time; the others wait for its verdict.
			return false, b.policy.Cooldown
		}
		b.probing = true
		return true, 0
	}
	return true, 0
}

// record reports a try's outcome. cause names a failure for the log and
// the status page.
func (b *breaker) record(ok bool, cause string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.failures = 0
		b.probing = false
		if b.state != breakerClosed {
			b.transition(breakerClosed)
		}
		return
	}
	b.lastErr = cause
	b.failures++
	switch b.state {
	case breakerHalfOpen:
		b.probing = false
		b.openedAt = b.now()
		b.transition(breakerOpen)
	case breakerClosed:
		if b.failures >= b.policy.Failures {
			b.openedAt = b.now()
			b.transition(breakerOpen)
		}
	}
}

// release gives back a probe slot whose try ended without telling anything
// about the upstream (the client went away).
func (b *breaker) release() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) transition(to breakerState) {
	from := b.state
	b.state = to
	level := slog.LevelInfo
	if to == breakerOpen {
		level = slog.LevelWarn
	}
	b.log.Log(context.Background(), level, "circuit breaker", "upstream", b.upstream, "from", from.String(), "to", to.String(),
		"consecutive_failures", b.failures, "last_error", b.lastErr)
}

// snapshot returns the state for status reporting.
func (b *breaker) snapshot() (state breakerState, lastErr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.lastErr
}
