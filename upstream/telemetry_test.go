package upstream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/breakwater-registry/breakwater/internal/testlog"
)

// records returns the JSON log records written to logs so far.
func records(t *testing.T, logs *testlog.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// logged reports whether a record has the message and every attribute.
func logged(records []map[string]any, msg string, attrs map[string]string) bool {
	for _, r := range records {
		if r["msg"] != msg {
			continue
		}
		all := true
		for k, v := range attrs {
			all = all && r[k] == v
		}
		if all {
			return true
		}
	}
	return false
}

// gauge returns the value the named gauge reports for docker.io.
func gauge(t *testing.T, reader *sdkmetric.ManualReader, name string) float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	ours := func(s attribute.Set) bool {
		v, ok := s.Value("upstream")
		return ok && v.AsString() == "docker.io"
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if ours(p.Attributes) {
						return float64(p.Value)
					}
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					if ours(p.Attributes) {
						return p.Value
					}
				}
			}
		}
	}
	t.Fatalf("no %s for docker.io", name)
	return 0
}

// TestStateVisible: the breaker's state and the rate limit are in the
// metrics and the log as they change, with the cause: an operator sees
// the circuit open, a probe due, the circuit closed again, and how long a
// rate limit holds.
func TestStateVisible(t *testing.T) {
	const (
		state = "breakwater.upstream.breaker.state"
		wait  = "breakwater.upstream.ratelimit.wait"
	)
	reader := sdkmetric.NewManualReader()
	tel, err := NewTelemetry(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Close() })
	var logs testlog.Buffer
	clk := newAutoClock()
	up := seededUpstream(t)
	p := DefaultPolicy()
	p.Retry.Deadline = 3 * time.Second
	p.Breaker.Window = time.Minute // the requests of 3 s each fit in it
	c, err := New(Config{Name: "docker.io", URL: up.URL, Policy: p, Clock: clk, Rand: func() float64 { return 0.999 },
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := getManifest(c); err != nil {
		t.Fatal(err)
	}
	if s, w := gauge(t, reader, state), gauge(t, reader, wait); s != 0 || w != 0 {
		t.Fatalf("healthy: breaker state %v, rate-limit wait %v, want 0 and 0", s, w)
	}

	outage(up, clk, "/manifests/", clk.Now().Add(time.Hour), 503)
	for range p.Breaker.MinRequests {
		_, _ = getManifest(c)
	}
	if s := gauge(t, reader, state); s != 2 {
		t.Errorf("after %d requests that found the upstream down: breaker state %v, want 2 (open)", p.Breaker.MinRequests, s)
	}
	if !logged(records(t, &logs), "circuit breaker", map[string]string{"level": "WARN", "to": "open", "cause": "503 Service Unavailable"}) {
		t.Errorf("no warning of the circuit opening, with its cause:\n%s", logs.String())
	}
	clk.Advance(c.Health().CircuitRetryAfter)
	if s := gauge(t, reader, state); s != 1 {
		t.Errorf("open time over: breaker state %v, want 1 (half-open: a probe is due)", s)
	}

	up.SetHook(nil)
	if _, err := getManifest(c); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if s := gauge(t, reader, state); s != 0 {
		t.Errorf("after recovery: breaker state %v, want 0 (closed)", s)
	}
	if !logged(records(t, &logs), "circuit breaker", map[string]string{"level": "INFO", "to": "closed"}) {
		t.Errorf("no record of the circuit closing:\n%s", logs.String())
	}

	outage(up, clk, "/manifests/", clk.Now().Add(time.Hour), 429, "Retry-After", "30")
	if _, err := getManifest(c); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("429 with Retry-After past the deadline: %v, want rate limited", err)
	}
	if w := gauge(t, reader, wait); w != 30 {
		t.Errorf("rate limited for 30 s: wait %v, want 30", w)
	}
	if s := gauge(t, reader, state); s != 0 {
		t.Errorf("rate limited: breaker state %v, want 0: a 429 says the upstream is up", s)
	}
	if !logged(records(t, &logs), "upstream rate limited: nothing is sent to it until the time it gave",
		map[string]string{"level": "WARN", "cause": "answered 429 Too Many Requests", "retry_after": "30s"}) {
		t.Errorf("no warning of the rate limit, with its cause and time:\n%s", logs.String())
	}
}
