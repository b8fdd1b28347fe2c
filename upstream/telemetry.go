package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Telemetry holds the instruments of every Client built with it: one set
// for all upstreams, each observation labelled with its upstream.
type Telemetry struct {
	tracer       trace.Tracer
	requests     metric.Int64Counter
	retries      metric.Int64Counter
	duration     metric.Float64Histogram
	mu           sync.Mutex
	registered   []*Client
	registration metric.Registration
}

const instrumentation = "github.com/breakwater-registry/breakwater/upstream"

// NewTelemetry creates the instruments; nil providers record nothing.
func NewTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) (*Telemetry, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	m := mp.Meter(instrumentation)
	t := &Telemetry{tracer: tp.Tracer(instrumentation)}
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	durations := metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
	t.requests, err = m.Int64Counter("breakwater.upstream.requests", metric.WithDescription("Tries sent upstream, by upstream and status (or error)."))
	must(err)
	t.retries, err = m.Int64Counter("breakwater.upstream.retries", metric.WithDescription("Upstream tries that were retried."))
	must(err)
	t.duration, err = m.Float64Histogram("breakwater.upstream.request.duration", metric.WithUnit("s"), durations, metric.WithDescription("Time to an upstream answer's headers, per try."))
	must(err)
	state, err := m.Int64ObservableGauge("breakwater.upstream.breaker.state", metric.WithDescription("Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open."))
	must(err)
	limited, err := m.Float64ObservableGauge("breakwater.upstream.ratelimit.wait", metric.WithUnit("s"),
		metric.WithDescription("Seconds until a rate-limited upstream may be asked again (its Retry-After); 0 when it is not rate limited."))
	must(err)
	remaining, err := m.Int64ObservableGauge("breakwater.upstream.ratelimit.remaining", metric.WithDescription("Pulls left as the upstream last said (Docker Hub's ratelimit-remaining); absent until it says."))
	must(err)
	if len(errs) > 0 {
		return nil, fmt.Errorf("upstream telemetry: %v", errs)
	}
	t.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t.mu.Lock()
		clients := append([]*Client(nil), t.registered...)
		t.mu.Unlock()
		for _, c := range clients {
			attrs := metric.WithAttributes(attribute.String("upstream", c.name))
			h := c.Health()
			// The gauge's numbers predate half-open being derived; keep them.
			n := map[CircuitState]int64{CircuitClosed: 0, CircuitHalfOpen: 1, CircuitOpen: 2}[h.Circuit]
			o.ObserveInt64(state, n, attrs)
			o.ObserveFloat64(limited, h.RateLimitRetryAfter.Seconds(), attrs)
			if left := c.RateLimitRemaining(); left >= 0 {
				o.ObserveInt64(remaining, left, attrs)
			}
		}
		return nil
	}, state, limited, remaining)
	if err != nil {
		return nil, fmt.Errorf("upstream telemetry: %w", err)
	}
	return t, nil
}

// Close stops observing the clients built with t: their server is gone
// (a configuration reload replaced it), and their gauges must not be
// reported beside their successors'.
func (t *Telemetry) Close() error {
	if t == nil || t.registration == nil {
		return nil
	}
	return t.registration.Unregister()
}

func (t *Telemetry) register(c *Client) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.registered = append(t.registered, c)
	t.mu.Unlock()
}

func (t *Telemetry) retried(ctx context.Context, upstream string) {
	if t == nil {
		return
	}
	t.retries.Add(ctx, 1, metric.WithAttributes(attribute.String("upstream", upstream)))
}

// traced runs one try in its own span and records its metrics.
func (c *Client) traced(ctx context.Context, r request, try int, deadline time.Time) (*http.Response, error) {
	if c.tel == nil {
		return c.try(ctx, r, deadline)
	}
	ctx, span := c.tel.tracer.Start(ctx, "upstream "+r.method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("breakwater.upstream", c.name), attribute.String("breakwater.repository", r.repo),
			attribute.String("url.path", r.urlPath()), attribute.Int("breakwater.attempt", try)))
	defer span.End()
	start := time.Now()
	resp, err := c.try(ctx, r, deadline)
	if errors.Is(err, ErrBusy) {
		// Never sent: not an upstream request for the metrics.
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		if resp.StatusCode >= 500 || resp.StatusCode == 429 {
			span.SetStatus(codes.Error, resp.Status)
		}
	} else {
		span.RecordError(err)
		span.SetStatus(codes.Error, OneLine(err.Error(), 200))
	}
	c.tel.requests.Add(ctx, 1, metric.WithAttributes(attribute.String("upstream", c.name), attribute.String("status", status)))
	c.tel.duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attribute.String("upstream", c.name)))
	return resp, err
}
