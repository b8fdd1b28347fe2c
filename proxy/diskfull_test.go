package proxy_test

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/storage"
)

// smallDisk mounts a tmpfs of size bytes: a real filesystem that fills up.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return dir
}

// TestDiskFull: with the cache's disk full, blobs are streamed from upstream
// without caching; when space returns, caching resumes by itself.
func TestDiskFull(t *testing.T) {
	disk := smallDisk(t, "4m")
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, 3<<20+512<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{
		dir:       filepath.Join(disk, "cache"),
		tagTTL:    time.Minute,
		storeOpts: []storage.Option{storage.WithMinFree(128 << 10), storage.WithSpaceRecheck(50 * time.Millisecond)},
	})
	img := randomImage(t, 1<<20, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/big:v1", img)
	dgst := digestOf(t, layersOf(t, img)[0])
	m.get("/v2/library/big/manifests/v1")

	for i := 0; i < 2; i++ {
		resp, body := m.get("/v2/library/big/blobs/" + dgst)
		if resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
			t.Fatalf("disk full, pull %d: status %d, digest %s", i, resp.StatusCode, sha256Hex(body))
		}
	}
	if _, err := m.store.StatBlob(digest.Digest(dgst)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("cached on a full disk: %v", err)
	}
	if !m.store.Full() {
		t.Error("store does not know the disk is full")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	resp, body := m.get("/v2/library/big/blobs/" + dgst)
	if resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
		t.Fatalf("after space returned: %d", resp.StatusCode)
	}
	// The client has the verified bytes a moment before they are durable.
	cached := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !cached; time.Sleep(5 * time.Millisecond) {
		_, err := m.store.StatBlob(digest.Digest(dgst))
		cached = err == nil
	}
	if !cached {
		t.Error("not cached once space returned")
	}
	up.Reset()
	if resp, _ := m.get("/v2/library/big/blobs/" + dgst); resp.StatusCode != 200 || up.Count(http.MethodGet, "/blobs/") != 0 {
		t.Errorf("warm pull after recovery went upstream")
	}
}

// TestReadyz: ready while the cache takes writes, not ready when it stops.
func TestReadyz(t *testing.T) {
	disk := smallDisk(t, "1m")
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{dir: filepath.Join(disk, "cache")})
	if resp, body := m.get("/readyz"); resp.StatusCode != 200 {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", disk).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v: %s", err, out)
	}
	defer exec.Command("mount", "-o", "remount,rw", disk).Run()
	if resp, body := m.get("/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz on a read-only cache: %d %s", resp.StatusCode, body)
	}
	if resp, _ := m.get("/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz must stay 200 (alive): %d", resp.StatusCode)
	}
}
