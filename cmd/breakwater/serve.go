package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/breakwater-registry/breakwater/admission"
	"github.com/breakwater-registry/breakwater/auth"
	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/imagecheck"
	"github.com/breakwater-registry/breakwater/objstore"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
	"github.com/breakwater-registry/breakwater/warm"
)

// repeated collects a flag given more than once.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (default: built-in defaults, as in the bundled config.yaml)")
	listen := fs.String("listen", "", "address to listen on, overrides listen")
	cacheDir := fs.String("cache-dir", "", "cache directory, overrides cache.dir")
	tagTTL := fs.String("tag-ttl", "", "how long a tag is trusted before revalidation, overrides cache.tag_ttl (e.g. 5m, 0s)")
	debugListen := fs.String("debug-listen", "", "serve net/http/pprof on this separate address, e.g. 127.0.0.1:6060 (default: off; keep it on loopback)")
	advertise := fs.String("advertise", "", "the URL the fleet's other replicas reach this one at, overrides cluster.advertise (e.g. http://$(POD_IP):5000)")
	var upstreams repeated
	fs.Var(&upstreams, "upstream", "HOST=URL: reach registry HOST at URL, e.g. docker.io=http://127.0.0.1:5001 (repeatable; overrides the file)")
	const usage = `usage: breakwater serve [--config FILE] [--listen ADDR] [--cache-dir DIR] [--upstream HOST=URL]... [--tag-ttl DURATION] [--debug-listen ADDR] [--advertise URL]

Runs the mirror. SIGHUP re-reads --config; SIGTERM drains and exits 0.
Exit status: 0 stopped by a signal; 1 failed while running; 2 bad usage or configuration.`
	fs.Usage = func() { printHelp(stderr, fs, usage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, usage)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}

	load := func() (config.Config, error) {
		return loadConfig(*configPath, *listen, *cacheDir, *tagTTL, upstreams, func(c *config.Config) {
			if *advertise != "" {
				c.Cluster.Advertise = bracketIPv6(*advertise)
			}
		})
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "breakwater: %v\n", err)
		return 2
	}
	// A configuration this build cannot serve is a bad configuration
	// here, not a failure at run time.
	if kind := cfg.Storage.Kind(); kind != "" {
		if err := objstore.Built(kind); err != nil {
			fmt.Fprintf(stderr, "breakwater: storage.%s: %v\n", kind, err)
			return 2
		}
	}
	var debugLn net.Listener
	if *debugListen != "" {
		if debugLn, err = net.Listen("tcp", *debugListen); err != nil {
			fmt.Fprintf(stderr, "breakwater: --debug-listen %q: %v\n", *debugListen, err)
			return 2
		}
	}
	level := new(slog.LevelVar)
	log := newLogger(stderr, cfg.Log, level)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP re-reads the configuration; without a file there is nothing
	// to re-read, and the signal is only logged.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	opts := serveOptions{cfg: cfg, log: log, level: level, debugLn: debugLn, reload: reload, load: load}
	if *configPath == "" {
		opts.load = nil
	}
	if err := serveWith(ctx, opts); err != nil {
		log.Error("breakwater stopped", "err", err)
		return 1
	}
	return 0
}

// loadConfig reads the file (or the defaults) and applies the flags over it.
func loadConfig(path, listen, cacheDir, tagTTL string, upstreams []string, overrides ...func(*config.Config)) (config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return cfg, err
		}
	}
	if listen != "" {
		cfg.Listen = listen
	}
	if cacheDir != "" {
		cfg.Cache.Dir = cacheDir
	}
	if tagTTL != "" {
		d, err := time.ParseDuration(tagTTL)
		if err != nil || d < 0 {
			return cfg, fmt.Errorf("--tag-ttl %q: want a duration such as 5m or 0s", tagTTL)
		}
		cfg.Cache.TagTTL = config.Duration(d)
	}
	for _, u := range upstreams {
		if err := cfg.SetUpstream(u); err != nil {
			return cfg, err
		}
	}
	for _, o := range overrides {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// newLogger builds the logger; level, when not nil, holds its level so
// that a configuration reload can change it.
func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	if level == nil {
		level = new(slog.LevelVar)
	}
	setLevel(level, c)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func setLevel(level *slog.LevelVar, c config.Log) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level)) // validated with the config
	level.Set(l)
}

// serve runs Breakwater until ctx ends. When debugLn is not nil it answers
// net/http/pprof there, and only there, and closes it on return. When ready
// is not nil it receives the bound address once the server accepts
// connections.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, debugLn net.Listener, ready chan<- string) error {
	return serveWith(ctx, serveOptions{cfg: cfg, log: log, debugLn: debugLn, ready: ready})
}

// serveOptions is what serveWith runs with.
type serveOptions struct {
	cfg     config.Config
	log     *slog.Logger
	level   *slog.LevelVar // the logger's, for a reload to change; may be nil
	debugLn net.Listener
	ready   chan<- string
	// Each value on reload re-reads the configuration with load and
	// applies it without dropping a request; nil load: no reloads.
	reload <-chan struct{}
	load   func() (config.Config, error)
}

// serveWith runs Breakwater until ctx ends, then drains: new connections
// are refused and the answers in flight get up to drain_timeout to finish.
func serveWith(ctx context.Context, o serveOptions) error {
	cfg, log := o.cfg, o.log
	errc := make(chan error, 2)
	if o.debugLn != nil {
		// First, so that the start-up scan of a large cache can be profiled.
		dbg := &http.Server{
			Handler:           debugHandler(),
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		logDebugListener(log, o.debugLn.Addr())
		go func() {
			errc <- fmt.Errorf("debug listener %s: %w", o.debugLn.Addr(), dbg.Serve(o.debugLn))
		}()
		// Close rather than Shutdown: a CPU profile or trace in flight must
		// not hold up the exit. The profiles stay reachable while the main
		// server drains.
		defer dbg.Close()
	}
	var limits storage.Limits
	if max := int64(cfg.Cache.MaxSize); max > 0 {
		limits = storage.Limits{
			MaxSize: max,
			High:    max / 100 * int64(cfg.Cache.HighWatermark),
			Low:     max / 100 * int64(cfg.Cache.LowWatermark),
		}
	}
	store, err := storage.Open(cfg.Cache.Dir, storage.WithLimits(limits), storage.WithLogger(log),
		storage.WithScrubRate(int64(cfg.Cache.ScrubRate)), storage.WithHotSize(int64(cfg.Cache.MemorySize)))
	if err != nil {
		return err
	}
	defer store.Close()
	scan := store.StartupScan()
	log.Info("cache opened", "dir", store.Root(), "blobs", scan.Blobs, "manifests", scan.Manifests,
		"bytes", scan.Bytes, "dangling_records_removed", scan.Removed, "scan", scan.Duration.String(),
		"max_size", limits.MaxSize)
	tel, err := newTelemetry(ctx, buildVersion(), buildRevision())
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()
	ln, stopTLS, err := listenerFor(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopTLS()
	shared, err := openShared(ctx, cfg.Storage, log)
	if err != nil {
		ln.Close()
		return err
	}
	fl, err := openFleet(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	if fl != nil {
		defer fl.coord.Close()
	}
	gens := &generations{log: log}
	build := func(cfg config.Config) (*proxy.Server, error) {
		return newProxy(cfg, store, shared, fl, tel, log, gens)
	}
	srv, err := build(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	gens.swap(srv)

	hs := &http.Server{
		Handler:           gens,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSNextProto:      http1Only(),
	}
	log.Info("breakwater serving", "version", buildVersion(), "revision", buildRevision(), "listen", ln.Addr().String(),
		"cache", store.Root(), "upstreams", upstreamNames(cfg), "default_upstream", cfg.DefaultUpstream,
		"tag_ttl", cfg.Cache.TagTTL.D().String(), "traces_exported", tel.exported)
	if o.ready != nil {
		o.ready <- ln.Addr().String()
	}

	go func() { errc <- hs.Serve(ln) }()
	for done := false; !done; {
		select {
		case err := <-errc:
			gens.close()
			return err
		case <-ctx.Done():
			done = true
		case <-o.reload:
			cfg = reloadConfig(cfg, o, build, gens)
		}
	}
	log.Info("shutting down: draining the answers in flight", "drain_timeout", cfg.DrainTimeout.D().String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout.D())
	defer cancel()
	err = hs.Shutdown(shutdownCtx)
	gens.close()
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("drain timeout: answers still in flight were cut", "drain_timeout", cfg.DrainTimeout.D().String())
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// newProxy builds the pull side for one configuration, on the process's
// store and telemetry. The warm API asks the result through gens, in
// process, so it works whatever the listen address.
func newProxy(cfg config.Config, store *storage.Store, shared *objstore.Store, fl *fleetMember, tel *telemetry, log *slog.Logger, gens *generations) (*proxy.Server, error) {
	ups, err := upstreamConfigs(cfg)
	if err != nil {
		return nil, err
	}
	// Read on every build, so that a reload takes a changed htpasswd file.
	acc, err := accessPolicy(cfg.Auth, log)
	if err != nil {
		return nil, err
	}
	var warmHandler http.Handler
	if cfg.Warm.APIEnabled {
		// The warm API pulls through Breakwater's own pull API, so that
		// the one fetch, verify and cache path does the work.
		mc := warm.MirrorConfig("http://breakwater.in-process")
		mc.Transport = handlerTransport{handler: gens}
		self, err := upstream.New(mc)
		if err != nil {
			return nil, fmt.Errorf("warm API: %w", err)
		}
		warmHandler = warmAPI(self)
	}
	var admissionHandler http.Handler
	if cfg.Admission.Enabled {
		// The webhook judges images as breakwater check --mirror does,
		// through Breakwater's own cache and upstreams, as Breakwater.
		mc := warm.MirrorConfig("http://breakwater.in-process")
		mc.Transport = handlerTransport{handler: gens, trusted: true}
		mc.UserAgent = "breakwater-admission"
		self, err := upstream.New(mc)
		if err != nil {
			return nil, fmt.Errorf("admission webhook: %w", err)
		}
		hosts := make([]string, 0, len(cfg.Upstreams))
		for h := range cfg.Upstreams {
			hosts = append(hosts, h)
		}
		admissionHandler = admission.New(admission.Options{
			Checker: imagecheck.ThroughMirror(self, hosts, true), Accept: warm.ManifestTypes(),
			Timeout: cfg.Admission.Timeout.D(), CacheTTL: cfg.Admission.CacheTTL.D(), Logger: log,
		})
	}
	return proxy.New(proxy.Options{
		MeterProvider:     tel.meters,
		TracerProvider:    tel.tracers,
		MetricsHandler:    tel.handler,
		WarmHandler:       warmHandler,
		AdmissionHandler:  admissionHandler,
		Store:             store,
		Upstreams:         ups,
		DefaultUpstream:   cfg.DefaultUpstream,
		TagTTL:            cfg.Cache.TagTTL.D(),
		MaxStale:          cfg.Cache.MaxStale.D(),
		RevalidateTimeout: cfg.Cache.RevalidateTimeout.D(),
		MaxBlobSize:       int64(cfg.Cache.MaxBlobSize),
		Logger:            log,
		Version:           buildVersion(),
		Access:            acc,
		Shared:            shared,
		SharedRedirect:    cfg.Storage.Redirect,
		SharedMaxSize:     int64(cfg.Storage.MaxSize),
		Fleet:             fl.fleet(),
		PeerSecret:        fl.peerSecret(),
		PeerTLS:           fl.tlsConfig(),
	})
}

// reloadConfig re-reads the configuration and, if it is valid, serves
// with it from now on; the requests in flight finish on the old one. It
// returns the configuration in force.
func reloadConfig(cur config.Config, o serveOptions, build func(config.Config) (*proxy.Server, error), gens *generations) config.Config {
	log := o.log
	if o.load == nil {
		log.Warn("SIGHUP: no configuration file to re-read (started without --config)")
		return cur
	}
	next, err := o.load()
	if err != nil {
		log.Error("configuration reload refused; the running configuration stays", "err", err)
		return cur
	}
	for _, key := range restartOnly(cur, next) {
		log.Warn("configuration reload: this key takes effect only at the next start", "key", key)
	}
	next = keepRestartOnly(next, cur)
	srv, err := build(next)
	if err != nil {
		log.Error("configuration reload refused; the running configuration stays", "err", err)
		return cur
	}
	gens.swap(srv)
	if o.level != nil {
		setLevel(o.level, next.Log)
	}
	log.Info("configuration reloaded", "upstreams", upstreamNames(next), "default_upstream", next.DefaultUpstream,
		"tag_ttl", next.Cache.TagTTL.D().String())
	return next
}

// restartOnly names the keys whose change a reload cannot apply: the
// listener and its TLS files' names, the cache's layout and bounds, and
// the log's format, all set up once per process.
func restartOnly(a, b config.Config) []string {
	var keys []string
	check := func(key string, same bool) {
		if !same {
			keys = append(keys, key)
		}
	}
	check("listen", a.Listen == b.Listen)
	check("tls", a.TLS == b.TLS) // the files themselves are re-read when they change
	check("cache.dir", a.Cache.Dir == b.Cache.Dir)
	check("cache.max_size", a.Cache.MaxSize == b.Cache.MaxSize)
	check("cache.high_watermark", a.Cache.HighWatermark == b.Cache.HighWatermark)
	check("cache.low_watermark", a.Cache.LowWatermark == b.Cache.LowWatermark)
	check("cache.scrub_rate", a.Cache.ScrubRate == b.Cache.ScrubRate)
	check("cache.memory_size", a.Cache.MemorySize == b.Cache.MemorySize)
	check("log.format", a.Log.Format == b.Log.Format)
	check("storage", reflect.DeepEqual(a.Storage, b.Storage))
	check("redis", a.Redis == b.Redis)
	check("cluster", a.Cluster == b.Cluster)
	return keys
}

// keepRestartOnly is next with cur's values for the keys restartOnly
// names, so that what the process reports is what it does.
func keepRestartOnly(next, cur config.Config) config.Config {
	next.Listen = cur.Listen
	next.TLS = cur.TLS
	next.Cache.Dir = cur.Cache.Dir
	next.Cache.MaxSize = cur.Cache.MaxSize
	next.Cache.HighWatermark = cur.Cache.HighWatermark
	next.Cache.LowWatermark = cur.Cache.LowWatermark
	next.Cache.ScrubRate = cur.Cache.ScrubRate
	next.Cache.MemorySize = cur.Cache.MemorySize
	next.Log.Format = cur.Log.Format
	next.Storage = cur.Storage
	next.Redis = cur.Redis
	next.Cluster = cur.Cluster
	return next
}

func upstreamNames(cfg config.Config) []string {
	names := make([]string, 0, len(cfg.Upstreams))
	for name := range cfg.Upstreams {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// debugHandler serves net/http/pprof on a mux of its own, never on the main
// listener.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also the named profiles: heap, goroutine, …
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// logDebugListener says where the profiles are, and warns when anyone but
// the host itself may reach them.
func logDebugListener(log *slog.Logger, addr net.Addr) {
	log.Info("debug listener serving pprof", "listen", addr.String())
	if tcp, ok := addr.(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		log.Warn("debug listener is not on a loopback address: profiles expose the mirror's internals to whoever reaches it",
			"listen", addr.String())
	}
}

// upstreamConfigs is every configured upstream as the proxy takes it, in
// name order, each with its credentials and its own resilience settings
// (its upstreams.<host>.resilience over the global block).
func upstreamConfigs(cfg config.Config) ([]proxy.UpstreamConfig, error) {
	names := make([]string, 0, len(cfg.Upstreams))
	for name := range cfg.Upstreams {
		names = append(names, name)
	}
	sort.Strings(names)
	var ups []proxy.UpstreamConfig
	for _, name := range names {
		c, err := upstreamConfig(&cfg, name)
		if err != nil {
			return nil, fmt.Errorf("upstreams.%s: %w", name, err)
		}
		ups = append(ups, proxy.UpstreamConfig{Name: c.Name, URL: c.URL, Auth: c.Auth, Policy: c.Policy,
			RateLimitReserve: cfg.ResilienceFor(name).RateLimitReserve})
	}
	return ups, nil
}

// upstreamConfig is how the configured upstream name is asked: where it is,
// its credentials, and its effective resilience. serve's proxy and check
// ask upstreams the same way.
func upstreamConfig(cfg *config.Config, name string) (upstream.Config, error) {
	u := cfg.Upstreams[name]
	a, err := auth.For(name, auth.Credentials{
		Username: u.Username, Password: u.Password, PasswordFile: u.PasswordFile, DockerConfig: u.DockerConfig,
		Helper: u.CredentialHelper,
	})
	if err != nil {
		return upstream.Config{}, err
	}
	return upstream.Config{Name: name, URL: u.URL, Auth: a, Policy: upstreamPolicy(cfg.ResilienceFor(name))}, nil
}

// upstreamPolicy is the upstream client's policy for a resilience block.
func upstreamPolicy(r config.Resilience) upstream.Policy {
	return upstream.Policy{
		Retry: upstream.Retry{
			Attempts:       r.Retry.Attempts,
			BaseDelay:      r.Retry.BaseDelay.D(),
			MaxDelay:       r.Retry.MaxDelay.D(),
			Deadline:       r.Retry.Deadline.D(),
			AttemptTimeout: r.Retry.AttemptTimeout.D(),
			MaxRetryAfter:  r.Retry.MaxRetryAfter.D(),
		},
		Breaker: upstream.Breaker{
			Window:         r.Breaker.Window.D(),
			MinRequests:    r.Breaker.MinRequests,
			FailurePercent: r.Breaker.FailurePercent,
			OpenMin:        r.Breaker.OpenMin.D(),
			OpenMax:        r.Breaker.OpenMax.D(),
		},
		MaxConcurrent: r.MaxConcurrent,
	}
}
