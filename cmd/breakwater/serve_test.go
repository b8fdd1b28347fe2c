package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

func TestLoadConfigFlagsOverrideFile(t *testing.T) {
	cfg, err := loadConfig("../../config.yaml", "127.0.0.1:0", "/tmp/cache", "0s",
		[]string{"docker.io=http://127.0.0.1:5001", "localhost:5000=http://127.0.0.1:5002"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:0" || cfg.Cache.Dir != "/tmp/cache" || cfg.Cache.TagTTL != 0 {
		t.Errorf("flags not applied: %+v", cfg)
	}
	if cfg.Upstreams["docker.io"].URL != "http://127.0.0.1:5001" || cfg.Upstreams["localhost:5000"].URL != "http://127.0.0.1:5002" {
		t.Errorf("upstreams: %+v", cfg.Upstreams)
	}
	if cfg.Upstreams["ghcr.io"].URL != "https://ghcr.io" {
		t.Errorf("file upstreams lost: %+v", cfg.Upstreams)
	}
}

func TestServeCommandErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--config", "../../config/testdata/unknown-key.yaml"}, "cache.tag_tll: unknown key"},
		{[]string{"serve", "--config", "../../config/testdata/bad-duration.yaml"}, "cache.tag_ttl"},
		{[]string{"serve", "--upstream", "docker.io"}, "want HOST=URL"},
		{[]string{"serve", "--tag-ttl", "soon"}, "--tag-ttl"},
		{[]string{"serve", "extra"}, "unexpected arguments"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want it to mention %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	if code := run([]string{"version"}, nil, &stdout, io.Discard); code != 0 || !strings.HasPrefix(stdout.String(), "breakwater ") {
		t.Errorf("version: %d %q", code, stdout.String())
	}
}

// TestServe runs the serve loop as main does, pulls through it and shuts it
// down.
func TestServe(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := up.PushImage(t, "library/served:v1", img)

	cfg, err := loadConfig("", "127.0.0.1:0", t.TempDir(), "", []string{"docker.io=" + up.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + addr + "/v2/served/manifests/v1?ns=docker.io")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Errorf("pull: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	// One line per request, with what the e2e script and operators grep for.
	for _, want := range []string{`"msg":"request"`, `"query":"ns=docker.io"`, `"path":"/v2/served/manifests/v1"`, `"cache":"miss"`, `"status":200`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}
