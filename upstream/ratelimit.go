package upstream

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// rateLimits is what Docker Hub last said of the pull rate limit:
// "ratelimit-limit: 100;w=21600" and "ratelimit-remaining: 76;w=21600".
type rateLimits struct {
	remaining atomic.Int64 // -1 until the upstream says
	limit     atomic.Int64
	low       atomic.Bool // remaining is at or below a tenth of limit
	// at is when remaining was said (Unix ns): a count heard from
	// another client counts only when it is newer.
	at atomic.Int64
	// onRemaining is told of every change of remaining the upstream's
	// answers say (Config.OnRemaining).
	onRemaining func(RateLimitCount)
}

// RateLimitCount is what the upstream said of its pull rate limit at one
// moment: Docker Hub's ratelimit-remaining and ratelimit-limit.
type RateLimitCount struct {
	Remaining, Limit int64
	// Window is the limit's window (w=SECONDS), 0 when not said.
	Window time.Duration
	At     time.Time
}

// parseRateLimitHeader reads "N" or "N;w=SECONDS".
func parseRateLimitHeader(v string) (n int64, window time.Duration, ok bool) {
	count, params, _ := strings.Cut(v, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(count), 10, 64)
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range strings.Split(params, ";") {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if k == "w" {
			if secs, err := strconv.ParseInt(val, 10, 64); err == nil && secs > 0 {
				window = time.Duration(min(secs, 1<<31)) * time.Second
			}
		}
	}
	return n, window, true
}

// dockerHubRemaining reads Docker Hub's ratelimit-remaining header.
func dockerHubRemaining(h http.Header) (left int64, window time.Duration, ok bool) {
	if h == nil {
		return 0, 0, false
	}
	return parseRateLimitHeader(h.Get("Ratelimit-Remaining"))
}

// note records the rate-limit headers of an answer and logs when the
// remaining pulls run low, and when they recover.
func (r *rateLimits) note(c *Client, h http.Header) {
	remaining, window, ok := dockerHubRemaining(h)
	if !ok {
		return
	}
	limit, _, _ := parseRateLimitHeader(h.Get("Ratelimit-Limit"))
	now := c.clock.Now()
	r.limit.Store(limit)
	r.at.Store(now.UnixNano())
	if old := r.remaining.Swap(remaining); old != remaining {
		c.log.Debug("upstream rate limit", "upstream", c.name, "remaining", remaining, "limit", limit)
		if r.onRemaining != nil {
			r.onRemaining(RateLimitCount{Remaining: remaining, Limit: limit, Window: window, At: now})
		}
	}
	r.logLow(c, remaining, limit)
}

// logLow logs when the remaining pulls run low, and when they recover.
func (r *rateLimits) logLow(c *Client, remaining, limit int64) {
	low := limit > 0 && remaining*10 <= limit
	if was := r.low.Swap(low); was != low {
		if low {
			c.log.Warn("upstream rate limit running low", "upstream", c.name, "remaining", remaining, "limit", limit)
		} else {
			c.log.Info("upstream rate limit recovered", "upstream", c.name, "remaining", remaining, "limit", limit)
		}
	}
}

// RateLimitRemaining returns the pulls left as the upstream last said, to
// this client or (HearRateLimit) another of the same upstream, or -1 when
// it never said.
func (c *Client) RateLimitRemaining() int64 { return c.limits.remaining.Load() }

// HearRateLimit takes the count another client of the same upstream (a
// fleet's replica, Config.OnRemaining) was told, when it is newer than
// what this one knows: Docker Hub counts the fleet's pulls together, so
// the newest answer to any replica is the fleet's count, and a replica's
// rate_limit_reserve spares the limit as soon as any replica sees it low.
func (c *Client) HearRateLimit(n RateLimitCount) {
	r := &c.limits
	at := n.At.UnixNano()
	for {
		old := r.at.Load()
		if at <= old {
			return
		}
		if r.at.CompareAndSwap(old, at) {
			break
		}
	}
	r.limit.Store(n.Limit)
	r.remaining.Store(n.Remaining)
	r.logLow(c, n.Remaining, n.Limit)
}

// HoldKind is what a Hold keeps back.
type HoldKind string

const (
	// HoldRateLimit is the upstream's rate limit: nothing is sent until
	// the time it gave.
	HoldRateLimit HoldKind = "ratelimit"
	// HoldCircuit is the open circuit: the upstream was found down, and
	// nothing is sent until its probe may go. A HoldCircuit whose Until
	// has passed says the circuit closed: the upstream answered again.
	HoldCircuit HoldKind = "circuit"
)

// Hold is one reason a client holds requests back, as another client of
// the same upstream found it (Config.OnHold).
type Hold struct {
	Kind  HoldKind
	Until time.Time
	// Cause is what refusals say meanwhile: "answered 429 Too Many
	// Requests", "circuit open after unreachable: connection refused".
	Cause string
}

// Hold holds the client back as another client of the same upstream found
// it should (Config.OnHold), as if the upstream had answered this one so.
// Requests meanwhile wait for Until within their deadline or are refused
// naming Cause, and the first after it goes as the probe. A hold that
// would end sooner than the one in place changes nothing; a circuit hold
// already over closes this client's circuit, unless its probe is out.
func (c *Client) Hold(h Hold) {
	switch h.Kind {
	case HoldRateLimit:
		c.gate.holdLimit(h.Until, h.Cause)
	case HoldCircuit:
		c.gate.holdCircuit(h.Until, h.Cause)
	}
}
