package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"golang.org/x/crypto/bcrypt"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testlog"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// startServe runs the serve loop with cfg changes applied and returns its
// base URL.
func startServe(t *testing.T, up string, warmAPI bool) string {
	t.Helper()
	return startServeOn(t, "127.0.0.1:0", up, warmAPI)
}

// startServeOn is startServe listening on listen.
func startServeOn(t *testing.T, listen, up string, warmAPI bool) string {
	t.Helper()
	cfg, err := loadConfig("", listen, t.TempDir(), "1h", []string{"docker.io=" + up})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Warm.APIEnabled = warmAPI
	addr, stop := startServeLoop(t, cfg, slog.New(slog.DiscardHandler), nil)
	t.Cleanup(func() { _ = stop() })
	return "http://" + addr
}

// startServeLoop runs serve in the background until stop, which returns
// serve's error, and waits for it to listen.
func startServeLoop(t *testing.T, cfg config.Config, log *slog.Logger, debugLn net.Listener) (addr string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, debugLn, ready) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() { cancel(); serveErr = <-done })
		return serveErr
	}
	select {
	case addr = <-ready:
		return addr, stop
	case err := <-done:
		cancel()
		t.Fatalf("serve ended: %v", err)
	case <-time.After(10 * time.Second):
		stop()
		t.Fatal("serve did not start")
	}
	return "", stop
}

func TestWarmAPI(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(50_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	d := up.PushImage(t, "library/warmed:v1", img)

	post := func(base, body string) (int, string) {
		resp, err := http.Post(base+"/_breakwater/v1/warm", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	off := startServe(t, up.URL, false)
	if code, body := post(off, `{"images":["warmed:v1"]}`); code != 404 || !strings.Contains(body, "warm.api_enabled") {
		t.Errorf("API off: %d %s", code, body)
	}

	base := startServe(t, up.URL, true)
	for _, bad := range []string{`{}`, `not json`, `{"images":["a:b"],"extra":1}`, `{"images":["a:b"],"platforms":["linux"]}`} {
		if code, body := post(base, bad); code != 400 {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}
	code, body := post(base, `{"images":["warmed:v1","library/missing:v1"]}`)
	var resp warmResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("%d %s: %v", code, body, err)
	}
	if code != http.StatusBadGateway || resp.OK != 1 || resp.Failed != 1 || resp.Results[0].Digest != d.String() || resp.Results[0].Blobs != 3 {
		t.Errorf("warm: %d %s", code, body)
	}
	// Warmed means cached: pulling now fetches no blob upstream.
	up.Reset()
	layers, _ := img.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		r, err := http.Get(base + "/v2/library/warmed/blobs/" + ld.String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	if n := up.Count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("after warming, %d blob GETs went upstream", n)
	}
}

// TestWarmAPIAnyListenAddress: the warm API asks Breakwater in process,
// so it works whatever address Breakwater listens on — not only on one
// 127.0.0.1 reaches.
func TestWarmAPIAnyListenAddress(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(10_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/warmed:v1", img)
	listens := []string{"127.0.0.2:0"}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		listens = append(listens, "[::1]:0")
	} else {
		t.Logf("no IPv6 loopback here (%v): testing 127.0.0.2 only", err)
	}
	for _, listen := range listens {
		base := startServeOn(t, listen, up.URL, true)
		resp, err := http.Post(base+"/_breakwater/v1/warm", "application/json", strings.NewReader(`{"images":["warmed:v1"]}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("listening on %s: warm answered %d %s", listen, resp.StatusCode, body)
		}
	}
}

// With client authentication on, the warm API wants a user, refuses the
// whole request when the user may not pull one of its images, and pulls
// the others as that user.
func TestWarmAPIWithAuth(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(20_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/warmed:v1", img)
	up.PushImage(t, "acme/other:v1", img)

	addr, logs := serveWithAuth(t, up, true)

	post := func(user, body string) (int, http.Header, string) {
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/_breakwater/v1/warm", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	up.Reset()
	if code, h, body := post("", `{"images":["warmed:v1"]}`); code != 401 || h.Get("WWW-Authenticate") != `Basic realm="bw"` {
		t.Errorf("anonymous: %d %v %s, want 401 with the challenge", code, h, body)
	}
	code, _, body := post("alice", `{"images":["warmed:v1","docker.io/acme/other:v1"]}`)
	if code != 403 || !strings.Contains(body, `"code":"DENIED"`) || !strings.Contains(body, `docker.io/acme/other:v1: 403 DENIED`) || strings.Contains(body, "warmed:v1:") {
		t.Errorf("alice, one image denied: %d %s, want 403 DENIED naming only docker.io/acme/other", code, body)
	}
	if n := len(up.Requests("", "")); n != 0 {
		t.Errorf("a refused warm request reached the upstream %d times", n)
	}
	code, _, body = post("alice", `{"images":["warmed:v1"]}`)
	var resp warmResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 || resp.OK != 1 {
		t.Fatalf("alice warms library/warmed: %d %s (%v)", code, body, err)
	}
	// The pulls went through Breakwater as alice.
	if !strings.Contains(logs.String(), `"path":"/v2/docker.io/library/warmed/manifests/v1","query":"","status":200`) ||
		!strings.Contains(logs.String(), `"user":"alice"`) {
		t.Errorf("no pull through Breakwater as alice in the log:\n%s", logs.String())
	}
}

// writeAlice writes an htpasswd file into dir holding alice, password
// alice-pw, and returns its path.
func writeAlice(t *testing.T, dir string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return htpasswd
}

// serveWithAuth runs the serve loop in front of up with client
// authentication on: alice (password alice-pw) may pull docker.io/library/
// only. It returns the address and the log.
func serveWithAuth(t *testing.T, up *testupstream.Upstream, warmAPI bool) (string, *testlog.Buffer) {
	t.Helper()
	dir := t.TempDir()
	htpasswd := writeAlice(t, dir)
	cfg, err := loadConfig("", "127.0.0.1:0", filepath.Join(dir, "cache"), "1h", []string{"docker.io=" + up.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Warm.APIEnabled = warmAPI
	cfg.Auth = config.Auth{Htpasswd: htpasswd, Realm: "bw", Access: []config.AccessEntry{
		{Users: []string{"alice"}, Repositories: []string{"docker.io/library/"}},
	}}
	logs := &testlog.Buffer{}
	addr, stop := startServeLoop(t, cfg, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	t.Cleanup(func() { _ = stop() })
	return addr, logs
}
