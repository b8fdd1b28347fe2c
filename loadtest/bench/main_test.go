package main

import (
	"strings"
	"testing"
)

// TestParseEnv: -breakwater-env takes KEY=VAL pairs, commas between, and
// refuses what is not one.
func TestParseEnv(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{"GOMAXPROCS=2", "GOMAXPROCS=2", false},
		{"GOMAXPROCS=1, GODEBUG=gctrace=1", "GOMAXPROCS=1|GODEBUG=gctrace=1", false},
		{"GOMAXPROCS", "", true},
		{"=1", "", true},
	} {
		got, err := parseEnv(tc.in)
		if (err != nil) != tc.wantErr || strings.Join(got, "|") != tc.want {
			t.Errorf("parseEnv(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
