package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
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
