package proxy

import (
	"fmt"
	"net/http"
)

// TransientMarker is the fixed text in every 503 Breakwater answers because
// an upstream is unavailable. Classifiers key on it (see package classify).
const TransientMarker = "breakwater-transient"

// defaultRetryAfter is the retry hint when the upstream gave none.
const defaultRetryAfter = 10

// unavailable is the answer when an upstream could not be used for a
// transient reason and nothing usable is cached. The message is built to
// survive the trip to the pod: runtimes print only the status line, so the
// same text is meant to travel as the reason phrase (see DESIGN.md):
//
//	Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)
func unavailable(upstream, cause string, retryAfterSecs int) *Error {
	if retryAfterSecs <= 0 {
		retryAfterSecs = defaultRetryAfter
	}
	return &Error{
		Status:     http.StatusServiceUnavailable,
		Code:       CodeUnavailable,
		Message:    fmt.Sprintf("Service Unavailable (%s: upstream %s %s; retry after %ds)", TransientMarker, upstream, cause, retryAfterSecs),
		RetryAfter: retryAfterSecs,
	}
}
