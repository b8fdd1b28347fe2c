package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
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
	if e.Status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
