package classify

import (
	"fmt"
	"strings"
	"time"
)

// Marker is the fixed token in every 503 that Breakwater crafts when it
// cannot serve for a transient reason. The breakwater-503 rule keys on it.
const Marker = "breakwater-transient"

// The causes a crafted 503 names, each in the upstream's own standard
// spelling so that classifiers which know nothing of Breakwater still
// recognise it: Flyte looks for "429 Too Many Requests", Airflow for
// "service unavailable", "bad gateway" and "gateway timeout".
const (
	CauseTooManyRequests     = "answered 429 Too Many Requests"
	CauseInternalServerError = "answered 500 Internal Server Error"
	CauseBadGateway          = "answered 502 Bad Gateway"
	CauseServiceUnavailable  = "answered 503 Service Unavailable"
	CauseGatewayTimeout      = "answered 504 Gateway Timeout"
	CauseRequestTimeout      = "answered 408 Request Timeout"
	CauseConnectionRefused   = "unreachable: connection refused"
	CauseConnectionReset     = "unreachable: connection reset by peer"
	CauseTimeout             = "unreachable: i/o timeout"
	CauseNoSuchHost          = "unreachable: no such host"
	CauseCircuitOpen         = "circuit open"
)

// TransientMessage returns the text Breakwater puts both in the reason phrase
// of its 503 status line and in the OCI error body's message:
//
//	Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)
//
// The phrase is the only channel on containerd's manifest path (a HEAD has no
// body), and runtimes print it verbatim after "503". retryAfter is rounded up
// to whole seconds, as in a Retry-After header. Control characters in
// upstream and cause are dropped so the result is safe in a status line.
func TransientMessage(upstream, cause string, retryAfter time.Duration) string {
	return TransientPhrase("Service Unavailable", upstream, cause, retryAfter)
}

// TransientPhrase is TransientMessage for a status other than 503, whose
// standard reason phrase is reason: "Bad Gateway" when the upstream gave
// an answer no registry gives.
func TransientPhrase(reason, upstream, cause string, retryAfter time.Duration) string {
	secs := int64(0)
	if retryAfter > 0 {
		secs = int64(retryAfter / time.Second)
		if retryAfter%time.Second != 0 {
			secs++
		}
	}
	return fmt.Sprintf("%s (%s: upstream %s %s; retry after %ds)",
		printable(reason), Marker, printable(upstream), printable(cause), secs)
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
