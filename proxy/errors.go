package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// OCI distribution error codes Breakwater answers with.
const (
	CodeBlobUnknown       = "BLOB_UNKNOWN"
	CodeDigestInvalid     = "DIGEST_INVALID"
	CodeManifestUnknown   = "MANIFEST_UNKNOWN"
	CodeManifestInvalid   = "MANIFEST_INVALID"
	CodeNameInvalid       = "NAME_INVALID"
	CodeNameUnknown       = "NAME_UNKNOWN"
	CodePaginationInvalid = "PAGINATION_NUMBER_INVALID"
	CodeRangeInvalid      = "RANGE_INVALID"
	CodeUnauthorized      = "UNAUTHORIZED"
	CodeDenied            = "DENIED"
	CodeUnsupported       = "UNSUPPORTED"
	CodeTooManyRequests   = "TOOMANYREQUESTS"
	CodeUnavailable       = "UNAVAILABLE"
	CodeUnknown           = "UNKNOWN"
)

// Error is an answer in the OCI error format: a status and one error entry.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when positive, is sent as the Retry-After header (seconds).
	RetryAfter int
	// Reason, when set, is the status line's reason phrase instead of the
	// standard one: the crafted answers for the pod, which runtimes print
	// from there (containerd's manifest HEAD has nothing else).
	Reason string
	// Transient marks an answer that says the upstream could not be asked,
	// or did not answer as a registry does, not that it said no.
	Transient bool
	// Challenge, when set, is sent as WWW-Authenticate: the 401 that
	// tells a client which credentials to send.
	Challenge string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers with err as an OCI error. Errors that are not *Error
// are internal faults: the client gets a generic 500 and the cause is left
// for the request log.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = errorf(http.StatusInternalServerError, CodeUnknown, "internal error")
	}
	noteError(r, err)
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message}}})
	h := w.Header()
	// Headers set for a success that did not happen must not leak into the
	// error answer.
	for _, k := range []string{"Docker-Content-Digest", "Etag", "Accept-Ranges", "Last-Modified", "Cache-Control"} {
		h.Del(k)
	}
	if e.Status != http.StatusRequestedRangeNotSatisfiable {
		h.Del("Content-Range") // a 416 says the blob's size here
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Challenge != "" {
		h.Set("WWW-Authenticate", e.Challenge)
	}
	if e.Status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	if e.Reason != "" && writeWithReason(w, r, e.Status, e.Reason, body) {
		return
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// writeWithReason answers with a custom HTTP reason phrase. Runtimes print a
// mirror's status line but not its body (and a HEAD has none), so the
// crafted 503 text must travel in the status line to reach the pod; see
// docs/design.md. net/http always writes the standard phrase, so this takes the
// connection and writes the answer itself, then closes the connection. It
// reports false when the connection cannot be taken (HTTP/2, where there is
// no reason phrase and the body must carry the message).
func writeWithReason(w http.ResponseWriter, r *http.Request, status int, reason string, body []byte) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	h := w.Header().Clone()
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, reasonPhrase(reason))
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, reasonPhrase(v))
		}
	}
	b.WriteString("\r\n")
	if r.Method != http.MethodHead {
		b.Write(body)
	}
	info := requestInfoFrom(r)
	info.wroteAt = time.Now()
	writeAll(rw.Writer, b.String())
	info.status = status
	if r.Method != http.MethodHead {
		info.bytes = int64(len(body))
	}
	return true
}

func writeAll(w *bufio.Writer, s string) {
	_, _ = w.WriteString(s)
	_ = w.Flush()
}

// reasonPhrase keeps only what HTTP allows in a status line or header
// value: no CR, LF or other control characters.
func reasonPhrase(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
