package proxy

import (
	"log/slog"
	"net/http"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	p := RetryPolicy{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, MaxRetryAfter: 5 * time.Second}
	cases := []struct {
		retry   int
		ceiling time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{50, time.Second},
	}
	for _, tc := range cases {
		if got := p.backoffCeiling(tc.retry); got != tc.ceiling {
			t.Errorf("ceiling(%d) = %v, want %v", tc.retry, got, tc.ceiling)
		}
		// Full jitter spans [0, ceiling].
		if got := p.wait(tc.retry, 0, func() float64 { return 0 }); got != 0 {
			t.Errorf("wait(%d) with jitter 0 = %v", tc.retry, got)
		}
		if got := p.wait(tc.retry, 0, func() float64 { return 0.999999 }); got > tc.ceiling || got < tc.ceiling*99/100 {
			t.Errorf("wait(%d) with jitter ~1 = %v, want just under %v", tc.retry, got, tc.ceiling)
		}
		for i := 0; i < 100; i++ {
			if got := p.wait(tc.retry, 0, jitter); got < 0 || got > tc.ceiling {
				t.Fatalf("wait(%d) = %v outside [0, %v]", tc.retry, got, tc.ceiling)
			}
		}
	}
	if got := p.wait(1, 2*time.Second, jitter); got != 2*time.Second {
		t.Errorf("Retry-After 2s: waited %v", got)
	}
	if got := p.wait(1, time.Minute, jitter); got != 5*time.Second {
		t.Errorf("Retry-After 1m capped at 5s: waited %v", got)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	future := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	cases := []struct {
		v        string
		min, max time.Duration
	}{
		{"", 0, 0},
		{"7", 7 * time.Second, 7 * time.Second},
		{" 3 ", 3 * time.Second, 3 * time.Second},
		{"-1", 0, 0},
		{"soon", 0, 0},
		{future, 28 * time.Second, 30 * time.Second},
		{past, 0, 0},
	}
	for _, tc := range cases {
		got := retryAfter(http.Header{"Retry-After": {tc.v}})
		if got < tc.min || got > tc.max {
			t.Errorf("Retry-After %q = %v, want in [%v, %v]", tc.v, got, tc.min, tc.max)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	cases := []struct {
		v            string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 5-9/*", 5, -1, true},
		{"bytes */200", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"bytes 1-2", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range cases {
		start, total, ok := parseContentRange(tc.v)
		if ok != tc.ok || (ok && (start != tc.start || total != tc.total)) {
			t.Errorf("%q = %d, %d, %v", tc.v, start, total, ok)
		}
	}
}

func TestBreakerStates(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBreaker("docker.io", BreakerPolicy{Failures: 2, Cooldown: 10 * time.Second}, slog.New(slog.DiscardHandler), func() time.Time { return now })
	step := func(want breakerState) {
		t.Helper()
		if got, _ := b.snapshot(); got != want {
			t.Fatalf("state %s, want %s", got, want)
		}
	}
	mustAllow := func(want bool) {
		t.Helper()
		if ok, _ := b.allow(); ok != want {
			t.Fatalf("allow = %v, want %v", ok, want)
		}
	}
	mustAllow(true)
	b.record(false, "503")
	step(breakerClosed)
	mustAllow(true)
	b.record(true, "") // a success resets the count
	mustAllow(true)
	b.record(false, "503")
	mustAllow(true)
	b.record(false, "503")
	step(breakerOpen)
	if ok, wait := b.allow(); ok || wait != 10*time.Second {
		t.Fatalf("open: allow %v wait %v", ok, wait)
	}
	now = now.Add(10 * time.Second)
	mustAllow(true) // the probe
	step(breakerHalfOpen)
	mustAllow(false) // one probe at a time
	b.record(false, "refused")
	step(breakerOpen)
	now = now.Add(10 * time.Second)
	mustAllow(true)
	b.release() // the probe's client went away
	mustAllow(true)
	b.record(true, "")
	step(breakerClosed)
	if _, last := b.snapshot(); last != "refused" {
		t.Errorf("last error %q", last)
	}
}
