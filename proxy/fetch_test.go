package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/storage"

	"github.com/opencontainers/go-digest"
)

// slowBlob installs a hook that serves one blob's first half, then waits for
// release before sending the rest: a fetch that stays under way as long as
// the test wants.
func slowBlob(up *testupstream.Upstream, dgst string, content []byte, release <-chan struct{}) {
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		w.Header().Set("Docker-Content-Digest", dgst)
		testupstream.HalfThenWait(w, r, content, release)
		return true
	})
}

// TestCoalescing sends 32 concurrent cold clients for the same blob: the
// upstream sees one GET, every client streams before the fetch completes,
// and every client gets the right bytes.
func TestCoalescing(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	content, dgst := pushLinkedLayer(t, up, m, "library/herd", 1<<20)

	release := make(chan struct{})
	slowBlob(up, dgst, content, release)

	const clients = 32
	var firstBytes sync.WaitGroup
	firstBytes.Add(clients)
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			errs <- func() error {
				resp, err := m.client.Get(m.srv.URL + "/v2/library/herd/blobs/" + dgst)
				if err != nil {
					firstBytes.Done()
					return err
				}
				defer resp.Body.Close()
				h := sha256.New()
				buf := make([]byte, 1)
				_, err = io.ReadFull(resp.Body, buf)
				firstBytes.Done()
				if err != nil {
					return fmt.Errorf("first byte: %w", err)
				}
				h.Write(buf)
				if _, err := io.Copy(h, resp.Body); err != nil {
					return err
				}
				if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dgst {
					return fmt.Errorf("digest %s", got)
				}
				return nil
			}()
		}()
	}
	// Every client must see bytes while the upstream still holds back half
	// of the blob: they stream, they do not wait for completion.
	waitOrFail(t, &firstBytes, 30*time.Second, "clients did not get their first bytes while the fetch was under way")
	close(release)
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := up.Count(http.MethodGet, "/blobs/"+dgst); n != 1 {
		t.Errorf("upstream GETs for the blob = %d, want 1", n)
	}
	// Once complete it is served from the cache without asking upstream.
	if got := pullAll(t, m, "library/herd:v1"); got == "" {
		t.Error("no digest")
	}
	if n := up.Count(http.MethodGet, "/blobs/"+dgst); n != 1 {
		t.Errorf("warm pull went upstream: %d GETs", n)
	}
}

func waitOrFail(t *testing.T, wg *sync.WaitGroup, d time.Duration, msg string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal(msg)
	}
}

// TestDigestMismatchNeverCached: an upstream that sends wrong bytes under a
// digest fails every waiting client and leaves nothing in the cache.
func TestDigestMismatchNeverCached(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	content, dgst := pushLinkedLayer(t, up, m, "library/bad", 256<<10)

	corrupt := append([]byte(nil), content...)
	corrupt[len(corrupt)-1] ^= 0xff // only the last byte differs
	release := make(chan struct{})
	slowBlob(up, dgst, corrupt, release)

	const clients = 4
	var started sync.WaitGroup
	started.Add(clients)
	results := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			resp, err := m.client.Get(m.srv.URL + "/v2/library/bad/blobs/" + dgst)
			started.Done()
			if err != nil {
				results <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && sha256Hex(body) == dgst {
				results <- errors.New("got correct content from a corrupt upstream")
				return
			}
			if err == nil {
				results <- fmt.Errorf("got %d bytes of wrong content without an error", len(body))
				return
			}
			results <- nil
		}()
	}
	waitOrFail(t, &started, 30*time.Second, "clients did not start")
	close(release)
	for i := 0; i < clients; i++ {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if _, err := m.store.StatBlob(digest.Digest(dgst)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("corrupt blob cached: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(m.dir, "ingest")); len(ents) != 0 {
		t.Errorf("ingest not cleaned: %d entries", len(ents))
	}
	// A later request with an honest upstream succeeds.
	up.SetHook(nil)
	resp, body := m.get("/v2/library/bad/blobs/" + dgst)
	if resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
		t.Fatalf("after the upstream recovered: %d, digest %s", resp.StatusCode, sha256Hex(body))
	}
}

// TestManifestDigestMismatch: a manifest whose bytes do not hash to the
// digest asked for or claimed is refused with 502 DIGEST_INVALID and not
// cached.
func TestManifestDigestMismatch(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	d := up.PushImage(t, "library/liar:v1", img)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		body := []byte(`{"schemaVersion":2}`)
		w.Header().Set("Content-Type", string(types.DockerManifestSchema2))
		w.Header().Set("Docker-Content-Digest", d.String())
		_, _ = w.Write(body)
		return true
	})
	for _, ref := range []string{"v1", d.String()} {
		resp, body := m.get("/v2/library/liar/manifests/" + ref)
		if resp.StatusCode != http.StatusBadGateway || errorCode(body) != "DIGEST_INVALID" {
			t.Errorf("%s: %d %s", ref, resp.StatusCode, body)
		}
	}
	if _, err := m.store.StatBlob(digest.Digest(d.String())); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("manifest cached: %v", err)
	}
}

// TestBlobIsolation: a cached blob is served for another repository only
// when the upstream confirms that repository has it.
func TestBlobIsolation(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	img := randomImage(t, 8<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "private/secret:v1", img)
	pullAll(t, m, "private/secret:v1")
	dgst := digestOf(t, layersOf(t, img)[0])

	resp, body := m.get("/v2/other/repo/blobs/" + dgst)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "BLOB_UNKNOWN" {
		t.Fatalf("cached blob served to a repository that lacks it: %d %s", resp.StatusCode, body)
	}

	up.PushImage(t, "other/repo:v1", img)
	resp, body = m.get("/v2/other/repo/blobs/" + dgst)
	if resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
		t.Fatalf("blob the upstream confirmed: %d", resp.StatusCode)
	}
	if n := up.Count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("confirmed blob fetched again: %d GETs", n)
	}
	if n := up.Count(http.MethodHead, "/v2/other/repo/blobs/"); n != 1 {
		t.Errorf("upstream HEADs = %d, want 1", n)
	}
}

// syntheticBlob is deterministic pseudo-random content that a hook can
// serve without holding it in memory.
type syntheticBlob struct {
	seed [32]byte
	size int64
}

func (b syntheticBlob) reader() io.Reader {
	return io.LimitReader(rand.NewChaCha8(b.seed), b.size)
}

func (b syntheticBlob) digest(t *testing.T) string {
	h := sha256.New()
	if _, err := io.Copy(h, b.reader()); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// TestMemoryFlat sends a large cold blob to many clients at once: the heap
// must not grow by anything near the blob's size.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2 GiB over loopback")
	}
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	blob := syntheticBlob{seed: [32]byte{1, 2, 3}, size: 64 << 20}
	dgst := blob.digest(t)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		w.Header().Set("Content-Length", strconv.FormatInt(blob.size, 10))
		if r.Method == http.MethodGet {
			_, _ = io.Copy(w, blob.reader())
		}
		return true
	})

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	const clients = 32
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := m.client.Get(m.srv.URL + "/v2/library/big/blobs/" + dgst)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				errs <- err
				return
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dgst {
				errs <- fmt.Errorf("digest %s", got)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	growth := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use: base %d MiB, peak %d MiB, growth %d MiB for a %d MiB blob to %d clients",
		base.HeapInuse>>20, peak.Load()>>20, growth>>20, blob.size>>20, clients)
	if limit := int64(24 << 20); growth > limit {
		t.Errorf("heap grew by %d MiB, more than %d MiB", growth>>20, limit>>20)
	}
	if n := up.Count(http.MethodGet, "/blobs/"+dgst); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
}

// TestFollowersOfAFetchUnderWay: while the upstream holds back the second
// half of a blob, clients that join the fetch get what they ask for —
// whole, a range inside what has arrived, a range that reaches past it,
// several ranges at once, or only the headers — and nothing but the
// headers is answered before the upstream has sent the whole blob: a
// range, even of bytes already on disk, is a complete answer, so it waits
// until every byte is verified. (That the last byte of a whole GET waits
// for verification is TestDigestMismatchNeverCached's.)
func TestFollowersOfAFetchUnderWay(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	content, dgst := pushLinkedLayer(t, up, m, "library/follow", 3<<20)
	size, half := len(content), len(content)/2

	release := make(chan struct{})
	slowBlob(up, dgst, content, release)
	path := m.srv.URL + "/v2/library/follow/blobs/" + dgst

	// The first client starts the fetch; once it has read the first half
	// but for the byte held back, the fetch is known to be under way with
	// that half on disk.
	starter, err := m.client.Get(path)
	if err != nil {
		t.Fatal(err)
	}
	defer starter.Body.Close()
	got := make([]byte, half-1)
	if _, err := io.ReadFull(starter.Body, got); err != nil {
		t.Fatalf("first half: %v", err)
	}

	type answer struct {
		status int
		header http.Header
		body   []byte
		err    error
	}
	ask := func(method, rng string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest(method, path, nil)
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			resp, err := m.client.Do(req)
			if err != nil {
				ch <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			ch <- answer{resp.StatusCode, resp.Header, body, err}
		}()
		return ch
	}
	within := fmt.Sprintf("bytes=10-%d", half-2)
	cases := []struct {
		name, method, rng string
		// early: answered in full before the upstream sends the rest
		early      bool
		wantStatus int
		wantBody   []byte
	}{
		{"range within the first half", http.MethodGet, within, false, http.StatusPartialContent, content[10 : half-1]},
		{"head", http.MethodHead, "", true, http.StatusOK, nil},
		{"whole", http.MethodGet, "", false, http.StatusOK, content},
		{"range across the half", http.MethodGet, fmt.Sprintf("bytes=%d-%d", half-100, half+100), false, http.StatusPartialContent, content[half-100 : half+101]},
		{"last byte", http.MethodGet, "bytes=-1", false, http.StatusPartialContent, content[size-1:]},
	}
	answers := make([]<-chan answer, len(cases))
	for i, tc := range cases {
		answers[i] = ask(tc.method, tc.rng)
	}
	multi := ask(http.MethodGet, "bytes=0-9,20-29")
	check := func(tc int, a answer) {
		c := cases[tc]
		if a.err != nil {
			t.Errorf("%s: %v", c.name, a.err)
			return
		}
		if a.status != c.wantStatus || !bytes.Equal(a.body, c.wantBody) {
			t.Errorf("%s: status %d with %d bytes, want %d with %d bytes", c.name, a.status, len(a.body), c.wantStatus, len(c.wantBody))
		}
		if c.method == http.MethodHead && a.header.Get("Content-Length") != strconv.Itoa(size) {
			t.Errorf("%s: Content-Length %q, want %d", c.name, a.header.Get("Content-Length"), size)
		}
	}
	for i, tc := range cases {
		if !tc.early {
			continue
		}
		select {
		case a := <-answers[i]:
			check(i, a)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer while the fetch was under way", tc.name)
		}
	}
	for i, tc := range cases {
		if tc.early {
			continue
		}
		select {
		case a := <-answers[i]:
			t.Fatalf("%s: answered (status %d, %d bytes, %v) before the upstream sent the rest", tc.name, a.status, len(a.body), a.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	close(release)
	for i, tc := range cases {
		if tc.early {
			continue
		}
		select {
		case a := <-answers[i]:
			check(i, a)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer after the upstream sent the rest", tc.name)
		}
	}
	select {
	case a := <-multi:
		if a.err != nil || a.status != http.StatusPartialContent ||
			!bytes.Contains(a.body, content[0:10]) || !bytes.Contains(a.body, content[20:30]) ||
			!strings.HasPrefix(a.header.Get("Content-Type"), "multipart/byteranges") {
			t.Errorf("two ranges: status %d, type %q, %d bytes, %v", a.status, a.header.Get("Content-Type"), len(a.body), a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("two ranges: no answer")
	}
	rest, err := io.ReadAll(starter.Body)
	if err != nil || !bytes.Equal(append(got, rest...), content) {
		t.Errorf("the client that started the fetch: %d bytes, %v", len(got)+len(rest), err)
	}
	if n := up.Count(http.MethodGet, "/blobs/"+dgst); n != 1 {
		t.Errorf("upstream GETs for the blob = %d, want 1", n)
	}
}
