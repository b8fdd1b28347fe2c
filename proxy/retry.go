package proxy

import (
	"math/rand/v2"
	"time"
)

// RetryPolicy is how one upstream request is retried.
type RetryPolicy struct {
	// Attempts is the most tries, the first included.
	Attempts int
	// BaseDelay and MaxDelay bound full-jitter exponential backoff.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Deadline bounds one request with all its retries.
	Deadline time.Duration
	// AttemptTimeout bounds the wait for one try's response headers and,
	// while a blob streams, for its next byte.
	AttemptTimeout time.Duration
	// MaxRetryAfter caps an upstream's Retry-After.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy is what Breakwater uses when configured with nothing.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		Attempts:       4,
		BaseDelay:      200 * time.Millisecond,
		MaxDelay:       5 * time.Second,
		Deadline:       30 * time.Second,
		AttemptTimeout: 15 * time.Second,
		MaxRetryAfter:  10 * time.Second,
	}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.Attempts < 1 {
		p.Attempts = d.Attempts
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = d.BaseDelay
	}
	if p.MaxDelay < p.BaseDelay {
		p.MaxDelay = max(d.MaxDelay, p.BaseDelay)
	}
	if p.Deadline <= 0 {
		p.Deadline = d.Deadline
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = d.AttemptTimeout
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = d.MaxRetryAfter
	}
	return p
}

// backoffCeiling is the longest wait before retry number retry (1 for the
// first retry): BaseDelay doubled per retry, capped at MaxDelay.
func (p RetryPolicy) backoffCeiling(retry int) time.Duration {
	d := p.BaseDelay
	for i := 1; i < retry && d < p.MaxDelay; i++ {
		d *= 2
	}
	return min(d, p.MaxDelay)
}

// wait is how long to wait before retry number retry: full jitter, uniform
// in [0, ceiling], so that a fleet of clients retrying the same outage
// spreads out instead of arriving together. An upstream's Retry-After, up to
// MaxRetryAfter, takes precedence: it knows when it will take requests again.
func (p RetryPolicy) wait(retry int, retryAfter time.Duration, rnd func() float64) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, p.MaxRetryAfter)
	}
	return time.Duration(rnd() * float64(p.backoffCeiling(retry)))
}

// jitter is the source of randomness for backoff.
func jitter() float64 { return rand.Float64() }
