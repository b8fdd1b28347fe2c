package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Error is a request the upstream did not answer with success: a status it
// sent (404, 401, 503 after the retries…), a failure to reach it, or a
// refusal to ask it at all because its circuit is open or it is rate
// limited. It carries what a caller needs to answer its own client: the
// status, the upstream's own error code and message, the cause in the
// standard spelling runtimes and classifiers know, and when to try again.
type Error struct {
	// Upstream is the registry as clients name it ("docker.io").
	Upstream string
	// Method and Path are the request ("GET", "/v2/library/x/manifests/v1").
	Method, Path string
	// Status is the HTTP status the upstream answered; 0 when it did not
	// answer (unreachable, circuit open, rate limited without asking).
	Status int
	// StatusLine is the status as received, reason phrase included
	// ("503 Service Unavailable (breakwater-transient: …)" from a mirror).
	StatusLine string
	// Code and Message are the first OCI error of the upstream's body.
	Code, Message string
	// Cause says what went wrong in the words runtimes and classifiers
	// know: "answered 503 Service Unavailable", "unreachable: connection
	// refused", "circuit open after 503 Service Unavailable".
	Cause string
	// Transient reports that asking again later may succeed: 5xx, 429,
	// 408, unreachable, circuit open. 404, 401, 403 and other 4xx are not.
	Transient bool
	// RetryAfter is when to ask again, as the upstream said or the
	// circuit or rate limit knows; 0 when nobody knows.
	RetryAfter time.Duration
	// Err is the underlying failure, if any: a network error,
	// ErrCircuitOpen or ErrRateLimited.
	Err error
}

// ErrCircuitOpen, ErrRateLimited and ErrBusy are the Err of a request that
// was not sent because the upstream is known to be down, has asked to be
// left alone, or already has max_concurrent requests from this mirror in
// flight until the request's deadline.
var (
	ErrCircuitOpen = errors.New("circuit open")
	ErrRateLimited = errors.New("rate limited")
	ErrBusy        = errors.New("every max_concurrent slot in use")
)

func (e *Error) Error() string {
	var b strings.Builder
	said := e.said()
	fmt.Fprintf(&b, "upstream %s: %s %s: %s", e.Upstream, e.Method, e.Path, said)
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	// A mirror repeats its reason phrase in the body; once is enough.
	if e.Message != "" && !strings.Contains(said, e.Message) {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	// A Breakwater's phrase says when already, from the same Retry-After.
	if e.RetryAfter > 0 && !strings.Contains(said, "retry after") {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter.Round(time.Second))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// said is the cause, followed by the upstream's reason phrase when that is
// not the standard one. A Breakwater in front says why it could not answer
// only there ("503 Service Unavailable (breakwater-transient: upstream
// docker.io answered 429 Too Many Requests; retry after 10s)"), and a HEAD
// has no body to say it in.
func (e *Error) said() string {
	std := strconv.Itoa(e.Status) + " " + statusText(e.Status)
	if e.Status == 0 || e.StatusLine == "" || e.StatusLine == std {
		return e.Cause
	}
	line := OneLine(e.StatusLine, 300)
	if rest, ok := strings.CutPrefix(line, std); ok {
		return e.Cause + rest
	}
	_, reason, _ := strings.Cut(line, " ")
	return e.Cause + " (" + reason + ")"
}

// AsError returns err as an *Error, if it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// outcome is what one try says about the upstream.
type outcome int

const (
	// answered: the upstream answered and is up, whatever it said.
	answered outcome = iota
	// down: refused, reset, timed out, 502/503/504. This is what the
	// circuit breaker counts.
	down
	// rateLimited: 429. The upstream is up and said when to come back.
	rateLimited
	// troubled: 500 or 408: worth another try, but one request's trouble,
	// not a sign the registry is down.
	troubled
	// unheard: our own deadline ended the try after the request had
	// waited, before the upstream had a whole try's time: nothing is
	// known of it.
	unheard
)

func (o outcome) transient() bool { return o != answered }

// classifyStatus says what an answer that is not the success asked for
// tells of the upstream.
func classifyStatus(s int) outcome {
	switch {
	case !validStatus(s):
		// Not HTTP: a broken upstream, or something in front of it.
		return troubled
	case s == http.StatusTooManyRequests:
		return rateLimited
	case s == http.StatusBadGateway || s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout:
		return down
	case s == http.StatusRequestTimeout || s >= 500:
		return troubled
	case s < 400:
		// An informational answer, a success without the content (204),
		// or a redirect that was not followed (304, 300): no content
		// where content was asked for. Worth another try, like a 500.
		return troubled
	}
	return answered
}

func validStatus(s int) bool { return s >= 100 && s <= 599 }

// statusCause is "answered 503 Service Unavailable", in the standard
// spelling; a status that is not an error, or not HTTP at all, says so.
func statusCause(s int) string {
	switch {
	case !validStatus(s):
		return fmt.Sprintf("answered invalid status %d", s)
	case s < 400:
		return fmt.Sprintf("answered %d %s instead of the content", s, statusText(s))
	}
	return fmt.Sprintf("answered %d %s", s, statusText(s))
}

func statusText(s int) string {
	if t := http.StatusText(s); t != "" {
		return t
	}
	return "(unnamed status)"
}

// Misbehaved reports an answer that is not one a registry gives: a status
// outside 100-599, or one below 400 where content was asked for. Such an
// upstream is at fault, not the request: a proxy answers 502.
func (e *Error) Misbehaved() bool {
	return e.Status != 0 && (!validStatus(e.Status) || e.Status < 400)
}

// shortCause is the cause without its verb, as "circuit open after …"
// names it: "503 Service Unavailable", "connection refused".
func shortCause(cause string) string {
	for _, p := range []string{"answered ", "unreachable: "} {
		if rest, ok := strings.CutPrefix(cause, p); ok {
			return rest
		}
	}
	return cause
}

// networkCause names a transport failure in the standard spelling that
// runtimes and classifiers know.
func networkCause(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, ErrStalled), isTimeout(err):
		return "i/o timeout"
	case errors.As(err, &dnsErr):
		return "no such host"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected EOF"
	}
	return "connection failed"
}

// NetworkCause names the failure of reading an answer's body, for callers
// that read bodies themselves (a blob cut off half way).
func NetworkCause(err error) string { return networkCause(err) }

// ErrStalled reports a body that sent nothing for the attempt timeout.
var ErrStalled = errors.New("i/o timeout: upstream body stalled")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retryAfter reads Retry-After as seconds or an HTTP date; 0 when absent,
// unreadable or in the past.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	// A number too large for int64 still says "much later": ParseInt
	// returns it as the largest int64, which the clamp takes.
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs <= 0 {
			return 0
		}
		// Beyond any cap a caller would apply, and safe from overflow.
		return time.Duration(min(secs, 1<<31)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// readErrorBody extracts the first OCI error's code and message, if the
// body is one. It reads at most 64 KiB.
func readErrorBody(r io.Reader) (code, message string) {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&body); err != nil || len(body.Errors) == 0 {
		return "", ""
	}
	return OneLine(body.Errors[0].Code, 64), OneLine(body.Errors[0].Message, 200)
}

// OneLine makes upstream text safe to repeat in a header or log: no
// control characters, at most max bytes of valid UTF-8.
func OneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return strings.TrimSpace(s)
}

// handshakeStatus returns the HTTP status the ping or token exchange was
// answered with, 0 if it got none.
func handshakeStatus(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}
