package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/breakwater-registry/breakwater/internal/testlog"
	"github.com/breakwater-registry/breakwater/storage"
)

// TestLogFirstByte: the access log's first_byte_ms is the time from the
// handler's start to its first write of the answer, however the handler
// writes it, and the time to the last byte stays in duration_ms. Each
// handler waits pause before and/or after its first write, so the line
// must show at least pause on the side of the write where the wait was.
// Only those lower bounds are checked: sleeps only ever last longer, so a
// slow machine cannot fail it, and a field stuck at 0 or at duration_ms,
// or missing, does.
func TestLogFirstByte(t *testing.T) {
	const pause = 40 * time.Millisecond
	body := strings.Repeat("x", 4096)
	for _, tc := range []struct {
		name string
		// before and after the first write: whether the handler pauses;
		// atEnd: it writes nothing, and its answer leaves as it returns.
		before, after, atEnd bool
		handler              func(w http.ResponseWriter, r *http.Request)
	}{
		{"WriteHeader then a late body", false, true, false, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			time.Sleep(pause)
			_, _ = io.WriteString(w, body)
		}},
		{"waits, then writes", true, true, false, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(pause)
			_, _ = io.WriteString(w, body)
			time.Sleep(pause)
		}},
		{"waits, then sends a file's way (ReadFrom)", true, true, false, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(pause)
			_, _ = w.(io.ReaderFrom).ReadFrom(strings.NewReader(body))
			time.Sleep(pause)
		}},
		{"waits, then flushes headers, then the body", true, true, false, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(pause)
			w.(http.Flusher).Flush()
			time.Sleep(pause)
			_, _ = io.WriteString(w, body)
		}},
		{"writes nothing: net/http answers at the end", true, false, true, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(pause)
		}},
		{"answers on the hijacked connection", true, true, false, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(pause)
			if !writeWithReason(w, r, http.StatusServiceUnavailable, "breakwater-transient: test", []byte("{}")) {
				t.Error("writeWithReason could not take the connection")
			}
			time.Sleep(pause)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := logLineOf(t, tc.handler, nil)
			first, ok1 := line["first_byte_ms"].(float64)
			total, ok2 := line["duration_ms"].(float64)
			if !ok1 || !ok2 {
				t.Fatalf("log line %v: want numbers first_byte_ms and duration_ms", line)
			}
			p := float64(pause.Milliseconds())
			if first < 0 || first > total {
				t.Errorf("first_byte_ms %v, duration_ms %v: want 0 ≤ first byte ≤ duration", first, total)
			}
			if tc.before && first < p {
				t.Errorf("first_byte_ms %v: the handler waited %v before writing", first, pause)
			}
			if tc.after && total-first < p {
				t.Errorf("duration_ms %v − first_byte_ms %v: the handler went on %v after its first write", total, first, pause)
			}
			if tc.atEnd && first != total {
				t.Errorf("first_byte_ms %v, duration_ms %v: a handler that wrote nothing is answered as it returns", first, total)
			}
		})
	}
}

// logLineOf serves one GET with handler behind the server's access log,
// its metrics recorded by meters (nil: none), and returns the request's
// log line.
func logLineOf(t *testing.T, handler http.HandlerFunc, meters metric.MeterProvider) map[string]any {
	t.Helper()
	store, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	s, err := New(Options{
		Store:           store,
		Logger:          slog.New(slog.NewJSONHandler(logs, nil)),
		Upstreams:       []UpstreamConfig{{Name: "docker.io", URL: "http://127.0.0.1:1"}},
		DefaultUpstream: "docker.io",
		MeterProvider:   meters,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := httptest.NewServer(s.logRequests(handler))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v2/x/blobs/y")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The line is written after the answer; the client may see the answer first.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
				return m
			}
		}
	}
	t.Fatalf("no request line in the log:\n%s", logs.String())
	return nil
}

// slowMeter is a MeterProvider whose request duration histogram takes
// delay to record: the metrics a busy server records after a request.
type slowMeter struct {
	metricnoop.MeterProvider
	delay time.Duration
}

func (m slowMeter) Meter(string, ...metric.MeterOption) metric.Meter {
	return slowMeterMeter{delay: m.delay}
}

type slowMeterMeter struct {
	metricnoop.Meter
	delay time.Duration
}

func (m slowMeterMeter) Float64Histogram(string, ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	return slowHistogram{delay: m.delay}, nil
}

type slowHistogram struct {
	metricnoop.Float64Histogram
	delay time.Duration
}

func (h slowHistogram) Record(context.Context, float64, ...metric.RecordOption) { time.Sleep(h.delay) }

// TestLogTimeIsTheEndOfDuration: a request line's time less its
// duration_ms is the handler's start, however long the work after the
// answer (metrics) takes before the line is written.
func TestLogTimeIsTheEndOfDuration(t *testing.T) {
	var entered time.Time
	line := logLineOf(t, func(w http.ResponseWriter, r *http.Request) {
		entered = time.Now()
		_, _ = io.WriteString(w, "ok")
	}, slowMeter{delay: 50 * time.Millisecond})
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"]))
	duration, ok := line["duration_ms"].(float64)
	if err != nil || !ok {
		t.Fatalf("log line %v: want a time and a number duration_ms (%v)", line, err)
	}
	start := at.Add(-time.Duration(duration * float64(time.Millisecond)))
	// The handler was entered after the start; duration_ms is truncated
	// to the microsecond, so the start read back may be up to 1 µs late.
	if start.After(entered.Add(time.Microsecond)) {
		t.Errorf("time − duration_ms = %s, after the handler was entered at %s: the line's time is not the end of its duration",
			start.Format(time.StampMicro), entered.Format(time.StampMicro))
	}
}
