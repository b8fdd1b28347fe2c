package main

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestBest: the floor takes the least CPU of its runs, per GB.
func TestBest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int64
		runs  []time.Duration
		least float64
	}{
		{"1 GB, the least of three", 1e9, []time.Duration{600 * time.Millisecond, 500 * time.Millisecond, 700 * time.Millisecond}, 500},
		{"half a GB: per GB is twice", 5e8, []time.Duration{300 * time.Millisecond, 250 * time.Millisecond, 260 * time.Millisecond}, 500},
		{"1 GiB", 1 << 30, []time.Duration{1073741824 * time.Nanosecond}, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := 0
			least, all, err := best(len(tc.runs), tc.size, func() (time.Duration, error) { i++; return tc.runs[i-1], nil })
			if err != nil {
				t.Fatal(err)
			}
			if d := least - tc.least; d > 1e-9 || d < -1e-9 || len(all) != len(tc.runs) {
				t.Errorf("best %v of %v, want %v", least, all, tc.least)
			}
		})
	}
	if _, _, err := best(3, 1e9, func() (time.Duration, error) { return 0, errors.New("x") }); err == nil {
		t.Error("a failed run must fail the floor")
	}
}

// TestMeasureFloor: each part of the floor is counted, each from its
// three runs, the total is their sum, and the page-cache file is gone.
func TestMeasureFloor(t *testing.T) {
	dir := t.TempDir()
	fl, err := measureFloor(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("floor per GB: sha256 %.0f ms + write %.0f ms + hop %.0f ms = %.0f ms; runs %v", fl.SHA256, fl.Write, fl.Hop, fl.Total, fl.Runs)
	for name, v := range map[string]float64{"sha256": fl.SHA256, "write": fl.Write, "hop": fl.Hop} {
		// 64 MiB of any of them takes well over a millisecond of CPU.
		if v <= 10 {
			t.Errorf("%s: %.1f ms per GB: not counted", name, v)
		}
	}
	if len(fl.Runs) != 3 {
		t.Errorf("runs: %v", fl.Runs)
	}
	if d := fl.Total - (fl.SHA256 + fl.Write + fl.Hop); d > 1e-9 || d < -1e-9 {
		t.Errorf("total %v is not the sum of its parts", fl.Total)
	}
	for key, runs := range fl.Runs {
		if len(runs) != floorRuns {
			t.Errorf("%s: %d runs, want %d", key, len(runs), floorRuns)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left in the work directory: %v", left)
	}
}
