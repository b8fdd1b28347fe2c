package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testazurite"
	"github.com/breakwater-registry/breakwater/internal/testgcs"
	"github.com/breakwater-registry/breakwater/internal/testredis"
	"github.com/breakwater-registry/breakwater/internal/tests3"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/objstore"
	"github.com/breakwater-registry/breakwater/proxy"
)

// sharedStore is a bucket of a real S3 server (MinIO), through
// distribution's s3 driver.
func sharedStore(t *testing.T) *objstore.Store {
	t.Helper()
	return sharedStoreOn(t, "s3")
}

// sharedStoreOn is a shared store on the driver kind: s3 on MinIO, gcs on
// fake-gcs-server, azure on Azurite.
func sharedStoreOn(t *testing.T, kind string) *objstore.Store {
	t.Helper()
	var params map[string]any
	switch kind {
	case "s3":
		params = tests3.Start(t).DriverParameters()
	case "gcs":
		params = testgcs.Start(t).DriverParameters("/")
	case "azure":
		params = testazurite.Start(t).DriverParameters("/")
	default:
		t.Fatalf("no test store for driver %q", kind)
	}
	obj, err := objstore.Open(context.Background(), kind, params)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// waitShared waits until the shared store has the blob and its link for
// library/app: the upload runs after the fetch, in the background.
func waitShared(t *testing.T, obj *objstore.Store, dgst string) {
	t.Helper()
	waitSharedIn(t, obj, "library/app", dgst)
}

// waitSharedIn is waitShared for repo.
func waitSharedIn(t *testing.T, obj *objstore.Store, repo, dgst string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := obj.StatBlob(ctx, digest.Digest(dgst))
		linked, lerr := obj.Linked(ctx, "docker.io", repo, digest.Digest(dgst))
		if err == nil && lerr == nil && linked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not in the shared store 30s after its fetch: %v, linked %v (%v)", dgst, err, linked, lerr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSharedStore: replicas sharing an object store fetch each blob and
// resolve each tag with the upstream once between them; what one fetched
// another serves for the same repository, by tag and by digest, with the
// upstream down, never for another repository, never corrupt, and by
// redirect when asked to.
func TestSharedStore(t *testing.T) {
	for _, kind := range []string{"s3", "gcs", "azure"} {
		t.Run(kind, func(t *testing.T) { testSharedStore(t, kind) })
	}
}

func testSharedStore(t *testing.T, kind string) {
	obj := sharedStoreOn(t, kind)
	up := testupstream.Start(t)
	img := randomImage(t, 200_000, 2, types.DockerManifestSchema2)
	up.PushImage(t, "library/app:v1", img)
	blobs := blobsOf(t, img)

	pull := func(m *mirror, repo string) {
		t.Helper()
		for _, d := range blobs {
			resp, body := m.get("/v2/" + repo + "/blobs/" + d)
			if resp.StatusCode != http.StatusOK || sha256Hex(body) != d {
				t.Fatalf("GET %s blob %s: %d, content %s", repo, d, resp.StatusCode, sha256Hex(body))
			}
		}
	}

	manifestDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// pullManifests gets the manifest by tag and by digest.
	pullManifests := func(m *mirror) {
		t.Helper()
		for _, ref := range []string{"v1", manifestDigest.String()} {
			resp, body := m.get("/v2/library/app/manifests/" + ref)
			if resp.StatusCode != http.StatusOK || sha256Hex(body) != manifestDigest.String() {
				t.Fatalf("GET manifest %s: %d, content %s", ref, resp.StatusCode, sha256Hex(body))
			}
		}
	}
	// Tags are trusted for a minute, fleet-wide.
	fleet := mirrorOpts{shared: obj, tagTTL: time.Minute}

	a := newMirror(t, up.URL, fleet)
	pullManifests(a)
	pull(a, "library/app")
	if n := len(up.Requests(http.MethodGet, "/blobs/")); n != len(blobs) {
		t.Fatalf("replica a: %d upstream blob GETs, want %d", n, len(blobs))
	}
	for _, d := range blobs {
		waitShared(t, obj, d)
	}
	// The tag's record is written in the background too: until another
	// replica resolves the tag without the upstream.
	deadline := time.Now().Add(30 * time.Second)
	for {
		up.Reset()
		pullManifests(newMirror(t, up.URL, fleet))
		if n := len(up.Requests("", "/manifests/")); n == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("30 s after replica a resolved the tag, another replica still asks the upstream (%d manifest requests)", n)
		}
		time.Sleep(50 * time.Millisecond)
	}

	t.Run("another replica fetches nothing from the upstream", func(t *testing.T) {
		up.Reset()
		b := newMirror(t, up.URL, fleet)
		pullManifests(b)
		pull(b, "library/app")
		if n := len(up.Requests("", "/v2/library/")); n != 0 {
			t.Errorf("replica b: %d upstream requests, want none", n)
		}
	})

	t.Run("with the upstream down", func(t *testing.T) {
		up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		})
		defer up.SetHook(nil)
		c := newMirror(t, up.URL, fleet)
		pullManifests(c)
		pull(c, "library/app")
	})

	t.Run("never for another repository", func(t *testing.T) {
		up.Reset()
		d := newMirror(t, up.URL, mirrorOpts{shared: obj})
		resp, body := d.get("/v2/library/other/blobs/" + blobs[0])
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("library/other, which the upstream lacks, got library/app's blob from the shared store")
		}
		if resp.StatusCode != http.StatusNotFound || errorCode(body) != "BLOB_UNKNOWN" {
			t.Errorf("library/other: %d %s, want 404 BLOB_UNKNOWN", resp.StatusCode, body)
		}
		if n := len(up.Requests("", "/v2/library/other/blobs/")); n == 0 {
			t.Error("the upstream was not asked for library/other")
		}
		resp, body = d.get("/v2/library/other/manifests/" + manifestDigest.String())
		if resp.StatusCode != http.StatusNotFound || errorCode(body) != "MANIFEST_UNKNOWN" {
			t.Errorf("library/other's manifest by library/app's digest: %d %s, want 404 MANIFEST_UNKNOWN", resp.StatusCode, body)
		}
	})

	t.Run("by redirect", func(t *testing.T) {
		up.Reset()
		e := newMirror(t, up.URL, mirrorOpts{shared: obj, sharedRedirect: true})
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(e.srv.URL + "/v2/library/app/blobs/" + blobs[0])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		// Each store's own presigned form. Only MinIO serves one here:
		// the emulators' URLs are for HTTPS (Azure's SAS) or GCS's host
		// checks, so for them the redirect is all that is tested.
		signed := map[string]string{"s3": "X-Amz-Signature=", "gcs": "&Signature=", "azure": "&sig="}[kind]
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, signed) {
			t.Fatalf("%s, Location %q; want 307 to a presigned URL", resp.Status, loc)
		}
		if kind != "s3" {
			return
		}
		// A client that follows it gets the blob from the store.
		pull(e, "library/app")
		if n := len(up.Requests("", "/blobs/")); n != 0 {
			t.Errorf("%d upstream blob requests while redirecting, want none", n)
		}
	})

	t.Run("a corrupt copy is never served, and deleted", func(t *testing.T) {
		ctx := context.Background()
		victim := digest.Digest(blobs[0])
		size, err := obj.StatBlob(ctx, victim)
		if err != nil {
			t.Fatal(err)
		}
		if err := obj.PutBlob(ctx, victim, bytes.NewReader(make([]byte, size))); err != nil {
			t.Fatal(err)
		}
		up.Reset()
		f := newMirror(t, up.URL, mirrorOpts{shared: obj})
		resp, err := f.client.Get(f.srv.URL + "/v2/library/app/blobs/" + victim.String())
		if err == nil {
			body, rerr := readAll(resp)
			if rerr == nil && resp.StatusCode == http.StatusOK {
				t.Fatalf("a corrupt shared copy was served complete: %d bytes, content %s", len(body), sha256Hex(body))
			}
		}
		if _, err := obj.StatBlob(ctx, victim); err != objstore.ErrNotFound {
			t.Errorf("the corrupt copy is still in the shared store: %v", err)
		}
		// The next pull asks the upstream and shares the right bytes.
		pull(f, "library/app")
		if n := len(up.Requests(http.MethodGet, "/blobs/"+victim.String())); n != 1 {
			t.Errorf("%d upstream GETs of the blob after its copy was deleted, want 1", n)
		}
	})

	t.Run("a corrupt manifest copy is never served", func(t *testing.T) {
		ctx := context.Background()
		size, err := obj.StatBlob(ctx, digest.Digest(manifestDigest.String()))
		if err != nil {
			t.Fatal(err)
		}
		if err := obj.PutBlob(ctx, digest.Digest(manifestDigest.String()), bytes.NewReader(make([]byte, size))); err != nil {
			t.Fatal(err)
		}
		up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		})
		defer up.SetHook(nil)
		g := newMirror(t, up.URL, fleet)
		for _, ref := range []string{"v1", manifestDigest.String()} {
			resp, body := g.get("/v2/library/app/manifests/" + ref)
			if resp.StatusCode == http.StatusOK {
				t.Errorf("GET manifest %s: 200 with content %s from a corrupt shared copy", ref, sha256Hex(body))
			}
		}
		if _, err := obj.StatBlob(ctx, digest.Digest(manifestDigest.String())); err != objstore.ErrNotFound {
			t.Errorf("the corrupt manifest copy is still in the shared store: %v", err)
		}
	})
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// TestSharedStoreDown: a shared store that does not answer costs pulls
// nothing but time: they come from the upstream, and /readyz and the
// status page say the store is failing.
func TestSharedStoreDown(t *testing.T) {
	dead := testupstream.FreeAddr(t) // nothing listens there
	obj, err := objstore.Open(context.Background(), "s3", map[string]any{
		"bucket": "b", "region": "us-east-1", "regionendpoint": "http://" + dead,
		"accesskey": "a", "secretkey": "s", "secure": false, "forcepathstyle": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	up := testupstream.Start(t)
	img := randomImage(t, 10_000, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/app:v1", img)
	m := newMirror(t, up.URL, mirrorOpts{shared: obj, tagTTL: time.Minute})
	if resp, body := m.get("/v2/library/app/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest: %s %s", resp.Status, body)
	}
	d := digestOf(t, layersOf(t, img)[0])
	if resp, body := m.get("/v2/library/app/blobs/" + d); resp.StatusCode != http.StatusOK || sha256Hex(body) != d {
		t.Fatalf("blob: %s, content %s", resp.Status, sha256Hex(body))
	}
	resp, body := m.get("/readyz")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "shared store failing") {
		t.Errorf("/readyz: %s %q", resp.Status, body)
	}
	var st proxy.Status
	if _, body := m.get("/_breakwater/v1/status"); json.Unmarshal(body, &st) != nil || st.Fleet == nil || st.Fleet.SharedStore != "failing" || st.Fleet.SharedStoreError == "" {
		t.Errorf("status: %s", body)
	}
}

// TestSharedStoreEviction: a fleet's shared store past storage.max_size
// loses its least recently used blobs, fleet-wide, down to 90% of the
// bound: an image pulled earlier goes, the one pulled since stays and a
// replica with an empty cache still serves it with no upstream request,
// while the evicted image is fetched from the upstream again, verified.
func TestSharedStoreEviction(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	obj := sharedStore(t)
	old := randomImage(t, 512<<10, 2, types.OCIManifestSchema1)
	recent := randomImage(t, 512<<10, 2, types.OCIManifestSchema1)
	up.PushImage(t, "library/old:v1", old)
	up.PushImage(t, "library/recent:v1", recent)
	// Room for one image and a half: the second evicts the first's
	// layers.
	opts := mirrorOpts{redis: rds.Addr, shared: obj, sharedMaxSize: 1536 << 10, tagTTL: time.Minute}
	a := newMirror(t, up.URL, opts)
	pullImage(t, a, "library/old", blobsOf(t, old))
	for _, d := range blobsOf(t, old) {
		waitSharedIn(t, obj, "library/old", d)
	}
	pullImage(t, a, "library/recent", blobsOf(t, recent))
	for _, d := range blobsOf(t, recent) {
		waitSharedIn(t, obj, "library/recent", d)
	}

	ctx := context.Background()
	oldLayers := blobsOf(t, old)[:2]
	deadline := time.Now().Add(20 * time.Second)
	for _, d := range oldLayers {
		for {
			if _, err := obj.StatBlob(ctx, digest.Digest(d)); errors.Is(err, objstore.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("layer %s of the image pulled first still in the store", d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, d := range blobsOf(t, recent) {
		if _, err := obj.StatBlob(ctx, digest.Digest(d)); err != nil {
			t.Errorf("blob %s of the image pulled since: %v, want kept", d, err)
		}
	}

	var st proxy.Status
	if _, body := a.get("/_breakwater/v1/status"); json.Unmarshal(body, &st) != nil || st.Fleet == nil ||
		st.Fleet.SharedStoreMaxBytes != 1536<<10 || st.Fleet.SharedStoreBytes <= 0 || st.Fleet.SharedStoreBytes > 1536<<10*9/10 {
		t.Errorf("status after the eviction: %s", body)
	}
	// The replica that has the old image in its own cache goes: b's
	// fetches find nobody to stream from.
	a.close()
	b := newMirror(t, up.URL, opts)
	before := len(up.Requests(http.MethodGet, "/blobs/"))
	pullImage(t, b, "library/recent", blobsOf(t, recent))
	if n := len(up.Requests(http.MethodGet, "/blobs/")) - before; n != 0 {
		t.Errorf("the kept image through a replica with an empty cache: %d upstream blob GETs, want 0", n)
	}
	pullImage(t, b, "library/old", blobsOf(t, old))
	for _, d := range oldLayers {
		if n := blobGETs(up, d); n != 2 {
			t.Errorf("evicted layer %s: %d upstream GETs in all, want 2 (once more after the eviction)", d, n)
		}
	}
}

// pullImage pulls repo:v1's manifest and every blob through m, checking
// each digest.
func pullImage(t *testing.T, m *mirror, repo string, blobs []string) {
	t.Helper()
	if resp, _ := m.get("/v2/" + repo + "/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("%s:v1: %s", repo, resp.Status)
	}
	for _, d := range blobs {
		resp, body := m.get("/v2/" + repo + "/blobs/" + d)
		if resp.StatusCode != http.StatusOK || sha256Hex(body) != d {
			t.Fatalf("%s blob %s: %s, content %s", repo, d, resp.Status, sha256Hex(body))
		}
	}
}
