package warm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
	"github.com/breakwater-registry/breakwater/warm"
)

// mirrorClient is warm's client towards the Breakwater at base.
func mirrorClient(t *testing.T, base string) *upstream.Client {
	t.Helper()
	c, err := upstream.New(warm.MirrorConfig(base))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mirrorPolicy is the upstream policy of the Breakwaters these tests run:
// a retry, quickly.
var mirrorPolicy = upstream.Policy{
	Retry: upstream.Retry{Attempts: 2, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, Deadline: 5 * time.Second, AttemptTimeout: 5 * time.Second},
}

// newMirror runs a Breakwater in front of up (as docker.io) and returns
// warm's client towards it.
func newMirror(t *testing.T, up *testupstream.Upstream) *upstream.Client {
	return newMirrorWith(t, up, mirrorPolicy)
}

// newMirrorWith is newMirror with the Breakwater's upstream policy p.
func newMirrorWith(t *testing.T, up *testupstream.Upstream, p upstream.Policy) *upstream.Client {
	t.Helper()
	store, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{
		Store:           store,
		Upstreams:       []proxy.UpstreamConfig{{Name: "docker.io", URL: up.URL, Policy: p}},
		DefaultUpstream: "docker.io",
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return mirrorClient(t, hs.URL)
}

func randomImage(t *testing.T, size int64, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// blobsOf returns the config and layer descriptors of img.
func blobsOf(t *testing.T, img v1.Image) []v1.Descriptor {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return append([]v1.Descriptor{m.Config}, m.Layers...)
}

func sizeOf(ds []v1.Descriptor) int64 {
	var n int64
	for _, d := range ds {
		n += d.Size
	}
	return n
}

// getAll reads path from the mirror to the end and fails the test unless
// it answers 200.
func getAll(t *testing.T, mirror *upstream.Client, path string) {
	t.Helper()
	resp, err := http.Get(mirror.URL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
}

func TestImageSinglePlatform(t *testing.T) {
	up := testupstream.Start(t)
	img := randomImage(t, 4096, 3)
	d := up.PushImage(t, "library/app:v1", img)
	mirror := newMirror(t, up)

	var events []warm.Event
	var inProgress atomic.Bool
	res := warm.Image(context.Background(), "app:v1", warm.Options{
		Mirror: mirror,
		Progress: func(ev warm.Event) {
			if !inProgress.CompareAndSwap(false, true) {
				t.Error("Progress called concurrently")
			}
			events = append(events, ev)
			inProgress.Store(false)
		},
	})
	if res.Err != nil {
		t.Fatalf("warm: %v", res.Err)
	}
	blobs := blobsOf(t, img)
	if res.Image != "docker.io/library/app:v1" || res.Digest != d.String() || res.Manifests != 1 ||
		res.Blobs != len(blobs) || res.Bytes != sizeOf(blobs) || res.Duration <= 0 {
		t.Errorf("result = %+v, want docker.io/library/app:v1 %s 1 manifest %d blobs %d bytes", res, d, len(blobs), sizeOf(blobs))
	}

	// Events: started, planned, a BlobDone per blob, done.
	var kinds []warm.EventKind
	doneBlobs := 0
	for _, ev := range events {
		if ev.Kind != warm.BlobProgress {
			kinds = append(kinds, ev.Kind)
		}
		if ev.Kind == warm.BlobDone {
			doneBlobs++
			if ev.Err != nil || ev.Blob == "" || ev.Bytes <= 0 {
				t.Errorf("BlobDone event %+v", ev)
			}
		}
	}
	if len(kinds) < 3 || kinds[0] != warm.ImageStarted || kinds[1] != warm.ImagePlanned || kinds[len(kinds)-1] != warm.ImageDone {
		t.Errorf("event kinds = %v", kinds)
	}
	if doneBlobs != len(blobs) {
		t.Errorf("%d BlobDone events, want %d", doneBlobs, len(blobs))
	}
	last := events[len(events)-1]
	if last.Result == nil || last.Result.Digest != d.String() || last.BytesDone != sizeOf(blobs) || last.BlobsTotal != len(blobs) {
		t.Errorf("last event = %+v", last)
	}

	// Everything is cached now: a pull of every blob asks the upstream
	// nothing.
	up.Reset()
	for _, b := range blobs {
		getAll(t, mirror, "/v2/docker.io/library/app/blobs/"+b.Digest.String())
	}
	getAll(t, mirror, "/v2/docker.io/library/app/manifests/"+d.String())
	if n := up.Count(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("%d upstream blob GETs after warming, want 0", n)
	}
	if n := up.Count("", "/manifests/"); n != 0 {
		t.Errorf("%d upstream manifest requests by digest after warming, want 0", n)
	}
}

// pushTwoPlatforms pushes an OCI index of an amd64 and an arm64 image
// sharing no layers.
func pushTwoPlatforms(t *testing.T, up *testupstream.Upstream, repoTag string) (amd, arm v1.Image, d v1.Hash) {
	t.Helper()
	amd, arm = randomImage(t, 2048, 2), randomImage(t, 3072, 2)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	return amd, arm, up.PushIndex(t, repoTag, idx)
}

func TestImageIndex(t *testing.T) {
	up := testupstream.Start(t)
	amd, arm, d := pushTwoPlatforms(t, up, "library/multi:v1")

	fetchesPerBlob := func(img v1.Image) []int {
		var out []int
		for _, b := range blobsOf(t, img) {
			out = append(out, up.Count(http.MethodGet, "/blobs/"+b.Digest.String()))
		}
		return out
	}
	all := func(ns []int, want int) bool {
		for _, n := range ns {
			if n != want {
				return false
			}
		}
		return true
	}

	t.Run("all platforms", func(t *testing.T) {
		mirror := newMirror(t, up)
		up.Reset()
		res := warm.Image(context.Background(), "docker.io/library/multi:v1", warm.Options{Mirror: mirror})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		want := len(blobsOf(t, amd)) + len(blobsOf(t, arm))
		if res.Digest != d.String() || res.Manifests != 3 || res.Blobs != want ||
			res.Bytes != sizeOf(blobsOf(t, amd))+sizeOf(blobsOf(t, arm)) {
			t.Errorf("result = %+v, want %s, 3 manifests, %d blobs", res, d, want)
		}
		if got := fetchesPerBlob(amd); !all(got, 1) {
			t.Errorf("upstream GETs per amd64 blob = %v, want 1 each", got)
		}
		if got := fetchesPerBlob(arm); !all(got, 1) {
			t.Errorf("upstream GETs per arm64 blob = %v, want 1 each", got)
		}
	})

	t.Run("one platform", func(t *testing.T) {
		mirror := newMirror(t, up)
		up.Reset()
		p, err := warm.ParsePlatform("linux/arm64/v8") // the index says linux/arm64: the same
		if err != nil {
			t.Fatal(err)
		}
		res := warm.Image(context.Background(), "multi:v1", warm.Options{Mirror: mirror, Platforms: []v1.Platform{p}, Concurrency: 1})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		if res.Manifests != 2 || res.Blobs != len(blobsOf(t, arm)) {
			t.Errorf("result = %+v, want 2 manifests, %d blobs", res, len(blobsOf(t, arm)))
		}
		if got := fetchesPerBlob(arm); !all(got, 1) {
			t.Errorf("upstream GETs per arm64 blob = %v, want 1 each", got)
		}
		if got := fetchesPerBlob(amd); !all(got, 0) {
			t.Errorf("upstream GETs per amd64 blob = %v, want none", got)
		}
	})

	t.Run("platform not in index", func(t *testing.T) {
		mirror := newMirror(t, up)
		res := warm.Image(context.Background(), "multi:v1", warm.Options{Mirror: mirror, Platforms: []v1.Platform{{OS: "linux", Architecture: "s390x"}}})
		if res.Err == nil || !strings.Contains(res.Err.Error(), "linux/s390x") || !strings.Contains(res.Err.Error(), "linux/amd64") {
			t.Errorf("err = %v, want one naming the platform asked for and those there are", res.Err)
		}
	})
}

func TestImagesMissingOneOfThree(t *testing.T) {
	up := testupstream.Start(t)
	up.PushImage(t, "library/one:v1", randomImage(t, 1024, 1))
	up.PushImage(t, "library/missing:v0", randomImage(t, 1024, 1))
	up.PushImage(t, "org/three:v1", randomImage(t, 1024, 2))
	mirror := newMirror(t, up)

	res := warm.Images(context.Background(), []string{"one:v1", "missing:v1", "docker.io/org/three:v1", "Not A Reference"}, warm.Options{Mirror: mirror})
	if len(res) != 4 {
		t.Fatalf("%d results, want 4", len(res))
	}
	if res[0].Err != nil || res[0].Blobs != 2 {
		t.Errorf("one: %+v", res[0])
	}
	if res[2].Err != nil || res[2].Blobs != 3 || res[2].Image != "docker.io/org/three:v1" {
		t.Errorf("three: %+v", res[2])
	}
	if err := res[1].Err; !isStatus(err, 404) || !hasCode(err, "MANIFEST_UNKNOWN") ||
		!strings.Contains(err.Error(), "manifest v1: ") || !strings.Contains(err.Error(), "404 Not Found") || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("missing: err = %v, want a 404 MANIFEST_UNKNOWN", err)
	}
	if res[1].Image != "docker.io/library/missing:v1" || res[1].Digest != "" {
		t.Errorf("missing: %+v", res[1])
	}
	if res[3].Err == nil || !strings.Contains(res[3].Err.Error(), "invalid image reference") {
		t.Errorf("bad reference: err = %v", res[3].Err)
	}
}

func TestImageCorruptBlob(t *testing.T) {
	// A small blob fails at the mirror before it answers; a large one is
	// streamed and cut off when its digest turns out wrong.
	for _, size := range []int64{4096, 2 << 20} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) { testCorruptBlob(t, size) })
	}
}

func testCorruptBlob(t *testing.T, size int64) {
	up := testupstream.Start(t)
	img := randomImage(t, size, 2)
	up.PushImage(t, "library/bad:v1", img)
	mirror := newMirror(t, up)

	victim := blobsOf(t, img)[2]
	wrong := make([]byte, victim.Size)
	if _, err := rand.Read(wrong); err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.Digest.String()) {
			return false
		}
		served.Add(1)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", victim.Digest.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(wrong)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(wrong)
		}
		return true
	})

	res := warm.Image(context.Background(), "bad:v1", warm.Options{Mirror: mirror})
	if res.Err == nil {
		t.Fatalf("warming an image with a corrupt blob succeeded: %+v", res)
	}
	t.Logf("corrupt blob: %v", res.Err)
	if !strings.Contains(res.Err.Error(), victim.Digest.String()) {
		t.Errorf("err = %v, want it to name %s", res.Err, victim.Digest)
	}
	if served.Load() == 0 {
		t.Error("the corrupt blob was never asked for")
	}
	if want := len(blobsOf(t, img)) - 1; res.Blobs != want {
		t.Errorf("%d blobs verified, want the %d good ones", res.Blobs, want)
	}

	// Nothing wrong was cached: with the upstream healthy again the image
	// warms completely.
	up.SetHook(nil)
	if res := warm.Image(context.Background(), "bad:v1", warm.Options{Mirror: mirror}); res.Err != nil {
		t.Fatalf("after repair: %v", res.Err)
	}
}

// manifestOf returns img's manifest and its media type.
func manifestOf(t *testing.T, img v1.Image) ([]byte, string) {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return raw, string(mt)
}

func isStatus(err error, status int) bool {
	e, ok := upstream.AsError(err)
	return ok && e.Status == status
}

func hasCode(err error, code string) bool {
	e, ok := upstream.AsError(err)
	return ok && e.Code == code
}

// fakeMirror answers with a fixed manifest and whatever blobs returns, to
// check that warm verifies content itself and never trusts the mirror.
func fakeMirror(t *testing.T, manifest []byte, mediaType string, blob func(w http.ResponseWriter, r *http.Request, dgst string)) *upstream.Client {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			// The client's handshake: anonymous, as Breakwater's is.
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", mediaType)
			_, _ = w.Write(manifest)
		case strings.Contains(r.URL.Path, "/blobs/"):
			blob(w, r, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(hs.Close)
	return mirrorClient(t, hs.URL)
}

func TestImageVerifiesWhatTheMirrorSends(t *testing.T) {
	img := randomImage(t, 2048, 1)
	raw, mt := manifestOf(t, img)
	content := map[string][]byte{}
	cfg, _ := img.RawConfigFile()
	cfgName, _ := img.ConfigName()
	content[cfgName.String()] = cfg
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		rc, _ := l.Compressed()
		b, _ := io.ReadAll(rc)
		rc.Close()
		content[d.String()] = b
	}

	cases := []struct {
		name string
		blob func(w http.ResponseWriter, r *http.Request, dgst string)
		want string
	}{
		{"intact", func(w http.ResponseWriter, _ *http.Request, d string) { _, _ = w.Write(content[d]) }, ""},
		{"wrong bytes", func(w http.ResponseWriter, _ *http.Request, d string) {
			_, _ = w.Write(bytes.Repeat([]byte{'x'}, len(content[d])))
		}, "digest mismatch"},
		{"short", func(w http.ResponseWriter, _ *http.Request, d string) { _, _ = w.Write(content[d][:len(content[d])-1]) }, "body ended after"},
		{"long", func(w http.ResponseWriter, _ *http.Request, d string) { _, _ = w.Write(append(content[d], 'x')) }, "body longer"},
		{"oci error", func(w http.ResponseWriter, _ *http.Request, d string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"errors":[{"code":"UNAVAILABLE","message":"upstream docker.io answered 429 Too Many Requests"}]}`))
		}, "503 Service Unavailable: UNAVAILABLE: upstream docker.io answered 429 Too Many Requests"},
		{"plain error", func(w http.ResponseWriter, _ *http.Request, d string) {
			http.Error(w, "bad gateway\nsorry", http.StatusBadGateway)
		}, "answered 502 Bad Gateway"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mirror := fakeMirror(t, raw, mt, c.blob)
			res := warm.Image(context.Background(), "example.com/org/app:v1", warm.Options{Mirror: mirror})
			if c.want == "" {
				if res.Err != nil {
					t.Fatal(res.Err)
				}
				return
			}
			if res.Err == nil || !strings.Contains(res.Err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", res.Err, c.want)
			}
		})
	}

	t.Run("manifest not matching its digest", func(t *testing.T) {
		d, _ := img.Digest()
		mirror := fakeMirror(t, append(raw, ' '), mt, func(w http.ResponseWriter, _ *http.Request, dg string) { _, _ = w.Write(content[dg]) })
		res := warm.Image(context.Background(), "example.com/org/app@"+d.String(), warm.Options{Mirror: mirror})
		if res.Err == nil || !strings.Contains(res.Err.Error(), "digest mismatch") {
			t.Fatalf("err = %v, want a digest mismatch", res.Err)
		}
	})
}

func TestParsePlatform(t *testing.T) {
	cases := []struct {
		in      string
		want    v1.Platform
		wantErr bool
	}{
		{"linux/amd64", v1.Platform{OS: "linux", Architecture: "amd64"}, false},
		{"linux/arm64/v8", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, false},
		{"Linux/ARM/v7", v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, false},
		{"linux", v1.Platform{}, true},
		{"linux/", v1.Platform{}, true},
		{"linux/arm/v7/x", v1.Platform{}, true},
		{"", v1.Platform{}, true},
	}
	for _, c := range cases {
		got, err := warm.ParsePlatform(c.in)
		if (err != nil) != c.wantErr || (err == nil && !got.Equals(c.want)) {
			t.Errorf("ParsePlatform(%q) = %+v, %v", c.in, got, err)
		}
	}
}

func TestImageStalledBodyAndCancel(t *testing.T) {
	img := randomImage(t, 4096, 1)
	raw, mt := manifestOf(t, img)
	mirror := fakeMirror(t, raw, mt, func(w http.ResponseWriter, r *http.Request, _ string) {
		w.Header().Set("Content-Length", "4096")
		_, _ = w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select { // far past the idle timeout, unless the client gives up
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})

	defer warm.SetIdleTimeout(200 * time.Millisecond)()
	start := time.Now()
	res := warm.Image(context.Background(), "example.com/app:v1", warm.Options{Mirror: mirror})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "no data from the mirror") {
		t.Fatalf("err = %v, want a stall", res.Err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a stalled body took %s to give up on", took)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range warm.Images(ctx, []string{"example.com/a:v1", "example.com/b:v1"}, warm.Options{Mirror: mirror}) {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", r.Image, r.Err)
		}
	}
}

// A mirror that cannot reach its upstream answers 503 at once with a
// reason phrase saying why; that phrase is what warm's user has to go on,
// so every failed image must carry it, and fail as soon as the mirror
// answered: a breaker in warm's client would open after the fifth and hold
// the rest for its probes, in front of a mirror that has a breaker of its
// own.
func TestImageUpstreamDown(t *testing.T) {
	cases := []struct {
		name     string
		pathPart string // what the upstream refuses
		images   int
		what     string // what warm says it was reading
	}{
		{"manifests", "/manifests/", 10, "manifest v1: "},
		{"blobs", "/blobs/", 2, "blob sha256:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := testupstream.Start(t)
			var refs []string
			for i := range c.images {
				ref := "library/app" + strconv.Itoa(i) + ":v1"
				up.PushImage(t, ref, randomImage(t, 1024, 1))
				refs = append(refs, ref)
			}
			// The mirror answers at once: one try, its own breaker out of
			// the way.
			mirror := newMirrorWith(t, up, upstream.Policy{Retry: upstream.Retry{Attempts: 1}, Breaker: upstream.Breaker{MinRequests: 1 << 20}})
			up.Play("", c.pathPart, testupstream.Status(http.StatusServiceUnavailable)).Forever()

			start := time.Now()
			results := warm.Images(context.Background(), refs, warm.Options{Mirror: mirror})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("%d images took %s to fail against a mirror that answers at once", len(refs), took)
			}
			for _, res := range results {
				err := res.Err
				if err == nil {
					t.Fatalf("%s warmed with the upstream refusing %s", res.Image, c.pathPart)
				}
				e, ok := upstream.AsError(err)
				if !ok || e.Status != http.StatusServiceUnavailable || !strings.Contains(e.StatusLine, "breakwater-transient") {
					t.Errorf("%s: err = %#v, want the mirror's crafted 503", res.Image, err)
				}
				for _, want := range []string{"503 Service Unavailable (breakwater-transient: upstream docker.io", c.what} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: err = %q, want it to contain %q", res.Image, err, want)
					}
				}
			}
		})
	}
}

// The mirror has retried its upstream already: warm asks it once per
// request unless its client says otherwise.
func TestImageOneTryPerRequest(t *testing.T) {
	img := randomImage(t, 1024, 2)
	raw, mt := manifestOf(t, img)
	var gets atomic.Int32
	refuse := func(w http.ResponseWriter, _ *http.Request, _ string) {
		gets.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	mirror := fakeMirror(t, raw, mt, refuse)
	res := warm.Image(context.Background(), "example.com/org/app:v1", warm.Options{Mirror: mirror})
	if !isStatus(res.Err, http.StatusServiceUnavailable) {
		t.Fatalf("err = %v, want the 503", res.Err)
	}
	if n, want := gets.Load(), int32(len(blobsOf(t, img))); n != want {
		t.Errorf("%d blob requests for %d blobs, want one each", n, want)
	}

	// A client with retries of its own retries.
	gets.Store(0)
	cfg := warm.MirrorConfig(mirror.URL())
	cfg.Policy.Retry = upstream.Retry{Attempts: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}
	retrying, err := upstream.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	warm.Image(context.Background(), "example.com/org/app:v1", warm.Options{Mirror: retrying})
	if n, want := gets.Load(), 3*int32(len(blobsOf(t, img))); n != want {
		t.Errorf("%d blob requests with 3 attempts for %d blobs, want %d", n, len(blobsOf(t, img)), want)
	}
}

// A mirror that accepts the connection and then says nothing, not even to
// the client's handshake, is given up on after the idle timeout.
func TestImageMirrorSaysNothing(t *testing.T) {
	stop := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // past the idle timeout, unless the client gives up
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hung.Close)
	// First: the handshake goes on after the request gave up, for others
	// to use, and holds its connection until the server lets go.
	t.Cleanup(func() { close(stop) })

	defer warm.SetIdleTimeout(200 * time.Millisecond)()
	start := time.Now()
	res := warm.Image(context.Background(), "example.com/app:v1", warm.Options{Mirror: mirrorClient(t, hung.URL)})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "no data from the mirror") {
		t.Fatalf("err = %v, want the idle timeout", res.Err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a mirror saying nothing took %s to give up on", took)
	}
}
