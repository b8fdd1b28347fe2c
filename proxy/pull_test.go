package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestPullWithClient pulls whole images through the mirror with
// go-containerregistry's client, which verifies every digest it reads.
func TestPullWithClient(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})

	for _, tc := range []struct {
		name string
		mt   types.MediaType
	}{
		{"docker schema2", types.DockerManifestSchema2},
		{"oci", types.OCIManifestSchema1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := randomImage(t, 64<<10, 3, tc.mt)
			repo := "library/app-" + strings.ReplaceAll(tc.name, " ", "-")
			want := up.PushImage(t, repo+":v1", img)

			got, err := remote.Image(m.ref(repo + ":v1"))
			if err != nil {
				t.Fatalf("pull through mirror: %v", err)
			}
			d, err := got.Digest()
			if err != nil || d != want {
				t.Fatalf("digest = %v (%v), want %v", d, err, want)
			}
			layers, err := got.Layers()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layers {
				rc, err := l.Compressed() // verifies the digest while reading
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				if _, err := buf.ReadFrom(rc); err != nil {
					t.Fatalf("read layer: %v", err)
				}
				rc.Close()
			}
			if _, err := got.ConfigFile(); err != nil {
				t.Fatalf("config: %v", err)
			}
		})
	}
}

// TestManifestBytesExact checks that every kind of manifest is served with
// the upstream's bytes, Content-Type, digest and length, for GET and HEAD,
// by tag and by digest.
func TestManifestBytesExact(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})

	ociImage := randomImage(t, 1024, 2, types.OCIManifestSchema1)
	dockerImage := randomImage(t, 1024, 2, types.DockerManifestSchema2)
	ociIndex := platformIndex(t, types.OCIImageIndex, types.OCIManifestSchema1)
	dockerList := platformIndex(t, types.DockerManifestList, types.DockerManifestSchema2)
	up.PushImage(t, "library/oci:v1", ociImage)
	up.PushImage(t, "library/docker:v1", dockerImage)
	up.PushIndex(t, "library/ociindex:v1", ociIndex)
	up.PushIndex(t, "library/dockerlist:v1", dockerList)

	accept := http.Header{"Accept": {strings.Join([]string{
		string(types.OCIImageIndex), string(types.DockerManifestList),
		string(types.OCIManifestSchema1), string(types.DockerManifestSchema2),
	}, ", ")}}
	cases := []struct {
		repo string
		body []byte
		mt   types.MediaType
	}{
		{"library/oci", rawManifest(t, ociImage), types.OCIManifestSchema1},
		{"library/docker", rawManifest(t, dockerImage), types.DockerManifestSchema2},
		{"library/ociindex", rawManifest(t, ociIndex), types.OCIImageIndex},
		{"library/dockerlist", rawManifest(t, dockerList), types.DockerManifestList},
	}
	for _, tc := range cases {
		t.Run(tc.repo, func(t *testing.T) {
			dgst := sha256Hex(tc.body)
			for _, ref := range []string{"v1", dgst} {
				for _, method := range []string{http.MethodHead, http.MethodGet} {
					resp, body := m.do(method, "/v2/"+tc.repo+"/manifests/"+ref, accept)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("%s %s: status %d: %s", method, ref, resp.StatusCode, body)
					}
					if got := resp.Header.Get("Content-Type"); got != string(tc.mt) {
						t.Errorf("%s %s: Content-Type %q, want %q", method, ref, got, tc.mt)
					}
					if got := resp.Header.Get("Docker-Content-Digest"); got != dgst {
						t.Errorf("%s %s: Docker-Content-Digest %q, want %q", method, ref, got, dgst)
					}
					if got := resp.Header.Get("Content-Length"); got != fmt.Sprint(len(tc.body)) {
						t.Errorf("%s %s: Content-Length %s, want %d", method, ref, got, len(tc.body))
					}
					if method == http.MethodGet && !bytes.Equal(body, tc.body) {
						t.Errorf("%s %s: body differs from the upstream's", method, ref)
					}
				}
			}
			// The child manifests of an index are fetchable by digest.
			var idx struct {
				Manifests []struct {
					Digest    string `json:"digest"`
					MediaType string `json:"mediaType"`
				} `json:"manifests"`
			}
			_ = json.Unmarshal(tc.body, &idx)
			for _, child := range idx.Manifests {
				resp, body := m.do(http.MethodGet, "/v2/"+tc.repo+"/manifests/"+child.Digest, accept)
				if resp.StatusCode != http.StatusOK || sha256Hex(body) != child.Digest {
					t.Errorf("child %s: status %d, digest %s", child.Digest, resp.StatusCode, sha256Hex(body))
				}
				if got := resp.Header.Get("Content-Type"); got != child.MediaType {
					t.Errorf("child %s: Content-Type %q, want %q", child.Digest, got, child.MediaType)
				}
			}
		})
	}
}

// TestAcceptIsHonoured: a client that accepts only single-platform manifests
// must not be served the cached index, and vice versa.
func TestAcceptIsHonoured(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Hour})
	idx := platformIndex(t, types.DockerManifestList, types.DockerManifestSchema2)
	up.PushIndex(t, "library/multi:v1", idx)

	listAccept := http.Header{"Accept": {string(types.DockerManifestList) + ", " + string(types.DockerManifestSchema2)}}
	resp, _ := m.do(http.MethodGet, "/v2/library/multi/manifests/v1", listAccept)
	if got := resp.Header.Get("Content-Type"); got != string(types.DockerManifestList) {
		t.Fatalf("with a list in Accept: Content-Type %q", got)
	}
	// distribution answers a client that cannot take a list with 404
	// (it no longer converts); what matters is that the cached list is
	// not served to it.
	resp, body := m.do(http.MethodGet, "/v2/library/multi/manifests/v1", http.Header{"Accept": {string(types.OCIManifestSchema1)}})
	if resp.Header.Get("Content-Type") == string(types.DockerManifestList) {
		t.Fatalf("a client that does not accept lists was served the list: %d %s", resp.StatusCode, body)
	}
	// The second client's own Accept went upstream (as a HEAD first, since
	// the tag was cached for another Accept set).
	reqs := up.Requests("", "/manifests/v1")
	if len(reqs) != 2 || reqs[1].Header.Get("Accept") != string(types.OCIManifestSchema1) {
		t.Errorf("upstream manifest requests %+v, want a second one with the second client's Accept", reqs)
	}
}

// TestBlobRange covers partial GETs of cached and cold blobs.
func TestBlobRange(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	content, dgst := pushLinkedLayer(t, up, m, "library/ranged", 100<<10)
	size := len(content)
	path := "/v2/library/ranged/blobs/" + dgst

	cases := []struct {
		name       string
		rng        string
		wantStatus int
		wantBody   []byte
		wantCode   string
	}{
		{"cold prefix", "bytes=0-99", http.StatusPartialContent, content[:100], ""},
		{"middle", "bytes=100-199", http.StatusPartialContent, content[100:200], ""},
		{"open end", fmt.Sprintf("bytes=%d-", size-10), http.StatusPartialContent, content[size-10:], ""},
		{"suffix", "bytes=-5", http.StatusPartialContent, content[size-5:], ""},
		{"whole", "", http.StatusOK, content, ""},
		{"past end", fmt.Sprintf("bytes=%d-", size), http.StatusRequestedRangeNotSatisfiable, nil, "RANGE_INVALID"},
		{"reversed", "bytes=10-5", http.StatusRequestedRangeNotSatisfiable, nil, "RANGE_INVALID"},
		{"garbage", "bytes=abc", http.StatusRequestedRangeNotSatisfiable, nil, "RANGE_INVALID"},
		{"wrong unit", "lines=1-2", http.StatusRequestedRangeNotSatisfiable, nil, "RANGE_INVALID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.rng != "" {
				h.Set("Range", tc.rng)
			}
			resp, body := m.do(http.MethodGet, path, h)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantCode != "" {
				if got := errorCode(body); got != tc.wantCode {
					t.Fatalf("code %q, want %q", got, tc.wantCode)
				}
				if got := resp.Header.Get("Content-Range"); got != fmt.Sprintf("bytes */%d", size) {
					t.Errorf("Content-Range %q", got)
				}
				return
			}
			if !bytes.Equal(body, tc.wantBody) {
				t.Fatalf("body: got %d bytes, want %d", len(body), len(tc.wantBody))
			}
		})
	}
	if n := up.Count(http.MethodGet, "/blobs/"); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
}

// TestHeadBlob answers a HEAD for a cold blob without downloading it.
func TestHeadBlob(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	img := randomImage(t, 10<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/head:v1", img)
	l := layersOf(t, img)[0]
	resp, _ := m.do(http.MethodHead, "/v2/library/head/blobs/"+digestOf(t, l), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Content-Length"), fmt.Sprint(len(compressedBytes(t, l))); got != want {
		t.Errorf("Content-Length %s, want %s", got, want)
	}
	if n := up.Count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("a HEAD fetched the blob (%d GETs)", n)
	}
}

// TestTagsList pages through tags with n and last, following Link.
func TestTagsList(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{extra: map[string]string{"ghcr.io": up.URL}})
	img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	want := []string{"a1", "b2", "c3", "d4", "e5"}
	for _, tag := range want {
		up.PushImage(t, "org/tagged:"+tag, img)
	}
	for _, start := range []string{"/v2/ghcr.io/org/tagged/tags/list?n=2", "/v2/org/tagged/tags/list?n=2&ns=ghcr.io"} {
		var got []string
		next := start
		for pages := 0; next != "" && pages < 10; pages++ {
			resp, body := m.get(next)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %d %s", next, resp.StatusCode, body)
			}
			var list struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatalf("GET %s: %v", next, err)
			}
			if len(list.Tags) > 2 {
				t.Fatalf("page of %d tags with n=2", len(list.Tags))
			}
			got = append(got, list.Tags...)
			next = ""
			if link := resp.Header.Get("Link"); link != "" {
				next = link[strings.Index(link, "<")+1 : strings.Index(link, ">")]
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("from %s: tags %v, want %v", start, got, want)
		}
	}
	resp, body := m.get("/v2/org/tagged/tags/list?n=-1&ns=ghcr.io")
	if resp.StatusCode != http.StatusBadRequest || errorCode(body) != "PAGINATION_NUMBER_INVALID" {
		t.Errorf("n=-1: %d %s", resp.StatusCode, body)
	}
}

// TestReferrers relays the referrers API. distribution v3 has none, so the
// upstream's answer comes from a hook, as a registry that supports it would
// give it; without the hook the 404 must reach the client, which then falls
// back to the referrers tag schema.
func TestReferrers(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	img := randomImage(t, 1024, 1, types.OCIManifestSchema1)
	d := up.PushImage(t, "library/subject:v1", img)
	path := "/v2/library/subject/referrers/" + d.String()

	resp, body := m.get(path)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upstream without referrers: status %d: %s", resp.StatusCode, body)
	}

	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	var gotQuery string
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/referrers/") {
			return false
		}
		gotQuery = r.URL.RawQuery
		w.Header().Set("Content-Type", string(types.OCIImageIndex))
		w.Header().Set("OCI-Filters-Applied", "artifactType")
		_, _ = w.Write(index)
		return true
	})
	resp, body = m.get(path + "?artifactType=application%2Fvnd.example%2Bjson")
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, index) {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != string(types.OCIImageIndex) || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("headers not relayed: %v", resp.Header)
	}
	if gotQuery != "artifactType=application%2Fvnd.example%2Bjson" {
		t.Errorf("upstream query %q", gotQuery)
	}
}

// TestRestartKeepsCache stops serving with the upstream gone and a new
// server on the same directory: everything complete is still served, and a
// partial fetch left behind is discarded.
func TestRestartKeepsCache(t *testing.T) {
	up := testupstream.Start(t)
	dir := t.TempDir()
	m := newMirror(t, up.URL, mirrorOpts{dir: dir, tagTTL: time.Hour})
	img := randomImage(t, 32<<10, 2, types.DockerManifestSchema2)
	want := up.PushImage(t, "library/kept:v1", img)
	if _, err := remote.Image(m.ref("library/kept:v1")); err != nil {
		t.Fatal(err)
	}
	pullAll(t, m, "library/kept:v1")

	// A fetch that a crash interrupted.
	partial := filepath.Join(dir, "ingest", "deadbeef0000-123")
	if err := os.WriteFile(partial, []byte("half a layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Shut the first server down as a restart does: it lets fetches that
	// already gave clients every byte finish making them durable.
	m.close()
	up.Server.Close()

	m2 := newMirror(t, "http://127.0.0.1:1", mirrorOpts{dir: dir, tagTTL: time.Hour})
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Errorf("partial ingest file survived the restart: %v", err)
	}
	got := pullAll(t, m2, "library/kept:v1")
	if got != want.String() {
		t.Errorf("digest after restart %s, want %s", got, want)
	}
}

// pullAll pulls every blob of an image over plain HTTP as a runtime does and
// returns the manifest digest; every blob's digest is checked.
func pullAll(t *testing.T, m *mirror, repoTag string) string {
	t.Helper()
	repo, tag, _ := strings.Cut(repoTag, ":")
	resp, body := m.do(http.MethodGet, "/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {string(types.DockerManifestSchema2), string(types.OCIManifestSchema1)}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest %s: %d %s", repoTag, resp.StatusCode, body)
	}
	var man struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(body, &man); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{man.Config.Digest}, func() (ds []string) {
		for _, l := range man.Layers {
			ds = append(ds, l.Digest)
		}
		return
	}()...) {
		resp, blob := m.get("/v2/" + repo + "/blobs/" + d)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("blob %s: %d %s", d, resp.StatusCode, blob)
		}
		if got := sha256Hex(blob); got != d {
			t.Fatalf("blob %s: content digest %s", d, got)
		}
	}
	return resp.Header.Get("Docker-Content-Digest")
}
