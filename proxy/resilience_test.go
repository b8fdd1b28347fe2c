package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/classify"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/upstream"
)

// seeded starts an upstream with one small image and a mirror in front of it.
func seeded(t *testing.T, o mirrorOpts) (*testupstream.Upstream, *mirror, string) {
	t.Helper()
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, o)
	d := up.PushImage(t, "library/app:v1", randomImage(t, 64<<10, 2, types.DockerManifestSchema2))
	return up, m, d.String()
}

// TestRetries plays upstream misbehaviour scripts at the manifest endpoint
// and checks what the client gets and how many tries the upstream saw.
func TestRetries(t *testing.T) {
	cases := []struct {
		name       string
		steps      []testupstream.Step
		forever    bool
		wantStatus int
		wantTries  int    // 0: more than 3
		wantCause  string // in the crafted 503
		minElapsed time.Duration
		maxElapsed time.Duration
		// dateRetryAfter plays a 429 whose Retry-After is a date 2s ahead.
		dateRetryAfter bool
		triesSlack     int
	}{
		{name: "503, 503, 200", steps: []testupstream.Step{testupstream.Status(503), testupstream.Status(503)},
			wantStatus: 200, wantTries: 3, maxElapsed: time.Second},
		{name: "502 then 200", steps: []testupstream.Step{testupstream.Status(502)}, wantStatus: 200, wantTries: 2},
		{name: "504 then 200", steps: []testupstream.Step{testupstream.Status(504)}, wantStatus: 200, wantTries: 2},
		{name: "408 then 200", steps: []testupstream.Step{testupstream.Status(408)}, wantStatus: 200, wantTries: 2},
		{name: "500 then 200", steps: []testupstream.Step{testupstream.Status(500)}, wantStatus: 200, wantTries: 2},
		{name: "429 Retry-After 1 then 200", steps: []testupstream.Step{testupstream.Status(429, "Retry-After", "1")},
			wantStatus: 200, wantTries: 2, minElapsed: 900 * time.Millisecond},
		{name: "429 Retry-After as HTTP date", dateRetryAfter: true,
			wantStatus: 200, wantTries: 2, minElapsed: 500 * time.Millisecond},
		{name: "503 Retry-After 1 then 200", steps: []testupstream.Step{testupstream.Status(503, "Retry-After", "1")},
			wantStatus: 200, wantTries: 2, minElapsed: 900 * time.Millisecond},
		{name: "reset then 200", steps: []testupstream.Step{testupstream.Reset()}, wantStatus: 200, wantTries: 2},
		{name: "503 forever", steps: []testupstream.Step{testupstream.Status(503)}, forever: true,
			wantStatus: 503, wantCause: "answered 503 Service Unavailable"},
		{name: "429 forever", steps: []testupstream.Step{testupstream.Status(429)}, forever: true,
			wantStatus: 503, wantTries: 1, triesSlack: 2, wantCause: "answered 429 Too Many Requests"},
		{name: "500 forever", steps: []testupstream.Step{testupstream.Status(500)}, forever: true,
			wantStatus: 503, wantCause: "answered 500 Internal Server Error"},
		// Go's transport itself retries an idempotent request once when a
		// reused connection is reset, so the upstream may see more tries.
		{name: "reset forever", steps: []testupstream.Step{testupstream.Reset()}, forever: true,
			wantStatus: 503, wantCause: "unreachable: connection reset by peer"},
		{name: "404 not retried", steps: []testupstream.Step{testupstream.Status(404)}, forever: true,
			wantStatus: 404, wantTries: 1},
		{name: "401 not retried", steps: []testupstream.Step{testupstream.Status(401)}, forever: true,
			wantStatus: 401, wantTries: 1},
		{name: "403 not retried", steps: []testupstream.Step{testupstream.Status(403)}, forever: true,
			wantStatus: 403, wantTries: 1},
		{name: "400 not retried", steps: []testupstream.Step{testupstream.Status(400)}, forever: true,
			wantStatus: 400, wantTries: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up, m, _ := seeded(t, mirrorOpts{})
			steps := tc.steps
			if tc.dateRetryAfter {
				steps = []testupstream.Step{testupstream.Status(429, "Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))}
			}
			s := up.Play(http.MethodGet, "/manifests/v1", steps...)
			if tc.forever {
				s.Forever()
			}
			start := time.Now()
			resp, body := m.get("/v2/library/app/manifests/v1")
			elapsed := time.Since(start)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d: %s", resp.StatusCode, resp.Status, tc.wantStatus, body)
			}
			n := up.Count(http.MethodGet, "/manifests/v1")
			switch {
			case tc.wantTries == 0 && n <= 3:
				t.Errorf("upstream saw %d tries: gave up long before the deadline", n)
			case tc.wantTries > 0 && (n < tc.wantTries || n > tc.wantTries+tc.triesSlack):
				t.Errorf("upstream saw %d tries, want %d", n, tc.wantTries)
			}
			if tc.minElapsed > 0 && elapsed < tc.minElapsed {
				t.Errorf("took %v: Retry-After not honoured (want at least %v)", elapsed, tc.minElapsed)
			}
			if tc.maxElapsed > 0 && elapsed > tc.maxElapsed {
				t.Errorf("took %v, want at most %v", elapsed, tc.maxElapsed)
			}
			if tc.wantCause != "" {
				checkCrafted(t, resp, body, tc.wantCause)
			}
		})
	}
}

// checkCrafted checks a 503 carries the crafted text in its status line,
// its body and Retry-After, and that the bundled classifier rates the line
// the way containerd prints it as transient.
func checkCrafted(t *testing.T, resp *http.Response, body []byte, cause string) {
	t.Helper()
	if resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, want := range []string{"503 Service Unavailable (breakwater-transient: upstream docker.io " + cause, "; retry after "} {
		if !strings.Contains(resp.Status, want) {
			t.Errorf("status line %q lacks %q", resp.Status, want)
		}
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if body != nil {
		if errorCode(body) != "UNAVAILABLE" || !strings.Contains(string(body), cause) {
			t.Errorf("body %s", body)
		}
	}
	line := `failed to resolve reference "docker.io/library/app:v1": pulling from host 127.0.0.1:5000 failed with status code [manifests v1]: ` + resp.Status
	if r := classify.Classify("ErrImagePull", line); r.Verdict != classify.Transient {
		t.Errorf("classify rates %q %s (%s)", line, r.Verdict, r.Rule)
	}
}

// TestCraftedStatusOnHead: a HEAD has no body, so the status line is all a
// runtime sees.
func TestCraftedStatusOnHead(t *testing.T) {
	up, m, _ := seeded(t, mirrorOpts{})
	up.Play(http.MethodHead, "/manifests/v1", testupstream.Status(429, "Retry-After", "2")).Forever()
	up.Play("", "/manifests/v1", testupstream.Status(429, "Retry-After", "2")).Forever()
	resp, body := m.do(http.MethodHead, "/v2/library/app/manifests/v1", nil)
	if len(body) != 0 {
		t.Errorf("HEAD answered with a body: %q", body)
	}
	checkCrafted(t, resp, nil, "answered 429 Too Many Requests")
	if got := resp.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q, want the upstream's 2", got)
	}
}

// TestUnreachable: an upstream that refuses connections gives the crafted
// 503 naming the cause.
func TestUnreachable(t *testing.T) {
	m := newMirror(t, "http://127.0.0.1:1", mirrorOpts{})
	resp, body := m.get("/v2/library/app/manifests/v1")
	checkCrafted(t, resp, body, "unreachable: connection refused")
}

// TestBlobResume cuts a blob body half way (and stalls another): the fetch
// resumes with a Range request and every client gets the verified blob.
func TestBlobResume(t *testing.T) {
	cases := []struct {
		name string
		step testupstream.Step
	}{
		{"cut at half", testupstream.Cut(0.5)},
		{"stall at a third", testupstream.Stall(0.33)},
		{"slow drip", testupstream.Drip(16<<10, 5*time.Millisecond)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := fastPolicy()
			p.Retry.AttemptTimeout = 300 * time.Millisecond
			up := testupstream.Start(t)
			m := newMirror(t, up.URL, mirrorOpts{policy: p})
			img := randomImage(t, 256<<10, 1, types.DockerManifestSchema2)
			up.PushImage(t, "library/resume:v1", img)
			m.get("/v2/library/resume/manifests/v1")
			dgst := digestOf(t, layersOf(t, img)[0])
			up.Play(http.MethodGet, "/blobs/"+dgst, tc.step)

			resp, body := m.get("/v2/library/resume/blobs/" + dgst)
			if resp.StatusCode != 200 || sha256Hex(body) != dgst {
				t.Fatalf("status %d, digest %s", resp.StatusCode, sha256Hex(body))
			}
			gets := up.Requests(http.MethodGet, "/blobs/"+dgst)
			if tc.name == "slow drip" {
				if len(gets) != 1 {
					t.Errorf("a slow but steady body was retried: %d GETs", len(gets))
				}
				return
			}
			if len(gets) != 2 {
				t.Fatalf("upstream GETs %d, want 2", len(gets))
			}
			rng := gets[1].Header.Get("Range")
			if !strings.HasPrefix(rng, "bytes=") || rng == "bytes=0-" {
				t.Errorf("resume Range %q, want from the byte reached", rng)
			}
		})
	}
}

// TestBlobCutForever: a body that is cut every time fails the client and
// caches nothing.
func TestBlobCutForever(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{})
	img := randomImage(t, 64<<10, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/cut:v1", img)
	m.get("/v2/library/cut/manifests/v1")
	dgst := digestOf(t, layersOf(t, img)[0])
	up.Play(http.MethodGet, "/blobs/"+dgst, testupstream.Cut(0.01)).Forever()
	resp, err := m.client.Get(m.srv.URL + "/v2/library/cut/blobs/" + dgst)
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == 200 {
			t.Fatalf("a blob that never arrived was served whole (%d bytes)", len(body))
		}
	}
	if n := up.Count(http.MethodGet, "/blobs/"+dgst); n < 2 {
		t.Errorf("not retried: %d GETs", n)
	}
}

// TestBreaker: requests that found the upstream down, after their
// retries, open the circuit; while it is open a request waits for the next
// probe within its deadline, and when the probe fails too it gets the
// crafted 503 naming the circuit and the upstream's last cause; nothing
// else reaches the upstream. The first answer closes the circuit.
func TestBreaker(t *testing.T) {
	p := fastPolicy()
	p.Retry.Deadline = 500 * time.Millisecond
	p.Breaker = upstream.Breaker{Window: time.Minute, MinRequests: 3, FailurePercent: 50, OpenMin: 200 * time.Millisecond, OpenMax: 400 * time.Millisecond}
	up, m, _ := seeded(t, mirrorOpts{policy: p})
	up.Play("", "/manifests/", testupstream.Status(503)).Forever()

	for i := range 3 {
		resp, _ := m.get("/v2/library/app/manifests/v1")
		if resp.StatusCode != 503 || strings.Contains(resp.Status, "circuit open") {
			t.Fatalf("failure %d: %s", i+1, resp.Status)
		}
	}
	// The third request's flight may still send its last try after the
	// client was answered (a loaded machine shows it): count from when
	// the upstream has heard nothing new for 100 ms.
	before := settledCount(t, up, "/manifests/")
	resp, body := m.get("/v2/library/app/manifests/v1")
	checkCrafted(t, resp, body, "circuit open after 503 Service Unavailable")
	// Within one 500 ms budget one probe goes out (after 200 ms); the
	// next would be 400 ms later, past the budget.
	if n := up.Count("", "/manifests/") - before; n > 1 {
		t.Errorf("%d requests reached the upstream while the circuit was open, want at most the one probe", n)
	}
	if st := upstreamStatus(t, m); st.Breaker == "closed" || !strings.Contains(st.LastError, "503 Service Unavailable") {
		t.Errorf("status page: %+v", st)
	}

	// The upstream recovers: the next request waits at most for the next
	// probe, which closes the circuit.
	up.SetHook(nil)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if resp, body := m.get("/v2/library/app/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("after recovery: %s %s", resp.Status, body)
	}
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Errorf("the first request after recovery took %v, want within the open time (400 ms)", took)
	}
	for i := range 3 {
		if resp, body := m.get("/v2/library/app/manifests/v1"); resp.StatusCode != 200 {
			t.Fatalf("after recovery, request %d: %s %s", i, resp.Status, body)
		}
	}
}

// TestStaleIfError: an image pulled before an outage is pulled whole during
// it; an image never pulled gets the crafted 503; a missing one stays 404.
func TestStaleIfError(t *testing.T) {
	for _, outage := range []struct {
		name  string
		steps testupstream.Step
	}{
		{"503", testupstream.Status(503)},
		{"429", testupstream.Status(429, "Retry-After", "1")},
		{"reset", testupstream.Reset()},
	} {
		t.Run(outage.name, func(t *testing.T) {
			up, m, d := seeded(t, mirrorOpts{tagTTL: 0, maxStale: time.Hour})
			up.PushImage(t, "library/never:v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
			if got := pullAll(t, m, "library/app:v1"); got != d {
				t.Fatalf("before: %s", got)
			}
			up.Play("", "/v2/", outage.steps).Forever()

			if got := pullAll(t, m, "library/app:v1"); got != d {
				t.Fatalf("during the outage: %s, want %s", got, d)
			}
			resp, body := m.get("/v2/library/never/manifests/v1")
			if resp.StatusCode != 503 {
				t.Fatalf("uncached during outage: %s %s", resp.Status, body)
			}
		})
	}

	t.Run("fatal stays fatal", func(t *testing.T) {
		up, m, _ := seeded(t, mirrorOpts{tagTTL: 0, maxStale: time.Hour})
		pullAll(t, m, "library/app:v1")
		up.Play("", "/manifests/v1", testupstream.Status(404)).Forever()
		if resp, body := m.get("/v2/library/app/manifests/v1"); resp.StatusCode != 404 {
			t.Errorf("deleted tag: %s %s; the upstream's no must not be hidden by the cache", resp.Status, body)
		}
	})

	t.Run("too stale", func(t *testing.T) {
		up, m, _ := seeded(t, mirrorOpts{tagTTL: 0, maxStale: time.Nanosecond})
		pullAll(t, m, "library/app:v1")
		up.Play("", "/manifests/", testupstream.Status(503)).Forever()
		if resp, _ := m.get("/v2/library/app/manifests/v1"); resp.StatusCode != 503 {
			t.Errorf("beyond max_stale: %s", resp.Status)
		}
	})
}

// TestConcurrencyCap: no more requests in flight to one upstream than
// configured, however many clients ask.
func TestConcurrencyCap(t *testing.T) {
	up := testupstream.Start(t)
	p := fastPolicy()
	p.MaxConcurrent = 2
	m := newMirror(t, up.URL, mirrorOpts{policy: p})
	var repos []string
	for i := 0; i < 8; i++ {
		repo := "library/cap" + string(rune('a'+i))
		up.PushImage(t, repo+":v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
		repos = append(repos, repo)
	}
	var inflight, peak atomic.Int32
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		up.Handler().ServeHTTP(w, r)
		inflight.Add(-1)
		return true
	})
	var wg sync.WaitGroup
	for _, repo := range repos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, body := m.get("/v2/" + repo + "/manifests/v1"); resp.StatusCode != 200 {
				t.Errorf("%s: %s %s", repo, resp.Status, body)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 2 || p < 1 {
		t.Errorf("peak concurrent upstream requests %d, want at most 2", p)
	}
}

// strictBreaker opens on one counted failure and stays open for a minute,
// past the next request's deadline, which therefore cannot wait for a
// probe: a test whose next request is answered shows that nothing was
// counted against the upstream.
func strictBreaker() upstream.Breaker {
	b := upstream.DefaultPolicy().Breaker
	b.MinRequests, b.FailurePercent = 1, 1
	b.OpenMin, b.OpenMax = time.Minute, time.Minute
	return b
}

// oneSlotPolicy allows one request in flight to the upstream, gives each
// request deadline (less than the attempt timeout) and has a strict
// breaker.
func oneSlotPolicy(deadline time.Duration) upstream.Policy {
	p := fastPolicy()
	p.MaxConcurrent = 1
	p.Retry.Deadline = deadline
	p.Retry.AttemptTimeout = 10 * time.Second
	p.Breaker = strictBreaker()
	return p
}

// holdTheOnlySlot starts a blob fetch through m that holds the upstream's
// one slot, half sent, until release is called; done then says whether the
// blob came whole. The upstream answers other requests with other (nil:
// as the registry does).
func holdTheOnlySlot(t *testing.T, up *testupstream.Upstream, m *mirror, other func(http.ResponseWriter, *http.Request) bool) (release func(), done <-chan error) {
	t.Helper()
	content, dgst := pushLinkedLayer(t, up, m, "library/slow", 256<<10)
	held := make(chan struct{})
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			w.Header().Set("Docker-Content-Digest", dgst)
			testupstream.HalfThenWait(w, r, content, held)
			return true
		}
		return other != nil && other(w, r)
	})
	blobDone := make(chan error, 1)
	go func() {
		resp, body := m.get("/v2/library/slow/blobs/" + dgst)
		if resp.StatusCode != 200 || sha256Hex(body) != dgst {
			blobDone <- fmt.Errorf("%s, content %s", resp.Status, sha256Hex(body))
			return
		}
		blobDone <- nil
	}()
	deadline := time.Now().Add(10 * time.Second)
	for blobGETs(up, dgst) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the blob fetch never reached the upstream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release) // a test that fails first leaves no handler waiting
	return release, blobDone
}

// TestConcurrencyCapBusy: a request that finds every slot held by a
// healthy fetch until its deadline is answered with the crafted 503 that
// says so, not as an i/o timeout of an upstream that is fine, and its
// wait is no verdict on the upstream: with a breaker that opens on one
// failure, the next request after the fetch is answered by the upstream.
func TestConcurrencyCapBusy(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{policy: oneSlotPolicy(300 * time.Millisecond)})
	up.PushImage(t, "library/queued:v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
	release, blobDone := holdTheOnlySlot(t, up, m, nil)

	// The blob's body holds the only slot.
	for i := range 3 {
		resp, body := m.get("/v2/library/queued/manifests/v1")
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
			!strings.Contains(resp.Status, "(breakwater-transient: upstream docker.io busy: 1 request from this mirror in flight (max_concurrent)") {
			t.Fatalf("request %d queued behind a healthy fetch: %s %s %s, want the crafted 503 saying busy, Retry-After: 1", i, resp.Status, resp.Header.Get("Retry-After"), body)
		}
		line := `failed to resolve reference "docker.io/library/queued:v1": pulling from host 127.0.0.1:5000 failed with status code [manifests v1]: ` + resp.Status
		if r := classify.Classify("ErrImagePull", line); r.Verdict != classify.Transient {
			t.Errorf("classify rates %q %s (%s), want transient", line, r.Verdict, r.Rule)
		}
	}
	if n := up.Count("", "/library/queued/manifests/"); n != 0 {
		t.Errorf("the upstream saw %d requests for the queued manifest while no slot was free", n)
	}
	release()
	if err := <-blobDone; err != nil {
		t.Fatalf("the blob: %v", err)
	}
	if resp, body := m.get("/v2/library/queued/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("once the slot is free: %s %s, want 200 (the busy answers must not open the circuit)", resp.Status, body)
	}
}

// TestSlotLateTryCutShort: a request that waited for a max_concurrent slot
// until little of its deadline was left, and whose one try the deadline
// then cut before a slow but healthy upstream answered, is answered with
// a crafted transient 503 that says so, and is no verdict on the
// upstream: with a breaker that opens on one failure, the next request is
// answered by the upstream, not refused by an open circuit.
func TestSlotLateTryCutShort(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{policy: oneSlotPolicy(time.Second)})
	up.PushImage(t, "library/queued:v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
	var slow atomic.Bool
	slow.Store(true)
	release, blobDone := holdTheOnlySlot(t, up, m, func(w http.ResponseWriter, r *http.Request) bool {
		// The first answer takes longer than the try has left: the
		// upstream is slow, not down.
		if strings.HasSuffix(r.URL.Path, "/library/queued/manifests/v1") && slow.Swap(false) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}
		return false
	})

	// The blob holds the only slot for 700 ms of the queued request's
	// 1 s deadline; its try gets the 300 ms left.
	time.AfterFunc(700*time.Millisecond, release)
	resp, body := m.get("/v2/library/queued/manifests/v1")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(resp.Status, "(breakwater-transient: upstream docker.io slow: no answer in the ") {
		t.Fatalf("a try cut short by the deadline after a slot wait: %s %s %s, want the crafted 503 saying slow, Retry-After: 1", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	line := `failed to resolve reference "docker.io/library/queued:v1": pulling from host 127.0.0.1:5000 failed with status code [manifests v1]: ` + resp.Status
	if r := classify.Classify("ErrImagePull", line); r.Verdict != classify.Transient {
		t.Errorf("classify rates %q %s (%s), want transient", line, r.Verdict, r.Rule)
	}
	if n := up.Count("", "/library/queued/manifests/"); n != 1 {
		t.Errorf("the upstream saw %d requests for the queued manifest, want the one cut short", n)
	}
	if err := <-blobDone; err != nil {
		t.Fatalf("the blob: %v", err)
	}
	if resp, body := m.get("/v2/library/queued/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("after the cut try: %s %s, want 200 (a try cut by our own deadline must not open the circuit)", resp.Status, body)
	}
}

// TestDeadlineCutsAWholeTry: with a deadline shorter than the attempt
// timeout, a try sent at once has all the time the policy gives any try;
// an upstream silent through it is an i/o timeout and counts against the
// upstream (here the breaker opens on that one failure), unlike a try
// left short by waiting (TestSlotLateTryCutShort).
func TestDeadlineCutsAWholeTry(t *testing.T) {
	up := testupstream.Start(t)
	p := fastPolicy()
	p.Retry.Deadline = 500 * time.Millisecond
	p.Retry.AttemptTimeout = 10 * time.Second
	p.Breaker = strictBreaker()
	m := newMirror(t, up.URL, mirrorOpts{policy: p})
	up.PushImage(t, "library/silent:v1", randomImage(t, 1024, 1, types.DockerManifestSchema2))
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/library/silent/manifests/v1") {
			return false
		}
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		return true
	})
	resp, body := m.get("/v2/library/silent/manifests/v1")
	checkCrafted(t, resp, body, "unreachable: i/o timeout")
	resp, body = m.get("/v2/library/silent/manifests/v1")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Status, "circuit open after") {
		t.Fatalf("after a whole try timed out: %s %s, want the circuit open (the timeout counts)", resp.Status, body)
	}
}

// TestRateLimitReserve: when Docker Hub says few pulls are left, cached tags
// are served without asking again.
func TestRateLimitReserve(t *testing.T) {
	up, m, d := seeded(t, mirrorOpts{tagTTL: 0, reserve: 10})
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("RateLimit-Limit", "100;w=21600")
		w.Header().Set("RateLimit-Remaining", "5;w=21600")
		return false
	})
	if resp, _ := m.get("/v2/library/app/manifests/v1"); resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatal("first pull")
	}
	up.Reset()
	resp, _ := m.get("/v2/library/app/manifests/v1")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("second pull: %s", resp.Status)
	}
	if n := up.Count("", "/manifests/"); n != 0 {
		t.Errorf("with 5 pulls left (reserve 10) the tag was revalidated: %d requests", n)
	}
}

// TestHandshakeRetryAfter: a registry that rate-limits its very first
// request (the /v2/ ping) has its Retry-After obeyed and reported: with a
// Retry-After past the request's deadline the client is answered at once,
// and nothing more is sent until then.
func TestHandshakeRetryAfter(t *testing.T) {
	up, m, _ := seeded(t, mirrorOpts{})
	up.Play(http.MethodGet, "/v2/", testupstream.Status(429, "Retry-After", "5")).Forever()
	start := time.Now()
	resp, body := m.get("/v2/library/app/manifests/v1")
	checkCrafted(t, resp, body, "answered 429 Too Many Requests; retry after 5s")
	if resp.Header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After %q, want the upstream's 5", resp.Header.Get("Retry-After"))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("took %v although the Retry-After is past the 2 s deadline", took)
	}
	n := up.Count("", "/v2/")
	if resp, _ := m.get("/v2/library/other/manifests/v1"); resp.StatusCode != 503 || !strings.Contains(resp.Status, "429 Too Many Requests") {
		t.Errorf("another repository while rate limited: %s", resp.Status)
	}
	if up.Count("", "/v2/") != n {
		t.Error("a request reached the rate-limited upstream before its Retry-After")
	}
}

// settledCount waits until the upstream's count of requests for paths
// containing path has not moved for 100 ms, and returns it.
func settledCount(t *testing.T, up *testupstream.Upstream, path string) int {
	t.Helper()
	n := up.Count("", path)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		next := up.Count("", path)
		if next == n {
			return n
		}
		n = next
	}
	t.Fatalf("the upstream kept getting requests for %s", path)
	return n
}
