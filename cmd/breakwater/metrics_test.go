package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// metricValue finds one sample in a Prometheus text exposition: the metric
// name and label pairs that must all be present.
func metricValue(t *testing.T, exposition, name string, labels ...string) float64 {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(line, labels[i]+`="`+labels[i+1]+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return v
	}
	t.Errorf("no sample %s %v", name, labels)
	return -1
}

// TestMetricsAndStatus runs a scripted sequence against the serve loop and
// checks /metrics by name and value, and the status page.
func TestMetricsAndStatus(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(100_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/metered:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	size, _ := layers[0].Size()

	base := startServe(t, up.URL, false)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The script: manifest miss then hit, blob miss then hit twice, one
	// missing tag.
	get("/v2/library/metered/manifests/v1")
	get("/v2/library/metered/manifests/v1")
	for i := 0; i < 3; i++ {
		if code, _ := get("/v2/library/metered/blobs/" + ld.String()); code != 200 {
			t.Fatalf("blob: %d", code)
		}
		// A client has the verified blob before the fetch has made it
		// durable; until then a new request joins the fetch (coalesced)
		// rather than hitting the cache. Let it finish.
		waitForIdle(t, get)
	}
	if code, _ := get("/v2/library/metered/manifests/nope"); code != 404 {
		t.Fatalf("missing tag: %d", code)
	}

	code, m := get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"breakwater_requests_total", []string{"route", "manifests", "cache", "miss", "status", "200"}, 1},
		{"breakwater_requests_total", []string{"route", "manifests", "cache", "hit", "status", "200"}, 1},
		{"breakwater_requests_total", []string{"route", "blobs", "cache", "miss", "status", "200"}, 1},
		{"breakwater_requests_total", []string{"route", "blobs", "cache", "hit", "status", "200"}, 2},
		{"breakwater_requests_total", []string{"route", "manifests", "status", "404"}, 1},
		{"breakwater_served_bytes_total", []string{"route", "blobs"}, float64(3 * size)},
		{"breakwater_fetched_bytes_total", []string{"upstream", "docker.io"}, float64(size)},
		{"breakwater_upstream_requests_total", []string{"upstream", "docker.io", "status", "404"}, 1},
		{"breakwater_upstream_breaker_state", []string{"upstream", "docker.io"}, 0},
		{"breakwater_upstream_ratelimit_wait_seconds", []string{"upstream", "docker.io"}, 0},
		{"breakwater_fetches_inflight", nil, 0},
		{"breakwater_cache_evictions_total", nil, 0},
		{"breakwater_cache_disk_full", nil, 0},
		{"breakwater_cache_unwritable", nil, 0},
		{"breakwater_cache_quarantined_total", nil, 0},
		{"breakwater_cache_unverified", nil, 0},
		{"breakwater_build_info", []string{"version", buildVersion(), "goversion", runtime.Version()}, 1},
	}
	for _, c := range checks {
		if got := metricValue(t, m, c.name, c.labels...); got != c.want {
			t.Errorf("%s %v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := metricValue(t, m, "breakwater_cache_size_bytes"); got < float64(size) {
		t.Errorf("cache size %v, want at least the layer's %d", got, size)
	}
	// The manifest hit was answered from memory: its tag record, manifest
	// record and bytes.
	if got := metricValue(t, m, "breakwater_cache_memory_hits_total"); got < 3 {
		t.Errorf("memory hits %v, want at least the manifest hit's 3 lookups", got)
	}
	if got := metricValue(t, m, "breakwater_cache_memory_bytes"); got <= 0 {
		t.Errorf("memory bytes %v, want the records and manifest held", got)
	}
	if got := metricValue(t, m, "breakwater_cache_entries"); got != 2 {
		t.Errorf("cache entries %v, want 2: the manifest and the layer", got)
	}
	if !regexp.MustCompile(`breakwater_upstream_request_duration_seconds_count\{[^}]*upstream="docker.io"`).MatchString(m) {
		t.Error("no upstream latency histogram")
	}

	code, body := get("/_breakwater/v1/status")
	var st struct {
		Cache struct {
			HitRatio     float64 `json:"hitRatio"`
			PullRequests int64   `json:"pullRequests"`
			MemoryHits   int64   `json:"memoryHits"`
			MemoryBytes  int64   `json:"memoryBytes"`
		} `json:"cache"`
		Upstreams []struct {
			Name, Breaker string
		} `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("status: %d %v %s", code, err, body)
	}
	// 6 pull requests, 3 from cache.
	if st.Cache.PullRequests != 6 || st.Cache.HitRatio != 0.5 || st.Cache.MemoryHits < 3 || st.Cache.MemoryBytes <= 0 {
		t.Errorf("status cache %+v", st.Cache)
	}
	if len(st.Upstreams) != 4 || st.Upstreams[0].Breaker != "closed" {
		t.Errorf("status upstreams %+v", st.Upstreams)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/_breakwater/v1/status", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"<h1>Breakwater", "hit ratio", "50.0 %", "docker.io", "closed", "answered from memory"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}

// waitForIdle waits until no fetch is under way, as the status page says.
func waitForIdle(t *testing.T, get func(string) (int, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, body := get("/_breakwater/v1/status")
		var st struct {
			Cache struct {
				Inflight int `json:"inflightFetches"`
			} `json:"cache"`
		}
		if json.Unmarshal([]byte(body), &st) == nil && st.Cache.Inflight == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("fetches still under way after 10s")
}

// TestStampedVersion: the version and revision a build stamps are what
// `breakwater version` prints and what breakwater_build_info says.
func TestStampedVersion(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "version").CombinedOutput()
	want := fmt.Sprintf("breakwater %s (revision %s, %s)\n", testVersion, testRevision, runtime.Version())
	if err != nil || string(out) != want {
		t.Fatalf("breakwater version: %v %q, want %q", err, out, want)
	}
	up := testupstream.Start(t)
	_, addr := startBinary(t, bin, t.TempDir(), up.URL)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := metricValue(t, string(body), "breakwater_build_info", "version", testVersion, "revision", testRevision, "goversion", runtime.Version()); got != 1 {
		t.Errorf("breakwater_build_info = %v, want 1", got)
	}
}
