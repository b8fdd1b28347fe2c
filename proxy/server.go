// Package proxy is Breakwater's HTTP side: the OCI distribution pull API,
// upstream selection, the upstream client, fetch coalescing and the mapping
// of upstream failures to answers clients and classifiers understand.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/go-containerregistry/pkg/authn"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/objstore"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// UpstreamConfig is one registry Breakwater pulls from.
type UpstreamConfig struct {
	// Name is the registry host as clients name it ("docker.io").
	Name string
	// URL is where Breakwater reaches it ("https://registry-1.docker.io").
	URL string
	// Auth authenticates towards this upstream only.
	Auth authn.Authenticator
	// Policy governs retries, the breaker and concurrency towards this
	// upstream; fields left zero take upstream.DefaultPolicy's.
	Policy upstream.Policy
	// RateLimitReserve: when this upstream's ratelimit-remaining is at or
	// below it, cached tags are served without revalidation; 0: off.
	RateLimitReserve int
}

// Options configures a Server.
type Options struct {
	Store     *storage.Store
	Upstreams []UpstreamConfig
	// DefaultUpstream names the upstream for requests that name none.
	DefaultUpstream string
	// TagTTL is how long a tag is served from cache before revalidation.
	TagTTL time.Duration
	// MaxStale is how old a cached tag may be and still be served when the
	// upstream cannot be asked (stale-if-error); 0 disables it.
	MaxStale time.Duration
	// RevalidateTimeout is how long a request for a cached tag past its
	// TTL waits for the upstream before it is served from the cache while
	// the revalidation goes on; 0 means 3 s.
	RevalidateTimeout time.Duration
	// FetchTimeout bounds one upstream blob fetch; 0 means 30 minutes.
	FetchTimeout time.Duration
	// MaxBlobSize is the most bytes a blob may have: a longer body, or an
	// upstream declaring one, is cut and nothing is cached; 0 means
	// DefaultMaxBlobSize.
	MaxBlobSize int64
	Logger      *slog.Logger
	// Version is reported in the User-Agent sent upstream.
	Version string
	// MeterProvider and TracerProvider receive Breakwater's metrics and
	// spans; nil means none are recorded.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// MetricsHandler, when set, is served at /metrics.
	MetricsHandler http.Handler
	// WarmHandler, when set, serves POST /_breakwater/v1/warm; without
	// it that endpoint answers that the warm API is off. With Access it
	// is called only for an authenticated user, and CheckPull on the
	// request's context says what that user may pull.
	WarmHandler http.Handler
	// AdmissionHandler, when set, serves POST /_breakwater/v1/admission,
	// the validating admission webhook the API server calls; without it
	// that endpoint answers that the webhook is off.
	AdmissionHandler http.Handler
	// Access, when set, authenticates clients and decides what each may
	// pull; nil leaves Breakwater open to whoever reaches it.
	Access Access
	// Shared, when set, is the object store a fleet's replicas share: a
	// blob the cache lacks is read there before the upstream is asked,
	// and every blob fetched is written there.
	Shared *objstore.Store
	// SharedRedirect answers a GET of a blob the cache lacks but Shared
	// has with a redirect to a presigned URL, when Shared can make one.
	SharedRedirect bool
	// Fleet, when set, leases every blob fetch fleet-wide through Redis:
	// one replica fetches from the upstream, the others stream from it
	// over the peer endpoint, authenticated with PeerSecret.
	Fleet      *coord.Fleet
	PeerSecret string
	// PeerTLS is how the replicas speak TLS to each other's https
	// addresses; nil: the system's CAs, no client certificate.
	PeerTLS *tls.Config
	// SharedMaxSize bounds Shared fleet-wide when there is a Fleet: the
	// least recently used blobs are evicted, one replica at a time (0:
	// never). SharedEvictInterval is the time between eviction passes,
	// fleetlru.DefaultInterval when 0.
	SharedMaxSize       int64
	SharedEvictInterval time.Duration
}

// DefaultMaxBlobSize bounds a blob when Options.MaxBlobSize is not set:
// far beyond any real layer, short of what a body that never ends would
// fill a disk with.
const DefaultMaxBlobSize = 64 << 30

// registry is a configured upstream: the client towards it and what the
// proxy decides by it.
type registry struct {
	*upstream.Client
	// reserve is RateLimitReserve.
	reserve int64
}

// Server answers the pull side of the OCI distribution API from its cache
// and its upstreams.
type Server struct {
	store          *storage.Store
	accepts        acceptSets
	sharedRedirect bool
	// sharedMaxSize is storage.max_size, for the status page.
	sharedMaxSize   int64
	log             *slog.Logger
	upstreams       map[string]*registry
	aliases         map[string]string
	defaultUpstream string
	tagTTL          time.Duration
	maxStale        time.Duration
	revalidate      time.Duration
	blobs           *blobFetches
	tel             *telemetry
	upTel           *upstream.Telemetry
	started         time.Time
	version         string
	manifests       flights
	router          chi.Router
	metrics         http.Handler
	warm            http.Handler
	admission       http.Handler
	access          Access

	// base is the context of work that outlives a request (shared
	// fetches); Close cancels it and waits for background to drain.
	base       context.Context
	cancel     context.CancelFunc
	background sync.WaitGroup
}

// New builds a Server. It does not contact any upstream.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("proxy: no store")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 30 * time.Minute
	}
	if opts.MaxBlobSize <= 0 {
		opts.MaxBlobSize = DefaultMaxBlobSize
	}
	if opts.RevalidateTimeout <= 0 {
		opts.RevalidateTimeout = 3 * time.Second
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		base:            base,
		cancel:          cancel,
		store:           opts.Store,
		log:             log,
		upstreams:       map[string]*registry{},
		aliases:         map[string]string{},
		defaultUpstream: opts.DefaultUpstream,
		tagTTL:          opts.TagTTL,
		maxStale:        opts.MaxStale,
		revalidate:      opts.RevalidateTimeout,
		access:          opts.Access,
	}
	s.manifests.init()
	s.blobs = newBlobFetches(base, &s.background, opts.Store, log, opts.FetchTimeout, opts.MaxBlobSize)
	s.blobs.shared = opts.Shared
	if opts.Fleet != nil {
		if opts.PeerSecret == "" {
			cancel()
			return nil, errors.New("a fleet needs the secret its replicas share")
		}
		s.blobs.fleet = newFleet(opts.Fleet, opts.PeerSecret, opts.PeerTLS)
		if opts.Shared != nil {
			lru, err := newSharedLRU(opts, log, s.blobs)
			if err != nil {
				cancel()
				return nil, err
			}
			s.blobs.lru = lru
		}
	}
	s.sharedRedirect = opts.SharedRedirect && opts.Shared != nil
	s.sharedMaxSize = opts.SharedMaxSize
	upTel, err := upstream.NewTelemetry(opts.MeterProvider, opts.TracerProvider)
	if err != nil {
		cancel()
		return nil, err
	}
	s.upTel = upTel
	// Until New succeeds, a failure undoes what it set up.
	fail := func(err error) (*Server, error) {
		cancel()
		_ = upTel.Close()
		return nil, err
	}
	for _, c := range opts.Upstreams {
		client, err := upstream.New(upstream.Config{
			Name:        c.Name,
			URL:         c.URL,
			Auth:        c.Auth,
			Policy:      c.Policy,
			UserAgent:   "breakwater/" + opts.Version,
			Logger:      log,
			Telemetry:   upTel,
			OnHold:      s.blobs.fleet.publishHold(base, c.Name, log),
			OnRemaining: s.blobs.fleet.publishCount(base, c.Name, log),
		})
		if err != nil {
			return fail(err)
		}
		s.upstreams[c.Name] = &registry{Client: client, reserve: int64(c.RateLimitReserve)}
		s.aliases[c.Name] = c.Name
		if client.DockerHub() {
			for _, alias := range upstream.DockerHubNames() {
				s.aliases[alias] = c.Name
			}
		}
	}
	if _, ok := s.upstreams[s.defaultUpstream]; !ok {
		return fail(fmt.Errorf("proxy: default upstream %q is not configured", s.defaultUpstream))
	}
	tel, err := newTelemetry(opts.MeterProvider, opts.TracerProvider, s)
	if err != nil {
		return fail(err)
	}
	s.tel, s.started, s.version, s.metrics, s.warm = tel, time.Now(), opts.Version, opts.MetricsHandler, opts.WarmHandler
	s.admission = opts.AdmissionHandler
	// The blob fetches count the bytes they fetch from upstreams.
	s.blobs.tel = tel
	s.router = s.routes()
	s.holdWithFleet()
	s.runSharedLRU()
	return s, nil
}

// Close stops fetches still under way and waits for them to end. Call it
// after the HTTP server has stopped taking requests.
func (s *Server) Close() {
	s.cancel()
	s.background.Wait()
	if s.tel.registration != nil {
		if err := s.tel.registration.Unregister(); err != nil {
			s.log.Warn("telemetry: unregister", "err", err)
		}
	}
	if err := s.upTel.Close(); err != nil {
		s.log.Warn("telemetry: unregister upstreams", "err", err)
	}
}

// upstreamFor returns the configured upstream a client named, refusing
// hosts that are not configured: Breakwater is not an open proxy.
func (s *Server) upstreamFor(host string) (*registry, error) {
	if name, ok := s.aliases[strings.ToLower(host)]; ok {
		return s.upstreams[name], nil
	}
	names := make([]string, 0, len(s.upstreams))
	for n := range s.upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, errorf(http.StatusNotFound, CodeNameUnknown,
		"registry %q is not an upstream of this mirror (configured: %s)", upstream.OneLine(host, 100), strings.Join(names, ", "))
}

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(s.logRequests)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Get("/readyz", s.handleReady)
	// Liveness, readiness and metrics stay open with client
	// authentication on: probes and scrapers do not log in, and they tell
	// no repository names. The status page can (an upstream's last error
	// names what was pulled), so it needs a user.
	r.Get("/_breakwater/v1/status", func(w http.ResponseWriter, r *http.Request) {
		if err := s.requireUser(r); err != nil {
			writeError(w, r, err)
			return
		}
		s.handleStatus(w, r)
	})
	r.Post("/_breakwater/v1/warm", s.handleWarm)
	r.HandleFunc("/_breakwater/v1/admission", s.handleAdmission)
	r.Get(peerPath+"{upstream}/{digest}", s.handlePeerBlob)
	r.Get(peerManifestPath, s.handlePeerManifest)
	if s.metrics != nil {
		r.Handle("/metrics", s.metrics)
	}
	r.HandleFunc("/v2", s.handleBase)
	r.HandleFunc("/v2/", s.handleBase)
	r.HandleFunc("/v2/*", s.handlePull)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "no such endpoint %s", upstream.OneLine(r.URL.Path, 200)))
	})
	return r
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.router.ServeHTTP(w, r)
}

// handleBase answers the API version check every client starts with. With
// client authentication on it wants credentials even when the access list
// grants something anonymously: docker login, podman and skopeo learn
// from its challenge that they should send them.
func (s *Server) handleBase(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, r, errorf(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported: this is a pull-only mirror", r.Method))
		return
	}
	if err := s.requireUser(r); err != nil {
		writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "2")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("{}"))
	}
}

func (s *Server) handlePull(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, r, errorf(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported: this is a pull-only mirror", r.Method))
		return
	}
	// Breakwater's own requests (the admission webhook's) pass client
	// authentication and the access list.
	trusted := isTrusted(r.Context())
	var user string
	var err error
	if !trusted {
		user, err = s.identify(r)
	}
	if err == nil && user == "" && s.access != nil && !s.access.AllowsAnonymous() && !trusted {
		// Nothing is for anonymous clients: not even which upstreams
		// there are (a name that is not one lists them).
		err = s.challenge("authentication required")
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	t, err := s.parseTarget(r, rest)
	if err != nil {
		writeError(w, r, err)
		return
	}
	info := requestInfoFrom(r)
	info.upstream = t.upstream.Name()
	info.route = t.kind.String()
	if err := s.authorize(user, t); err != nil && !trusted {
		writeError(w, r, err)
		return
	}
	switch t.kind {
	case kindManifest:
		err = s.serveManifest(w, r, t)
	case kindBlob:
		err = s.serveBlob(w, r, t)
	case kindTags:
		err = s.serveTags(w, r, t)
	case kindReferrers:
		err = s.serveReferrers(w, r, t)
	}
	if err != nil {
		writeError(w, r, err)
	}
}

// handleAdmission serves the admission webhook. The API server calls it
// without credentials, so it is open to whoever reaches the port (which
// learns whether images exist, and nothing of their content).
func (s *Server) handleAdmission(w http.ResponseWriter, r *http.Request) {
	if s.admission == nil {
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "the admission webhook is off: set admission.enabled: true"))
		return
	}
	s.admission.ServeHTTP(w, r)
}

// trustedKey marks a request Breakwater makes of itself, in process, for
// its own judgement: the admission webhook's checks of images, which the
// API server asks without credentials. Only code in this process can set
// it; no header or address can.
type trustedKey struct{}

// Trusted returns ctx marked as Breakwater's own: a pull request with it
// passes client authentication and the access list.
func Trusted(ctx context.Context) context.Context {
	return context.WithValue(ctx, trustedKey{}, true)
}

func isTrusted(ctx context.Context) bool {
	v, _ := ctx.Value(trustedKey{}).(bool)
	return v
}

// handleWarm serves the warm API, for an authenticated user when client
// authentication is on; the handler checks the user's access to every image
// with CheckPull before it pulls any.
func (s *Server) handleWarm(w http.ResponseWriter, r *http.Request) {
	if err := s.requireUser(r); err != nil {
		writeError(w, r, err)
		return
	}
	if s.warm == nil {
		writeError(w, r, errorf(http.StatusNotFound, CodeUnsupported, "the warm API is off: set warm.api_enabled: true"))
		return
	}
	if s.access != nil {
		r = s.withPullCheck(r, requestInfoFrom(r).user)
	}
	s.warm.ServeHTTP(w, r)
}

// handleReady says whether Breakwater can do its job: the configuration was
// loaded (it was, or the server would not exist) and the cache takes writes.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.store.CheckWritable(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
		return
	}
	msg := "ready"
	// Degraded, not down: a failing shared store or Redis costs the
	// fleet duplicate fetches, not this replica its pulls.
	if s.blobs.shared != nil {
		if st, cause := s.blobs.sharedHealth.state(); st != "ok" {
			msg += "; shared store failing, asking the upstreams instead: " + cause
		}
	}
	if s.blobs.fleet != nil {
		if st, cause := s.blobs.redisHealth.state(); st != "ok" {
			msg += "; Redis failing, fetching alone: " + cause
		}
	}
	_, _ = w.Write([]byte(msg + "\n"))
}
