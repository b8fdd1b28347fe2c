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
	remaining, _, ok := dockerHubRemaining(h)
	if !ok {
		return
	}
	limit, _, _ := parseRateLimitHeader(h.Get("Ratelimit-Limit"))
	r.limit.Store(limit)
	if old := r.remaining.Swap(remaining); old != remaining {
		c.log.Debug("upstream rate limit", "upstream", c.name, "remaining", remaining, "limit", limit)
	}
	low := limit > 0 && remaining*10 <= limit
	if was := r.low.Swap(low); was != low {
		if low {
			c.log.Warn("upstream rate limit running low", "upstream", c.name, "remaining", remaining, "limit", limit)
		} else {
			c.log.Info("upstream rate limit recovered", "upstream", c.name, "remaining", remaining, "limit", limit)
		}
	}
}

// RateLimitRemaining returns the pulls left as the upstream last said, or
// -1 when it never said.
func (c *Client) RateLimitRemaining() int64 { return c.limits.remaining.Load() }

// HoldRateLimit holds the client back until until, as if the upstream had
// answered it with cause (e.g. "answered 429 Too Many Requests"): another
// client of the same upstream met the limit (Config.OnRateLimit). Requests
// meanwhile wait for until within their deadline or are refused naming
// cause, and the first after it goes as the probe. A hold that would end
// sooner than the one in place changes nothing.
func (c *Client) HoldRateLimit(until time.Time, cause string) {
	c.gate.holdLimit(until, cause)
}
