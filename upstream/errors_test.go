package upstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestErrorText(t *testing.T) {
	const crafted = "Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)"
	cases := []struct {
		name string
		e    Error
		want string
	}{
		{"standard phrase", Error{Status: 404, StatusLine: "404 Not Found", Cause: statusCause(404), Code: "MANIFEST_UNKNOWN", Message: "manifest unknown"},
			"upstream docker.io: GET /v2/library/app/manifests/v1: answered 404 Not Found: MANIFEST_UNKNOWN: manifest unknown"},
		{"no status line", Error{Status: 404, Cause: statusCause(404)},
			"upstream docker.io: GET /v2/library/app/manifests/v1: answered 404 Not Found"},
		{"a mirror's phrase, no body", Error{Status: 503, StatusLine: "503 " + crafted, Cause: statusCause(503), RetryAfter: 10 * time.Second},
			"upstream docker.io: GET /v2/library/app/manifests/v1: answered 503 " + crafted},
		{"a mirror's phrase, repeated in the body", Error{Status: 503, StatusLine: "503 " + crafted, Cause: statusCause(503), Code: "UNAVAILABLE", Message: crafted},
			"upstream docker.io: GET /v2/library/app/manifests/v1: answered 503 " + crafted + ": UNAVAILABLE"},
		{"a phrase of its own", Error{Status: 503, StatusLine: "503 Backend\x01Down", Cause: statusCause(503), RetryAfter: 5 * time.Second},
			"upstream docker.io: GET /v2/library/app/manifests/v1: answered 503 Service Unavailable (Backend Down) (retry after 5s)"},
		{"unreachable", Error{Cause: "unreachable: connection refused", Transient: true},
			"upstream docker.io: GET /v2/library/app/manifests/v1: unreachable: connection refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.e.Upstream, c.e.Method, c.e.Path = "docker.io", "GET", "/v2/library/app/manifests/v1"
			if got := c.e.Error(); got != c.want {
				t.Errorf("Error() =\n  %s\nwant\n  %s", got, c.want)
			}
		})
	}
}

// TestNetworkCause: a failure to reach the upstream is named in the
// spelling runtimes and classifiers know, however deep net/http wrapped
// it; with no network at all a lookup says "no such host".
func TestNetworkCause(t *testing.T) {
	// What http.Client.Do returns when the dial fails.
	dial := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://registry-1.docker.io/v2/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: err}}
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"refused", dial(os.NewSyscallError("connect", syscall.ECONNREFUSED)), "connection refused"},
		{"reset", &url.Error{Op: "Get", Err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}, "connection reset by peer"},
		{"no such host", dial(&net.DNSError{Err: "no such host", Name: "registry-1.docker.io", IsNotFound: true}), "no such host"},
		{"lookup timed out", dial(&net.DNSError{Err: "i/o timeout", Name: "registry-1.docker.io", IsTimeout: true}), "i/o timeout"},
		{"lookup failed", dial(&net.DNSError{Err: "server misbehaving", Name: "registry-1.docker.io"}), "no such host"},
		{"dial timed out", dial(os.NewSyscallError("connect", syscall.ETIMEDOUT)), "i/o timeout"},
		{"deadline", fmt.Errorf("GET docker.io/v2/: %w", errDeadline), "i/o timeout"},
		{"stalled body", fmt.Errorf("read: %w", ErrStalled), "i/o timeout"},
		{"cut off", &url.Error{Op: "Get", Err: io.ErrUnexpectedEOF}, "unexpected EOF"},
		{"closed", &url.Error{Op: "Get", Err: io.EOF}, "unexpected EOF"},
		{"anything else", errors.New("tls: handshake failure"), "connection failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := networkCause(c.err); got != c.want {
				t.Errorf("networkCause(%v) = %q, want %q", c.err, got, c.want)
			}
		})
	}
}
