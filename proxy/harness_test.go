package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/objstore"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// mirror is a Breakwater under test in front of one or more upstreams.
type mirror struct {
	t      testing.TB
	srv    *httptest.Server
	host   string
	dir    string
	store  *storage.Store
	client *http.Client
	// close stops the server and waits for its fetches, as a shutdown does.
	close func()
}

type mirrorOpts struct {
	dir    string
	tagTTL time.Duration
	// extra upstreams by name, besides docker.io.
	extra map[string]string
	// policy governs the upstreams; zero: fastPolicy. defaults: the
	// upstream package's defaults, as a user without settings has them.
	policy     upstream.Policy
	defaults   bool
	maxStale   time.Duration
	revalidate time.Duration
	maxBlob    int64
	reserve    int
	storeOpts  []storage.Option
	// auth authenticates towards the docker.io upstream.
	auth authn.Authenticator
	// access authenticates the mirror's clients; nil: open.
	access proxy.Access
	// log, when set, receives the mirror's log as JSON at info level.
	log io.Writer
	// warm serves the warm API.
	warm http.Handler
	// shared is the object store the mirror shares with others;
	// sharedRedirect sends clients to its presigned URLs.
	shared         *objstore.Store
	sharedRedirect bool
	// sharedMaxSize bounds shared fleet-wide, with an eviction pass every
	// 100 ms.
	sharedMaxSize int64
	// redis, when set, makes the mirror a replica of the fleet
	// coordinated through that Redis.
	redis string
}

// testPeerSecret is the secret the test fleets' replicas share.
const testPeerSecret = "fleet-secret-for-tests"

// fastPolicy keeps tests quick while exercising every retry path. Its
// breaker never opens: tests of retries must not trip it, and the
// breaker's own tests set theirs.
func fastPolicy() upstream.Policy {
	p := upstream.DefaultPolicy()
	p.Retry = upstream.Retry{
		BaseDelay:      5 * time.Millisecond,
		MaxDelay:       40 * time.Millisecond,
		Deadline:       2 * time.Second,
		AttemptTimeout: 2 * time.Second,
		MaxRetryAfter:  time.Hour,
	}
	p.Breaker.MinRequests = 1 << 20
	p.MaxConcurrent = 0
	return p
}

func newMirror(t testing.TB, dockerIO string, o mirrorOpts) *mirror {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	store, err := storage.Open(o.dir, o.storeOpts...)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case o.defaults:
		o.policy = upstream.DefaultPolicy()
	case o.policy == (upstream.Policy{}):
		o.policy = fastPolicy()
	}
	ups := []proxy.UpstreamConfig{{Name: "docker.io", URL: dockerIO, Auth: o.auth, Policy: o.policy, RateLimitReserve: o.reserve}}
	for n, u := range o.extra {
		ups = append(ups, proxy.UpstreamConfig{Name: n, URL: u, Policy: o.policy})
	}
	level := slog.LevelError
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if o.log != nil {
		logger = slog.New(slog.NewJSONHandler(o.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	// A replica's address is its listener's, known before it serves.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var fl *coord.Fleet
	if o.redis != "" {
		if fl, err = coord.New(coord.Options{Addr: o.redis, Self: "http://" + ln.Addr().String(), LeaseTTL: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := proxy.New(proxy.Options{
		Store:               store,
		Upstreams:           ups,
		DefaultUpstream:     "docker.io",
		TagTTL:              o.tagTTL,
		MaxStale:            o.maxStale,
		RevalidateTimeout:   o.revalidate,
		MaxBlobSize:         o.maxBlob,
		Logger:              logger,
		Version:             "test",
		Access:              o.access,
		WarmHandler:         o.warm,
		Shared:              o.shared,
		SharedRedirect:      o.sharedRedirect,
		SharedMaxSize:       o.sharedMaxSize,
		SharedEvictInterval: 100 * time.Millisecond,
		Fleet:               fl,
		PeerSecret:          testPeerSecret,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			hs.Close()
			srv.Close()
			store.Close()
			if fl != nil {
				fl.Close()
			}
		})
	}
	t.Cleanup(stop)
	return &mirror{
		t: t, srv: hs, host: strings.TrimPrefix(hs.URL, "http://"), dir: o.dir, store: store,
		client: &http.Client{Timeout: 2 * time.Minute}, close: stop,
	}
}

// do sends a request to the mirror and returns the response with its body
// read.
func (m *mirror) do(method, path string, header http.Header) (*http.Response, []byte) {
	m.t.Helper()
	req, err := http.NewRequest(method, m.srv.URL+path, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := m.client.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		m.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, body
}

func (m *mirror) get(path string) (*http.Response, []byte) { return m.do(http.MethodGet, path, nil) }

// ref names an image on the mirror for go-containerregistry's client.
func (m *mirror) ref(repoTag string) name.Reference {
	m.t.Helper()
	ref, err := name.ParseReference(m.host+"/"+repoTag, name.Insecure)
	if err != nil {
		m.t.Fatal(err)
	}
	return ref
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func randomImage(t testing.TB, layerSize, layers int64, mt types.MediaType) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, layers)
	if err != nil {
		t.Fatal(err)
	}
	if mt == types.OCIManifestSchema1 {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return img
}

// platformIndex builds an index of two platform images of the given index
// media type.
func platformIndex(t *testing.T, indexType, imageType types.MediaType) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, indexType)
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}} {
		img := randomImage(t, 1024, 2, imageType)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx
}

// pushLinkedLayer pushes a one-layer image as repo:v1, links its blobs on
// the mirror with a manifest GET, and returns the layer's bytes and digest.
func pushLinkedLayer(t testing.TB, up *testupstream.Upstream, m *mirror, repo string, size int64) (content []byte, dgst string) {
	t.Helper()
	img := randomImage(t, size, 1, types.DockerManifestSchema2)
	up.PushImage(t, repo+":v1", img)
	layer := layersOf(t, img)[0]
	m.get("/v2/" + repo + "/manifests/v1")
	return compressedBytes(t, layer), digestOf(t, layer)
}

func layersOf(t testing.TB, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func compressedBytes(t testing.TB, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func digestOf(t testing.TB, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func rawManifest(t *testing.T, img interface{ RawManifest() ([]byte, error) }) []byte {
	t.Helper()
	b, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// errorCode returns errors[0].code of an OCI error body.
func errorCode(body []byte) string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}
