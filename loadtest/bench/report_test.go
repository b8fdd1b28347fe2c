package main

import (
	"math"
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
