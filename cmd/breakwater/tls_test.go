package main

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testcerts"
	"github.com/breakwater-registry/breakwater/internal/testlog"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestServeTLSKeepsTheReasonPhrase runs the serve loop with TLS in front of
// an upstream that answers every manifest request 503, and asks it as
// containerd's Go client would, offering h2 and http/1.1: the answer must
// come over HTTP/1.1 with the crafted reason phrase, the only channel to
// the pod on containerd's manifest path (a HEAD has no body).
func TestServeTLSKeepsTheReasonPhrase(t *testing.T) {
	up := testupstream.Start(t)
	up.Play("", "/manifests/", testupstream.Status(http.StatusServiceUnavailable)).Forever()
	ca := testcerts.NewCA(t, "breakwater-test-ca")
	certFile, keyFile := ca.WriteServer(t, t.TempDir(), 7)

	cfg, err := loadConfig("", "127.0.0.1:0", t.TempDir(), "", []string{"docker.io=" + up.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile}
	// Fail within a second instead of the default 20 s, and keep the
	// circuit closed so that the cause stays the upstream's 503.
	cfg.Resilience.Retry.Deadline = config.Duration(500 * time.Millisecond)
	cfg.Resilience.Retry.BaseDelay = config.Duration(10 * time.Millisecond)
	cfg.Resilience.Retry.MaxDelay = config.Duration(50 * time.Millisecond)
	cfg.Resilience.Breaker.MinRequests = 1 << 30
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	addr, stop := startServeLoop(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	defer stop()

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}},
		ForceAttemptHTTP2: true,
	}}
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		req, err := http.NewRequest(method, "https://"+addr+"/v2/library/down/manifests/v1?ns=docker.io", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp.Body.Close()
		if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" || resp.Proto != "HTTP/1.1" {
			t.Errorf("%s: %s over ALPN %q, want HTTP/1.1", method, resp.Proto, resp.TLS.NegotiatedProtocol)
		}
		const want = "503 Service Unavailable (breakwater-transient: upstream docker.io answered 503 Service Unavailable; retry after "
		if !strings.HasPrefix(resp.Status, want) || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: status %q (Retry-After %q), want it to start %q", method, resp.Status, resp.Header.Get("Retry-After"), want)
		}
	}
	// Plain HTTP on the TLS port is refused, with net/http's hint.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %s, want 400", resp.Status)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("serve: %v", err)
	}
	for _, want := range []string{`"msg":"tls on: the listen address speaks TLS, HTTP/1.1 only"`, `"cert_file":"` + certFile + `"`,
		`"key_file":"` + keyFile + `"`, `"mutual_tls":false`, `"serial":"7"`, `"reload_every":"10s"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("start-up log lacks %s:\n%s", want, logs.String())
		}
	}
}

// A certificate file that cannot be read or parsed stops serve at start,
// the key, path and cause in its error, and the port is never bound.
func TestServeTLSRefusesBadFiles(t *testing.T) {
	ca := testcerts.NewCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := ca.WriteServer(t, dir, 1)
	junk := filepath.Join(dir, "junk.crt")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.key")
	for _, tc := range []struct {
		tls  config.TLS
		want []string
	}{
		{config.TLS{CertFile: certFile, KeyFile: missing}, []string{"tls.key_file: open " + missing + ": no such file or directory"}},
		{config.TLS{CertFile: junk, KeyFile: keyFile}, []string{"tls.cert_file " + junk, "tls.key_file " + keyFile, "PEM"}},
		{config.TLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: missing}, []string{"tls.client_ca_file: open " + missing}},
	} {
		addr := testupstream.FreeAddr(t)
		cfg, err := loadConfig("", addr, t.TempDir(), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = tc.tls
		err = serve(t.Context(), cfg, slog.New(slog.DiscardHandler), nil, nil)
		if err == nil {
			t.Fatalf("%+v: serve started", tc.tls)
		}
		if ln, err := net.Listen("tcp", addr); err != nil {
			t.Errorf("%+v: the port is still taken after the refusal: %v", tc.tls, err)
		} else {
			ln.Close()
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not say %q", tc.tls, err, w)
			}
		}
	}
}

// Without tls the start-up log says the port speaks plain HTTP.
func TestServeLogsTLSOff(t *testing.T) {
	cfg, err := loadConfig("", "127.0.0.1:0", t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	_, stop := startServeLoop(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"msg":"tls off: the listen address speaks plain HTTP"`) {
		t.Errorf("start-up log does not say TLS is off:\n%s", logs.String())
	}
}

// TestWarmAPIWithTLS: the warm API asks Breakwater in process, so a TLS
// listener, which a plain-HTTP request to its own address would fail, does
// not stand in its way.
func TestWarmAPIWithTLS(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(10_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/warmed:v1", img)
	ca := testcerts.NewCA(t, "breakwater-test-ca")
	dir := t.TempDir()
	certFile, keyFile := ca.WriteServer(t, dir, 7)
	cfg, err := loadConfig("", "127.0.0.1:0", t.TempDir(), "1h", []string{"docker.io=" + up.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile}
	cfg.Warm.APIEnabled = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	addr, stop := startServeLoop(t, cfg, slog.New(slog.DiscardHandler), nil)
	defer stop()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
	}}
	resp, err := client.Post("https://"+addr+"/_breakwater/v1/warm", "application/json", strings.NewReader(`{"images":["warmed:v1"]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("warm over TLS: %d %s", resp.StatusCode, body)
	}
}
