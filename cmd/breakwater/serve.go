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
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/breakwater-registry/breakwater/auth"
	"github.com/breakwater-registry/breakwater/config"
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
	var upstreams repeated
	fs.Var(&upstreams, "upstream", "HOST=URL: reach registry HOST at URL, e.g. docker.io=http://127.0.0.1:5001 (repeatable; overrides the file)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}

	cfg, err := loadConfig(*configPath, *listen, *cacheDir, *tagTTL, upstreams)
	if err != nil {
		fmt.Fprintf(stderr, "breakwater: %v\n", err)
		return 2
	}
	var debugLn net.Listener
	if *debugListen != "" {
		if debugLn, err = net.Listen("tcp", *debugListen); err != nil {
			fmt.Fprintf(stderr, "breakwater: --debug-listen %q: %v\n", *debugListen, err)
			return 2
		}
	}
	log := newLogger(stderr, cfg.Log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log, debugLn, nil); err != nil {
		log.Error("breakwater stopped", "err", err)
		return 1
	}
	return 0
}

// loadConfig reads the file (or the defaults) and applies the flags over it.
func loadConfig(path, listen, cacheDir, tagTTL string, upstreams []string) (config.Config, error) {
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
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated with the config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// serve runs Breakwater until ctx ends. When debugLn is not nil it answers
// net/http/pprof there, and only there, and closes it on return. When ready
// is not nil it receives the bound address once the server accepts
// connections.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, debugLn net.Listener, ready chan<- string) error {
	errc := make(chan error, 2)
	if debugLn != nil {
		// First, so that the start-up scan of a large cache can be profiled.
		dbg := &http.Server{
			Handler:           debugHandler(),
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		logDebugListener(log, debugLn.Addr())
		go func() {
			errc <- fmt.Errorf("debug listener %s: %w", debugLn.Addr(), dbg.Serve(debugLn))
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
		storage.WithScrubRate(int64(cfg.Cache.ScrubRate)))
	if err != nil {
		return err
	}
	defer store.Close()
	scan := store.StartupScan()
	log.Info("cache opened", "dir", store.Root(), "blobs", scan.Blobs, "manifests", scan.Manifests,
		"bytes", scan.Bytes, "dangling_records_removed", scan.Removed, "scan", scan.Duration.String(),
		"max_size", limits.MaxSize)
	ups, err := upstreamConfigs(cfg)
	if err != nil {
		return err
	}
	names := make([]string, len(ups))
	for i, u := range ups {
		names[i] = u.Name
	}
	tel, err := newTelemetry(ctx, buildVersion())
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
	var warmHandler http.Handler
	if cfg.Warm.APIEnabled {
		// The warm API pulls through Breakwater's own pull API, so that
		// the one fetch, verify and cache path does the work.
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		self, err := upstream.New(warm.MirrorConfig("http://" + net.JoinHostPort("127.0.0.1", port)))
		if err != nil {
			ln.Close()
			return fmt.Errorf("warm API: %w", err)
		}
		warmHandler = warmAPI(self)
	}
	srv, err := proxy.New(proxy.Options{
		MeterProvider:     tel.meters,
		TracerProvider:    tel.tracers,
		MetricsHandler:    tel.handler,
		WarmHandler:       warmHandler,
		Store:             store,
		Upstreams:         ups,
		DefaultUpstream:   cfg.DefaultUpstream,
		TagTTL:            cfg.Cache.TagTTL.D(),
		MaxStale:          cfg.Cache.MaxStale.D(),
		RevalidateTimeout: cfg.Cache.RevalidateTimeout.D(),
		MaxBlobSize:       int64(cfg.Cache.MaxBlobSize),
		Logger:            log,
		Version:           buildVersion(),
	})
	if err != nil {
		ln.Close()
		return err
	}

	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSNextProto:      http1Only(),
	}
	log.Info("breakwater serving", "version", buildVersion(), "listen", ln.Addr().String(),
		"cache", store.Root(), "upstreams", names, "default_upstream", cfg.DefaultUpstream,
		"tag_ttl", cfg.Cache.TagTTL.D().String(), "traces_exported", tel.exported)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = hs.Shutdown(shutdownCtx)
	srv.Close()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
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
