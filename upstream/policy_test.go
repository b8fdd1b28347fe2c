package upstream

import (
	"net/http"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	r := Retry{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, MaxRetryAfter: 5 * time.Second}
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
		if got := r.backoffCeiling(tc.retry); got != tc.ceiling {
			t.Errorf("ceiling(%d) = %v, want %v", tc.retry, got, tc.ceiling)
		}
		// Full jitter spans [0, ceiling].
		if got := r.backoff(tc.retry, 0, func() float64 { return 0 }); got != 0 {
			t.Errorf("backoff(%d) with jitter 0 = %v", tc.retry, got)
		}
		if got := r.backoff(tc.retry, 0, func() float64 { return 0.999999 }); got > tc.ceiling || got < tc.ceiling*99/100 {
			t.Errorf("backoff(%d) with jitter ~1 = %v, want just under %v", tc.retry, got, tc.ceiling)
		}
		for range 100 {
			if got := r.backoff(tc.retry, 0, jitter); got < 0 || got > tc.ceiling {
				t.Fatalf("backoff(%d) = %v outside [0, %v]", tc.retry, got, tc.ceiling)
			}
		}
	}
	if got := r.backoff(1, 2*time.Second, jitter); got != 2*time.Second {
		t.Errorf("Retry-After 2s: waited %v", got)
	}
	if got := r.backoff(1, time.Minute, jitter); got != 5*time.Second {
		t.Errorf("Retry-After 1m capped at 5s: waited %v", got)
	}
}

func TestDoubling(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 5 * time.Second, 40: 5 * time.Second} {
		if got := doubling(time.Second, 5*time.Second, n); got != want {
			t.Errorf("doubling(1s, 5s, %d) = %v, want %v", n, got, want)
		}
	}
}

func TestPolicyDefaults(t *testing.T) {
	// A zero MaxConcurrent means no cap, so it stays zero.
	want := DefaultPolicy()
	want.MaxConcurrent = 0
	if got := (Policy{}).withDefaults(); got != want {
		t.Errorf("zero policy with defaults = %+v, want %+v", got, want)
	}
	p := Policy{Retry: Retry{Attempts: 3, Deadline: time.Second}, Breaker: Breaker{OpenMin: 10 * time.Second}}.withDefaults()
	if p.Retry.Attempts != 3 || p.Retry.Deadline != time.Second {
		t.Errorf("set fields were replaced: %+v", p.Retry)
	}
	if p.Breaker.OpenMax < p.Breaker.OpenMin {
		t.Errorf("open_max %v below open_min %v", p.Breaker.OpenMax, p.Breaker.OpenMin)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"-1", 0},
		{"soon", 0},
		{"1.5", 0},
		{"99999999999999999999", (1 << 31) * time.Second},
		{"-99999999999999999999", 0},
		{"999999999999", (1 << 31) * time.Second},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tc := range cases {
		if got := retryAfter(http.Header{"Retry-After": {tc.v}}, now); got != tc.want {
			t.Errorf("Retry-After %q = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestRateLimitHeader(t *testing.T) {
	cases := []struct {
		v      string
		n      int64
		window time.Duration
		ok     bool
	}{
		{"76;w=21600", 76, 6 * time.Hour, true},
		{"0;w=21600", 0, 6 * time.Hour, true},
		{" 5 ", 5, 0, true},
		{"100;w=21600;foo=bar", 100, 6 * time.Hour, true},
		{"0;w=abc", 0, 0, true},
		{"-1", 0, 0, false},
		{"lots", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range cases {
		n, w, ok := parseRateLimitHeader(tc.v)
		if n != tc.n || w != tc.window || ok != tc.ok {
			t.Errorf("%q = %d, %v, %v; want %d, %v, %v", tc.v, n, w, ok, tc.n, tc.window, tc.ok)
		}
	}
}

func TestWindow(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	w := newWindow(10 * time.Second)
	w.add(now, true)
	w.add(now.Add(time.Second), false)
	w.add(now.Add(2*time.Second), true)
	if ok, failed := w.counts(now.Add(3 * time.Second)); ok != 1 || failed != 2 {
		t.Errorf("within the window: %d ok, %d failed; want 1, 2", ok, failed)
	}
	// The first outcome has left the window 10 s later; the others not yet.
	if ok, failed := w.counts(now.Add(10*time.Second + 500*time.Millisecond)); ok != 1 || failed != 1 {
		t.Errorf("10.5 s later: %d ok, %d failed; want 1, 1", ok, failed)
	}
	if ok, failed := w.counts(now.Add(time.Minute)); ok+failed != 0 {
		t.Errorf("a minute later: %d ok, %d failed; want none", ok, failed)
	}
	// A bucket reused a window later starts from zero.
	w.add(now.Add(10*time.Second), false)
	if ok, failed := w.counts(now.Add(10 * time.Second)); ok != 2 || failed != 1 {
		t.Errorf("after reuse: %d ok, %d failed; want 2, 1", ok, failed)
	}
}
