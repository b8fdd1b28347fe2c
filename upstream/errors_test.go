package upstream

import (
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
