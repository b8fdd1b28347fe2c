package proxy_test

import (
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestRouting sends the same kinds of request the real runtimes send and
// checks which upstream received them under which repository name.
func TestRouting(t *testing.T) {
	hub := testupstream.Start(t)
	ghcr := testupstream.Start(t)
	m := newMirror(t, hub.URL, mirrorOpts{tagTTL: 0, extra: map[string]string{"ghcr.io": ghcr.URL}})
	img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	hub.PushImage(t, "library/alpine:v1", img)
	hub.PushImage(t, "team/tool:v1", img)
	ghcr.PushImage(t, "org/app:v1", img)
	ghcr.PushImage(t, "solo:v1", img)

	cases := []struct {
		name     string
		path     string
		wantUp   *testupstream.Upstream
		wantPath string // path the upstream must see
	}{
		{"dockerd mirror, official image", "/v2/library/alpine/manifests/v1", hub, "/v2/library/alpine/manifests/v1"},
		{"short official name", "/v2/alpine/manifests/v1", hub, "/v2/library/alpine/manifests/v1"},
		{"containerd ns", "/v2/library/alpine/manifests/v1?ns=docker.io", hub, "/v2/library/alpine/manifests/v1"},
		{"containerd ns, short name", "/v2/alpine/manifests/v1?ns=docker.io", hub, "/v2/library/alpine/manifests/v1"},
		{"user repo", "/v2/team/tool/manifests/v1", hub, "/v2/team/tool/manifests/v1"},
		{"host in path, docker.io", "/v2/docker.io/library/alpine/manifests/v1", hub, "/v2/library/alpine/manifests/v1"},
		{"host in path, index.docker.io alias", "/v2/index.docker.io/alpine/manifests/v1", hub, "/v2/library/alpine/manifests/v1"},
		{"containerd ns ghcr", "/v2/org/app/manifests/v1?ns=ghcr.io", ghcr, "/v2/org/app/manifests/v1"},
		{"host in path ghcr", "/v2/ghcr.io/org/app/manifests/v1", ghcr, "/v2/org/app/manifests/v1"},
		{"no library/ outside Docker Hub", "/v2/ghcr.io/solo/manifests/v1", ghcr, "/v2/solo/manifests/v1"},
		{"ns wins over a host-like first element", "/v2/org/app/manifests/v1?ns=ghcr.io", ghcr, "/v2/org/app/manifests/v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hub.Reset()
			ghcr.Reset()
			resp, body := m.get(tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if n := tc.wantUp.Count("", tc.wantPath); n == 0 {
				t.Errorf("upstream did not see %s", tc.wantPath)
			}
			other := hub
			if tc.wantUp == hub {
				other = ghcr
			}
			if n := other.Count("", "/manifests/"); n != 0 {
				t.Errorf("the other upstream saw %d manifest requests", n)
			}
		})
	}

	refused := []struct {
		name, path string
	}{
		{"unconfigured ns", "/v2/library/alpine/manifests/v1?ns=quay.io"},
		{"unconfigured host in path", "/v2/evil.example.com/x/manifests/v1"},
		{"host with port in path", "/v2/127.0.0.1:1/x/manifests/v1"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			hub.Reset()
			ghcr.Reset()
			resp, body := m.get(tc.path)
			if resp.StatusCode != http.StatusNotFound || errorCode(body) != "NAME_UNKNOWN" {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if !strings.Contains(string(body), "not an upstream of this mirror") {
				t.Errorf("message does not say why: %s", body)
			}
			if n := hub.Count("", "/") + ghcr.Count("", "/"); n != 0 {
				t.Errorf("a refused request reached an upstream (%d requests)", n)
			}
		})
	}
}

// TestBadInput sends malformed requests: each gets a precise OCI error, no
// upstream hears of it, and nothing is written to the cache.
func TestBadInput(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	good := "sha256:" + strings.Repeat("a", 64)
	cases := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantCode   string
	}{
		{"uppercase name", "GET", "/v2/Library/App/manifests/v1", 400, "NAME_INVALID"},
		{"name with ..", "GET", "/v2/library/../../etc/manifests/v1", 400, "NAME_INVALID"},
		{"encoded ..", "GET", "/v2/library/%2e%2e/%2e%2e/manifests/v1", 400, "NAME_INVALID"},
		{"encoded slash dot", "GET", "/v2/a%2F..%2F..%2Fb/manifests/v1", 400, "NAME_INVALID"},
		{"empty component", "GET", "/v2/library//app/manifests/v1", 400, "NAME_INVALID"},
		{"leading separator", "GET", "/v2/-app/manifests/v1", 400, "NAME_INVALID"},
		{"name too long", "GET", "/v2/" + strings.Repeat("a", 256) + "/manifests/v1", 400, "NAME_INVALID"},
		{"bad tag: no such manifest can exist", "GET", "/v2/library/app/manifests/-v1", 404, "MANIFEST_UNKNOWN"},
		{"bad tag on HEAD", "HEAD", "/v2/library/app/manifests/-v1", 404, ""},
		{"tag too long", "GET", "/v2/library/app/manifests/" + strings.Repeat("t", 129), 404, "MANIFEST_UNKNOWN"},
		{"bad manifest digest", "GET", "/v2/library/app/manifests/sha256:abc", 400, "DIGEST_INVALID"},
		{"bad blob digest", "GET", "/v2/library/app/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"uppercase hex", "GET", "/v2/library/app/blobs/sha256:" + strings.Repeat("A", 64), 400, "DIGEST_INVALID"},
		{"unknown algorithm", "GET", "/v2/library/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"},
		{"blob without digest", "GET", "/v2/library/app/blobs/latest", 400, "DIGEST_INVALID"},
		{"bad referrers digest", "GET", "/v2/library/app/referrers/nope", 400, "DIGEST_INVALID"},
		{"push manifest", "PUT", "/v2/library/app/manifests/v1", 405, "UNSUPPORTED"},
		{"delete manifest", "DELETE", "/v2/library/app/manifests/" + good, 405, "UNSUPPORTED"},
		{"start upload", "POST", "/v2/library/app/blobs/uploads/", 405, "UNSUPPORTED"},
		{"patch upload", "PATCH", "/v2/library/app/blobs/uploads/123", 405, "UNSUPPORTED"},
		{"delete blob", "DELETE", "/v2/library/app/blobs/" + good, 405, "UNSUPPORTED"},
		{"unknown endpoint", "GET", "/v2/library/app/unknown", 404, "UNSUPPORTED"},
		{"catalog", "GET", "/v2/_catalog", 404, "UNSUPPORTED"},
		{"outside /v2", "GET", "/etc/passwd", 404, "UNSUPPORTED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := m.do(tc.method, tc.path, nil)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if got := errorCode(body); got != tc.wantCode {
				t.Fatalf("code %q, want %q: %s", got, tc.wantCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.wantStatus == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", resp.Header.Get("Allow"))
			}
		})
	}
	if n := up.Count("", "/"); n != 0 {
		t.Errorf("bad requests reached the upstream: %d", n)
	}
	var files []string
	_ = filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("bad requests wrote to the cache: %v", files)
	}
}

// TestNotFoundStaysFatal: a missing image or blob answers 404 with the
// matching code, never a 503 a classifier would wait on.
func TestNotFoundStaysFatal(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/exists:v1", img)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.Contains(r.URL.Path, "hooked-name"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`))
			return true
		case strings.Contains(r.URL.Path, "hooked-bare"):
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		return false
	})
	cases := []struct {
		path, code string
	}{
		{"/v2/library/exists/manifests/v404", "MANIFEST_UNKNOWN"},
		// distribution answers a missing repository with MANIFEST_UNKNOWN;
		// the upstream's own code is relayed.
		{"/v2/library/nope/manifests/v1", "MANIFEST_UNKNOWN"},
		// Hooked below: an upstream that says NAME_UNKNOWN, and one that
		// says 404 with no body.
		{"/v2/library/hooked-name/manifests/v1", "NAME_UNKNOWN"},
		{"/v2/library/hooked-bare/blobs/sha256:" + strings.Repeat("1", 64), "BLOB_UNKNOWN"},
		{"/v2/library/exists/blobs/sha256:" + strings.Repeat("0", 64), "BLOB_UNKNOWN"},
	}
	for _, tc := range cases {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := m.do(method, tc.path, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s: status %d", method, tc.path, resp.StatusCode)
			}
			if method == http.MethodGet && errorCode(body) != tc.code {
				t.Errorf("%s %s: code %q, want %s (%s)", method, tc.path, errorCode(body), tc.code, body)
			}
		}
	}
}

// TestBaseAndHealth covers the version check and the liveness probe.
func TestBaseAndHealth(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	for _, path := range []string{"/v2/", "/v2"} {
		resp, body := m.get(path)
		if resp.StatusCode != 200 || string(body) != "{}" || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("%s: %d %q %v", path, resp.StatusCode, body, resp.Header)
		}
	}
	if resp, _ := m.get("/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	if n := up.Count("", "/"); n != 0 {
		t.Errorf("/v2/ went upstream")
	}
}

// TestTagTTL: within the TTL a tag is served without asking upstream; after
// it, a HEAD revalidates, and a moved tag is followed.
func TestTagTTL(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Hour})
	first := up.PushImage(t, "library/moving:v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
	resp, _ := m.get("/v2/library/moving/manifests/v1")
	if resp.Header.Get("Docker-Content-Digest") != first.String() {
		t.Fatal("first fetch")
	}
	second := up.PushImage(t, "library/moving:v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
	resp, _ = m.get("/v2/library/moving/manifests/v1")
	if got := resp.Header.Get("Docker-Content-Digest"); got != first.String() {
		t.Errorf("within the TTL: %s, want the cached %s", got, first)
	}
	if n := up.Count("", "/manifests/"); n != 0 {
		t.Errorf("within the TTL the upstream was asked %d times", n)
	}

	m0 := newMirror(t, up.URL, mirrorOpts{dir: m.dir, tagTTL: 0})
	resp, _ = m0.get("/v2/library/moving/manifests/v1")
	if got := resp.Header.Get("Docker-Content-Digest"); got != second.String() {
		t.Errorf("after the TTL: %s, want the moved %s", got, second)
	}
	up.Reset()
	resp, _ = m0.get("/v2/library/moving/manifests/v1")
	if got := resp.Header.Get("Docker-Content-Digest"); got != second.String() {
		t.Errorf("revalidated: %s", got)
	}
	if h, g := up.Count(http.MethodHead, "/manifests/v1"), up.Count(http.MethodGet, "/manifests/v1"); h != 1 || g != 0 {
		t.Errorf("revalidating an unchanged tag: %d HEADs, %d GETs; want 1 HEAD, no GET", h, g)
	}
}
