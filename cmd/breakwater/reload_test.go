package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// syncBuffer is a log sink the test reads while the server writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// holdBlob is a hook that holds back the second half of every GET of dgst
// until release is closed, and closes started once the first half is out.
func holdBlob(dgst string, content []byte, started chan<- struct{}, release <-chan struct{}) testupstream.Hook {
	var once sync.Once
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		_, _ = w.Write(content[:len(content)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-r.Context().Done():
			return true
		}
		_, _ = w.Write(content[len(content)/2:])
		return true
	}
}

// TestReload: a reload applies a new configuration to the requests that
// come after it — a new upstream, a rotated password file — without
// dropping the pull in flight; a file that does not load is refused and
// the running configuration stays; a key that needs a restart says so.
func TestReload(t *testing.T) {
	const user = "robot"
	up1 := testupstream.Start(t)
	up2 := testupstream.Start(t)
	img, err := random.Image(256<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	up1.PushImage(t, "library/app:v1", img)
	up2.PushImage(t, "org/tool:v1", img)
	newImg, _ := random.Image(1024, 1)
	up1.PushImage(t, "library/later:v1", newImg)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lrc, _ := layers[0].Compressed()
	layer, _ := io.ReadAll(lrc)

	// up1 takes the password in the file: first "one", then "two".
	var mu sync.Mutex
	password := "one"
	wantAuth := func() string {
		mu.Lock()
		defer mu.Unlock()
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	cfgFile := filepath.Join(dir, "config.yaml")
	write := func(path, body string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	configText := func(extra string) string {
		return fmt.Sprintf("listen: 127.0.0.1:0\ncache:\n  dir: %s\n  tag_ttl: 1h\nupstreams:\n  docker.io:\n    url: %s\n    username: %s\n    password_file: %s\n%s",
			filepath.Join(dir, "cache"), up1.URL, user, pwFile, extra)
	}
	write(pwFile, "one\n")
	write(cfgFile, configText(""))
	load := func() (config.Config, error) { return loadConfig(cfgFile, "", "", "", nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveWith(ctx, serveOptions{cfg: cfg, log: log, ready: ready, reload: reload, load: load})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	base := "http://" + <-ready

	started, release := make(chan struct{}), make(chan struct{})
	guard := func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/" && r.Header.Get("Authorization") != wantAuth() {
			w.Header().Set("WWW-Authenticate", `Basic realm="up1"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	}
	hold := holdBlob(ld.String(), layer, started, release)
	up1.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		return guard(w, r) || hold(w, r)
	})

	// A pull under way, half delivered.
	inflight := pullBlob(base+"/v2/library/app/blobs/"+ld.String(), layer)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the pull did not start")
	}

	// The upstream rotates its password, the file follows, and ghcr.io is
	// added; then the reload.
	mu.Lock()
	password = "two"
	mu.Unlock()
	write(pwFile, "two\n")
	write(cfgFile, configText(fmt.Sprintf("  ghcr.io:\n    url: %s\nlog:\n  level: debug\n", up2.URL)))
	reload <- struct{}{}
	waitLog(t, logs, `"msg":"configuration reloaded"`)

	close(release)
	if err := <-inflight; err != nil {
		t.Fatalf("the pull in flight across the reload: %v", err)
	}
	for _, path := range []string{"/v2/ghcr.io/org/tool/manifests/v1", "/v2/library/later/manifests/v1"} {
		if resp, err := http.Get(base + path); err != nil || resp.StatusCode != 200 {
			t.Errorf("after the reload, %s: %v %v", path, resp, err)
		}
	}

	// A file that does not load changes nothing.
	write(cfgFile, "upstreams:\n  docker.io:\n    url: not a url\n")
	reload <- struct{}{}
	waitLog(t, logs, `"msg":"configuration reload refused; the running configuration stays"`)
	if resp, err := http.Get(base + "/v2/ghcr.io/org/tool/manifests/v1"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after a refused reload: %v %v", resp, err)
	}

	// The listener is set up once; a new address waits for a restart.
	write(cfgFile, strings.Replace(configText(fmt.Sprintf("  ghcr.io:\n    url: %s\n", up2.URL)), "listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1))
	reload <- struct{}{}
	waitLog(t, logs, `"key":"listen"`)
}

func waitLog(t *testing.T, logs *syncBuffer, needle string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), needle) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the log:\n%s", needle, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSignals runs the real binary: SIGHUP reloads and the process goes on
// serving; SIGTERM lets the pull in flight finish, refuses new
// connections, and exits 0.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	up := testupstream.Start(t)
	ld, layer := pushOneLayer(t, up, "library/app:v1", 256<<10)

	cmd, addr, logs := startBinaryLogged(t, bin, t.TempDir(), up.URL, "")
	base := "http://" + addr
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, `"msg":"configuration reloaded"`)
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after SIGHUP: %v %v", resp, err)
	}

	started, release := make(chan struct{}), make(chan struct{})
	up.SetHook(holdBlob(ld.String(), layer, started, release))
	inflight := pullBlob(base+"/v2/library/app/blobs/"+ld.String(), layer)
	<-started
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, `"msg":"shutting down: draining the answers in flight"`)
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("a new connection was accepted while draining")
	}
	close(release)
	if err := <-inflight; err != nil {
		t.Fatalf("the pull in flight at SIGTERM: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
}

// TestDrainTimeout: an answer that does not finish within drain_timeout
// is cut, and the process still exits 0, on time.
func TestDrainTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	up := testupstream.Start(t)
	ld, layer := pushOneLayer(t, up, "library/app:v1", 256<<10)
	cmd, addr, logs := startBinaryLogged(t, bin, t.TempDir(), up.URL, "drain_timeout: 1s\n")
	started, never := make(chan struct{}), make(chan struct{})
	up.SetHook(holdBlob(ld.String(), layer, started, never))
	cut := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/v2/library/app/blobs/" + ld.String())
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		cut <- err
	}()
	<-started
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after the drain timeout: %v\n%s", err, logs.String())
	}
	if took := time.Since(sent); took < time.Second || took > 10*time.Second {
		t.Errorf("exited %v after SIGTERM, want about the 1 s drain timeout", took)
	}
	if !strings.Contains(logs.String(), "drain timeout: answers still in flight were cut") {
		t.Errorf("no drain timeout line in the log:\n%s", logs.String())
	}
	select {
	case err := <-cut:
		if err == nil {
			t.Error("the answer cut by the drain timeout ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Error("the client of the cut answer is still waiting")
	}
}

// TestCredentialHelperPull: an upstream configured with credential_helper
// is pulled from with the helper's credentials.
func TestCredentialHelperPull(t *testing.T) {
	secret, runs := testupstream.InstallCredentialHelper(t, "bwpull", "robot")
	if err := os.WriteFile(secret, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "org/private:v1", img)
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("robot:tok"))
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/" && r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="up"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	})
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	body := fmt.Sprintf("upstreams:\n  docker.io:\n    url: %s\n    credential_helper: bwpull\n", up.URL)
	if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgFile, "127.0.0.1:0", t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := startServeLoop(t, cfg, slog.New(slog.DiscardHandler), nil)
	defer stop()
	resp, err := http.Get("http://" + addr + "/v2/org/private/manifests/v1")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pull with the helper's credentials: %v %v", resp, err)
	}
	if b, _ := os.ReadFile(runs); !strings.Contains(string(b), "https://index.docker.io/v1/") {
		t.Errorf("the helper was asked about %q", b)
	}
}

// pullBlob GETs url in the background; the channel says whether the body
// was want, complete.
func pullBlob(url string, want []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || !bytes.Equal(got, want)) {
			err = fmt.Errorf("%s, %d bytes, not the blob's %d", resp.Status, len(got), len(want))
		}
		done <- err
	}()
	return done
}
