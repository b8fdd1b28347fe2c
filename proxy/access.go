package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Access decides who may pull what: the access package's *Policy. Without
// one (Options.Access nil) Breakwater is open: anyone who reaches it pulls
// whatever the upstreams' credentials can read.
type Access interface {
	// Realm is the realm of the Basic challenge.
	Realm() string
	// Authenticate checks an Authorization header value from client (an
	// IP): "" and no error without credentials, the user name with valid
	// ones. An error with a RetryAfter() time.Duration method is a login
	// refused for now without being checked (a rate limit).
	Authenticate(authorization, client string) (user string, err error)
	// AllowsAnonymous reports whether anything may be pulled without
	// credentials.
	AllowsAnonymous() bool
	// Allowed reports whether user ("" anonymous) may pull repo (as the
	// upstream names it, "library/alpine") from upstream (its configured
	// name).
	Allowed(user, upstream, repo string) bool
}

// identify authenticates the request's credentials, if any, and notes the
// user for the request's log line. With no Access everyone is anonymous.
// The error is the answer for bad credentials: 401 with the challenge,
// also while failed logins are being refused without being checked (with
// a Retry-After then). That is nearly always a client retrying a wrong
// password, which no retry fixes, and a 429 would have classifiers wait
// for it.
func (s *Server) identify(r *http.Request) (string, error) {
	if s.access == nil {
		return "", nil
	}
	user, err := s.access.Authenticate(r.Header.Get("Authorization"), clientIP(r))
	if err != nil {
		// The client is told no more than that its credentials failed; why
		// (unknown user, wrong password) goes to the log.
		e := s.challenge("invalid user name or password")
		var limited interface{ RetryAfter() time.Duration }
		if errors.As(err, &limited) {
			e.RetryAfter = ceilSeconds(limited.RetryAfter())
			e.Message += fmt.Sprintf(" (too many failed logins: not checked again for %ds)", e.RetryAfter)
		}
		return "", fmt.Errorf("%w (%v)", e, err)
	}
	requestInfoFrom(r).user = user
	return user, nil
}

// requireUser is identify for endpoints that need a user whatever the
// access list grants anonymously: the registry's version check (so that
// clients learn the challenge and send their credentials), the status page
// and the warm API.
func (s *Server) requireUser(r *http.Request) error {
	user, err := s.identify(r)
	if err == nil && user == "" && s.access != nil {
		err = s.challenge("authentication required")
	}
	return err
}

// challenge is the 401 that asks for Basic credentials.
func (s *Server) challenge(msg string) *Error {
	e := errorf(http.StatusUnauthorized, CodeUnauthorized, "%s", msg)
	e.Challenge = fmt.Sprintf("Basic realm=%q", s.access.Realm())
	return e
}

// authorize decides a pull request once its upstream and repository are
// known, before the cache or the upstream is asked anything, so that a
// client refused learns nothing of what is cached or exists: the answer
// and the work done are the same whatever the repository holds.
// Anonymous requests that are refused get the challenge, so that a client
// with credentials sends them; users get 403 DENIED.
func (s *Server) authorize(user string, t *target) error {
	if s.access == nil || s.access.Allowed(user, t.upstream.Name(), t.repo) {
		return nil
	}
	if user == "" {
		return s.challenge("authentication required")
	}
	e := errorf(http.StatusForbidden, CodeDenied, "requested access to the resource is denied: user %q may not pull %s/%s",
		user, t.upstream.Name(), t.repo)
	e.Reason = refusalReason(http.StatusForbidden, "this mirror's access list does not grant the pull")
	return e
}

// clientIP is the address the request came from, without its port: failed
// logins are limited per address. Behind a proxy or load balancer this is
// the proxy's address.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// pullCheckKey carries, in the context of a warm API request, the check of
// the user's access to an image.
type pullCheckKey struct{}

// CheckPull tells a handler Breakwater passes a request to (the warm API)
// whether the request's user may pull repo ("library/alpine") from the
// registry clients call host ("docker.io"): nil when they may, or when
// Breakwater has no access list; a 403 DENIED *Error when not. A host that
// is not an upstream is not refused here: pulling from it fails anyway.
func CheckPull(ctx context.Context, host, repo string) error {
	if check, ok := ctx.Value(pullCheckKey{}).(func(host, repo string) error); ok {
		return check(host, repo)
	}
	return nil
}

// withPullCheck gives the request's context the user's CheckPull.
func (s *Server) withPullCheck(r *http.Request, user string) *http.Request {
	check := func(host, repo string) error {
		up, err := s.upstreamFor(host)
		if err != nil {
			return nil
		}
		return s.authorize(user, &target{upstream: up, repo: dockerHubName(up, strings.ToLower(repo))})
	}
	return r.WithContext(context.WithValue(r.Context(), pullCheckKey{}, check))
}
