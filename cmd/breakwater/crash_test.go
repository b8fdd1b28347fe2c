package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testlog"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// Stamped into the binary buildBinary builds, as make build stamps a
// release's.
const (
	testVersion  = "0.0.0-test"
	testRevision = "feedfacecafe"
)

// buildBinary compiles breakwater for one test, stamped with testVersion
// and testRevision.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "breakwater")
	cmd := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X main.version="+testVersion+" -X main.revision="+testRevision, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// startBinary runs `breakwater serve` and waits for /healthz.
func startBinary(t *testing.T, bin, cache, upstream string) (*exec.Cmd, string) {
	t.Helper()
	cmd, addr, _ := startBinaryLogged(t, bin, cache, upstream, "")
	return cmd, addr
}

// startBinaryLogged is startBinary with more configuration (YAML of
// top-level keys) that also returns the process's log as it grows.
func startBinaryLogged(t *testing.T, bin, cache, upstream, extra string) (*exec.Cmd, string, *testlog.Buffer) {
	t.Helper()
	addr := testupstream.FreeAddr(t)
	// A short deadline: the restart against a dead upstream need not
	// retry for the default 20 s to show what it serves.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("resilience:\n  retry:\n    deadline: 2s\n"+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--listen", addr, "--cache-dir", cache, "--upstream", "docker.io="+upstream, "--tag-ttl", "1h")
	logs := &testlog.Buffer{}
	cmd.Stderr = logs
	if testing.Verbose() {
		cmd.Stderr = io.MultiWriter(logs, os.Stderr)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return cmd, addr, logs
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("breakwater did not start")
	return nil, "", nil
}

func ingestSize(t *testing.T, cache string) int64 {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(cache, "ingest"))
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestKillMidFetch kills the real process with SIGKILL before the upstream
// answered, while the body streams, and after the blob completed; after a
// restart the cache serves only complete, verified content.
func TestKillMidFetch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	for _, point := range []string{"before headers", "mid-body", "after completion"} {
		t.Run(point, func(t *testing.T) {
			up := testupstream.Start(t)
			img, err := random.Image(2<<20, 1)
			if err != nil {
				t.Fatal(err)
			}
			up.PushImage(t, "library/crash:v1", img)
			layers, _ := img.Layers()
			d, _ := layers[0].Digest()
			dgst := d.String()
			cache := t.TempDir()

			release := make(chan struct{})
			switch point {
			case "before headers":
				up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
					if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
						select {
						case <-release:
						case <-r.Context().Done():
							return true
						}
					}
					return false
				})
			case "mid-body":
				up.Play(http.MethodGet, "/blobs/"+dgst, testupstream.Stall(0.5))
			}

			cmd, addr := startBinary(t, bin, cache, up.URL)
			base := "http://" + addr
			if resp, err := http.Get(base + "/v2/library/crash/manifests/v1"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("manifest: %v %v", resp, err)
			}
			go func() { // a client whose pull the crash interrupts
				resp, err := http.Get(base + "/v2/library/crash/blobs/" + dgst)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
			waitFor(t, 10*time.Second, func() bool {
				switch point {
				case "before headers":
					return up.Count(http.MethodGet, "/blobs/") > 0
				case "mid-body":
					return ingestSize(t, cache) > 512<<10
				default:
					_, err := os.Stat(filepath.Join(cache, "blobs", "sha256", d.Hex[:2], d.Hex))
					return err == nil
				}
			})
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			close(release)
			up.SetHook(nil)

			// Restart on the same cache with the upstream gone: only what
			// completed before the crash may be served.
			dead := "http://" + testupstream.FreeAddr(t)
			_, addr2 := startBinary(t, bin, cache, dead)
			if n := ingestSize(t, cache); n != 0 {
				t.Errorf("partial ingest survived the restart: %d bytes", n)
			}
			resp, err := http.Get("http://" + addr2 + "/v2/library/crash/blobs/" + dgst)
			if err != nil {
				t.Fatal(err)
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			sum := sha256.Sum256(body)
			got := "sha256:" + hex.EncodeToString(sum[:])
			switch point {
			case "after completion":
				if resp.StatusCode != 200 || rerr != nil || got != dgst {
					t.Errorf("completed blob after restart: %d, %v, digest %s", resp.StatusCode, rerr, got)
				}
			default:
				if resp.StatusCode == 200 {
					t.Errorf("a blob the crash interrupted was served (%d bytes)", len(body))
				}
			}
			// With the upstream back, the interrupted blob is fetched whole.
			_, addr3 := startBinary(t, bin, cache, up.URL)
			resp, err = http.Get("http://" + addr3 + "/v2/library/crash/blobs/" + dgst)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			sum = sha256.Sum256(body)
			if got := "sha256:" + hex.EncodeToString(sum[:]); resp.StatusCode != 200 || got != dgst {
				t.Errorf("after recovery: %d, digest %s", resp.StatusCode, got)
			}
		})
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}
