package upstream

import (
	"math/rand/v2"
	"time"
)

// Policy is how a Client treats a failing upstream.
type Policy struct {
	Retry   Retry
	Breaker Breaker
	// MaxConcurrent caps requests in flight to the upstream; 0 means no cap.
	MaxConcurrent int
}

// Retry is how one request is retried.
type Retry struct {
	// Attempts caps the tries of one request, the first included; 0 means
	// as many as fit in Deadline.
	Attempts int
	// BaseDelay and MaxDelay bound full-jitter exponential backoff.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Deadline is one request's budget: its tries, the waits between
	// them, and waiting for a probe's verdict or a rate limit to lift.
	Deadline time.Duration
	// AttemptTimeout bounds the wait for one try's response headers and,
	// while a blob streams, for its next byte.
	AttemptTimeout time.Duration
	// MaxRetryAfter caps an upstream's Retry-After and Docker Hub's
	// rate-limit window: a longer one is taken as this long.
	MaxRetryAfter time.Duration
}

// Breaker is when the circuit opens and how it probes.
type Breaker struct {
	// Window is how long request outcomes are counted.
	Window time.Duration
	// MinRequests is how many requests must have ended in the window
	// before their failure ratio counts, so that one client cannot trip
	// the circuit.
	MinRequests int
	// FailurePercent of those requests failing opens the circuit.
	FailurePercent int
	// OpenMin is the first open time; each failed probe doubles it up
	// to OpenMax.
	OpenMin time.Duration
	OpenMax time.Duration
}

// DefaultPolicy is what a Client uses for every field left zero.
func DefaultPolicy() Policy {
	return Policy{
		Retry: Retry{
			BaseDelay:      200 * time.Millisecond,
			MaxDelay:       2 * time.Second,
			Deadline:       20 * time.Second,
			AttemptTimeout: 10 * time.Second,
			MaxRetryAfter:  time.Hour,
		},
		Breaker: Breaker{
			Window:         30 * time.Second,
			MinRequests:    5,
			FailurePercent: 50,
			OpenMin:        time.Second,
			OpenMax:        4 * time.Second,
		},
		MaxConcurrent: 64,
	}
}

// withDefaults fills the fields left zero (or out of range) from
// DefaultPolicy, so that a zero Policy is a usable one.
func (p Policy) withDefaults() Policy {
	d := DefaultPolicy()
	r, dr := &p.Retry, d.Retry
	if r.Attempts < 0 {
		r.Attempts = 0
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = dr.BaseDelay
	}
	if r.MaxDelay < r.BaseDelay {
		r.MaxDelay = max(dr.MaxDelay, r.BaseDelay)
	}
	if r.Deadline <= 0 {
		r.Deadline = dr.Deadline
	}
	if r.AttemptTimeout <= 0 {
		r.AttemptTimeout = dr.AttemptTimeout
	}
	if r.MaxRetryAfter <= 0 {
		r.MaxRetryAfter = dr.MaxRetryAfter
	}
	b, db := &p.Breaker, d.Breaker
	if b.Window <= 0 {
		b.Window = db.Window
	}
	if b.MinRequests < 1 {
		b.MinRequests = db.MinRequests
	}
	if b.FailurePercent < 1 || b.FailurePercent > 100 {
		b.FailurePercent = db.FailurePercent
	}
	if b.OpenMin <= 0 {
		b.OpenMin = db.OpenMin
	}
	if b.OpenMax < b.OpenMin {
		b.OpenMax = max(db.OpenMax, b.OpenMin)
	}
	if p.MaxConcurrent < 0 {
		p.MaxConcurrent = 0
	}
	return p
}

// backoffCeiling is the longest wait before retry number retry (1 for the
// first retry): BaseDelay doubled per retry, capped at MaxDelay.
func (r Retry) backoffCeiling(retry int) time.Duration {
	d := r.BaseDelay
	for i := 1; i < retry && d < r.MaxDelay; i++ {
		d *= 2
	}
	return min(d, r.MaxDelay)
}

// backoff is the wait before retry number retry: full jitter, uniform in
// [0, ceiling], so that a fleet retrying the same outage spreads out
// instead of arriving together. An upstream's Retry-After takes
// precedence: it knows when it will take requests again.
func (r Retry) backoff(retry int, retryAfter time.Duration, rnd func() float64) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, r.MaxRetryAfter)
	}
	return time.Duration(rnd() * float64(r.backoffCeiling(retry)))
}

// doubling is base doubled n-1 times, capped at ceiling: the open time
// after n failed probes, and the hold after n 429s that gave no hint.
func doubling(base, ceiling time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

func jitter() float64 { return rand.Float64() }
