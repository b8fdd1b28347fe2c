package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/breakwater-registry/breakwater/upstream"
)

// upstreamError turns what the upstream client returned into the answer
// for the client: the one place where upstream failures become OCI
// errors. Missing and forbidden stay missing and forbidden, whatever is
// cached; a transient failure becomes the crafted 503; k says what was
// asked, for a 404's code.
func upstreamError(up *registry, err error, k kind) error {
	e, ok := upstream.AsError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			// A shared fetch ran out of its own time.
			return unavailable(up.Name(), "unreachable: i/o timeout", 0)
		}
		return err
	}
	msg := func(fallback string) string {
		if e.Message != "" {
			return fmt.Sprintf("upstream %s: %s", e.Upstream, e.Message)
		}
		return fmt.Sprintf("upstream %s: %s", e.Upstream, fallback)
	}
	switch {
	case e.Status == http.StatusNotFound:
		code := e.Code
		switch code {
		case CodeManifestUnknown, CodeBlobUnknown, CodeNameUnknown:
		default:
			code = map[kind]string{kindManifest: CodeManifestUnknown, kindBlob: CodeBlobUnknown}[k]
			if code == "" {
				code = CodeNameUnknown
			}
		}
		return errorf(http.StatusNotFound, code, "%s", msg("not found"))
	case e.Status == http.StatusUnauthorized:
		// Without a challenge: the credentials wanted are this mirror's
		// for the upstream, which no client can send here.
		unauthorized := errorf(http.StatusUnauthorized, CodeUnauthorized, "%s", msg("authentication required"))
		unauthorized.Reason = refusalReason(http.StatusUnauthorized, "upstream "+e.Upstream+" did not authorize this mirror's pull")
		return unauthorized
	case e.Status == http.StatusForbidden:
		denied := errorf(http.StatusForbidden, CodeDenied, "%s", msg("access denied"))
		denied.Reason = refusalReason(http.StatusForbidden, "upstream "+e.Upstream+" denied access")
		return denied
	case e.Transient && e.Misbehaved():
		return badUpstream(e.Upstream, e.Cause, e.RetryAfter)
	case e.Transient:
		return unavailable(e.Upstream, e.Cause, e.RetryAfter)
	}
	code := e.Code
	if code == "" {
		code = CodeUnknown
	}
	return errorf(e.Status, code, "%s", msg(e.Cause))
}

// refusalReason is a 401's or 403's status line naming who refused:
// containerd prints only the status line of a manifest HEAD, and "403
// Forbidden" or "401 Unauthorized" alone does not say whether the
// upstream or this mirror said no. The text is fixed, never the
// upstream's message or the repository's name: either could carry the
// transient marker and have the pod retried. The status's own text stays
// first, so that what matches "403 Forbidden" still does.
func refusalReason(status int, who string) string {
	return http.StatusText(status) + " (" + who + ")"
}

// isUnavailable reports an answer that says the upstream could not be
// asked, or did not answer as a registry does, not that it said no: the
// case for serving a cached tag instead.
func isUnavailable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}
