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
	"golang.org/x/crypto/bcrypt"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testlog"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

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
	logs := &testlog.Buffer{}
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

func waitLog(t *testing.T, logs *testlog.Buffer, needle string) {
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

// startReloadable runs the serve loop on the configuration file cfgFile,
// re-read on every value sent to the returned channel, as SIGHUP does. It
// returns the base URL, the log and the channel; the loop is stopped when
// the test ends.
func startReloadable(t *testing.T, cfgFile string) (string, *testlog.Buffer, chan<- struct{}) {
	t.Helper()
	load := func() (config.Config, error) { return loadConfig(cfgFile, "", "", "", nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveWith(ctx, serveOptions{cfg: cfg, log: slog.New(slog.NewJSONHandler(logs, nil)),
			ready: ready, reload: reload, load: load})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return "http://" + addr, logs, reload
	case err := <-done:
		t.Fatalf("serve: %v", err)
		return "", nil, nil
	}
}

// reloadAndWait sends one reload and waits for the log line it must add:
// want is counted after the lines already there.
func reloadAndWait(t *testing.T, logs *testlog.Buffer, reload chan<- struct{}, want string) {
	t.Helper()
	n := strings.Count(logs.String(), want)
	reload <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), want) == n {
		if time.Now().After(deadline) {
			t.Fatalf("no new %s in the log after the reload:\n%s", want, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReloadAuth: a reload re-reads the htpasswd file and the access list —
// a user added, a grant widened — and a reload whose access list names a
// user the file lacks is refused, the running policy staying in force.
func TestReloadAuth(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/app:v1", img)
	up.PushImage(t, "acme/app:v1", img)

	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	writeUsers := func(users ...string) {
		t.Helper()
		var b strings.Builder
		for _, u := range users {
			hash, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s:%s\n", u, hash)
		}
		if err := os.WriteFile(htpasswd, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgFile := filepath.Join(dir, "config.yaml")
	writeConfig := func(access string) {
		t.Helper()
		body := fmt.Sprintf("listen: 127.0.0.1:0\ncache:\n  dir: %s\nupstreams:\n  docker.io:\n    url: %s\nauth:\n  htpasswd: %s\n  access:\n%s",
			filepath.Join(dir, "cache"), up.URL, htpasswd, access)
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("alice")
	writeConfig("    - users: [alice]\n      repositories: [docker.io/library/]\n")
	base, logs, reload := startReloadable(t, cfgFile)

	pull := func(user, repo string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/manifests/v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, user+"-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	type want struct {
		user, repo string
		status     int
	}
	check := func(when string, wants []want) {
		t.Helper()
		for _, w := range wants {
			if got := pull(w.user, w.repo); got != w.status {
				t.Errorf("%s: %s pulls %s: %d, want %d", when, w.user, w.repo, got, w.status)
			}
		}
	}
	check("at start", []want{
		{"alice", "library/app", http.StatusOK},
		{"alice", "acme/app", http.StatusForbidden},
		{"bob", "library/app", http.StatusUnauthorized},
	})

	// bob joins the file and may pull everything; alice gets acme/ too.
	writeUsers("alice", "bob")
	writeConfig("    - users: [alice]\n      repositories: [docker.io/library/, docker.io/acme/]\n    - users: [bob]\n      repositories: [\"*\"]\n")
	reloadAndWait(t, logs, reload, `"msg":"configuration reloaded"`)
	after := []want{
		{"alice", "library/app", http.StatusOK},
		{"alice", "acme/app", http.StatusOK},
		{"bob", "library/app", http.StatusOK},
		{"bob", "acme/app", http.StatusOK},
		{"carol", "library/app", http.StatusUnauthorized},
	}
	check("after the reload", after)

	// carol is granted access but is not in the file: the reload is
	// refused, and alice and bob keep what they had.
	writeConfig("    - users: [carol]\n      repositories: [\"*\"]\n")
	reloadAndWait(t, logs, reload, `"msg":"configuration reload refused; the running configuration stays"`)
	if !strings.Contains(logs.String(), `carol`) {
		t.Errorf("the refusal does not name the unknown user:\n%s", logs.String())
	}
	check("after a refused reload", after)
}

// TestReloadTagTTLAndResilience: a reload applies a new cache.tag_ttl to
// tags cached before it, and new resilience settings to the upstream.
func TestReloadTagTTLAndResilience(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/app:v1", img)
	up.Play("", "/library/down/manifests/", testupstream.Status(http.StatusServiceUnavailable)).Forever()

	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.yaml")
	writeConfig := func(tagTTL string, attempts int) {
		t.Helper()
		// The breaker never opens, so that every request's tries reach
		// the upstream.
		body := fmt.Sprintf(`listen: 127.0.0.1:0
cache:
  dir: %s
  tag_ttl: %s
upstreams:
  docker.io:
    url: %s
resilience:
  retry:
    attempts: %d
    base_delay: 1ms
    max_delay: 1ms
    deadline: 10s
  breaker:
    min_requests: 1000000
`, filepath.Join(dir, "cache"), tagTTL, up.URL, attempts)
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("1h", 1)
	base, logs, reload := startReloadable(t, cfgFile)

	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const app, down = "/v2/library/app/manifests/v1", "/v2/library/down/manifests/v1"
	if got := get(app); got != http.StatusOK {
		t.Fatalf("first pull: %d", got)
	}
	up.Reset()
	if got := get(app); got != http.StatusOK || up.Count("", "/manifests/v1") != 0 {
		t.Fatalf("within tag_ttl 1h: %d, %d upstream requests; want 200 from the cache alone", got, up.Count("", "/manifests/v1"))
	}
	if got := get(down); got != http.StatusServiceUnavailable {
		t.Fatalf("a failing upstream: %d, want 503", got)
	}
	if n := up.Count("", "/library/down/manifests/"); n != 1 {
		t.Fatalf("retry.attempts 1: %d upstream tries, want 1", n)
	}

	writeConfig("0s", 3)
	reloadAndWait(t, logs, reload, `"msg":"configuration reloaded"`)
	up.Reset()
	if got := get(app); got != http.StatusOK || up.Count(http.MethodHead, "/library/app/manifests/v1") == 0 {
		t.Errorf("after the reload to tag_ttl 0s: %d, %d upstream HEADs; want the cached tag revalidated",
			got, up.Count(http.MethodHead, "/library/app/manifests/v1"))
	}
	if got := get(down); got != http.StatusServiceUnavailable {
		t.Errorf("a failing upstream after the reload: %d, want 503", got)
	}
	if n := up.Count("", "/library/down/manifests/"); n != 3 {
		t.Errorf("after the reload to retry.attempts 3: %d upstream tries, want 3", n)
	}
}
