package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// These tests play upstream outages in real time against Breakwater with
// its default resilience settings unless a test says otherwise: what a
// user who set nothing gets.

// timedOutage makes the upstream answer status (with header pairs) to every
// manifest and blob request until it is over, counting what it refused.
type timedOutage struct {
	end     time.Time
	refused atomic.Int64
}

func startOutage(up *testupstream.Upstream, d time.Duration, status int, header ...string) *timedOutage {
	o := &timedOutage{end: time.Now().Add(d)}
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if time.Now().After(o.end) || !(strings.Contains(r.URL.Path, "/manifests/") || strings.Contains(r.URL.Path, "/blobs/")) {
			return false
		}
		o.refused.Add(1)
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"scripted outage"}]}`)
		return true
	})
	return o
}

// tryPull pulls an image's manifest and blobs like a runtime, returning
// the first failure instead of failing the test.
func tryPull(m *mirror, repoTag string) error {
	repo, tag, _ := strings.Cut(repoTag, ":")
	get := func(path string, h http.Header) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(http.MethodGet, m.srv.URL+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := m.client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	resp, body, err := get("/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {string(types.DockerManifestSchema2)}})
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("manifest: %s", resp.Status)
	}
	var man struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(body, &man); err != nil {
		return err
	}
	ds := []string{man.Config.Digest}
	for _, l := range man.Layers {
		ds = append(ds, l.Digest)
	}
	for _, d := range ds {
		resp, blob, err := get("/v2/"+repo+"/blobs/"+d, nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || sha256Hex(blob) != d {
			return fmt.Errorf("blob %s: %s, digest %s", d, resp.Status, sha256Hex(blob))
		}
	}
	return nil
}

// pullAtOnce pulls an image and fails the test if that fails or takes more
// than a second: an answer that waited for no retry.
func pullAtOnce(t *testing.T, m *mirror, repoTag, what string) {
	t.Helper()
	start := time.Now()
	if err := tryPull(m, repoTag); err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("%s took %v, want at once", what, took)
	}
}

// upstreamStatus returns the status page's entry for docker.io.
func upstreamStatus(t *testing.T, m *mirror) proxy.UpstreamStatus {
	t.Helper()
	var st proxy.Status
	_, b := m.get("/_breakwater/v1/status")
	if err := json.Unmarshal(b, &st); err != nil || len(st.Upstreams) == 0 {
		t.Fatalf("status page: %v: %s", err, b)
	}
	return st.Upstreams[0]
}

func pushImages(t *testing.T, up *testupstream.Upstream, repos ...string) {
	t.Helper()
	for _, r := range repos {
		up.PushImage(t, r+":v1", randomImage(t, 32<<10, 2, types.DockerManifestSchema2))
	}
}

// TestOutageRecovery: a client pulling an uncached image once a second,
// as kubelet does, through a 6 s outage. With the defaults the first pull
// rides it out and succeeds about a second after the upstream recovered;
// with a breaker that opens during the outage, the first pull after the
// recovery succeeds within the open time, not a cooldown later.
func TestOutageRecovery(t *testing.T) {
	circuit := fastPolicy()
	circuit.Retry.Deadline = 2 * time.Second
	circuit.Retry.BaseDelay, circuit.Retry.MaxDelay = 200*time.Millisecond, 2*time.Second
	circuit.Breaker = upstream.DefaultPolicy().Breaker
	circuit.Breaker.MinRequests = 2
	cases := []struct {
		name   string
		opts   mirrorOpts
		opened bool // the circuit must have opened during the outage
		// late bounds how long after the recovery the first pull may end.
		late time.Duration
	}{
		{"defaults", mirrorOpts{defaults: true}, false, 2 * time.Second},
		{"circuit opened", mirrorOpts{policy: circuit}, true, 2500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, tc.opts)
			pushImages(t, up, "library/first", "library/after")
			o := startOutage(up, 6*time.Second, 503, "Retry-After", "1")
			var failures int
			var opened bool
			for {
				err := tryPull(m, "library/first:v1")
				if err == nil {
					break
				}
				failures++
				if upstreamStatus(t, m).Breaker != "closed" {
					opened = true
				}
				if time.Since(o.end) > 20*time.Second {
					t.Fatalf("still failing 20 s after the upstream recovered: %v", err)
				}
				time.Sleep(time.Second)
			}
			late := time.Since(o.end)
			t.Logf("first success %v after the recovery, %d failed pulls before it", late.Round(10*time.Millisecond), failures)
			if late > tc.late {
				t.Errorf("the first pull succeeded %v after the upstream recovered, want within %v", late, tc.late)
			}
			if !tc.opened && failures > 0 {
				t.Errorf("%d pulls failed during a 6 s outage; the defaults should ride it out", failures)
			}
			if tc.opened && !opened {
				t.Error("the circuit never opened; the test did not test recovery through it")
			}
			pullAtOnce(t, m, "library/after:v1", "the next pull after the recovery")
		})
	}
}

// TestShortOutagesRiddenOut: a pull that starts inside a short outage
// succeeds, and the client never sees it.
func TestShortOutagesRiddenOut(t *testing.T) {
	cases := []struct {
		name    string
		length  time.Duration
		startIn time.Duration
		status  int
	}{
		{"1.5 s burst from the start", 1500 * time.Millisecond, 0, 503},
		{"4 s outage, pull 1 s in", 4 * time.Second, time.Second, 503},
		{"4 s of 502, pull 1 s in", 4 * time.Second, time.Second, 502},
		{"4 s of 504", 4 * time.Second, 0, 504},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{defaults: true})
			pushImages(t, up, "library/app")
			o := startOutage(up, tc.length, tc.status)
			time.Sleep(tc.startIn)
			if err := tryPull(m, "library/app:v1"); err != nil {
				t.Fatalf("not ridden out: %v", err)
			}
			if o.refused.Load() == 0 {
				t.Fatal("the upstream refused nothing: the pull did not meet the outage")
			}
			if late := time.Since(o.end); late > 2*time.Second {
				t.Errorf("done %v after the upstream recovered", late)
			}
		})
	}
}

// TestRateLimitObeyedThroughMirror: a 429 is obeyed, not retried around.
// A Retry-After the request can wait out is waited out with one more
// request; a longer one is answered at once, naming 429 Too Many Requests
// and the seconds really left, and nothing goes upstream before it while
// cached tags are still served.
func TestRateLimitObeyedThroughMirror(t *testing.T) {
	t.Run("Retry-After 1", func(t *testing.T) {
		t.Parallel()
		up := testupstream.Start(t)
		m := newMirror(t, up.URL, mirrorOpts{defaults: true})
		pushImages(t, up, "library/app")
		startOutage(up, time.Second, 429, "Retry-After", "1")
		start := time.Now()
		if err := tryPull(m, "library/app:v1"); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Errorf("took %v: asked again before the Retry-After", took)
		}
		if n := up.Count(http.MethodGet, "/manifests/"); n != 2 {
			t.Errorf("%d manifest requests, want 2: the 429 and one after it", n)
		}
	})
	t.Run("Retry-After as an HTTP date", func(t *testing.T) {
		t.Parallel()
		up := testupstream.Start(t)
		m := newMirror(t, up.URL, mirrorOpts{defaults: true})
		pushImages(t, up, "library/app")
		// An HTTP date has whole seconds; the outage ends at that date.
		at := time.Now().Add(3 * time.Second).Truncate(time.Second)
		startOutage(up, time.Until(at), 429, "Retry-After", at.UTC().Format(http.TimeFormat))
		if err := tryPull(m, "library/app:v1"); err != nil {
			t.Fatal(err)
		}
		if early := time.Until(at); early > 0 {
			t.Errorf("asked again %v before the date", early)
		}
		if n := up.Count(http.MethodGet, "/manifests/"); n != 2 {
			t.Errorf("%d manifest requests, want 2", n)
		}
	})
	t.Run("Retry-After 15: held", func(t *testing.T) {
		t.Parallel()
		up := testupstream.Start(t)
		m := newMirror(t, up.URL, mirrorOpts{defaults: true, tagTTL: 0, maxStale: time.Hour})
		pushImages(t, up, "library/cached", "library/new", "library/other")
		pullAll(t, m, "library/cached:v1")
		o := startOutage(up, 15*time.Second, 429, "Retry-After", "15")
		start := time.Now()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			// Fits the 20 s deadline: held until the upstream's time.
			defer wg.Done()
			if err := tryPull(m, "library/new:v1"); err != nil {
				t.Errorf("held pull: %v", err)
			}
			if took := time.Since(start); took < 14*time.Second {
				t.Errorf("the held pull ended after %v, before the Retry-After", took)
			}
		}()
		time.Sleep(500 * time.Millisecond)
		// While it holds, a cached image is served at once, and another
		// uncached one is held too rather than sent.
		pullAtOnce(t, m, "library/cached:v1", "cached image while rate limited")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tryPull(m, "library/other:v1"); err != nil {
				t.Errorf("second held pull: %v", err)
			}
		}()
		time.Sleep(time.Second)
		if n := o.refused.Load(); n != 1 {
			t.Errorf("the upstream got %d requests while it was rate limited, want only the first", n)
		}
		wg.Wait()
		// The held pulls, and the cached tag's revalidation, went only
		// once the upstream's time had come: it refused nothing more.
		if n := o.refused.Load(); n != 1 {
			t.Errorf("the upstream got %d requests within its Retry-After, want only the first", n)
		}
	})
	t.Run("Retry-After 30: past the deadline", func(t *testing.T) {
		t.Parallel()
		up := testupstream.Start(t)
		m := newMirror(t, up.URL, mirrorOpts{defaults: true, tagTTL: 0, maxStale: time.Hour})
		pushImages(t, up, "library/cached", "library/new", "library/other")
		pullAll(t, m, "library/cached:v1")
		o := startOutage(up, time.Hour, 429, "Retry-After", "30")
		start := time.Now()
		resp, body := m.get("/v2/library/new/manifests/v1")
		if took := time.Since(start); took > time.Second {
			t.Errorf("answered after %v; a Retry-After past the deadline is answered at once", took)
		}
		checkCrafted(t, resp, body, "answered 429 Too Many Requests; retry after 30s")
		if resp.Header.Get("Retry-After") != "30" {
			t.Errorf("Retry-After %q, want 30", resp.Header.Get("Retry-After"))
		}
		time.Sleep(2 * time.Second)
		resp, body = m.get("/v2/library/other/manifests/v1")
		if secs := retryAfterSecs(resp); secs < 27 || secs > 28 {
			t.Errorf("2 s later: Retry-After %d, want the 28 s left", secs)
		} else {
			checkCrafted(t, resp, body, fmt.Sprintf("answered 429 Too Many Requests; retry after %ds", secs))
		}
		pullAtOnce(t, m, "library/cached:v1", "cached image while rate limited")
		if n := o.refused.Load(); n != 1 {
			t.Errorf("the upstream got %d requests while it was rate limited, want only the first", n)
		}
		if st := upstreamStatus(t, m); !st.RateLimited || st.RateLimitRetryAfter < 26 || st.RateLimitRetryAfter > 28 ||
			st.Breaker != "closed" || !strings.Contains(st.LastError, "429 Too Many Requests") {
			t.Errorf("status page while rate limited: %+v", st)
		}
	})
}

func retryAfterSecs(resp *http.Response) int {
	n, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return n
}

// TestMissingAfterOutage: an image that does not exist, asked 2 s after
// an outage ended, is 404 MANIFEST_UNKNOWN, even when the outage opened
// the circuit.
func TestMissingAfterOutage(t *testing.T) {
	circuit := fastPolicy()
	circuit.Retry.Deadline = time.Second
	circuit.Breaker = upstream.DefaultPolicy().Breaker
	circuit.Breaker.MinRequests = 2
	for _, tc := range []struct {
		name string
		opts mirrorOpts
	}{{"defaults", mirrorOpts{defaults: true}}, {"circuit opened", mirrorOpts{policy: circuit}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, tc.opts)
			o := startOutage(up, 3*time.Second, 503)
			if tc.opts.defaults {
				// A request under way meets the outage, as one would.
				go m.get("/v2/library/other/manifests/v1")
			} else {
				for i := range 2 {
					if resp, _ := m.get(fmt.Sprintf("/v2/library/gone%d/manifests/v1", i)); resp.StatusCode != 503 {
						t.Fatalf("during the outage: %s", resp.Status)
					}
				}
				if st := upstreamStatus(t, m); st.Breaker == "closed" {
					t.Fatalf("the circuit did not open: %+v", st)
				}
			}
			time.Sleep(time.Until(o.end) + 2*time.Second)
			resp, body := m.get("/v2/library/missing/manifests/v1")
			if resp.StatusCode != 404 || errorCode(body) != "MANIFEST_UNKNOWN" {
				t.Errorf("missing image 2 s after the outage: %s %s, want 404 MANIFEST_UNKNOWN", resp.Status, body)
			}
		})
	}
}

// TestOneRepository500: one repository answering 500 does not shut out
// the registry, however often it is asked.
func TestOneRepository500(t *testing.T) {
	p := fastPolicy()
	p.Retry.Deadline = 300 * time.Millisecond
	p.Breaker = upstream.DefaultPolicy().Breaker
	p.Breaker.MinRequests = 2
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{policy: p})
	pushImages(t, up, "library/fine")
	up.Play("", "/library/broken/", testupstream.Status(500)).Forever()
	for range 6 {
		resp, body := m.get("/v2/library/broken/manifests/v1")
		checkCrafted(t, resp, body, "answered 500 Internal Server Error")
	}
	if st := upstreamStatus(t, m); st.Breaker != "closed" {
		t.Errorf("after six requests answered 500 by one repository: %+v", st)
	}
	pullAtOnce(t, m, "library/fine:v1", "another repository")
}

// TestCachedImageDuringOutage: a cached image pulls at once however the
// upstream fails — answering 503, its circuit open, rate limited, or not
// answering at all — and its tag is revalidated in the background once
// the upstream is back.
func TestCachedImageDuringOutage(t *testing.T) {
	open := upstream.DefaultPolicy()
	open.Breaker.MinRequests = 1
	open.Retry.Deadline = 500 * time.Millisecond
	cases := []struct {
		name   string
		policy upstream.Policy
		play   func(up *testupstream.Upstream) func() // returns the end of the outage
		// within bounds the whole pull (tag, config, layers).
		within time.Duration
	}{
		{"503, circuit closed", upstream.DefaultPolicy(), func(up *testupstream.Upstream) func() {
			up.Play("", "/manifests/", testupstream.Status(503)).Forever()
			return func() { up.SetHook(nil) }
		}, time.Second},
		{"circuit open", open, func(up *testupstream.Upstream) func() {
			up.Play("", "/manifests/", testupstream.Status(503)).Forever()
			return func() { up.SetHook(nil) }
		}, time.Second},
		{"rate limited", upstream.DefaultPolicy(), func(up *testupstream.Upstream) func() {
			up.Play("", "/manifests/", testupstream.Status(429, "Retry-After", "2")).Forever()
			return func() { up.SetHook(nil) }
		}, time.Second},
		{"no answer", upstream.DefaultPolicy(), func(up *testupstream.Upstream) func() {
			hung := make(chan struct{})
			var once sync.Once
			up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				select {
				case <-hung:
				case <-r.Context().Done():
				}
				return true
			})
			return func() { once.Do(func() { close(hung) }); up.SetHook(nil) }
		}, 1500 * time.Millisecond}, // revalidate_timeout 300 ms
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{policy: tc.policy, tagTTL: 0, maxStale: time.Hour, revalidate: 300 * time.Millisecond})
			pushImages(t, up, "library/app")
			pullAll(t, m, "library/app:v1")
			if tc.name == "circuit open" {
				// Open it with a request for something never cached.
				up.Play("", "/manifests/", testupstream.Status(503)).Forever()
				m.get("/v2/library/never/manifests/v1")
			}
			end := tc.play(up)
			outageStart := time.Now()
			for i := range 3 {
				start := time.Now()
				if err := tryPull(m, "library/app:v1"); err != nil {
					t.Fatalf("pull %d of the cached image: %v", i+1, err)
				}
				if took := time.Since(start); took > tc.within {
					t.Errorf("pull %d of the cached image took %v during the outage, want within %v", i+1, took, tc.within)
				}
			}
			end()
			// Once the upstream is back the tag is revalidated in the
			// background: a pull is answered at once, and the record is
			// fresh soon after. With the circuit open, the revalidation a
			// pull starts waits for the circuit's next probe only within
			// its deadline, so the pulls go on (as a node's would) until
			// one gets through: at most breaker.open_max (4 s) later.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if err := tryPull(m, "library/app:v1"); err != nil {
					t.Fatalf("after the outage: %v", err)
				}
				recs, _ := m.store.TagRecords(storage.Repo{Upstream: "docker.io", Name: "library/app"}, "v1")
				fresh := false
				for _, r := range recs {
					fresh = fresh || r.CheckedAt.After(outageStart)
				}
				if fresh {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the tag was not revalidated after the upstream came back")
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

// TestSharedRetryLoop: concurrent requests for the same manifest, or the
// same blob, ride an outage on one retry loop: the upstream sees one
// loop's tries, not one per client.
func TestSharedRetryLoop(t *testing.T) {
	const clients = 16
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{defaults: true})
	img := randomImage(t, 64<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/herd:v1", img)
	layer := digestOf(t, layersOf(t, img)[0])
	for _, tc := range []struct {
		name, path, upstreamPath string
	}{
		{"manifest", "/v2/library/herd/manifests/v1", "/manifests/"},
		// The manifest links the layer to the repository; the layer
		// itself is not cached.
		{"blob", "/v2/library/herd/blobs/" + layer, "/blobs/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startOutage(up, 2*time.Second, 503)
			before := up.Count(http.MethodGet, tc.upstreamPath)
			var wg sync.WaitGroup
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if resp, body := m.get(tc.path); resp.StatusCode != 200 {
						t.Errorf("%s: %s %s", tc.path, resp.Status, body)
					}
				}()
			}
			wg.Wait()
			tries := up.Count(http.MethodGet, tc.upstreamPath) - before
			// One loop from 200 ms doubling makes about six tries in 2 s.
			if o.refused.Load() == 0 || tries > 10 {
				t.Errorf("%d clients made %d upstream GETs (%d refused) through a 2 s outage, want one loop's (at most 10)",
					clients, tries, o.refused.Load())
			}
		})
	}
}
