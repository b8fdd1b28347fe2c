package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testdistribution"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/storage"
)

// These tests attack Breakwater through the upstream: a real registry
// made to misbehave by hooks, or answers written byte by byte. Each checks
// the exact answer and that the cache holds nothing wrong afterwards.

// noLink checks that repo has no link to dgst.
func noLink(t *testing.T, m *mirror, repo, dgst string) {
	t.Helper()
	if m.store.BlobLinked(storage.Repo{Upstream: "docker.io", Name: repo}, digest.Digest(dgst)) {
		t.Errorf("%s is linked to %s", dgst, repo)
	}
}

// TestForeignLayerNeverServed: a public repository's manifest may list
// another repository's private layer as a foreign layer (distribution and
// Docker Hub accept it without the blob). After a legitimate pull of the
// private image with credentials, the public name must not serve those
// bytes: the upstream itself says the public repository lacks them.
func TestForeignLayerNeverServed(t *testing.T) {
	const user, pass = "puller", "s3cret"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	up := testupstream.Start(t)
	// Repositories under private/ need credentials, as on a registry with
	// per-repository permissions.
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v2/private/") && r.Header.Get("Authorization") != basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		return false
	})
	secret := randomImage(t, 16<<10, 1, types.DockerManifestSchema2)
	ref, err := name.ParseReference(up.Host+"/private/a:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, secret, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatal(err)
	}
	layer := layersOf(t, secret)[0]
	dgst := digestOf(t, layer)

	// public/evil lists the private layer's digest as a foreign layer;
	// as such it is not uploaded, and the registry takes the manifest
	// without the blob.
	evil, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:     foreignLayer{layer},
		URLs:      []string{"https://example.com/not-here.tar.gz"},
		MediaType: types.DockerForeignLayer,
	})
	if err != nil {
		t.Fatal(err)
	}
	evil = mutate.MediaType(evil, types.DockerManifestSchema2)
	up.PushImage(t, "public/evil:v1", evil)

	m := newMirror(t, up.URL, mirrorOpts{auth: &authn.Basic{Username: user, Password: pass}})
	pullAll(t, m, "private/a:v1")
	if resp, body := m.get("/v2/public/evil/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("public/evil's manifest: %s %s", resp.Status, body)
	}
	up.Reset()
	resp, body := m.get("/v2/public/evil/blobs/" + dgst)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "BLOB_UNKNOWN" {
		t.Fatalf("the private layer under the public name: %s, %d bytes (%s); want 404 BLOB_UNKNOWN", resp.Status, len(body), errorCode(body))
	}
	if up.Count(http.MethodHead, "/v2/public/evil/blobs/"+dgst) != 1 {
		t.Errorf("the upstream was not asked whether public/evil has the blob: %v", up.Requests("", "/public/evil/"))
	}
	noLink(t, m, "public/evil", dgst)
	// The private repository still gets it from the cache.
	if resp, body := m.get("/v2/private/a/blobs/" + dgst); resp.StatusCode != 200 || sha256Hex(body) != dgst {
		t.Errorf("private/a's own layer: %s", resp.Status)
	}
}

// TestForeignLayerNeverServedByDistribution28 is TestForeignLayerNeverServed
// against the registry the attack was found on: Debian's docker-registry
// (distribution 2.8) with htpasswd authentication, which, allowed foreign
// layers as on Docker Hub, takes a manifest whose foreign layer names
// another repository's digest without the blob, and answers 404 for that
// blob in the manifest's repository.
func TestForeignLayerNeverServedByDistribution28(t *testing.T) {
	reg := testdistribution.Start(t, "puller", "s3cret")
	creds := remote.WithAuth(&authn.Basic{Username: reg.User, Password: reg.Password})
	push := func(repoTag string, img v1.Image) {
		t.Helper()
		ref, err := name.ParseReference(reg.Host+"/"+repoTag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, creds); err != nil {
			t.Fatalf("push %s: %v", repoTag, err)
		}
	}
	secret := randomImage(t, 16<<10, 1, types.DockerManifestSchema2)
	push("private/a:v1", secret)
	layer := layersOf(t, secret)[0]
	dgst := digestOf(t, layer)
	evil, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:     foreignLayer{layer},
		URLs:      []string{"https://example.com/not-here.tar.gz"},
		MediaType: types.DockerForeignLayer,
	})
	if err != nil {
		t.Fatal(err)
	}
	push("public/evil:v1", mutate.MediaType(evil, types.DockerManifestSchema2))

	// The upstream's own word: the blob is private/a's, not public/evil's.
	for repo, want := range map[string]int{"private/a": http.StatusOK, "public/evil": http.StatusNotFound} {
		req, err := http.NewRequest(http.MethodHead, reg.URL+"/v2/"+repo+"/blobs/"+dgst, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(reg.User, reg.Password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("distribution 2.8's HEAD of the layer in %s: %s, want %d", repo, resp.Status, want)
		}
	}

	m := newMirror(t, reg.URL, mirrorOpts{auth: &authn.Basic{Username: reg.User, Password: reg.Password}})
	pullAll(t, m, "private/a:v1")
	if resp, body := m.get("/v2/public/evil/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("public/evil's manifest: %s %s", resp.Status, body)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := m.do(method, "/v2/public/evil/blobs/"+dgst, nil)
		if resp.StatusCode != http.StatusNotFound || len(body) > 0 && errorCode(body) != "BLOB_UNKNOWN" {
			t.Errorf("%s of the private layer under the public name: %s, %d bytes (%s); want 404 BLOB_UNKNOWN", method, resp.Status, len(body), errorCode(body))
		}
	}
	noLink(t, m, "public/evil", dgst)
	if resp, body := m.get("/v2/private/a/blobs/" + dgst); resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
		t.Errorf("private/a's own layer: %s", resp.Status)
	}
}

// TestJoinNeedsTheUpstreamsYes: a request for a repository the upstream
// lacks, arriving while a blob is being fetched for a private repository
// with credentials, is not handed the fetch's bytes: it asks the upstream
// about its own name, gets that 404, and is never linked. The private
// client still gets the whole blob from the one fetch.
func TestJoinNeedsTheUpstreamsYes(t *testing.T) {
	const user, pass = "puller", "s3cret"
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	up := testupstream.Start(t)
	secret := randomImage(t, 256<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "private/a:v1", secret)
	layer := layersOf(t, secret)[0]
	content, dgst := compressedBytes(t, layer), digestOf(t, layer)
	// private/ needs credentials; private/a's blob comes in two halves,
	// the second once release is closed.
	release := make(chan struct{})
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/v2/private/") {
			return false
		}
		if r.Header.Get("Authorization") != basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		if r.Method != http.MethodGet || r.URL.Path != "/v2/private/a/blobs/"+dgst {
			return false
		}
		testupstream.HalfThenWait(w, r, content, release)
		return true
	})
	// The half-sent body must not be given up on while the test looks.
	p := fastPolicy()
	p.Retry.AttemptTimeout = time.Minute
	m := newMirror(t, up.URL, mirrorOpts{policy: p, auth: &authn.Basic{Username: user, Password: pass}})

	private, err := m.client.Get(m.srv.URL + "/v2/private/a/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer private.Body.Close()
	first := make([]byte, len(content)/2-1)
	if _, err := io.ReadFull(private.Body, first); err != nil {
		t.Fatalf("first half of the private blob: %v", err)
	}
	// The fetch is under way with half the bytes on disk. A request that
	// joined it would get a 200 and wait for the rest.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.srv.URL+"/v2/public/evil/blobs/"+dgst, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		t.Fatalf("the public name during the private fetch: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusNotFound || errorCode(body) != "BLOB_UNKNOWN" {
		t.Fatalf("the private blob under the public name during its fetch: %s, %d bytes (%s), %v; want 404 BLOB_UNKNOWN", resp.Status, len(body), errorCode(body), err)
	}
	if n := up.Count(http.MethodHead, "/v2/public/evil/blobs/"+dgst); n != 1 {
		t.Errorf("%d upstream HEADs for public/evil, want 1", n)
	}
	if n := up.Count(http.MethodGet, "/v2/public/evil/"); n != 0 {
		t.Errorf("%d upstream GETs for public/evil, want none", n)
	}
	noLink(t, m, "public/evil", dgst)

	close(release)
	rest, err := io.ReadAll(private.Body)
	if err != nil || !bytes.Equal(append(first, rest...), content) {
		t.Fatalf("the private client: %d bytes, %v", len(first)+len(rest), err)
	}
	waitCached(t, m, dgst)
	noLink(t, m, "public/evil", dgst)
	if n := up.Count(http.MethodGet, "/blobs/"+dgst); n != 1 {
		t.Errorf("%d upstream blob GETs, want the one fetch", n)
	}
}

// foreignLayer is a layer that says it is foreign, so that a push leaves
// its bytes out.
type foreignLayer struct{ v1.Layer }

func (foreignLayer) MediaType() (types.MediaType, error) { return types.DockerForeignLayer, nil }

// TestJoinRefusedFetch: a request for a repository the upstream lacks
// starts the fetch of a blob; a request for a repository that has it,
// arriving while that fetch is under way, must get the blob, not the
// other name's 404. Repeated with fresh blobs: the race once lost half the
// time.
func TestJoinRefusedFetch(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	// The upstream takes its time to say no for library/none, so that
	// the second request finds the fetch under way.
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2/library/none/blobs/") {
			time.Sleep(200 * time.Millisecond)
		}
		return false
	})
	for i := range 8 {
		img := randomImage(t, 8<<10, 1, types.DockerManifestSchema2)
		up.PushImage(t, fmt.Sprintf("library/has%d:v1", i), img)
		dgst := digestOf(t, layersOf(t, img)[0])
		none := make(chan *http.Response, 1)
		go func() {
			resp, _ := m.get("/v2/library/none/blobs/" + dgst)
			none <- resp
		}()
		deadline := time.Now().Add(5 * time.Second)
		for up.Count(http.MethodGet, "/v2/library/none/blobs/"+dgst) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		resp, body := m.get(fmt.Sprintf("/v2/library/has%d/blobs/%s", i, dgst))
		if resp.StatusCode != 200 || sha256Hex(body) != dgst {
			t.Errorf("round %d: the repository that has the blob got %s %s", i, resp.Status, body)
		}
		if r := <-none; r.StatusCode != http.StatusNotFound {
			t.Errorf("round %d: the repository that lacks it got %s", i, r.Status)
		}
		noLink(t, m, "library/none", dgst)
	}
}

// wrongBlob answers GETs of dgst with content of the right length but the
// wrong bytes, holding back the second half until release is closed; with
// chunked, without a Content-Length.
func wrongBlob(up *testupstream.Upstream, dgst string, size int, chunked bool, release <-chan struct{}) {
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		zeros := make([]byte, size)
		if !chunked {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		_, _ = w.Write(zeros[:size/2])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return true
		}
		_, _ = w.Write(zeros[size/2:])
		return true
	})
}

// TestRangeDuringWrongDigestFetch: a range of bytes that have already
// arrived, asked while a fetch whose digest will turn out wrong is under
// way, is never answered complete: it waits, and gets 502 DIGEST_INVALID.
func TestRangeDuringWrongDigestFetch(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	content, dgst := pushLinkedLayer(t, up, m, "library/bad", 256<<10)
	release := make(chan struct{})
	wrongBlob(up, dgst, len(content), false, release)

	whole, err := m.client.Get(m.srv.URL + "/v2/library/bad/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Body.Close()
	if _, err := io.ReadFull(whole.Body, make([]byte, 64<<10)); err != nil {
		t.Fatalf("first bytes of the whole GET: %v", err)
	}
	ranged := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, m.srv.URL+"/v2/library/bad/blobs/"+dgst, nil)
		req.Header.Set("Range", "bytes=0-65535")
		resp, err := m.client.Do(req)
		if err != nil {
			ranged <- nil
			return
		}
		ranged <- resp
	}()
	select {
	case resp := <-ranged:
		t.Fatalf("a range of unverified bytes was answered: %v", resp.Status)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	resp := <-ranged
	if resp == nil {
		t.Fatal("the range request failed without an answer")
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || errorCode(body) != "DIGEST_INVALID" {
		t.Errorf("range after the digest turned out wrong: %s %s, want 502 DIGEST_INVALID", resp.Status, body)
	}
	if _, err := io.ReadAll(whole.Body); err == nil {
		t.Error("the whole GET ended without an error although its content was wrong")
	}
	assertNotCached(t, m, dgst)
}

// TestChunkedWrongDigest: a complete body without a Content-Length whose
// digest is wrong is answered 502 DIGEST_INVALID (no header had gone out:
// the size was unknown), and nothing is cached.
func TestChunkedWrongDigest(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	content, dgst := pushLinkedLayer(t, up, m, "library/bad", 64<<10)
	release := make(chan struct{})
	close(release)
	wrongBlob(up, dgst, len(content), true, release)
	resp, body := m.get("/v2/library/bad/blobs/" + dgst)
	if resp.StatusCode != http.StatusBadGateway || errorCode(body) != "DIGEST_INVALID" {
		t.Fatalf("%s %s, want 502 DIGEST_INVALID", resp.Status, body)
	}
	assertNotCached(t, m, dgst)
}

func assertNotCached(t *testing.T, m *mirror, dgst string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := m.store.StatBlob(digest.Digest(dgst))
		ents, _ := os.ReadDir(filepath.Join(m.dir, "ingest"))
		if errors.Is(err, storage.ErrNotFound) && len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a failed fetch: blob %v, %d ingest files", err, len(ents))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// assertCacheVerified fails unless every blob file under the cache dir
// hashes to the digest it is stored under: what is there is served as
// that digest without being hashed again.
func assertCacheVerified(t testing.TB, dir string) {
	t.Helper()
	root := filepath.Join(dir, "blobs", "sha256")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(content); hex.EncodeToString(sum[:]) != d.Name() {
			t.Errorf("the cache holds %s under %s", hex.EncodeToString(sum[:]), d.Name())
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading the cache: %v", err)
	}
}

// rawAnswer makes the upstream answer requests whose path contains
// pathPart with exactly the bytes head (status line and headers, CRLF
// ended) and body, on a connection it then closes.
func rawAnswer(up *testupstream.Upstream, pathPart, head string, body []byte) {
	rawAnswers(up, pathPart, rawReply{head, string(body)})
}

// TestMisbehavingStatuses: whatever status the upstream answers with, the
// client gets an answer in the standard range naming it; one no registry
// gives is a 502 whose phrase says what came.
func TestMisbehavingStatuses(t *testing.T) {
	cases := []struct {
		name, head string
		path       string
		wantStatus int
		wantCause  string
	}{
		{"status 099", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n", "/manifests/", 502, "answered invalid status 99"},
		{"status 999", "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n", "/manifests/", 502, "answered invalid status 999"},
		{"204 on a manifest", "HTTP/1.1 204 No Content\r\n", "/manifests/", 502, "answered 204 No Content instead of the content"},
		{"304 on a manifest", "HTTP/1.1 304 Not Modified\r\n", "/manifests/", 502, "answered 304 Not Modified instead of the content"},
		{"201 on a blob", "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n", "/blobs/", 502, "answered 201 Created instead of the content"},
		{"300 on a blob", "HTTP/1.1 300 Multiple Choices\r\nContent-Length: 0\r\n", "/blobs/", 502, "answered 300 Multiple Choices instead of the content"},
		{"599 on a manifest", "HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n", "/manifests/", 503, "answered 599 (unnamed status)"},
		{"101 on a blob", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: odd\r\n", "/blobs/", 502, "answered 101 Switching Protocols instead of the content"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{})
			img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
			up.PushImage(t, "library/app:v1", img)
			path := "/v2/library/app/manifests/v1"
			if tc.path == "/blobs/" {
				path = "/v2/library/app/blobs/" + digestOf(t, layersOf(t, img)[0])
				m.store.LinkBlob(storage.Repo{Upstream: "docker.io", Name: "library/app"}, digest.Digest(digestOf(t, layersOf(t, img)[0])))
			}
			rawAnswer(up, tc.path, tc.head, nil)
			resp, body := m.get(path)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("%s %s, want %d", resp.Status, body, tc.wantStatus)
			}
			want := fmt.Sprintf("(breakwater-transient: upstream docker.io %s; retry after 10s)", tc.wantCause)
			if !strings.HasSuffix(resp.Status, want) || !bytes.Contains(body, []byte(want)) {
				t.Errorf("status line %q, body %s; want both to end with %q", resp.Status, body, want)
			}
			// Nothing of the answer was kept.
			if tc.path == "/blobs/" {
				assertNotCached(t, m, digestOf(t, layersOf(t, img)[0]))
			} else if _, err := m.store.GetTag(storage.Repo{Upstream: "docker.io", Name: "library/app"}, "v1", "any"); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("tag v1 after the odd answer: %v, want not cached", err)
			}
		})
	}
}

// TestManifestThatIsNone: an upstream that answers a manifest request 200
// with a body that is no manifest (empty, as broken proxies in front of a
// registry send; not JSON; JSON of another shape) moves no tag: without a
// cached copy the client gets the crafted 502 naming what came, and
// nothing is kept; with one, the cached image pulls, stale-if-error.
func TestManifestThatIsNone(t *testing.T) {
	cases := []struct {
		name, contentType string
		body              string
		why               string
	}{
		{"empty", "", "", "an empty body (0 bytes)"},
		{"blank", "application/vnd.docker.distribution.manifest.v2+json", "\r\n  ", "an empty body (4 bytes)"},
		{"an HTML page", "text/html", "<html><body>OK</body></html>", "28 bytes that are no JSON object"},
		{"null", "application/json", "null", "4 bytes that are no JSON object"},
		{"an array", "application/json", `[{"schemaVersion":2}]`, "21 bytes that are no JSON object"},
		{"an empty object", "application/vnd.oci.image.manifest.v1+json", "{}", "a JSON object without schemaVersion"},
		{"schemaVersion 3", "application/vnd.oci.image.manifest.v1+json", `{"schemaVersion":3}`, "schemaVersion 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n", len(tc.body))
			if tc.contentType != "" {
				head += "Content-Type: " + tc.contentType + "\r\n"
			}
			t.Run("not cached", func(t *testing.T) {
				up := testupstream.Start(t)
				m := newMirror(t, up.URL, mirrorOpts{})
				rawAnswer(up, "/manifests/", head, []byte(tc.body))
				resp, body := m.get("/v2/library/app/manifests/v1")
				want := "(breakwater-transient: upstream docker.io sent no manifest for v1: " + tc.why + "; retry after 10s)"
				if resp.StatusCode != http.StatusBadGateway || !strings.HasSuffix(resp.Status, want) || !bytes.Contains(body, []byte(want)) {
					t.Errorf("%s %s; want 502 ending with %q", resp.Status, body, want)
				}
				if _, err := m.store.GetTag(storage.Repo{Upstream: "docker.io", Name: "library/app"}, "v1", "any"); !errors.Is(err, storage.ErrNotFound) {
					t.Errorf("tag v1 after the answer: %v, want not cached", err)
				}
			})
			t.Run("cached", func(t *testing.T) {
				up := testupstream.Start(t)
				m := newMirror(t, up.URL, mirrorOpts{tagTTL: 0, maxStale: time.Hour})
				img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
				up.PushImage(t, "library/app:v1", img)
				pullAll(t, m, "library/app:v1")
				rawAnswer(up, "/manifests/", head, []byte(tc.body))
				for i := range 2 {
					if err := tryPull(m, "library/app:v1"); err != nil {
						t.Fatalf("pull %d of the cached image: %v", i+1, err)
					}
				}
				want, err := img.Digest()
				if err != nil {
					t.Fatal(err)
				}
				resp, _ := m.get("/v2/library/app/manifests/v1")
				if got := resp.Header.Get("Docker-Content-Digest"); got != want.String() {
					t.Errorf("tag v1 now names %s, want the cached %s", got, want)
				}
			})
		})
	}
}

// TestAbsurdRetryAfterThroughMirror: a Retry-After of three thousand years,
// or one too large for any integer type, is clamped before any arithmetic:
// the client is told the cap, an hour.
func TestAbsurdRetryAfterThroughMirror(t *testing.T) {
	for _, ra := range []string{"99999999999", "99999999999999999999"} {
		for _, status := range []int{429, 503} {
			t.Run(fmt.Sprintf("%d/%s", status, ra), func(t *testing.T) {
				t.Parallel()
				up, m, _ := seeded(t, mirrorOpts{})
				up.Play("", "/manifests/v1", testupstream.Status(status, "Retry-After", ra)).Forever()
				resp, body := m.get("/v2/library/app/manifests/v1")
				checkCrafted(t, resp, body, fmt.Sprintf("answered %d %s; retry after 3600s", status, http.StatusText(status)))
				if resp.Header.Get("Retry-After") != "3600" {
					t.Errorf("Retry-After %q, want 3600", resp.Header.Get("Retry-After"))
				}
			})
		}
	}
}

// TestBodyBounds: a body that never ends, or a size declared past the
// largest blob allowed, is cut and discarded, and nothing is cached.
func TestBodyBounds(t *testing.T) {
	const maxBlob = 1 << 20
	cases := []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
	}{
		{"endless body", func(w http.ResponseWriter, r *http.Request) {
			buf := make([]byte, 64<<10)
			for r.Context().Err() == nil {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		}},
		{"declared too large", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(maxBlob+1))
			_, _ = w.Write(make([]byte, 1024))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{maxBlob: maxBlob})
			_, dgst := pushLinkedLayer(t, up, m, "library/big", 8<<10)
			up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
					return false
				}
				tc.serve(w, r)
				return true
			})
			resp, err := m.client.Get(m.srv.URL + "/v2/library/big/blobs/" + dgst)
			if err != nil {
				t.Fatal(err)
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && rerr == nil {
				t.Fatalf("answered 200 with %d bytes", len(body))
			}
			if resp.StatusCode != 200 && (resp.StatusCode != 502 || !bytes.Contains(body, []byte("cache.max_blob_size"))) {
				t.Errorf("%s %s, want 502 naming cache.max_blob_size", resp.Status, body)
			}
			if len(body) > maxBlob {
				t.Errorf("%d bytes reached the client, more than the largest blob", len(body))
			}
			assertNotCached(t, m, dgst)
		})
	}
}

// TestDrip: an upstream that drips a blob a byte a second is given up on
// within a few attempt timeouts, not the 30-minute fetch timeout; a client
// of another repository that joined the fetch is not held past its own
// deadline; both get the crafted 503 naming the i/o timeout (the few bytes
// dripped never sent headers out), not an empty reply; nothing is cached.
func TestDrip(t *testing.T) {
	p := fastPolicy()
	p.Retry.AttemptTimeout = 300 * time.Millisecond
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{policy: p})
	img := randomImage(t, 256<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/slow:v1", img)
	up.PushImage(t, "library/other:v1", img)
	dgst := digestOf(t, layersOf(t, img)[0])
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(256<<10))
		for r.Context().Err() == nil {
			if _, err := w.Write([]byte{0}); err != nil {
				return true
			}
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		return true
	})
	type answer struct {
		resp *http.Response
		body []byte
		err  error
		took time.Duration
	}
	var wg sync.WaitGroup
	answers := make([]answer, 2)
	for i, repo := range []string{"library/slow", "library/other"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 1 {
				time.Sleep(100 * time.Millisecond) // join the fetch under way
			}
			start := time.Now()
			resp, err := m.client.Get(m.srv.URL + "/v2/" + repo + "/blobs/" + dgst)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			answers[i] = answer{resp, body, err, time.Since(start)}
		}()
	}
	wg.Wait()
	for i, a := range answers {
		// Two tries without progress at 300 ms each, plus slack; the
		// deadline is 2 s.
		if a.took > 3*time.Second {
			t.Errorf("client %d held for %v by a dripping upstream", i, a.took)
		}
		if a.err != nil {
			t.Fatalf("client %d: no answer: %v", i, a.err)
		}
		// The few bytes dripped were never enough for headers to go out:
		// the answer is the fetch's failure.
		checkCrafted(t, a.resp, a.body, "unreachable: body cut off at byte ")
		if !strings.Contains(a.resp.Status, ": i/o timeout; retry after ") {
			t.Errorf("client %d: %q does not name the i/o timeout", i, a.resp.Status)
		}
	}
	assertNotCached(t, m, dgst)
}

// TestStalledFetch: an upstream that stops answering a blob GET, before its
// headers or after them, is given up on within its attempt timeouts and
// deadline; every client waiting on the fetch, the one that started it
// and one of another repository that joined it, gets the crafted 503
// naming the i/o timeout, and nothing is cached.
func TestStalledFetch(t *testing.T) {
	cases := []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		cause string
	}{
		{"no headers", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, "unreachable: i/o timeout"},
		{"headers, no body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(64<<10))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, "unreachable: body cut off at byte 0: i/o timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := fastPolicy()
			p.Retry.AttemptTimeout = 300 * time.Millisecond
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{policy: p})
			img := randomImage(t, 64<<10, 1, types.DockerManifestSchema2)
			up.PushImage(t, "library/stuck:v1", img)
			up.PushImage(t, "library/other:v1", img)
			dgst := digestOf(t, layersOf(t, img)[0])
			up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
					return false
				}
				tc.serve(w, r)
				return true
			})
			type answer struct {
				resp *http.Response
				body []byte
				err  error
				took time.Duration
			}
			answers := make(chan answer, 2)
			for i, repo := range []string{"library/stuck", "library/other"} {
				go func() {
					if i == 1 {
						time.Sleep(100 * time.Millisecond) // join the fetch under way
					}
					start := time.Now()
					resp, err := m.client.Get(m.srv.URL + "/v2/" + repo + "/blobs/" + dgst)
					var body []byte
					if err == nil {
						body, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					answers <- answer{resp, body, err, time.Since(start)}
				}()
			}
			for range 2 {
				a := <-answers
				if a.err != nil {
					t.Fatalf("no answer: %v", a.err)
				}
				checkCrafted(t, a.resp, a.body, tc.cause)
				// The deadline is 2 s, and a client waits for a fetch's
				// headers a second past it at most.
				if a.took > 3500*time.Millisecond {
					t.Errorf("a client was held %v by a stalled upstream", a.took)
				}
			}
			if n := up.Count(http.MethodGet, "/v2/library/other/blobs/"); n != 0 {
				t.Errorf("the client that joined started a fetch of its own: %d GETs", n)
			}
			assertNotCached(t, m, dgst)
		})
	}
}

// TestStalledPassThrough: a blob passed through without caching (the disk
// is full) whose upstream body stalls or drips is given up on within the
// attempt timeout, as a fetch is: before any byte, with the crafted 503
// naming the i/o timeout; part way, with a cut-off body. The client is not
// held for as long as the upstream keeps the connection open.
func TestStalledPassThrough(t *testing.T) {
	const size = 256 << 10
	cases := []struct {
		name string
		sent int
		// drip: then a byte every 100 ms rather than nothing.
		drip bool
	}{
		{"headers, no body", 0, false},
		{"half the body", size / 2, false},
		{"a drip", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := fastPolicy()
			p.Retry.AttemptTimeout = 300 * time.Millisecond
			up := testupstream.Start(t)
			// A disk that is never free enough: every blob passes through.
			m := newMirror(t, up.URL, mirrorOpts{policy: p, storeOpts: []storage.Option{storage.WithMinFree(1 << 62)}})
			content, dgst := pushLinkedLayer(t, up, m, "library/stuck", size)
			up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
					return false
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(content)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(content[:tc.sent])
				w.(http.Flusher).Flush()
				for i := tc.sent; tc.drip && i < len(content); i++ {
					select {
					case <-time.After(100 * time.Millisecond):
					case <-r.Context().Done():
						return true
					}
					if _, err := w.Write(content[i : i+1]); err != nil {
						return true
					}
					w.(http.Flusher).Flush()
				}
				<-r.Context().Done()
				return true
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.srv.URL+"/v2/library/stuck/blobs/"+dgst, nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, err := m.client.Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if took > 3*time.Second {
				t.Errorf("the client was held %v by a stalled pass-through (%v)", took, rerr)
			}
			if tc.sent == 0 {
				// Nothing, or a few bytes: not enough for headers to go out.
				checkCrafted(t, resp, body, "unreachable: body cut off: i/o timeout")
			} else if resp.StatusCode != http.StatusOK || rerr == nil || errors.Is(rerr, context.DeadlineExceeded) {
				t.Errorf("%s, %d bytes, %v; want 200 and a body the server cut off", resp.Status, len(body), rerr)
			}
			assertNotCached(t, m, dgst)
		})
	}
}

// TestAcceptAnything: a client that accepts anything (curl's */*) is
// served a manifest Breakwater can verify: the upstream is asked for the
// types Breakwater serves, never for */*. An upstream that answers schema
// 1 all the same is refused with a message that says so, not a misleading
// DIGEST_INVALID.
func TestAcceptAnything(t *testing.T) {
	up, m, d := seeded(t, mirrorOpts{})
	resp, body := m.do(http.MethodGet, "/v2/library/app/manifests/v1", http.Header{"Accept": {"*/*"}})
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d || sha256Hex(body) != d {
		t.Fatalf("Accept */*: %s, digest %s", resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	for _, r := range up.Requests(http.MethodGet, "/manifests/v1") {
		if a := r.Header.Get("Accept"); strings.Contains(a, "*/*") || !strings.Contains(a, string(types.DockerManifestSchema2)) {
			t.Errorf("the upstream was asked with Accept %q", a)
		}
	}

	schema1 := []byte(`{"schemaVersion":1,"name":"library/old","tag":"v1","architecture":"amd64","fsLayers":[],"history":[],"signatures":[]}`)
	rawAnswer(up, "/library/old/manifests/", "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v1+prettyjws\r\n"+
		"Docker-Content-Digest: sha256:"+strings.Repeat("0", 64)+"\r\nContent-Length: "+strconv.Itoa(len(schema1))+"\r\n", schema1)
	resp, body = m.do(http.MethodGet, "/v2/library/old/manifests/v1", http.Header{"Accept": {"*/*"}})
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != "MANIFEST_UNKNOWN" || !bytes.Contains(body, []byte("schema 1")) {
		t.Errorf("schema 1 upstream: %s %s, want 404 MANIFEST_UNKNOWN naming schema 1", resp.Status, body)
	}
}

// TestEmptyBodyForNonEmptyDigest: an upstream answering a blob GET with an
// empty body leaves no last byte to hold back, and a one-byte body nothing
// but its last byte, so a wrong answer is refused before any header goes
// out, from the cache's fetch and from pass-through alike; the one digest
// an empty body has is still served.
func TestEmptyBodyForNonEmptyDigest(t *testing.T) {
	zero := digest.SHA256.FromString("0").String()
	emptyDigest := digest.SHA256.FromBytes(nil).String()
	const (
		empty   = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
		chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
		honest  = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	)
	// A disk that is never free enough: every blob passes through.
	full := []storage.Option{storage.WithMinFree(1 << 62)}
	cases := []struct {
		name      string
		storeOpts []storage.Option
		dgst      string
		// answers are given in turn, the last one from then on.
		answers []rawReply
		want    int
	}{
		{"fetch, Content-Length 0", nil, zero, []rawReply{{empty, ""}}, http.StatusBadGateway},
		{"fetch, chunked and empty", nil, zero, []rawReply{{chunked, "0\r\n\r\n"}}, http.StatusBadGateway},
		{"fetch, the empty blob", nil, emptyDigest, []rawReply{{empty, ""}}, http.StatusOK},
		// A one-byte blob's only byte is its last, held back until
		// verified: no header may go out before the verdict.
		{"fetch, one wrong byte", nil, zero, []rawReply{{honest, "1"}}, http.StatusBadGateway},
		{"fetch, one byte and more", nil, zero, []rawReply{{honest, "00"}}, http.StatusOK},
		// The fetch meets a full disk on an honest answer and passes the
		// blob through; the pass-through's own GET is answered empty.
		{"pass-through, Content-Length 0", full, zero, []rawReply{{honest, "0"}, {empty, ""}}, http.StatusBadGateway},
		{"pass-through, honest", full, zero, []rawReply{{honest, "0"}}, http.StatusOK},
		{"pass-through, the empty blob", full, emptyDigest, []rawReply{{empty, ""}}, http.StatusOK},
		{"pass-through, one wrong byte", full, zero, []rawReply{{honest, "0"}, {honest, "1"}}, http.StatusBadGateway},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{storeOpts: tc.storeOpts})
			rawAnswers(up, "/blobs/", tc.answers...)
			resp, got := m.get("/v2/library/empty/blobs/" + tc.dgst)
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %q, want %d", resp.Status, got, tc.want)
			}
			if tc.want == http.StatusOK {
				if sha256Hex(got) != tc.dgst || resp.Header.Get("Docker-Content-Digest") != tc.dgst {
					t.Fatalf("%d bytes as %s", len(got), resp.Header.Get("Docker-Content-Digest"))
				}
				return
			}
			if errorCode(got) != "DIGEST_INVALID" {
				t.Fatalf("%s %s, want DIGEST_INVALID", resp.Status, got)
			}
			assertNotCached(t, m, tc.dgst)
		})
	}
}

// rawReply is one answer of rawAnswers: the status line and headers, CRLF
// ended, and the body.
type rawReply struct{ head, body string }

// rawAnswers is rawAnswer with answers given in turn, the last one
// repeated.
func rawAnswers(up *testupstream.Upstream, pathPart string, answers ...rawReply) {
	var mu sync.Mutex
	n := 0
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, pathPart) {
			return false
		}
		mu.Lock()
		a := answers[min(n, len(answers)-1)]
		n++
		mu.Unlock()
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return false
		}
		defer conn.Close()
		_, _ = rw.WriteString(a.head + "Connection: close\r\n\r\n")
		_, _ = rw.WriteString(a.body)
		_ = rw.Flush()
		return true
	})
}

// TestBodyCutBeforeFirstByte: an upstream that declares a body and sends
// none, again on every resume, is answered with an error the client can
// read (not a 200 and a cut connection), from the cache's fetch and from
// pass-through alike, and the fetch's resume from byte 0 does not announce
// its headers twice (which once crashed the process).
func TestBodyCutBeforeFirstByte(t *testing.T) {
	const declared = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
	cases := []struct {
		name      string
		storeOpts []storage.Option
		answers   []rawReply
	}{
		{"fetch", nil, []rawReply{{declared, ""}}},
		// A disk that is never free enough: the fetch passes the blob
		// through, whose own GET is cut.
		{"pass-through", []storage.Option{storage.WithMinFree(1 << 62)}, []rawReply{{declared, "0"}, {declared, ""}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{storeOpts: tc.storeOpts})
			rawAnswers(up, "/blobs/", tc.answers...)
			for i := range 2 {
				resp, body := m.get("/v2/library/cut/blobs/" + digest.SHA256.FromString("0").String())
				if resp.StatusCode < 500 || !strings.Contains(string(body), "upstream") {
					t.Fatalf("try %d: %s %s, want a 5xx naming the upstream", i, resp.Status, body)
				}
			}
		})
	}
}
