package proxy

import (
	"net/http"
	"time"

	"github.com/breakwater-registry/breakwater/classify"
)

// defaultRetryAfter is the retry hint, in seconds, when the upstream gave none.
const defaultRetryAfter = 10

// unavailable is the answer when an upstream could not be used for a
// transient reason and nothing usable is cached. The message is the one
// classify recognises (classify.TransientMessage); writeError also puts it
// in the status line, the only text runtimes show the pod:
//
//	Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)
func unavailable(upstream, cause string, retryAfterSecs int) *Error {
	if retryAfterSecs <= 0 {
		retryAfterSecs = defaultRetryAfter
	}
	return &Error{
		Status:     http.StatusServiceUnavailable,
		Code:       CodeUnavailable,
		Message:    classify.TransientMessage(upstream, cause, time.Duration(retryAfterSecs)*time.Second),
		RetryAfter: retryAfterSecs,
	}
}
