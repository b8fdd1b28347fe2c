package proxy

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/breakwater-registry/breakwater/storage"
)

// telemetry holds the instruments Breakwater records into. The exporters
// (Prometheus on /metrics, OTLP traces) are the caller's: proxy only takes
// a MeterProvider and a TracerProvider.
type telemetry struct {
	tracer trace.Tracer

	requests     metric.Int64Counter
	reqDuration  metric.Float64Histogram
	bytesServed  metric.Int64Counter
	bytesFetched metric.Int64Counter
	// sharedFetched, sharedUploads and sharedErrors are the shared
	// object store's: bytes read from it, blobs written to it, and
	// questions it failed to answer (by op).
	sharedFetched metric.Int64Counter
	sharedUploads metric.Int64Counter
	sharedErrors  metric.Int64Counter
	// sharedEvicted counts the blobs this replica evicted from the shared
	// store as the fleet's evictor.
	sharedEvicted metric.Int64Counter
	// peerFetched, fleetFollowed and fleetAlone are the fleet's: bytes
	// streamed from the replica that held a fetch's lease, fetches that
	// followed one, and fetches made alone although in a fleet (Redis
	// unreachable, an owner that did not stream).
	peerFetched   metric.Int64Counter
	fleetFollowed metric.Int64Counter
	fleetAlone    metric.Int64Counter

	// Counted here as well for the status page's hit ratio.
	pulls, hits atomic.Int64

	// requestOpts holds each label combination's measurement options,
	// built once: building them per request was a tenth of a warm
	// manifest's allocations.
	requestOpts sync.Map // requestLabels → *requestOptions
	requestOptN atomic.Int64

	// registration is the observers' callback, unregistered when the
	// server closes: a configuration reload replaces the server, and the
	// old one must not go on reporting.
	registration metric.Registration
}

const instrumentation = "github.com/breakwater-registry/breakwater/proxy"

func newTelemetry(mp metric.MeterProvider, tp trace.TracerProvider, s *Server) (*telemetry, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	m := mp.Meter(instrumentation)
	t := &telemetry{tracer: tp.Tracer(instrumentation)}
	var err error
	must := func(e error) {
		if err == nil && e != nil {
			err = e
		}
	}
	durations := metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
	var e error
	t.requests, e = m.Int64Counter("breakwater.requests", metric.WithDescription("Requests answered, by route, method, status and cache result (hit, miss, coalesced, revalidated, stale, pass)."))
	must(e)
	t.reqDuration, e = m.Float64Histogram("breakwater.request.duration", metric.WithUnit("s"), durations, metric.WithDescription("Time to answer a request, to the last byte."))
	must(e)
	t.bytesServed, e = m.Int64Counter("breakwater.served", metric.WithUnit("By"), metric.WithDescription("Bytes sent to clients."))
	must(e)
	t.bytesFetched, e = m.Int64Counter("breakwater.fetched", metric.WithUnit("By"), metric.WithDescription("Blob bytes fetched from upstreams."))
	must(e)
	t.sharedFetched, e = m.Int64Counter("breakwater.shared.fetched", metric.WithUnit("By"), metric.WithDescription("Blob bytes read from the shared object store instead of an upstream."))
	must(e)
	t.sharedUploads, e = m.Int64Counter("breakwater.shared.uploads", metric.WithDescription("Blobs written to the shared object store."))
	must(e)
	t.peerFetched, e = m.Int64Counter("breakwater.fleet.peer_fetched", metric.WithUnit("By"), metric.WithDescription("Blob bytes streamed from the replica that held the fetch's lease."))
	must(e)
	t.fleetFollowed, e = m.Int64Counter("breakwater.fleet.followed", metric.WithDescription("Blob fetches streamed from another replica, and tags taken from the replica that resolved them, instead of asking an upstream; by what (blob, tag)."))
	must(e)
	t.fleetAlone, e = m.Int64Counter("breakwater.fleet.alone", metric.WithDescription("Blob fetches and tag resolutions made alone although in a fleet, by what (blob, tag): Redis unreachable, or the lease's owner not streaming or answering. Each may duplicate another replica's upstream request."))
	must(e)
	t.sharedEvicted, e = m.Int64Counter("breakwater.shared.evicted", metric.WithDescription("Blobs this replica evicted from the shared object store, least recently used first, to keep it within storage.max_size."))
	must(e)
	t.sharedErrors, e = m.Int64Counter("breakwater.shared.errors", metric.WithDescription("Questions to the shared object store that failed, by op; the upstream was asked instead."))
	must(e)

	cacheSize, e := m.Int64ObservableGauge("breakwater.cache.size", metric.WithUnit("By"), metric.WithDescription("Bytes of verified content in the cache."))
	must(e)
	cacheMax, e := m.Int64ObservableGauge("breakwater.cache.max_size", metric.WithUnit("By"), metric.WithDescription("The cache's size bound; 0 when unbounded."))
	must(e)
	entries, e := m.Int64ObservableGauge("breakwater.cache.entries", metric.WithDescription("Blobs and manifests in the cache."))
	must(e)
	evictions, e := m.Int64ObservableCounter("breakwater.cache.evictions", metric.WithDescription("Entries evicted to keep the cache under its bound."))
	must(e)
	inflight, e := m.Int64ObservableGauge("breakwater.fetches.inflight", metric.WithDescription("Blob fetches from upstream under way."))
	must(e)
	diskFull, e := m.Int64ObservableGauge("breakwater.cache.disk_full", metric.WithDescription("1 while the cache's disk is full and blobs are streamed without caching."))
	must(e)
	unwritable, e := m.Int64ObservableGauge("breakwater.cache.unwritable", metric.WithDescription("1 while the cache's directory is read-only or gone and blobs are streamed without caching."))
	must(e)
	quarantined, e := m.Int64ObservableCounter("breakwater.cache.quarantined", metric.WithDescription("Cached blobs and manifests found corrupt, quarantined and fetched again."))
	must(e)
	unverified, e := m.Int64ObservableGauge("breakwater.cache.unverified", metric.WithDescription("Cached blobs not yet hashed since start: their first open hashes them, unless the scrub did."))
	must(e)
	memory, e := m.Int64ObservableGauge("breakwater.cache.memory", metric.WithUnit("By"), metric.WithDescription("Bytes of tag records, manifest records and manifests held in memory (cache.memory_size)."))
	must(e)
	memoryHits, e := m.Int64ObservableCounter("breakwater.cache.memory_hits", metric.WithDescription("Lookups of tag records, manifest records and manifests answered from memory, without a file read."))
	must(e)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	t.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		u := s.store.Usage()
		o.ObserveInt64(cacheSize, u.Bytes)
		o.ObserveInt64(cacheMax, u.Limits.MaxSize)
		o.ObserveInt64(entries, int64(u.Entries))
		o.ObserveInt64(evictions, u.Evictions)
		o.ObserveInt64(inflight, int64(s.blobs.count()))
		state := s.store.State().Kind
		o.ObserveInt64(diskFull, oneIf(state == storage.DiskFull))
		o.ObserveInt64(unwritable, oneIf(state == storage.Unwritable))
		in := s.store.Integrity()
		o.ObserveInt64(quarantined, in.Quarantined)
		o.ObserveInt64(unverified, in.Unverified)
		hot := s.store.HotStats()
		o.ObserveInt64(memory, hot.Bytes)
		o.ObserveInt64(memoryHits, hot.Hits)
		return nil
	}, cacheSize, cacheMax, entries, evictions, inflight, diskFull, unwritable, quarantined, unverified, memory, memoryHits)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return t, nil
}

func oneIf(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// recordRequest counts one answered request.
func (t *telemetry) recordRequest(ctx context.Context, route, method string, status int, cache string, bytes int64, d time.Duration) {
	o := t.requestOptions(requestLabels{route: route, method: method, status: status, cache: cache})
	t.requests.Add(ctx, 1, o.all...)
	t.reqDuration.Record(ctx, d.Seconds(), o.routeMethod...)
	t.bytesServed.Add(ctx, bytes, o.route...)
	if route == kindManifest.String() || route == kindBlob.String() {
		t.pulls.Add(1)
		if cache == cacheHit || cache == cacheStale {
			t.hits.Add(1)
		}
	}
}

type requestLabels struct {
	route, method, cache string
	status               int
}

// requestOptions are slices so that passing them allocates nothing.
type requestOptions struct {
	all, route  []metric.AddOption
	routeMethod []metric.RecordOption
}

// maxRequestOptions bounds the memoized label combinations: methods and
// statuses come from clients and upstreams, and past this many the
// options are built per request, as before.
const maxRequestOptions = 1024

func (t *telemetry) requestOptions(l requestLabels) *requestOptions {
	if o, ok := t.requestOpts.Load(l); ok {
		return o.(*requestOptions)
	}
	o := &requestOptions{
		all: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String("route", l.route), attribute.String("method", l.method),
			attribute.Int("status", l.status), attribute.String("cache", l.cache)))},
		routeMethod: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("route", l.route), attribute.String("method", l.method)))},
		route:       []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("route", l.route)))},
	}
	if t.requestOptN.Load() < maxRequestOptions {
		if _, loaded := t.requestOpts.LoadOrStore(l, o); !loaded {
			t.requestOptN.Add(1)
		}
	}
	return o
}

// hitRatio is the share of manifest and blob requests answered from cache.
func (t *telemetry) hitRatio() (ratio float64, requests int64) {
	p := t.pulls.Load()
	if p == 0 {
		return 0, 0
	}
	return float64(t.hits.Load()) / float64(p), p
}
