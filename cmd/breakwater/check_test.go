package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/imagecheck"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// oneTry is the upstream policy of the mirrors these tests run: one try,
// so that a failing upstream answers at once.
var oneTry = upstream.Policy{Retry: upstream.Retry{Attempts: 1}}

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "breakwater.yaml", yaml)
}

// writeFile writes content to dir/name, readable by its owner only (as
// secrets are), and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// oneTryConfig makes check ask each upstream once, so that a failing one
// is judged at once rather than after the default 20s of retries.
const oneTryConfig = "resilience:\n  retry:\n    attempts: 1\n"

// startCheckMirror runs a Breakwater with the given upstreams (name to URL)
// and returns its URL.
func startCheckMirror(t *testing.T, upstreams map[string]string) string {
	t.Helper()
	store, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var ups []proxy.UpstreamConfig
	for name, url := range upstreams {
		ups = append(ups, proxy.UpstreamConfig{Name: name, URL: url, Policy: oneTry})
	}
	srv, err := proxy.New(proxy.Options{Store: store, DefaultUpstream: "docker.io", Logger: slog.New(slog.DiscardHandler), Upstreams: ups})
	if err != nil {
		t.Fatal(err)
	}
	mirror := httptest.NewServer(srv)
	t.Cleanup(func() { mirror.Close(); srv.Close() })
	return mirror.URL
}

// downServer answers 503 to everything and counts what it was asked.
func downServer(t *testing.T) (url string, requests *atomic.Int32) {
	t.Helper()
	requests = new(atomic.Int32)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	return down.URL, requests
}

func TestCheck(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := up.PushImage(t, "library/present:v1", img)
	up.PushImage(t, "org/present:v1", img)
	up.Play("", "/secret/", testupstream.Status(403)).Forever()
	down, _ := downServer(t)

	// The same checks through a running Breakwater.
	mirror := startCheckMirror(t, map[string]string{"docker.io": up.URL, "quay.io": up.URL, "ghcr.io": down})

	direct := []string{"--config", writeConfig(t, oneTryConfig), "--upstream", "docker.io=" + up.URL, "--upstream", "quay.io=" + up.URL, "--upstream", "ghcr.io=" + down}
	via := []string{"--upstream", "docker.io=" + up.URL, "--upstream", "quay.io=" + up.URL, "--mirror", mirror}
	cases := []struct {
		name     string
		args     []string
		images   []string
		wantExit int
		verdicts []string
	}{
		{"present", direct, []string{"present:v1", "docker.io/library/present:v1", "quay.io/org/present:v1", "present@" + d.String()}, 0,
			[]string{"exists", "exists", "exists", "exists"}},
		{"missing tag", direct, []string{"present:v1", "present:nope"}, 1, []string{"exists", "missing"}},
		{"missing repo", direct, []string{"nothere/at-all:v1"}, 1, []string{"missing"}},
		{"forbidden", direct, []string{"library/secret:v1"}, 1, []string{"denied"}},
		{"invalid reference", direct, []string{"UPPER/Case:v1"}, 1, []string{"invalid"}},
		{"unconfigured registry", direct, []string{"registry.example.com/x:v1"}, 1, []string{"denied"}},
		{"registry down", direct, []string{"ghcr.io/org/app:v1"}, 2, []string{"unavailable"}},
		{"fatal beats transient", direct, []string{"ghcr.io/org/app:v1", "present:nope"}, 1, []string{"unavailable", "missing"}},
		{"via mirror, registry down", via, []string{"ghcr.io/org/app:v1"}, 2, []string{"unavailable"}},
		{"via mirror", via, []string{"present:v1", "quay.io/org/present:v1", "present@" + d.String(), "present:nope"}, 1,
			[]string{"exists", "exists", "exists", "missing"}},
		{"via mirror, forbidden", via, []string{"library/secret:v1"}, 1, []string{"denied"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append(append([]string{"check", "--json", "--timeout", "20s"}, tc.args...), tc.images...)
			start := time.Now()
			code := run(args, nil, &stdout, &stderr)
			if code != tc.wantExit {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantExit, stdout.String(), stderr.String())
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
				var r imagecheck.Result
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				got = append(got, string(r.Verdict))
				if r.Verdict == "exists" && (r.Digest != d.String() || r.MediaType == "") {
					t.Errorf("%s: digest %s, media type %q, want %s and one", r.Image, r.Digest, r.MediaType, d)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.verdicts, ",") {
				t.Errorf("verdicts %v, want %v\n%s", got, tc.verdicts, stdout.String())
			}
			if time.Since(start) > 15*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}

	var stdout, stderr bytes.Buffer
	if code := run([]string{"check"}, nil, &stdout, &stderr); code != 3 || !strings.Contains(stderr.String(), "no image") {
		t.Errorf("no image: exit %d, %q", code, stderr.String())
	}
	for _, bad := range []string{"ftp://x", "http://", "http://[::1"} {
		stderr.Reset()
		if code := run([]string{"check", "--mirror", bad, "a:b"}, nil, &stdout, &stderr); code != 3 || !strings.Contains(stderr.String(), "--mirror") {
			t.Errorf("--mirror %s: exit %d, %q", bad, code, stderr.String())
		}
	}
}

// What check prints after the verdict must be the real cause: through a
// mirror, the reason phrase the mirror crafted (a HEAD has no body, so the
// status line is all there is); directly, the upstream's own answer.
func TestCheckDetails(t *testing.T) {
	up := testupstream.Start(t) // empty: every manifest is missing
	down, _ := downServer(t)
	limited := testupstream.Start(t)
	limited.Play("", "/manifests/", testupstream.Status(http.StatusTooManyRequests, "Retry-After", "30")).Forever()
	gone := "http://" + testupstream.FreeAddr(t) // nothing listens there: connection refused

	mirror := startCheckMirror(t, map[string]string{"docker.io": up.URL, "ghcr.io": down, "limited.test": limited.URL})
	direct := []string{"--config", writeConfig(t, fmt.Sprintf(`upstreams:
  docker.io:
    url: %s
  limited.test:
    url: %s
  gone.test:
    url: %s
%s`, up.URL, limited.URL, gone, oneTryConfig))}
	via := []string{"--mirror", mirror, "--upstream", "docker.io=" + up.URL, "--upstream", "ghcr.io=" + down, "--upstream", "limited.test=" + limited.URL}

	never := []string{"HEAD responses have no body", "unexpected status code"}
	cases := []struct {
		name    string
		args    []string
		image   string
		verdict string
		want    []string // in the detail
	}{
		{"via mirror, upstream 503", via, "ghcr.io/org/app:v1", "unavailable",
			[]string{"503 Service Unavailable (breakwater-transient: upstream ghcr.io answered 503 Service Unavailable; retry after "}},
		{"via mirror, upstream 429", via, "limited.test/org/app:v1", "unavailable",
			[]string{"503 Service Unavailable (breakwater-transient: upstream limited.test answered 429 Too Many Requests; retry after 30s)"}},
		{"via mirror, missing", via, "absent:v1", "missing", []string{"HEAD /v2/docker.io/library/absent/manifests/v1: answered 404 Not Found"}},
		{"direct, 429", direct, "limited.test/org/app:v1", "unavailable",
			[]string{"upstream limited.test: HEAD /v2/org/app/manifests/v1: answered 429 Too Many Requests", "retry after 30s"}},
		{"direct, unreachable", direct, "gone.test/org/app:v1", "unavailable",
			[]string{"upstream gone.test: HEAD /v2/org/app/manifests/v1: unreachable: connection refused"}},
		{"direct, missing", direct, "absent:v1", "missing",
			[]string{"upstream docker.io: HEAD /v2/library/absent/manifests/v1: answered 404 Not Found"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append(append([]string{"check", "--timeout", "10s"}, tc.args...), tc.image), nil, &stdout, &stderr)
			line := strings.TrimSpace(stdout.String())
			t.Logf("exit %d: %s", code, line)
			verdict, rest, _ := strings.Cut(line, " ")
			if verdict != tc.verdict || strings.Contains(line, "\n") {
				t.Fatalf("printed %q, want one %s line\nstderr: %s", line, tc.verdict, stderr.String())
			}
			_, detail, ok := strings.Cut(rest, "  ")
			if !ok {
				t.Fatalf("printed %q: no detail", line)
			}
			for _, s := range tc.want {
				if !strings.Contains(detail, s) {
					t.Errorf("detail %q lacks %q", detail, s)
				}
			}
			for _, s := range never {
				if strings.Contains(detail, s) {
					t.Errorf("detail %q has %q", detail, s)
				}
			}
		})
	}
}

// Directly, check asks each upstream with its own effective resilience,
// as serve does: the global block, or the upstream's own block over it.
func TestCheckUsesUpstreamResilience(t *testing.T) {
	own, ownRequests := downServer(t)
	global, globalRequests := downServer(t)
	cfg := writeConfig(t, fmt.Sprintf(`default_upstream: quay.io
upstreams:
  ghcr.io:
    url: %s
    resilience:
      retry:
        attempts: 3
        base_delay: 10ms
        max_delay: 10ms
  quay.io:
    url: %s
%s`, own, global, oneTryConfig))
	var stdout, stderr bytes.Buffer
	code := run([]string{"check", "--config", cfg, "ghcr.io/org/app:v1", "quay.io/org/app:v1"}, nil, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	// Each try is the handshake's ping, answered 503.
	if n := ownRequests.Load(); n != 3 {
		t.Errorf("ghcr.io (attempts: 3 of its own) was asked %d times, want 3", n)
	}
	if n := globalRequests.Load(); n != 1 {
		t.Errorf("quay.io (global attempts: 1) was asked %d times, want 1", n)
	}
}

// --timeout bounds each image, however long the registry's handshake and
// the configured attempt timeout (10s) would let it hang.
func TestCheckTimeout(t *testing.T) {
	stop := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(stop) }) // first: the handshake outlives the check
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run([]string{"check", "--timeout", "500ms", "--upstream", "ghcr.io=" + hung.URL, "ghcr.io/org/a:v1", "ghcr.io/org/b:v1"}, nil, &stdout, &stderr)
	took := time.Since(start)
	t.Logf("exit %d after %s:\n%s", code, took, stdout.String())
	if code != 2 {
		t.Errorf("exit %d, want 2\nstderr: %s", code, stderr.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if !strings.HasPrefix(line, "unavailable ") || !strings.Contains(line, "timeout") {
			t.Errorf("line %q, want unavailable for a timeout", line)
		}
	}
	if took > 4*time.Second {
		t.Errorf("two images with --timeout 500ms took %s", took)
	}
}
