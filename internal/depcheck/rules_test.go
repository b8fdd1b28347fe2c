package depcheck

import (
	"testing"
)

const module = "github.com/breakwater-registry/breakwater"

// TestLayering enforces the design's import rules: classify stands alone
// so that anyone can import it; storage knows nothing of HTTP; the
// upstream client knows nothing of the proxy that uses it; access, which
// decides who may pull what, knows nothing of HTTP (so that config can use
// it), of the proxy, the cache or the upstreams; the binary links none of
// the helpers that start real servers for tests; the object store the
// replicas of a fleet share knows nothing of the cache or the proxy.
func TestLayering(t *testing.T) {
	rules := []struct {
		pkg    string
		why    string
		forbid []string
	}{
		{module + "/classify", "others must be able to import it alone", []string{module + "/..."}},
		{module + "/storage", "the cache knows nothing of HTTP", []string{
			"net/http", module + "/proxy", module + "/upstream", module + "/auth", module + "/cmd/...",
		}},
		{module + "/upstream", "the client knows nothing of the proxy", []string{
			module + "/proxy", module + "/storage", module + "/cmd/...", module + "/warm",
		}},
		{module + "/config", "configuration is data", []string{"net/http", module + "/proxy", module + "/upstream"}},
		{module + "/internal/tlsserver", "it has one job, the listener's TLS configuration", []string{module + "/..."}},
		{module + "/access", "who may pull what, whoever asks: it knows nothing of the proxy, the cache or the upstreams", []string{
			"net/http", module + "/proxy", module + "/storage", module + "/upstream", module + "/cmd/...",
		}},
		{module + "/objstore", "the object store knows nothing of the cache or the proxy", []string{
			module + "/proxy", module + "/storage", module + "/upstream", module + "/cmd/...",
		}},
		{module + "/cmd/breakwater", "the helpers that start test servers are for tests, not the binary", []string{
			"testing", module + "/internal/testproc", module + "/internal/tests3", module + "/internal/testredis", module + "/internal/testdistribution",
		}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			bad, err := Forbidden(r.pkg, r.forbid...)
			if err != nil {
				t.Fatal(err)
			}
			if len(bad) > 0 {
				t.Errorf("%s depends on %v (%s)", r.pkg, bad, r.why)
			}
		})
	}
}

// TestForbiddenSeesIndirectImports: a rule catches a package imported
// through another, and a prefix rule matches what is under it, so the
// rules above cannot pass by looking only at direct imports.
func TestForbiddenSeesIndirectImports(t *testing.T) {
	// proxy imports upstream, which imports go-containerregistry's
	// transport, which imports net/http.
	bad, err := Forbidden(module+"/proxy", "github.com/google/go-containerregistry/pkg/v1/remote/transport", module+"/...")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"github.com/google/go-containerregistry/pkg/v1/remote/transport": false,
		module + "/upstream": false, module + "/storage": false, module + "/classify": false,
	}
	for _, b := range bad {
		if _, ok := want[b]; ok {
			want[b] = true
		}
	}
	for p, seen := range want {
		if !seen {
			t.Errorf("Forbidden(proxy) missed %s (got %v)", p, bad)
		}
	}
	for _, tc := range []struct {
		path, rule string
		want       bool
	}{
		{module + "/cmd/breakwater", module + "/cmd/...", true},
		{module + "/cmd", module + "/cmd/...", true},
		{module + "/cmdx", module + "/cmd/...", false},
		{"net/http", "net/http", true},
		{"net/http/httptrace", "net/http", false},
	} {
		if got := matches(tc.path, tc.rule); got != tc.want {
			t.Errorf("matches(%q, %q) = %v", tc.path, tc.rule, got)
		}
	}
}
