package proxy

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/storage"
)

// newRouteBenchServer builds a Server the way the proxy_test harness's
// newMirror does, in front of a docker.io and a ghcr.io upstream as
// TestRouting has them. The harness itself lives in package proxy_test and
// parseTarget is unexported, so the few lines of New are repeated here.
// Routing never contacts an upstream.
func newRouteBenchServer(b *testing.B) *Server {
	b.Helper()
	hub := testupstream.Start(b)
	ghcr := testupstream.Start(b)
	store, err := storage.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Options{
		Store: store,
		Upstreams: []UpstreamConfig{
			{Name: "docker.io", URL: hub.URL},
			{Name: "ghcr.io", URL: ghcr.URL},
		},
		DefaultUpstream: "docker.io",
		Version:         "bench",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// BenchmarkParseTarget measures turning a pull API path and its ns query
// into a target, as handlePull does before any cache lookup.
func BenchmarkParseTarget(b *testing.B) {
	s := newRouteBenchServer(b)
	blob := digest.FromString("a layer")
	cases := []struct {
		name string
		path string
		// For accepted paths: the target parseTarget must return.
		upstream string
		repo     string
		kind     kind
		ref      string
		// For rejected paths: the error it must return.
		status int
		code   string
	}{
		{name: "hub-short", path: "/v2/alpine/manifests/latest",
			upstream: "docker.io", repo: "library/alpine", kind: kindManifest, ref: "latest"},
		{name: "ns-query", path: "/v2/library/alpine/manifests/latest?ns=docker.io",
			upstream: "docker.io", repo: "library/alpine", kind: kindManifest, ref: "latest"},
		{name: "host-in-path", path: "/v2/ghcr.io/org/app/manifests/v1",
			upstream: "ghcr.io", repo: "org/app", kind: kindManifest, ref: "v1"},
		{name: "blob-digest", path: "/v2/library/app/blobs/" + blob.String(),
			upstream: "docker.io", repo: "library/app", kind: kindBlob, ref: blob.String()},
		{name: "deep-name", path: "/v2/ghcr.io/org/team/platform/services/backend/api-gateway/manifests/v1.2.3",
			upstream: "ghcr.io", repo: "org/team/platform/services/backend/api-gateway", kind: kindManifest, ref: "v1.2.3"},
		{name: "malformed", path: "/v2/Library/App/manifests/v1",
			status: http.StatusBadRequest, code: CodeNameInvalid},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			// Check the result once, so that a broken router cannot
			// produce a fast, meaningless number.
			t, err := s.parseTarget(r, strings.TrimPrefix(r.URL.Path, "/v2/"))
			if tc.code != "" {
				var e *Error
				if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code {
					b.Fatalf("parseTarget(%s) = %+v, %v; want %d %s", tc.path, t, err, tc.status, tc.code)
				}
			} else {
				if err != nil {
					b.Fatalf("parseTarget(%s): %v", tc.path, err)
				}
				if t.upstream.Name() != tc.upstream || t.repo != tc.repo || t.kind != tc.kind || t.ref != tc.ref {
					b.Fatalf("parseTarget(%s) = %s %s %s %s; want %s %s %s %s", tc.path,
						t.upstream.Name(), t.repo, t.kind, t.ref, tc.upstream, tc.repo, tc.kind, tc.ref)
				}
				if tc.kind == kindBlob && t.dgst != blob {
					b.Fatalf("parseTarget(%s): digest %s, want %s", tc.path, t.dgst, blob)
				}
			}

			b.ReportAllocs()
			for b.Loop() {
				_, _ = s.parseTarget(r, strings.TrimPrefix(r.URL.Path, "/v2/"))
			}
		})
	}
}
