package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/upstream"
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
		{[]string{"serve", "--debug-listen", "nonsense:port:x"}, "--debug-listen"},
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
	var logs bytes.Buffer
	addr, stop := startServeLoop(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	defer stop()
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
	if err := stop(); err != nil {
		t.Errorf("serve: %v", err)
	}
	// One line per request, with what the e2e script and operators grep for.
	for _, want := range []string{`"msg":"request"`, `"query":"ns=docker.io"`, `"path":"/v2/served/manifests/v1"`, `"cache":"miss"`, `"status":200`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

// TestDebugListener checks that pprof answers on the --debug-listen
// listener, never on the main one, and stops with the serve loop.
func TestDebugListener(t *testing.T) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(url string) (int, string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for _, tc := range []struct {
		name  string
		debug bool
	}{
		{"off", false},
		{"on", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig("", "127.0.0.1:0", t.TempDir(), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			var debugLn net.Listener
			if tc.debug {
				if debugLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			addr, stop := startServeLoop(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), debugLn)
			defer stop()

			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1"} {
				if code, _, err := get("http://" + addr + path); err != nil || code != http.StatusNotFound {
					t.Errorf("main listener %s: %d %v, want 404", path, code, err)
				}
			}
			if tc.debug {
				base := "http://" + debugLn.Addr().String()
				for _, c := range []struct{ path, want string }{
					{"/debug/pprof/", "heap"},
					{"/debug/pprof/heap?debug=1", "heap profile"},
					{"/debug/pprof/cmdline", "breakwater"},
					{"/debug/pprof/symbol", "num_symbols"},
					{"/debug/pprof/profile?seconds=1", ""},
					{"/debug/pprof/trace?seconds=0.01", ""},
				} {
					code, body, err := get(base + c.path)
					if err != nil || code != http.StatusOK || !strings.Contains(body, c.want) {
						t.Errorf("debug listener %s: %d %v, want 200 with %q; body starts %.200q", c.path, code, err, c.want, body)
					}
				}
			}

			if err := stop(); err != nil {
				t.Errorf("serve: %v", err)
			}
			if tc.debug {
				if _, _, err := get("http://" + debugLn.Addr().String() + "/debug/pprof/"); err == nil {
					t.Error("debug listener still answers after serve returned")
				}
				if !strings.Contains(logs.String(), `"msg":"debug listener serving pprof","listen":"`+debugLn.Addr().String()+`"`) {
					t.Errorf("log lacks the debug listener's address:\n%s", logs.String())
				}
				if strings.Contains(logs.String(), "not on a loopback") {
					t.Errorf("loopback debug listener warned:\n%s", logs.String())
				}
			} else if strings.Contains(logs.String(), "debug listener") {
				t.Errorf("debug listener without --debug-listen:\n%s", logs.String())
			}
		})
	}
}

func TestLogDebugListenerWarnsOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		warn bool
	}{
		{"127.0.0.1", false},
		{"::1", false},
		{"0.0.0.0", true},
		{"::", true},
		{"192.0.2.10", true},
	} {
		var logs bytes.Buffer
		logDebugListener(slog.New(slog.NewJSONHandler(&logs, nil)), &net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 6060})
		if got := strings.Contains(logs.String(), `"level":"WARN"`); got != tc.warn {
			t.Errorf("%s: warned %v, want %v:\n%s", tc.ip, got, tc.warn, logs.String())
		}
	}
}

// TestDefaultPolicyAgrees: the configuration's defaults (the bundled
// config.yaml) are the upstream package's own, so that a Breakwater run
// without a file and a client built without a policy behave alike.
func TestDefaultPolicyAgrees(t *testing.T) {
	if got, want := upstreamPolicy(config.Default().Resilience), upstream.DefaultPolicy(); got != want {
		t.Errorf("config defaults give %+v, the upstream package's are %+v", got, want)
	}
}

// TestPerUpstreamResilience: an upstream's own resilience block reaches
// its client, key by key over the global block; the others keep the
// global one.
func TestPerUpstreamResilience(t *testing.T) {
	cfg, err := config.Parse([]byte(`
upstreams:
  docker.io:
    url: https://registry-1.docker.io
    resilience:
      retry:
        deadline: 7s
      breaker:
        open_max: 9s
      rate_limit_reserve: 3
  ghcr.io:
    url: https://ghcr.io
resilience:
  retry:
    attempts: 2
  max_concurrent: 8
`))
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstreamConfigs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 || ups[0].Name != "docker.io" || ups[1].Name != "ghcr.io" {
		t.Fatalf("upstreams %+v", ups)
	}
	hub, ghcr := ups[0], ups[1]
	if p := hub.Policy; p.Retry.Deadline != 7*time.Second || p.Breaker.OpenMax != 9*time.Second || hub.RateLimitReserve != 3 ||
		p.Retry.Attempts != 2 || p.MaxConcurrent != 8 {
		t.Errorf("docker.io: %+v reserve %d; want its own deadline, open_max and reserve over the global attempts and max_concurrent", p, hub.RateLimitReserve)
	}
	def := upstream.DefaultPolicy()
	if p := ghcr.Policy; p.Retry.Deadline != def.Retry.Deadline || p.Breaker.OpenMax != def.Breaker.OpenMax || p.Retry.Attempts != 2 || ghcr.RateLimitReserve != 10 {
		t.Errorf("ghcr.io: %+v reserve %d; want the global block", p, ghcr.RateLimitReserve)
	}
}
