package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
)

// rateLimit is what Docker Hub last said of the pull rate limit:
// "ratelimit-limit: 100;w=21600" and "ratelimit-remaining: 76;w=21600".
type rateLimit struct {
	remaining atomic.Int64 // -1 until the upstream says
	limit     atomic.Int64
	low       atomic.Bool // remaining is at or below a tenth of limit
}

// parseRateLimitHeader reads the count before any ";w=" window.
func parseRateLimitHeader(v string) (int64, bool) {
	v, _, _ = strings.Cut(v, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n, err == nil && n >= 0
}

// noteRateLimit records the rate-limit headers of an answer and logs when
// the remaining pulls run low, and when they recover.
func (u *upstream) noteRateLimit(h http.Header) {
	remaining, ok := parseRateLimitHeader(h.Get("Ratelimit-Remaining"))
	if !ok {
		return
	}
	limit, _ := parseRateLimitHeader(h.Get("Ratelimit-Limit"))
	u.rateLimit.limit.Store(limit)
	if old := u.rateLimit.remaining.Swap(remaining); old != remaining {
		u.log.Debug("upstream rate limit", "upstream", u.name, "remaining", remaining, "limit", limit)
	}
	low := limit > 0 && remaining*10 <= limit
	if was := u.rateLimit.low.Swap(low); was != low {
		if low {
			u.log.Warn("upstream rate limit running low: serving cached tags without revalidation",
				"upstream", u.name, "remaining", remaining, "limit", limit)
		} else {
			u.log.Info("upstream rate limit recovered", "upstream", u.name, "remaining", remaining, "limit", limit)
		}
	}
}

// rateLimitRemaining returns the pulls left, or -1 when unknown.
func (u *upstream) rateLimitRemaining() int64 { return u.rateLimit.remaining.Load() }
