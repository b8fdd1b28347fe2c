package main

import (
	"encoding/json"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHerdCountsShowTheWorstHerd: a duplicate upstream fetch in one herd
// of three must fail the "= distinct blobs" target, not hide behind the
// median of the other two; first-byte rows keep the median.
func TestHerdCountsShowTheWorstHerd(t *testing.T) {
	r := newResults(settings{Layers: 4, LayerSize: 64 << 20, Herd: 32, HerdBigLayerSize: 4 << 20})
	for _, herd := range []struct{ gets, ttfb float64 }{{5, 20}, {7, 60}, {5, 30}} {
		r.add("herd", "breakwater", "upstream_blob_gets", herd.gets)
		r.add("herd", "breakwater", "arrival_ttfb_p99_ms", herd.ttfb)
		r.add("herd", "breakwater", "distinct_blobs", 5)
	}
	for _, tr := range r.Scenarios["herd"] {
		for k, xs := range tr.Samples {
			tr.Values[k] = median(xs)
		}
	}
	rows := map[string]tableRow{}
	for _, row := range r.buildTable() {
		rows[row.Figure] = row
	}
	gets := rows["herd 32 clients, 4 × 64.0 MiB: upstream blob GETs (worst herd)"]
	if gets.Breakwater != 7 || gets.Met != "NO" {
		t.Errorf("upstream GETs row: %v, met %q; want 7 and NO", gets.Breakwater, gets.Met)
	}
	p99 := rows["herd 32 clients, 4 × 64.0 MiB: first byte p99, arrival"]
	if p99.Breakwater != 30 || p99.Range != "20–60" || p99.Met != "yes" {
		t.Errorf("first byte row: %v (%s), met %q; want the median 30 (20–60) and yes", p99.Breakwater, p99.Range, p99.Met)
	}
	if !math.IsNaN(p99.Direct) {
		t.Errorf("direct was not measured but shows %v", p99.Direct)
	}
}

// TestCPUTimeCountsWork: the CPU meter sees the harness's own work, as the
// kernel's getrusage counts it. Work is done until getrusage has counted
// 200 ms, so a loaded machine makes the test slower, never wrong.
func TestCPUTimeCountsWork(t *testing.T) {
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, err := cpuTime(0)
	if err != nil {
		t.Fatal(err)
	}
	start := rusage()
	x := 0.0
	for rusage()-start < 200*time.Millisecond {
		for i := range 10000 {
			x += math.Sqrt(float64(i))
		}
	}
	after, err := cpuTime(0)
	if err != nil {
		t.Fatal(err)
	}
	// /proc counts in ticks of 10 ms; the runtime's own threads add a
	// little on either side.
	if used := after - before; used < 150*time.Millisecond || x == 0 {
		t.Errorf("200 ms of CPU by getrusage counted as %v", used)
	}
}

// TestFleetTables: the fleet step's tables have a column per target and
// the ratio columns; counts show the worst herd, other figures the median;
// a figure no target measured is left out, one that some did shows "—"
// (and null in the JSON) for the others; a table of a step not run is not
// there at all.
func TestFleetTables(t *testing.T) {
	newRun := func() *results {
		return newResults(settings{Layers: 4, LayerSize: 64 << 20, HerdReps: 3, FleetReplicas: 3, FleetClients: 32})
	}
	finish := func(r *results) []sideTable {
		for _, sc := range r.Scenarios {
			for _, tr := range sc {
				for k, xs := range tr.Samples {
					tr.Values[k] = median(xs)
				}
			}
		}
		return r.fleetTables()
	}
	find := func(tables []sideTable, title, figure string) (sideTable, sideRow, bool) {
		for _, tb := range tables {
			if !strings.HasPrefix(tb.Title, title) {
				continue
			}
			for _, row := range tb.Rows {
				if row.Figure == figure {
					return tb, row, true
				}
			}
			return tb, sideRow{}, false
		}
		return sideTable{}, sideRow{}, false
	}
	for _, tc := range []struct {
		name   string
		fill   func(r *results)
		title  string
		figure string
		want   []float64 // NaN: "—"
		absent bool      // the row (or the table) must not be there
	}{
		{
			name: "upstream GETs: the worst herd, and fleet ÷ independent",
			fill: func(r *results) {
				for _, v := range []float64{5, 6, 5} {
					r.add("fleet", "fleet", "upstream_blob_gets", v)
				}
				for _, v := range []float64{15, 15, 15} {
					r.add("fleet", "independent", "upstream_blob_gets", v)
				}
				r.add("fleet", "one", "upstream_blob_gets", 5)
			},
			title: "Fleet (issue 12)", figure: "upstream blob GETs (worst herd)",
			want: []float64{5, math.NaN(), 15, 6, 0.4},
		},
		{
			name: "first byte: the median of the herds",
			fill: func(r *results) {
				for _, v := range []float64{30, 10, 20} {
					r.add("fleet", "fleet", "arrival_ttfb_p99_ms", v)
				}
				for _, v := range []float64{40, 40, 40} {
					r.add("fleet", "independent", "arrival_ttfb_p99_ms", v)
				}
			},
			title: "Fleet (issue 12)", figure: "first byte p99, arrival",
			want: []float64{math.NaN(), math.NaN(), 40, 20, 0.5},
		},
		{
			name:  "a figure no target measured",
			fill:  func(r *results) { r.add("fleet", "fleet", "wall_s", 3) },
			title: "Fleet (issue 12)", figure: "first byte p99, arrival", absent: true,
		},
		{
			name: "the peer stream's added latency",
			fill: func(r *results) {
				r.add("fleet_peer", "owner", "arrival_ttfb_p50_ms", 10)
				r.add("fleet_peer", "follower", "arrival_ttfb_p50_ms", 14)
				r.add("fleet_peer", "added", "arrival_ttfb_p50_ms", 4)
			},
			title: "Fleet: first byte on the replica", figure: "first byte p50, arrival",
			want: []float64{10, 14, 4},
		},
		{
			name: "warm pull: store ÷ filesystem",
			fill: func(r *results) {
				r.add("fleet_warm", "s3", "mbps", 300)
				r.add("fleet_warm", "fs", "mbps", 1200)
			},
			title: "Fleet: warm pull", figure: "pull",
			want: []float64{300, 1200, 0.25, math.NaN(), math.NaN()},
		},
		{
			name: "a ratio over zero is not measured",
			fill: func(r *results) {
				r.add("fleet_warm", "s3", "upstream_blob_gets", 0)
				r.add("fleet_warm", "fs", "upstream_blob_gets", 0)
			},
			title: "Fleet: warm pull", figure: "upstream blob GETs (worst pull)",
			want: []float64{0, 0, math.NaN(), math.NaN(), math.NaN()},
		},
		{
			name:  "no fleet step: no tables",
			fill:  func(r *results) { r.add("herd", "breakwater", "wall_s", 1) },
			title: "Fleet", figure: "wall time", absent: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun()
			tc.fill(r)
			tables := finish(r)
			tb, row, ok := find(tables, tc.title, tc.figure)
			if tc.absent {
				if ok {
					t.Fatalf("row %q is there: %v", tc.figure, row.Values)
				}
				return
			}
			if !ok {
				t.Fatalf("no row %q in %q (tables: %d)", tc.figure, tc.title, len(tables))
			}
			if len(row.Values) != len(tb.Columns) || len(row.Values) != len(tc.want) {
				t.Fatalf("%d values, %d columns, want %d", len(row.Values), len(tb.Columns), len(tc.want))
			}
			for i, w := range tc.want {
				g := float64(row.Values[i])
				if (math.IsNaN(w) != math.IsNaN(g)) || (!math.IsNaN(w) && math.Abs(g-w) > 1e-9) {
					t.Errorf("column %q: %v, want %v", tb.Columns[i], g, w)
				}
			}
			md := tb.markdown()
			if !strings.Contains(md, "| "+tc.figure+" |") || strings.Count(md, "\n|") != len(tb.Rows)+2 {
				t.Errorf("markdown:\n%s", md)
			}
			js, err := json.Marshal(row)
			if err != nil {
				t.Fatal(err)
			}
			if math.IsNaN(tc.want[len(tc.want)-1]) != strings.HasSuffix(string(js), "null]}") {
				t.Errorf("JSON %s: NaN must be null", js)
			}
		})
	}
}

// TestFloorRows: the cold pull's CPU floor shows in Breakwater's column
// only, the ratio row is the median of the pulls' ratios for each proxy
// and is judged against 1.15 × the floor; without the cold_warm step
// neither row is there.
func TestFloorRows(t *testing.T) {
	for _, tc := range []struct {
		name   string
		floor  *cpuFloor
		ratios []float64 // Breakwater's cold pulls
		met    string
	}{
		{"met", &cpuFloor{Total: 1000}, []float64{1.10, 1.20, 1.05}, "yes"},
		{"missed", &cpuFloor{Total: 1000}, []float64{1.20, 1.40, 1.16}, "NO"},
		{"not run", nil, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newResults(settings{Layers: 4, LayerSize: 64 << 20})
			r.CPUFloor = tc.floor
			for _, v := range tc.ratios {
				r.add("cold", "breakwater", "server_cpu_floor_ratio", v)
				r.add("cold", "distribution", "server_cpu_floor_ratio", 2*v)
			}
			for _, tr := range r.Scenarios["cold"] {
				for k, xs := range tr.Samples {
					tr.Values[k] = median(xs)
				}
			}
			rows := map[string]tableRow{}
			for _, row := range r.buildTable() {
				rows[row.Figure] = row
			}
			floor, okFloor := rows["cold pull: CPU floor per GB, sha256 + page-cache write + loopback hop (this machine, this run)"]
			ratio, okRatio := rows["cold pull: server CPU per GB ÷ floor"]
			if tc.floor == nil {
				if okFloor || okRatio {
					t.Fatalf("rows of a step not run: %+v %+v", floor, ratio)
				}
				return
			}
			if !okFloor || floor.Breakwater != tc.floor.Total || !math.IsNaN(floor.Distribution) || !math.IsNaN(floor.Direct) {
				t.Errorf("floor row: %+v", floor)
			}
			want := median(tc.ratios)
			if !okRatio || ratio.Breakwater != want || ratio.Distribution != 2*want || ratio.Met != tc.met {
				t.Errorf("ratio row: %+v, want %v (distribution %v), met %q", ratio, want, 2*want, tc.met)
			}
		})
	}
}

// TestWANRows: the WAN rows head the table; the 1-client cold pull meets
// its target at 0.97 × direct and not below; the herd's upstream GETs
// show the worst herd.
func TestWANRows(t *testing.T) {
	for _, tc := range []struct {
		name       string
		bw, direct []float64
		met        string
	}{
		{"at 0.97 × direct", []float64{97, 97, 97}, []float64{100, 100, 100}, "yes"},
		{"above direct", []float64{104, 102, 103}, []float64{103, 101, 104}, "yes"},
		{"below 0.97 × direct", []float64{96, 99, 90}, []float64{100, 100, 100}, "NO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newResults(settings{Layers: 4, LayerSize: 64 << 20, Herd: 32, WANRate: 100 << 20, WANLatency: 20 * time.Millisecond})
			for i := range tc.bw {
				r.add("wan_cold", "breakwater", "mbps", tc.bw[i])
				r.add("wan_cold", "direct", "mbps", tc.direct[i])
			}
			for _, gets := range []float64{5, 6, 5} {
				r.add("wan_herd", "breakwater", "upstream_blob_gets", gets)
				r.add("wan_herd", "breakwater", "distinct_blobs", 5)
			}
			for _, sc := range r.Scenarios {
				for _, tr := range sc {
					for k, xs := range tr.Samples {
						tr.Values[k] = median(xs)
					}
				}
			}
			table := r.buildTable()
			const prefix = "WAN upstream (100 MiB/s per connection, +20ms per request): "
			if len(table) < 2 || table[0].Figure != prefix+"cold pull, 1 client, 4 × 64.0 MiB" {
				t.Fatalf("first row: %+v", table[0])
			}
			if row := table[0]; row.Met != tc.met || row.Breakwater != median(tc.bw) || row.Direct != median(tc.direct) {
				t.Errorf("cold row: %+v, want met %q", row, tc.met)
			}
			var gets *tableRow
			for i := range table {
				if table[i].Figure == prefix+"herd 32 clients, 4 × 64.0 MiB: upstream blob GETs (worst herd)" {
					gets = &table[i]
				}
			}
			if gets == nil || gets.Breakwater != 6 || gets.Met != "NO" {
				t.Errorf("herd GETs row: %+v, want the worst herd's 6 and NO", gets)
			}
		})
	}
}
