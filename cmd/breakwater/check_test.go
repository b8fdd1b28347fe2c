package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// oneTry is the upstream policy of the mirrors these tests run: one try,
// so that a failing upstream answers at once.
var oneTry = upstream.Policy{Retry: upstream.Retry{Attempts: 1}}

func TestCheck(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := up.PushImage(t, "library/present:v1", img)
	up.PushImage(t, "org/present:v1", img)
	up.Play("", "/secret/", testupstream.Status(403)).Forever()

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)

	// The same checks through a running Breakwater.
	store, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{
		Store: store, DefaultUpstream: "docker.io", Logger: slog.New(slog.DiscardHandler),
		Upstreams: []proxy.UpstreamConfig{{Name: "docker.io", URL: up.URL, Policy: oneTry}, {Name: "quay.io", URL: up.URL, Policy: oneTry}, {Name: "ghcr.io", URL: down.URL, Policy: oneTry}},
	})
	if err != nil {
		t.Fatal(err)
	}
	mirror := httptest.NewServer(srv)
	t.Cleanup(func() { mirror.Close(); srv.Close() })

	direct := []string{"--upstream", "docker.io=" + up.URL, "--upstream", "quay.io=" + up.URL, "--upstream", "ghcr.io=" + down.URL}
	via := []string{"--upstream", "docker.io=" + up.URL, "--upstream", "quay.io=" + up.URL, "--mirror", mirror.URL}
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
		{"via mirror", via, []string{"present:v1", "quay.io/org/present:v1", "present:nope"}, 1, []string{"exists", "exists", "missing"}},
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
				var r checkResult
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				got = append(got, r.Verdict)
				if r.Verdict == "exists" && r.Digest != d.String() {
					t.Errorf("%s: digest %s, want %s", r.Image, r.Digest, d)
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
	if code := run([]string{"check", "--mirror", "ftp://x", "a:b"}, nil, &stdout, &stderr); code != 3 {
		t.Errorf("bad --mirror: exit %d", code)
	}
}
