package main

import (
	"math"
	"testing"
	"time"
)

func ms2d(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// TestSplitByOwner: a blob GET counts for the owner's side when the
// replica the client asked is the one Redis names for that blob, for the
// followers' when it is another, and as unknown when Redis named none or
// the client's replica is out of range.
func TestSplitByOwner(t *testing.T) {
	bases := []string{"http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"}
	pull := func(replica int, digests ...string) pullResult {
		p := pullResult{Replica: replica}
		for _, d := range digests {
			p.Blobs = append(p.Blobs, blobTiming{Digest: d})
		}
		return p
	}
	for _, tc := range []struct {
		name                     string
		pulls                    []pullResult
		owners                   map[string]string
		owner, follower, unknown int
	}{
		{"one owner for every blob", []pullResult{pull(0, "a", "b"), pull(1, "a", "b"), pull(2, "a", "b")},
			map[string]string{"a": bases[0], "b": bases[0]}, 2, 4, 0},
		{"each blob its own owner", []pullResult{pull(0, "a", "b"), pull(1, "a", "b"), pull(2, "a", "b")},
			map[string]string{"a": bases[0], "b": bases[1]}, 2, 4, 0},
		{"an owner Redis did not name", []pullResult{pull(0, "a", "b"), pull(1, "a", "b")},
			map[string]string{"a": bases[1]}, 1, 1, 2},
		{"an owner outside the target", []pullResult{pull(0, "a"), pull(1, "a")},
			map[string]string{"a": "http://127.0.0.1:9"}, 0, 2, 0},
		{"only the owner's clients", []pullResult{pull(2, "a")},
			map[string]string{"a": bases[2]}, 1, 0, 0},
		{"a replica index out of range", []pullResult{pull(3, "a", "b"), pull(-1, "a")},
			map[string]string{"a": bases[0]}, 0, 0, 3},
		{"no pulls", nil, map[string]string{"a": bases[0]}, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := splitByOwner(tc.pulls, bases, tc.owners)
			if len(s.owner) != tc.owner || len(s.follower) != tc.follower || s.unknown != tc.unknown {
				t.Errorf("owner %d, follower %d, unknown %d; want %d, %d, %d",
					len(s.owner), len(s.follower), s.unknown, tc.owner, tc.follower, tc.unknown)
			}
		})
	}
}

// TestPeerFigures: each side's medians and p99s, and the peer stream's
// added latency as the followers' figure less the owner's, only when both
// sides have GETs.
func TestPeerFigures(t *testing.T) {
	timings := func(read, arrival []float64) []blobTiming {
		var out []blobTiming
		for i := range read {
			out = append(out, blobTiming{TTFB: ms2d(read[i]), ArrivalTTFB: ms2d(arrival[i])})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		split peerSplit
		want  map[string]float64 // missing keys must be absent
	}{
		{
			name: "both sides",
			split: peerSplit{
				owner:    timings([]float64{10, 20, 30}, []float64{1, 2, 3}),
				follower: timings([]float64{40, 50, 60}, []float64{5, 7, 9}),
				unknown:  2,
			},
			want: map[string]float64{
				"owner:gets": 3, "owner:unknown_owner_gets": 2,
				"owner:ttfb_p50_ms": 20, "owner:ttfb_p99_ms": 30, "owner:arrival_ttfb_p50_ms": 2, "owner:arrival_ttfb_p99_ms": 3,
				"follower:gets": 3, "follower:ttfb_p50_ms": 50, "follower:ttfb_p99_ms": 60,
				"follower:arrival_ttfb_p50_ms": 7, "follower:arrival_ttfb_p99_ms": 9,
				"added:ttfb_p50_ms": 30, "added:ttfb_p99_ms": 30, "added:arrival_ttfb_p50_ms": 5, "added:arrival_ttfb_p99_ms": 6,
			},
		},
		{
			name:  "no followers: nothing added",
			split: peerSplit{owner: timings([]float64{10}, []float64{1})},
			want: map[string]float64{
				"owner:gets": 1, "owner:unknown_owner_gets": 0, "owner:ttfb_p50_ms": 10, "owner:ttfb_p99_ms": 10,
				"owner:arrival_ttfb_p50_ms": 1, "owner:arrival_ttfb_p99_ms": 1, "follower:gets": 0,
			},
		},
		{
			name:  "a negative difference stays negative",
			split: peerSplit{owner: timings([]float64{50}, []float64{5}), follower: timings([]float64{20}, []float64{2})},
			want: map[string]float64{
				"owner:gets": 1, "owner:unknown_owner_gets": 0, "owner:ttfb_p50_ms": 50, "owner:ttfb_p99_ms": 50,
				"owner:arrival_ttfb_p50_ms": 5, "owner:arrival_ttfb_p99_ms": 5,
				"follower:gets": 1, "follower:ttfb_p50_ms": 20, "follower:ttfb_p99_ms": 20,
				"follower:arrival_ttfb_p50_ms": 2, "follower:arrival_ttfb_p99_ms": 2,
				"added:ttfb_p50_ms": -30, "added:ttfb_p99_ms": -30, "added:arrival_ttfb_p50_ms": -3, "added:arrival_ttfb_p99_ms": -3,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.split.figures()
			for k, v := range tc.want {
				if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-9 {
					t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
				}
			}
			for k, v := range got {
				if _, ok := tc.want[k]; !ok {
					t.Errorf("unexpected %s = %v", k, v)
				}
			}
			if v := tc.split.value("added", "nothing"); !math.IsNaN(v) {
				t.Errorf("a figure not measured is %v, want NaN", v)
			}
		})
	}
}

func TestLeaseHolder(t *testing.T) {
	for in, want := range map[string]string{
		"TOKEN http://127.0.0.1:5000":  "http://127.0.0.1:5000",
		"TOKEN http://127.0.0.1:5000/": "http://127.0.0.1:5000",
		"TOKEN  http://10.0.0.5:5000 ": "http://10.0.0.5:5000",
		"no-space":                     "",
		"":                             "",
	} {
		if got := leaseHolder(in); got != want {
			t.Errorf("leaseHolder(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMetricSum: every sample of a series is added up, across labels and
// replicas; comments, other series with the same prefix and unparsable
// values are left out; with filters by label.
func TestMetricSum(t *testing.T) {
	text := `# HELP breakwater_fleet_followed_total Blob fetches streamed from another replica.
# TYPE breakwater_fleet_followed_total counter
breakwater_fleet_followed_total{otel_scope_name="breakwater"} 4
breakwater_fleet_followed_total{otel_scope_name="breakwater",what="tag"} 2
breakwater_fleet_followed_totalish{otel_scope_name="breakwater"} 100
breakwater_shared_uploads_total 5
breakwater_shared_uploads_total{} NaNx
breakwater_fleet_peer_fetched_bytes_total{otel_scope_name="breakwater",label="a}b"} 1.6777216e+07

breakwater_fleet_followed_total{otel_scope_name="breakwater"} 3
`
	for _, tc := range []struct {
		name, with string
		want       float64
	}{
		{"breakwater_fleet_followed_total", "", 9},
		{"breakwater_fleet_followed_total", tagLabel, 2},
		{"breakwater_shared_uploads_total", "", 5},
		{"breakwater_shared_uploads_total", tagLabel, 0},
		{"breakwater_fleet_peer_fetched_bytes_total", "", 16777216},
		{"breakwater_fleet_alone_total", "", 0},
	} {
		if got := metricSum(text, tc.name, tc.with); got != tc.want {
			t.Errorf("metricSum(%s, %q) = %v, want %v", tc.name, tc.with, got, tc.want)
		}
	}
}
