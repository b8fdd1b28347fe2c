package proxy

import (
	"net/http"
	"time"

	"github.com/breakwater-registry/breakwater/classify"
)

// defaultRetryAfter is the retry hint when nobody knows better: the
// upstream gave none and no breaker or rate limit says when.
const defaultRetryAfter = 10 * time.Second

// unavailable is the answer when an upstream could not be used for a
// transient reason and nothing usable is cached. The message is the one
// classify recognises (classify.TransientMessage); writeError also puts it
// in the status line, the only text runtimes show the pod:
//
//	Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)
//	Service Unavailable (breakwater-transient: upstream docker.io circuit open after 503 Service Unavailable; retry after 2s)
func unavailable(upstream, cause string, retryAfter time.Duration) *Error {
	return transientError(http.StatusServiceUnavailable, CodeUnavailable, upstream, cause, retryAfter)
}

// badUpstream is the answer when the upstream gave an answer no registry
// gives (a status outside 100-599, a 204 or 304 where content was asked
// for): 502, with the same crafted phrase, since asking again may get a
// better one.
func badUpstream(upstream, cause string, retryAfter time.Duration) *Error {
	return transientError(http.StatusBadGateway, CodeUnknown, upstream, cause, retryAfter)
}

func transientError(status int, code, upstream, cause string, retryAfter time.Duration) *Error {
	if retryAfter <= 0 {
		retryAfter = defaultRetryAfter
	}
	// Whole seconds, rounded up, the same in the header and the text.
	secs := int((retryAfter + time.Second - 1) / time.Second)
	msg := classify.TransientPhrase(http.StatusText(status), upstream, cause, time.Duration(secs)*time.Second)
	return &Error{
		Status:     status,
		Code:       code,
		Message:    msg,
		Reason:     msg,
		RetryAfter: secs,
		Transient:  true,
	}
}
