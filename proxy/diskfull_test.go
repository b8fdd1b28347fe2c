package proxy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testdisk"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
)

// TestDiskFull: with the cache's disk full, blobs are streamed from upstream
// without caching; when space returns, caching resumes by itself.
func TestDiskFull(t *testing.T) {
	disk := testdisk.Tmpfs(t, "4m")
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, 3<<20+512<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	up := testupstream.Start(t)
	// About 512 KiB are left: under the minimum free space, so the disk
	// is full whatever size a blob has.
	m := newMirror(t, up.URL, mirrorOpts{
		dir:       filepath.Join(disk, "cache"),
		tagTTL:    time.Minute,
		storeOpts: []storage.Option{storage.WithMinFree(1 << 20), storage.WithSpaceRecheck(50 * time.Millisecond)},
	})
	img := randomImage(t, 1<<20, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/big:v1", img)
	dgst := digestOf(t, layersOf(t, img)[0])
	if resp, body := m.get("/v2/library/big/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest on a full disk: %d %s; want it served without caching", resp.StatusCode, body)
	}

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
	disk := testdisk.Tmpfs(t, "1m")
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{dir: filepath.Join(disk, "cache")})
	if resp, body := m.get("/readyz"); resp.StatusCode != 200 {
		t.Fatalf("/readyz: %d %s", resp.StatusCode, body)
	}
	testdisk.Remount(t, disk, "ro")
	defer exec.Command("mount", "-o", "remount,rw", disk).Run()
	if resp, body := m.get("/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz on a read-only cache: %d %s", resp.StatusCode, body)
	}
	if resp, _ := m.get("/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz must stay 200 (alive): %d", resp.StatusCode)
	}
}

// lyingBlob makes the upstream answer GETs of dgst with the given
// Content-Length and only a few bytes of body.
func lyingBlob(up *testupstream.Upstream, dgst, contentLength string) {
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		w.Header().Set("Content-Length", contentLength)
		w.Header().Set("Docker-Content-Digest", dgst)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("short"))
		return true
	})
}

// pullConcurrently has n clients GET one blob at once and checks each got
// its bytes.
func pullConcurrently(t *testing.T, m *mirror, repo, dgst string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := m.client.Get(m.srv.URL + "/v2/" + repo + "/blobs/" + dgst)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
				errs <- fmt.Errorf("GET %s: %d, %d bytes, %v", dgst, resp.StatusCode, len(body), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestHugeContentLength: an upstream answer claiming 1 TiB never marks
// the disk full, and blobs after it are cached: 20 concurrent clients of
// a good blob make one upstream GET. Past cache.max_blob_size (64 GiB by
// default) the client gets a 502 naming it; below it (here 2 TiB) the
// blob is passed through, as one larger than the free disk, and its short
// body gets the crafted 503 of a body cut off. Either way the content
// never arrives as complete.
func TestHugeContentLength(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxBlob int64
		want502 bool
	}{
		{"past max_blob_size", 0, true},
		{"larger than the disk", 2 << 40, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute, maxBlob: tc.maxBlob})
			_, liar := pushLinkedLayer(t, up, m, "library/liar", 4<<10)
			lyingBlob(up, liar, "1099511627776")
			resp, err := m.client.Get(m.srv.URL + "/v2/library/liar/blobs/" + liar)
			if err != nil {
				t.Fatalf("lying blob: no answer: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case err != nil:
				t.Errorf("lying blob: %d and a body cut after %d bytes (%v), want an answer", resp.StatusCode, len(body), err)
			case tc.want502:
				if resp.StatusCode != http.StatusBadGateway || !bytes.Contains(body, []byte("cache.max_blob_size")) {
					t.Errorf("lying blob past max_blob_size: %d %s, want 502 naming it", resp.StatusCode, body)
				}
			default:
				// Five bytes are too few for headers to go out.
				checkCrafted(t, resp, body, "unreachable: body cut off: unexpected EOF")
			}
			if m.store.Full() {
				t.Fatal("a declared 1 TiB marked the store full")
			}
			up.SetHook(nil)

			_, good := pushLinkedLayer(t, up, m, "library/good", 256<<10)
			up.Reset()
			pullConcurrently(t, m, "library/good", good, 20)
			if n := up.Count(http.MethodGet, "/blobs/"+good); n != 1 {
				t.Errorf("20 clients of a good blob after a lying one: %d upstream GETs, want 1", n)
			}
			waitCached(t, m, good)
		})
	}
}

// TestBlobOverMaxSize: a blob larger than max_size is passed through, and
// only that one: with a Content-Length at once, without one after the
// fetch stopped at max_size; blobs that fit are cached.
func TestBlobOverMaxSize(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{
		tagTTL:    time.Minute,
		storeOpts: []storage.Option{storage.WithLimits(storage.Limits{MaxSize: 1 << 20, High: 1 << 20, Low: 512 << 10})},
	})
	_, big := pushLinkedLayer(t, up, m, "library/big", 2<<20)
	for i := range 2 {
		pullConcurrently(t, m, "library/big", big, 1)
		if _, err := m.store.StatBlob(digest.Digest(big)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("pull %d: a blob over max_size was cached: %v", i, err)
		}
	}
	if m.store.Full() {
		t.Fatal("a blob over max_size marked the store full")
	}
	_, small := pushLinkedLayer(t, up, m, "library/small", 64<<10)
	pullConcurrently(t, m, "library/small", small, 1)
	waitCached(t, m, small)

	// Without a Content-Length the fetch finds out part way, before any
	// header went out: that client and the next get the blob passed
	// through.
	content, chunked := pushLinkedLayer(t, up, m, "library/chunked", 3<<20)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+chunked) {
			return false
		}
		for rest := content; len(rest) > 0; rest = rest[min(len(rest), 64<<10):] {
			_, _ = w.Write(rest[:min(len(rest), 64<<10)])
			w.(http.Flusher).Flush()
		}
		return true
	})
	up.Reset()
	pullConcurrently(t, m, "library/chunked", chunked, 1)
	pullConcurrently(t, m, "library/chunked", chunked, 1)
	if n := up.Count(http.MethodGet, "/blobs/"+chunked); n != 3 {
		t.Errorf("%d upstream GETs for two pulls, want the fetch stopped at max_size and two passthroughs", n)
	}
	if _, err := m.store.StatBlob(digest.Digest(chunked)); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a chunked blob over max_size was cached: %v", err)
	}
	if m.store.Full() {
		t.Error("a chunked blob over max_size marked the store full")
	}
}

// statusOf returns the status page's cache state and cause.
func statusOf(t *testing.T, m *mirror) proxy.CacheStatus {
	t.Helper()
	_, body := m.get("/_breakwater/v1/status")
	var st proxy.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("status: %v: %s", err, body)
	}
	return st.Cache
}

// TestReadOnlyCache: a cache directory that turns read-only while running
// behaves like a full disk: new blobs and manifests are served from the
// upstream without caching, content already cached keeps being served,
// /readyz and the status page say why; when it is writable again caching
// resumes by itself.
func TestReadOnlyCache(t *testing.T) {
	disk := testdisk.Tmpfs(t, "16m")
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{
		dir:       filepath.Join(disk, "cache"),
		tagTTL:    time.Minute,
		storeOpts: []storage.Option{storage.WithMinFree(64 << 10), storage.WithSpaceRecheck(50 * time.Millisecond)},
	})
	_, before := pushLinkedLayer(t, up, m, "library/before", 64<<10)
	pullConcurrently(t, m, "library/before", before, 1)
	waitCached(t, m, before)

	testdisk.Remount(t, disk, "ro")
	defer exec.Command("mount", "-o", "remount,rw", disk).Run()
	img := randomImage(t, 128<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/after:v1", img)
	after := digestOf(t, layersOf(t, img)[0])
	if resp, body := m.get("/v2/library/after/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest with a read-only cache: %d %s", resp.StatusCode, body)
	}
	pullConcurrently(t, m, "library/after", after, 2)
	up.Reset()
	pullConcurrently(t, m, "library/before", before, 1)
	if n := up.Count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("content cached before went upstream: %d GETs", n)
	}
	resp, body := m.get("/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "read-only file system") {
		t.Errorf("/readyz on a read-only cache: %d %q, want 503 naming the cause", resp.StatusCode, body)
	}
	if st := statusOf(t, m); st.State != "unwritable" || !strings.Contains(st.StateCause, "read-only") {
		t.Errorf("status: state %q cause %q", st.State, st.StateCause)
	}

	testdisk.Remount(t, disk, "rw")
	waitWritable(t, m)
	pullCaches(t, m, up, "library/after", after)
}

// waitWritable polls /readyz until the store recovered by itself.
func waitWritable(t *testing.T, m *mirror) {
	t.Helper()
	eventually(t, func() (bool, string) {
		resp, body := m.get("/readyz")
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("not recovered: /readyz %d %s", resp.StatusCode, body)
	})
}

// eventually polls done for up to 10 s and fails with its last message.
func eventually(t *testing.T, done func() (bool, string)) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ok, msg := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
	}
}

// TestDeletedCache: a cache directory deleted while running (and, to hold
// that state, replaced by a file) passes pulls through from the upstream,
// including of content cached before, answers 503 on /readyz naming the
// cause, and once the directory can be made again recreates its layout
// and caches without a restart.
func TestDeletedCache(t *testing.T) {
	up := testupstream.Start(t)
	dir := filepath.Join(t.TempDir(), "cache")
	m := newMirror(t, up.URL, mirrorOpts{
		dir:       dir,
		tagTTL:    time.Minute,
		storeOpts: []storage.Option{storage.WithSpaceRecheck(50 * time.Millisecond)},
	})
	_, dgst := pushLinkedLayer(t, up, m, "library/gone", 64<<10)
	pullConcurrently(t, m, "library/gone", dgst, 1)
	waitCached(t, m, dgst)

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	if resp, body := m.get("/v2/library/gone/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest with the cache gone: %d %s", resp.StatusCode, body)
	}
	pullConcurrently(t, m, "library/gone", dgst, 2)
	resp, body := m.get("/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "not a directory") {
		t.Errorf("/readyz with the cache gone: %d %q, want 503 naming the cause", resp.StatusCode, body)
	}
	if st := statusOf(t, m); st.State != "unwritable" {
		t.Errorf("status: state %q cause %q", st.State, st.StateCause)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	waitWritable(t, m)
	for _, sub := range []string{"blobs", "repos", "ingest"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Errorf("layout not recreated: %s: %v", sub, err)
		}
	}
	m.get("/v2/library/gone/manifests/v1")
	pullCaches(t, m, up, "library/gone", dgst)
}

// pullCaches pulls a blob and checks it was cached: the next pull makes no
// upstream request.
func pullCaches(t *testing.T, m *mirror, up *testupstream.Upstream, repo, dgst string) {
	t.Helper()
	pullConcurrently(t, m, repo, dgst, 1)
	waitCached(t, m, dgst)
	up.Reset()
	pullConcurrently(t, m, repo, dgst, 1)
	if n := up.Count("", "/blobs/"); n != 0 {
		t.Errorf("%s was not cached: %d upstream blob requests for the next pull", dgst, n)
	}
}

// waitCached waits for a blob's fetch to commit: a client has the verified
// bytes a moment before they are durable.
func waitCached(t *testing.T, m *mirror, dgst string) {
	t.Helper()
	eventually(t, func() (bool, string) {
		_, err := m.store.StatBlob(digest.Digest(dgst))
		return err == nil, fmt.Sprintf("%s not cached: %v", dgst, err)
	})
}
