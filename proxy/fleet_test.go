package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testredis"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/upstream"
)

// fleetImage pushes a cold image of layers layers to the upstream as
// library/herd:v1 and returns its blobs' digests, config included.
func fleetImage(t *testing.T, up *testupstream.Upstream, layers int64) []string {
	t.Helper()
	img := randomImage(t, 512<<10, layers, types.OCIManifestSchema1)
	up.PushImage(t, "library/herd:v1", img)
	return blobsOf(t, img)
}

// blobsOf is the digests of img's layers and config.
func blobsOf(t *testing.T, img v1.Image) []string {
	t.Helper()
	var blobs []string
	for _, l := range layersOf(t, img) {
		blobs = append(blobs, digestOf(t, l))
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return append(blobs, cfg.String())
}

// pullHerd pulls the image's manifest by tag and every blob through m,
// checking each digest; it returns the first failure.
func pullHerd(m *mirror, blobs []string) error {
	resp, err := m.client.Get(m.srv.URL + "/v2/library/herd/manifests/v1")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("manifest: %s", resp.Status)
	}
	for _, d := range blobs {
		resp, err := m.client.Get(m.srv.URL + "/v2/library/herd/blobs/" + d)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		if resp.StatusCode != http.StatusOK || sha256Hex(body) != d {
			return fmt.Errorf("blob %s: %s, content %s", d, resp.Status, sha256Hex(body))
		}
	}
	return nil
}

// slowUpstream makes the upstream wait before it answers a GET, so that a
// herd's fetches and tag resolutions overlap on every replica.
func slowUpstream(up *testupstream.Upstream, wait time.Duration) {
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/library/") {
			time.Sleep(wait)
		}
		return false
	})
}

// manifestResolutions counts the upstream's answers to the tag.
func manifestResolutions(up *testupstream.Upstream) int {
	return len(up.Requests("", "/library/herd/manifests/v1"))
}

func blobGETs(up *testupstream.Upstream, dgst string) int {
	return len(up.Requests(http.MethodGet, "/blobs/"+dgst))
}

// TestFleetOneFetchPerBlob: 30 clients spread over 3 replicas coordinated
// through a real Redis pull one cold image: the upstream sees one GET per
// blob and one resolution of the tag for the whole fleet, and every digest
// is right. A fourth replica that comes later streams every blob from the
// replicas that have them.
func TestFleetOneFetchPerBlob(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	blobs := fleetImage(t, up, 4)
	slowUpstream(up, 300*time.Millisecond)
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute}
	replicas := []*mirror{newMirror(t, up.URL, opts), newMirror(t, up.URL, opts), newMirror(t, up.URL, opts)}

	startHerd(t, replicas, 30, blobs)()
	for _, d := range blobs {
		if n := blobGETs(up, d); n != 1 {
			t.Errorf("blob %s: %d upstream GETs for the fleet, want 1", d, n)
		}
	}
	if n := manifestResolutions(up); n != 1 {
		t.Errorf("%d upstream requests for the tag from the fleet, want 1", n)
	}

	late := newMirror(t, up.URL, opts)
	if err := pullHerd(late, blobs); err != nil {
		t.Fatalf("a replica that came later: %v", err)
	}
	for _, d := range blobs {
		if n := blobGETs(up, d); n != 1 {
			t.Errorf("blob %s: %d upstream GETs after a late replica pulled, want still 1", d, n)
		}
	}
}

// TestFleetOwnerGone: the replica that owns a fetch goes away in the
// middle of the blob; the clients of the other replica still get verified
// bytes, which that replica takes over from the upstream.
func TestFleetOwnerGone(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute}
	owner := newMirror(t, up.URL, opts)
	other := newMirror(t, up.URL, opts)
	content, dgst := pushLinkedLayer(t, up, owner, "library/herd", 1<<20)
	other.get("/v2/library/herd/manifests/v1")
	release := make(chan struct{})
	// The owner's GET gets half the body, then waits; any later GET (the
	// other replica's, once the owner is gone) gets it whole. Holding
	// those too made the test's own close of the owner — which waits for
	// the held GET's handler — look like an upstream stalling for the
	// other replica, on a loaded machine.
	var gets atomic.Int32
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) || gets.Add(1) > 1 {
			return false
		}
		w.Header().Set("Docker-Content-Digest", dgst)
		testupstream.HalfThenWait(w, r, content, release)
		return true
	})

	ownerDone := make(chan struct{})
	go func() {
		defer close(ownerDone)
		resp, err := owner.client.Get(owner.srv.URL + "/v2/library/herd/blobs/" + dgst)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	// The owner's fetch is under way (it holds half the blob) before the
	// other replica's client asks.
	deadline := time.Now().Add(10 * time.Second)
	for blobGETs(up, dgst) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the owner never asked the upstream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	result := make(chan error, 1)
	go func() {
		resp, err := other.client.Get(other.srv.URL + "/v2/library/herd/blobs/" + dgst)
		if err != nil {
			result <- err
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst) {
			err = fmt.Errorf("%s, content %s", resp.Status, sha256Hex(body))
		}
		result <- err
	}()
	time.Sleep(300 * time.Millisecond) // the other replica follows the owner
	owner.close()                      // and the owner goes away
	close(release)
	<-ownerDone
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("the other replica's client: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the other replica's client got no answer within 30 s")
	}
}

// TestFleetRedisDown: with Redis gone in the middle of a run, pulls keep
// working: each replica fetches alone.
func TestFleetRedisDown(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	blobs := fleetImage(t, up, 2)
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute}
	a, b := newMirror(t, up.URL, opts), newMirror(t, up.URL, opts)
	rds.Kill()
	for i, m := range []*mirror{a, b} {
		if err := pullHerd(m, blobs); err != nil {
			t.Fatalf("replica %d with Redis down: %v", i, err)
		}
	}
	// Degraded, and saying so: ready, the status page names the cause.
	resp, body := a.get("/readyz")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Redis failing, fetching alone") {
		t.Errorf("/readyz with Redis down: %s %q", resp.Status, body)
	}
	var st proxy.Status
	if resp, body := a.get("/_breakwater/v1/status"); resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil ||
		st.Fleet == nil || st.Fleet.Redis != "failing" || !strings.Contains(st.Fleet.RedisError, "connection refused") {
		t.Errorf("status with Redis down: %s %s", resp.Status, body)
	}
	// Back by itself once Redis is.
	rds.Restart()
	if err := pullHerd(a, blobs); err != nil {
		t.Fatal(err)
	}
	up.Reset()
	c := newMirror(t, up.URL, opts)
	if err := pullHerd(c, blobs); err != nil {
		t.Fatal(err)
	}
	if resp, body := c.get("/_breakwater/v1/status"); json.Unmarshal(body, &st) != nil || st.Fleet == nil || st.Fleet.Redis != "ok" {
		t.Errorf("status after Redis came back: %s %s", resp.Status, body)
	}
	if resp, body := c.get("/readyz"); resp.StatusCode != http.StatusOK || string(body) != "ready\n" {
		t.Errorf("/readyz after Redis came back: %s %q", resp.Status, body)
	}
}

// TestFleetRedisKilledMidRun: Redis killed while a herd on two replicas is
// under way — owners fetching, followers streaming from them, leases being
// renewed — costs no pull: every client gets verified bytes, and the
// fetches that start after it happen alone.
func TestFleetRedisKilledMidRun(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	blobs := fleetImage(t, up, 4)
	slowUpstream(up, 400*time.Millisecond)
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute}
	replicas := []*mirror{newMirror(t, up.URL, opts), newMirror(t, up.URL, opts)}
	wait := startHerd(t, replicas, 12, blobs)
	// Mid-run: the tag resolved, the first blobs' fetches under way.
	time.Sleep(900 * time.Millisecond)
	if n := len(up.Requests(http.MethodGet, "/blobs/")); n == 0 {
		t.Fatal("no blob fetch under way when Redis was to be killed")
	}
	rds.Kill()
	wait()
}

// startHerd starts clients pulling the image through the replicas in turn
// and returns the wait for them, which fails the test with each client's
// error.
func startHerd(t *testing.T, replicas []*mirror, clients int, blobs []string) (wait func()) {
	t.Helper()
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pullHerd(replicas[i%len(replicas)], blobs); err != nil {
				errs <- fmt.Errorf("client %d (replica %d): %w", i, i%len(replicas), err)
			}
		}()
	}
	return func() {
		t.Helper()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

// TestPeerEndpointNeedsTheSecret: the peer endpoint answers only a request
// with the fleet's secret.
func TestPeerEndpointNeedsTheSecret(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{redis: rds.Addr, tagTTL: time.Minute})
	_, dgst := pushLinkedLayer(t, up, m, "library/herd", 1024)
	if resp, _ := m.get("/v2/library/herd/blobs/" + dgst); resp.StatusCode != http.StatusOK {
		t.Fatalf("pull: %s", resp.Status)
	}
	path := "/_breakwater/v1/peer/blobs/docker.io/" + dgst
	for _, auth := range []string{"", "Bearer wrong", "Basic " + testPeerSecret, "Bearer " + testPeerSecret + "x"} {
		resp, body := m.do(http.MethodGet, path, http.Header{"Authorization": {auth}})
		if resp.StatusCode != http.StatusForbidden || errorCode(body) != "DENIED" {
			t.Errorf("Authorization %q: %s %s, want 403 DENIED", auth, resp.Status, body)
		}
	}
	resp, body := m.do(http.MethodGet, path, http.Header{"Authorization": {"Bearer " + testPeerSecret}})
	if resp.StatusCode != http.StatusOK || sha256Hex(body) != dgst {
		t.Errorf("with the secret: %s, content %s", resp.Status, sha256Hex(body))
	}
}

// TestFleetRateLimitShared: a 429 one replica meets holds the whole fleet:
// another replica, asked for something else, sends the upstream nothing
// and answers with the same cause, the seconds left in its Retry-After.
func TestFleetRateLimitShared(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute}
	a, b := newMirror(t, up.URL, opts), newMirror(t, up.URL, opts)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Retry-After", "30")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limited"}]}`, http.StatusTooManyRequests)
			return true
		}
		return false
	})
	const want = "429 Too Many Requests"
	if resp, _ := a.get("/v2/library/one/manifests/v1"); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Status, want) {
		t.Fatalf("replica a: %s, want 503 naming %s", resp.Status, want)
	}
	// The hold reaches b through Redis's pub/sub, soon after.
	waitUpstreamStatus(t, b, "held with a", func(u proxy.UpstreamStatus) bool { return u.RateLimited })
	up.Reset()
	resp, _ := b.get("/v2/library/two/manifests/v1")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Status, want) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("replica b: %s (Retry-After %q), want 503 naming %s", resp.Status, resp.Header.Get("Retry-After"), want)
	}
	if n := len(up.Requests("", "/v2/")); n != 0 {
		t.Errorf("replica b sent the rate-limited upstream %d requests", n)
	}
	// A replica that starts during the hold holds too.
	c := newMirror(t, up.URL, opts)
	if resp, _ := c.get("/v2/library/three/manifests/v1"); !strings.Contains(resp.Status, want) {
		t.Errorf("a replica started during the hold: %s", resp.Status)
	}
	if n := len(up.Requests("", "/manifests/")); n != 0 {
		t.Errorf("replicas held by the fleet sent %d manifest requests", n)
	}
}

// TestFleetCircuitShared: the circuit one replica opens on a down upstream
// opens every replica's, so that the fleet meets the upstream with one
// probe, not one per replica, and a held replica refuses with the cause
// the first one found.
func TestFleetCircuitShared(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	p := fastPolicy()
	p.Retry.Attempts = 1
	p.Breaker = upstream.Breaker{Window: time.Minute, MinRequests: 2, FailurePercent: 50, OpenMin: 10 * time.Second, OpenMax: 20 * time.Second}
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute, policy: p}
	a, b := newMirror(t, up.URL, opts), newMirror(t, up.URL, opts)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	for i := range 2 {
		if resp, _ := a.get(fmt.Sprintf("/v2/library/down%d/manifests/v1", i)); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("replica a, request %d: %s, want 503", i, resp.Status)
		}
	}
	waitUpstreamStatus(t, b, "opened its circuit with a's", func(u proxy.UpstreamStatus) bool { return u.Breaker == "open" })
	// Up again, but b sends nothing before the probe's time, and says why.
	up.Reset()
	resp, body := b.get("/v2/library/other/manifests/v1")
	const cause = "circuit open after 503 Service Unavailable"
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), cause) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("replica b: %s %s (Retry-After %q), want 503 naming %q", resp.Status, body, resp.Header.Get("Retry-After"), cause)
	}
	if n := len(up.Requests("", "/v2/")); n != 0 {
		t.Errorf("replica b sent the upstream %d requests while the fleet's circuit was open", n)
	}
}

// waitUpstreamStatus waits until m's status page says what ok looks for of
// its one upstream; a fleet's news travels through Redis's pub/sub.
func waitUpstreamStatus(t *testing.T, m *mirror, what string, ok func(proxy.UpstreamStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st proxy.Status
		_, body := m.get("/_breakwater/v1/status")
		if json.Unmarshal(body, &st) == nil && len(st.Upstreams) == 1 && ok(st.Upstreams[0]) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica never %s: %s", what, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFleetRateLimitCountShared: the pulls left that the upstream tells one
// replica (Docker Hub's ratelimit-remaining) every replica takes as its
// own, and a replica that starts later reads it: rate_limit_reserve spares
// the limit fleet-wide as soon as any replica sees it low.
func TestFleetRateLimitCountShared(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	pushImages(t, up, "library/counted")
	opts := mirrorOpts{redis: rds.Addr, tagTTL: time.Minute}
	a, b := newMirror(t, up.URL, opts), newMirror(t, up.URL, opts)
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Ratelimit-Limit", "100;w=21600")
		w.Header().Set("Ratelimit-Remaining", "7;w=21600")
		return false
	})
	if resp, _ := a.get("/v2/library/counted/manifests/v1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("replica a: %s", resp.Status)
	}
	waitUpstreamStatus(t, b, "heard a's count", func(u proxy.UpstreamStatus) bool { return u.RateLimitRemaining == 7 })
	c := newMirror(t, up.URL, opts)
	waitUpstreamStatus(t, c, "read the count at start", func(u proxy.UpstreamStatus) bool { return u.RateLimitRemaining == 7 })
}
