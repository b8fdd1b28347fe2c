package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadValid(t *testing.T) {
	cfg, err := Load(filepath.Join("testdata", "valid.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:5000",
		Cache: Cache{Dir: "/var/lib/breakwater", TagTTL: Duration(90 * time.Second), MaxStale: Duration(24 * time.Hour),
			MaxSize: 200 << 30, HighWatermark: 95, LowWatermark: 85},
		DefaultUpstream: "docker.io",
		Upstreams: map[string]Upstream{
			"docker.io":                 {URL: "https://registry-1.docker.io", Username: "robot", Password: "s3cret"},
			"registry.example.com:5000": {URL: "http://10.0.0.5:5000", DockerConfig: true},
		},
		Resilience: Resilience{
			Retry: Retry{Attempts: 3, BaseDelay: Duration(100 * time.Millisecond), MaxDelay: Duration(2 * time.Second),
				Deadline: Duration(20 * time.Second), AttemptTimeout: Duration(5 * time.Second), MaxRetryAfter: Duration(15 * time.Second)},
			Breaker:       Breaker{Failures: 7, Cooldown: Duration(time.Minute)},
			MaxConcurrent: 16,
		},
		Log: Log{Level: "debug", Format: "text"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
}

// TestBundledConfig keeps the repository's config.yaml runnable and equal to
// the built-in defaults the README promises.
func TestBundledConfig(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("config.yaml differs from Default():\n%+v\n%+v", cfg, Default())
	}
}

func TestLoadRejects(t *testing.T) {
	cases := []struct {
		file string
		want []string // substrings of the error, naming the field
	}{
		{"unknown-key.yaml", []string{"line 3", "cache.tag_tll", "unknown key", "tag_ttl"}},
		{"unknown-upstream-key.yaml", []string{"upstreams.docker.io.pasword", "unknown key"}},
		{"bad-url-scheme.yaml", []string{"line 3: upstreams.docker.io.url", "scheme must be http or https"}},
		{"bad-url-path.yaml", []string{"upstreams.docker.io.url", "no path"}},
		{"bad-url-parse.yaml", []string{"upstreams.docker.io.url", "not a URL"}},
		{"url-credentials.yaml", []string{"upstreams.docker.io.url", "credentials"}},
		{"bad-duration.yaml", []string{"line 2", "cache.tag_ttl", "invalid duration"}},
		{"negative-duration.yaml", []string{"cache.tag_ttl", "negative"}},
		{"bad-default.yaml", []string{"line 1: default_upstream", "quay.io"}},
		{"bad-listen.yaml", []string{"line 1: listen", "host:port"}},
		{"wrong-kind.yaml", []string{"cache", "mapping"}},
		{"bad-level.yaml", []string{"line 2: log.level", "loud"}},
		{"password-without-user.yaml", []string{"upstreams.docker.io.username", "required"}},
		{"bad-host.yaml", []string{"line 2: upstreams.bad host!", "not a registry host"}},
		{"not-yaml.yaml", []string{"not valid YAML"}},
		{"bad-bool.yaml", []string{"upstreams.docker.io.docker_config", "true or false"}},
		{"bad-attempts.yaml", []string{"line 3: resilience.retry.attempts", "at least 1"}},
		{"bad-cooldown.yaml", []string{"line 3: resilience.breaker.cooldown", "positive"}},
		{"bad-concurrency.yaml", []string{"line 2", "resilience.max_concurrent", "whole number"}},
		{"bad-size.yaml", []string{"line 2", "cache.max_size", "invalid size"}},
		{"bad-watermarks.yaml", []string{"line 3: cache.low_watermark"}},
		{"missing.yaml", []string{"missing.yaml", "no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", tc.file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSetUpstream(t *testing.T) {
	cfg := Default()
	cfg.Upstreams["docker.io"] = Upstream{URL: "https://registry-1.docker.io", Username: "u", Password: "p"}
	if err := cfg.SetUpstream("docker.io=http://127.0.0.1:5001/"); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Upstreams["docker.io"]; got.URL != "http://127.0.0.1:5001" || got.Username != "u" {
		t.Errorf("docker.io = %+v: URL replaced, credentials kept", got)
	}
	if err := cfg.SetUpstream("internal.example:5000=https://mirror.internal"); err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Upstreams["internal.example:5000"]; !ok {
		t.Error("new upstream not added")
	}
	for _, bad := range []string{"docker.io", "=http://x", "docker.io=", "docker.io=ftp://x", "no host!=http://x"} {
		if err := cfg.SetUpstream(bad); err == nil || !strings.Contains(err.Error(), "--upstream") {
			t.Errorf("SetUpstream(%q) = %v, want an error naming --upstream", bad, err)
		}
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	cfg, err := Parse([]byte("  \n"))
	if err != nil || !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("empty file: %v, %+v", err, cfg)
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true}, {"10B", 10, true}, {"1KB", 1000, true}, {"1KiB", 1024, true},
		{"200GiB", 200 << 30, true}, {"1.5GiB", 3 << 29, true}, {"2 TB", 2e12, true}, {"512M", 512 << 20, true},
		{"", 0, false}, {"GiB", 0, false}, {"-1GiB", 0, false}, {"10 parsecs", 0, false}, {"1e9", 0, false},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v", tc.in, got, err)
		}
	}
}
