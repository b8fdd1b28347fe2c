package proxy

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/breakwater-registry/breakwater/storage"
)

// ceilSeconds rounds up to whole seconds, as a Retry-After says them.
func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// Status is what GET /_breakwater/v1/status reports.
type Status struct {
	Version   string           `json:"version"`
	Uptime    string           `json:"uptime"`
	Cache     CacheStatus      `json:"cache"`
	Upstreams []UpstreamStatus `json:"upstreams"`
	// Fleet is set when this replica shares a store or coordinates
	// through Redis.
	Fleet *FleetStatus `json:"fleet,omitempty"`
}

// FleetStatus says whether the fleet's shared parts answer. Either failing
// degrades, never stops, serving: the upstream is asked instead, or each
// replica fetches alone.
type FleetStatus struct {
	// Self is the address the other replicas reach this one at.
	Self string `json:"self,omitempty"`
	// Redis and SharedStore are ok, failing, or "" when not configured;
	// the errors are the last failure's, while failing.
	Redis            string `json:"redis,omitempty"`
	RedisError       string `json:"redisError,omitempty"`
	SharedStore      string `json:"sharedStore,omitempty"`
	SharedStoreError string `json:"sharedStoreError,omitempty"`
	// SharedStoreBytes and SharedStoreBlobs are what the fleet's index
	// says the shared store holds (blobs and manifests), against
	// SharedStoreMaxBytes (storage.max_size; 0: no bound). Unset while
	// Redis does not answer.
	SharedStoreBytes    int64 `json:"sharedStoreBytes,omitempty"`
	SharedStoreBlobs    int64 `json:"sharedStoreBlobs,omitempty"`
	SharedStoreMaxBytes int64 `json:"sharedStoreMaxBytes,omitempty"`
}

// CacheStatus summarises the cache.
type CacheStatus struct {
	Dir          string  `json:"dir"`
	Bytes        int64   `json:"bytes"`
	MaxBytes     int64   `json:"maxBytes"`
	Entries      int     `json:"entries"`
	Evictions    int64   `json:"evictions"`
	HitRatio     float64 `json:"hitRatio"`
	PullRequests int64   `json:"pullRequests"`
	DiskFull     bool    `json:"diskFull"`
	Writable     bool    `json:"writable"`
	// State is writable, full or unwritable; StateCause says why not.
	State      string `json:"state"`
	StateCause string `json:"stateCause,omitempty"`
	// Verified and Unverified count the blobs hashed since start and those
	// not yet; Quarantined the ones found corrupt.
	Verified    int64 `json:"verified"`
	Unverified  int64 `json:"unverified"`
	Quarantined int64 `json:"quarantined"`
	Inflight    int   `json:"inflightFetches"`
	// Memory* describe the records and manifests held in memory
	// (cache.memory_size) and the lookups they answered.
	MemoryBytes    int64 `json:"memoryBytes"`
	MemoryMaxBytes int64 `json:"memoryMaxBytes"`
	MemoryEntries  int   `json:"memoryEntries"`
	MemoryHits     int64 `json:"memoryHits"`
	MemoryMisses   int64 `json:"memoryMisses"`
}

// UpstreamStatus summarises one upstream.
type UpstreamStatus struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Breaker is closed, open or half-open (a probe is out or due).
	Breaker string `json:"breaker"`
	// BreakerRetryAfter is the seconds until the next probe while open.
	BreakerRetryAfter int `json:"breakerRetryAfter,omitempty"`
	// RateLimited is true while nothing is sent to the upstream because it
	// asked so (429, or no pulls left); RateLimitRetryAfter is the seconds
	// until it may be asked again.
	RateLimited         bool   `json:"rateLimited"`
	RateLimitRetryAfter int    `json:"rateLimitRetryAfter,omitempty"`
	LastError           string `json:"lastError,omitempty"`
	// RateLimitRemaining is -1 until the upstream reports it.
	RateLimitRemaining int64 `json:"rateLimitRemaining"`
}

// Status returns the current summary.
func (s *Server) Status() Status {
	u := s.store.Usage()
	// The probe first: a failing one changes the state.
	writable := s.store.CheckWritable() == nil
	state := s.store.State()
	in := s.store.Integrity()
	hot := s.store.HotStats()
	ratio, pulls := s.tel.hitRatio()
	st := Status{
		Version: s.version,
		Uptime:  time.Since(s.started).Round(time.Second).String(),
		Cache: CacheStatus{
			Dir: s.store.Root(), Bytes: u.Bytes, MaxBytes: u.Limits.MaxSize, Entries: u.Entries, Evictions: u.Evictions,
			HitRatio: ratio, PullRequests: pulls, DiskFull: state.Kind == storage.DiskFull, Writable: writable,
			State: state.Kind.String(), StateCause: state.Cause,
			Verified: in.Verified, Unverified: in.Unverified, Quarantined: in.Quarantined,
			Inflight:    s.blobs.count(),
			MemoryBytes: hot.Bytes, MemoryMaxBytes: hot.Max, MemoryEntries: hot.Entries, MemoryHits: hot.Hits, MemoryMisses: hot.Misses,
		},
	}
	for name, up := range s.upstreams {
		h := up.Health()
		st.Upstreams = append(st.Upstreams, UpstreamStatus{
			Name: name, URL: up.URL(), Breaker: h.Circuit.String(), BreakerRetryAfter: ceilSeconds(h.CircuitRetryAfter),
			RateLimited: h.RateLimited, RateLimitRetryAfter: ceilSeconds(h.RateLimitRetryAfter),
			LastError: h.LastError, RateLimitRemaining: up.RateLimitRemaining(),
		})
	}
	sort.Slice(st.Upstreams, func(i, j int) bool { return st.Upstreams[i].Name < st.Upstreams[j].Name })
	if s.blobs.fleet != nil || s.blobs.shared != nil {
		f := &FleetStatus{}
		if s.blobs.fleet != nil {
			f.Self = s.blobs.fleet.coord.Self()
			f.Redis, f.RedisError = s.blobs.redisHealth.state()
		}
		if s.blobs.shared != nil {
			f.SharedStore, f.SharedStoreError = s.blobs.sharedHealth.state()
		}
		if s.blobs.lru != nil {
			ctx, cancel := context.WithTimeout(s.base, time.Second)
			if u, err := s.blobs.lru.Usage(ctx); err == nil {
				f.SharedStoreBytes, f.SharedStoreBlobs = u.Bytes, u.Blobs
			}
			cancel()
			f.SharedStoreMaxBytes = s.sharedMaxSize
		}
		st.Fleet = f
	}
	return st
}

// handleStatus answers JSON, or a small HTML page for a browser
// (Accept: text/html, or ?format=html).
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := s.Status()
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Query().Get("format") == "html" || (r.URL.Query().Get("format") == "" && strings.Contains(r.Header.Get("Accept"), "text/html")) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, st)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(st)
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"mib":     func(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" },
	"percent": func(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + " %" },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Breakwater status</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:left}
.closed{color:#070}.open{color:#b00;font-weight:bold}.half-open{color:#a60}
</style></head><body>
<h1>Breakwater {{.Version}}</h1>
<p>Up for {{.Uptime}}.</p>
<h2>Cache</h2>
<table>
<tr><th>size</th><td>{{mib .Cache.Bytes}}{{if .Cache.MaxBytes}} of {{mib .Cache.MaxBytes}}{{else}} (unbounded){{end}}</td></tr>
<tr><th>entries</th><td>{{.Cache.Entries}}</td></tr>
<tr><th>hit ratio</th><td>{{percent .Cache.HitRatio}} of {{.Cache.PullRequests}} manifest and blob requests</td></tr>
<tr><th>evictions</th><td>{{.Cache.Evictions}}</td></tr>
<tr><th>integrity</th><td>{{.Cache.Verified}} blobs verified since start, {{.Cache.Unverified}} not yet (hashed on first open or by the scrub){{if .Cache.Quarantined}}; <span class="open">{{.Cache.Quarantined}} found corrupt and quarantined</span>{{end}}</td></tr>
<tr><th>fetches under way</th><td>{{.Cache.Inflight}}</td></tr>
<tr><th>in memory</th><td>{{.Cache.MemoryEntries}} records and manifests, {{.Cache.MemoryBytes}} of {{.Cache.MemoryMaxBytes}} bytes; {{.Cache.MemoryHits}} lookups answered from memory, {{.Cache.MemoryMisses}} read from disk</td></tr>
<tr><th>disk</th><td>{{if .Cache.DiskFull}}<span class="open">FULL: streaming without caching</span>{{else if eq .Cache.State "unwritable"}}<span class="open">NOT WRITABLE: streaming without caching</span>{{else if not .Cache.Writable}}<span class="open">NOT WRITABLE</span>{{else}}ok{{end}} ({{.Cache.Dir}}){{if .Cache.StateCause}}: {{.Cache.StateCause}}{{end}}</td></tr>
</table>
{{with .Fleet}}<h2>Fleet</h2>
<table>
{{if .Self}}<tr><th>this replica</th><td>{{.Self}}</td></tr>{{end}}
{{if .Redis}}<tr><th>Redis</th><td>{{if eq .Redis "ok"}}ok{{else}}<span class="open">FAILING: each replica fetches alone</span> ({{.RedisError}}){{end}}</td></tr>{{end}}
{{if .SharedStore}}<tr><th>shared store</th><td>{{if eq .SharedStore "ok"}}ok{{else}}<span class="open">FAILING: asking the upstreams instead</span> ({{.SharedStoreError}}){{end}}</td></tr>{{end}}
{{if .SharedStoreBlobs}}<tr><th>shared store holds</th><td>{{.SharedStoreBytes}} bytes in {{.SharedStoreBlobs}} blobs{{if .SharedStoreMaxBytes}}, of {{.SharedStoreMaxBytes}} (least recently used evicted past it){{end}}</td></tr>{{end}}
</table>{{end}}
<h2>Upstreams</h2>
<table><tr><th>registry</th><th>URL</th><th>circuit</th><th>rate limit</th><th>pulls left</th><th>last error</th></tr>
{{range .Upstreams}}<tr><td>{{.Name}}</td><td>{{.URL}}</td><td class="{{.Breaker}}">{{.Breaker}}{{if .BreakerRetryAfter}} (probe in {{.BreakerRetryAfter}}s){{end}}</td><td>{{if .RateLimited}}<span class="open">holding: retry in {{.RateLimitRetryAfter}}s</span>{{else}}—{{end}}</td><td>{{if ge .RateLimitRemaining 0}}{{.RateLimitRemaining}}{{else}}—{{end}}</td><td>{{.LastError}}</td></tr>
{{end}}</table>
<p><a href="?format=json">JSON</a> · <a href="/metrics">metrics</a></p>
</body></html>
`))
