// Package faultproxy is a stand-in for an upstream registry that misbehaves
// on demand: an HTTP reverse proxy on a loopback port in front of a real
// registry, whose behaviour (its mode) is switched at run time, in process
// with Set or over HTTP with the control API of ControlHandler. The e2e
// test runs it as a process (test/e2e/faultproxy), the benchmark harness
// in process (loadtest/bench, step recovery). Standard library only.
//
// Modes:
//
//	pass    forward every request to the upstream
//	429     answer every request 429 Too Many Requests, Retry-After: 1,
//	        OCI error body TOOMANYREQUESTS
//	503     answer every request 503 Service Unavailable, OCI error body
//	        UNAVAILABLE (no Retry-After)
//	404     answer manifest requests 404 MANIFEST_UNKNOWN, forward the rest
//	refuse  close the listener and every open connection, so connections
//	        are refused; any other mode listens again on the same address
//	hang    accept every request and answer nothing: hold it until the
//	        client gives up (a timeout, as from an upstream that stopped
//	        answering) or the mode changes, when the new mode answers it
//
// A Setting adds to a mode: another Retry-After (429 and 503), a duration
// after which the proxy returns to pass by itself, and Docker Hub's
// rate-limit headers (pass and 429).
//
// Every request handled is logged (Info, message "request", attributes
// method, path, query, mode, status, in that order) and counted under the
// mode it was answered in; every switch is logged (message "mode").
package faultproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with requests.
type Mode string

// The modes.
const (
	Pass             Mode = "pass"
	TooManyRequests  Mode = "429"
	Unavailable      Mode = "503"
	ManifestNotFound Mode = "404"
	Refuse           Mode = "refuse"
	Hang             Mode = "hang"
)

// Modes lists every mode.
func Modes() []Mode {
	return []Mode{Pass, TooManyRequests, Unavailable, ManifestNotFound, Refuse, Hang}
}

func (m Mode) valid() bool {
	switch m {
	case Pass, TooManyRequests, Unavailable, ManifestNotFound, Refuse, Hang:
		return true
	}
	return false
}

// RetryAfter is the Retry-After header a 429 or 503 answer carries.
type RetryAfter struct {
	// Seconds is the delay sent, or with Date how far ahead the date is.
	Seconds int
	// Date sends an HTTP date Seconds ahead of each answer instead of a
	// number of seconds.
	Date bool
}

func (ra RetryAfter) String() string {
	if ra.Date {
		return "date:" + strconv.Itoa(ra.Seconds)
	}
	return strconv.Itoa(ra.Seconds)
}

// header is the header value for an answer sent at now.
func (ra RetryAfter) header(now time.Time) string {
	if ra.Date {
		return now.Add(time.Duration(ra.Seconds) * time.Second).UTC().Format(http.TimeFormat)
	}
	return strconv.Itoa(ra.Seconds)
}

// Setting is a mode with its parameters. The zero value is pass.
type Setting struct {
	Mode Mode
	// RetryAfter replaces the mode's Retry-After (429: 1 s, 503: none).
	// 429 and 503 only.
	RetryAfter *RetryAfter
	// For, when positive, is how long the mode holds: then the proxy
	// returns to pass by itself. Not with pass.
	For time.Duration
	// RateLimitRemaining, when set, adds Docker Hub's rate-limit headers
	// to every answer: RateLimit-Limit: 100;w=21600 and
	// RateLimit-Remaining: N;w=21600. Pass and 429 only.
	RateLimitRemaining *int
}

func (s Setting) mode() Mode {
	if s.Mode == "" {
		return Pass
	}
	return s.Mode
}

// Validate reports a setting the proxy cannot carry out, or a parameter
// that would have no effect in its mode (rather than ignore it silently).
func (s Setting) Validate() error {
	m := s.mode()
	var errs []error
	if !m.valid() {
		errs = append(errs, fmt.Errorf("unknown mode %q (want pass, 429, 503, 404, refuse or hang)", s.Mode))
	}
	if ra := s.RetryAfter; ra != nil {
		if m != TooManyRequests && m != Unavailable {
			errs = append(errs, fmt.Errorf("retry_after: only for 429 and 503, not %s", m))
		}
		if ra.Seconds < 0 {
			errs = append(errs, fmt.Errorf("retry_after: %s: must not be negative", ra))
		}
	}
	if s.For < 0 {
		errs = append(errs, fmt.Errorf("for: %s: must be positive", s.For))
	}
	if s.For > 0 && m == Pass {
		errs = append(errs, errors.New("for: pass is where the proxy returns to; give another mode"))
	}
	if n := s.RateLimitRemaining; n != nil {
		if m != Pass && m != TooManyRequests {
			errs = append(errs, fmt.Errorf("ratelimit_remaining: only for pass and 429, not %s", m))
		}
		if *n < 0 {
			errs = append(errs, fmt.Errorf("ratelimit_remaining: %d: must not be negative", *n))
		}
	}
	return errors.Join(errs...)
}

// String is the setting in the control API's syntax, e.g.
// "set=429&retry_after=15&for=2s".
func (s Setting) String() string {
	str := "set=" + string(s.mode())
	if s.RetryAfter != nil {
		str += "&retry_after=" + s.RetryAfter.String()
	}
	if s.For > 0 {
		str += "&for=" + s.For.String()
	}
	if s.RateLimitRemaining != nil {
		str += "&ratelimit_remaining=" + strconv.Itoa(*s.RateLimitRemaining)
	}
	return str
}

// ParseSetting reads a setting from the control API's parameters:
//
//	set=MODE                 pass, 429, 503, 404, refuse or hang (required)
//	retry_after=N            429, 503: Retry-After: N
//	retry_after=date:N       429, 503: Retry-After: an HTTP date N s ahead
//	for=DURATION             a Go duration: return to pass after it
//	ratelimit_remaining=N    pass, 429: RateLimit-Limit and -Remaining
//
// Any other parameter is an error, so that a misspelt one is not ignored.
func ParseSetting(q url.Values) (Setting, error) {
	var s Setting
	var errs []error
	for k, vs := range q {
		if len(vs) != 1 {
			errs = append(errs, fmt.Errorf("%s: given %d times", k, len(vs)))
			continue
		}
		v := vs[0]
		switch k {
		case "set":
			s.Mode = Mode(v)
			if v == "" {
				errs = append(errs, errors.New("set: empty"))
			}
		case "retry_after":
			ra := RetryAfter{}
			num := v
			if rest, ok := strings.CutPrefix(v, "date:"); ok {
				ra.Date, num = true, rest
			}
			n, err := strconv.Atoi(num)
			if err != nil {
				errs = append(errs, fmt.Errorf("retry_after: %q: want N or date:N (seconds)", v))
				continue
			}
			ra.Seconds = n
			s.RetryAfter = &ra
		case "for":
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("for: %q: want a Go duration such as 1.5s", v))
				continue
			}
			if d <= 0 {
				errs = append(errs, fmt.Errorf("for: %s: must be positive", d))
				continue
			}
			s.For = d
		case "ratelimit_remaining":
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("ratelimit_remaining: %q: want a number", v))
				continue
			}
			s.RateLimitRemaining = &n
		default:
			errs = append(errs, fmt.Errorf("unknown parameter %q (want set, retry_after, for, ratelimit_remaining)", k))
		}
	}
	if _, ok := q["set"]; !ok {
		errs = append(errs, errors.New("set: missing"))
	}
	if err := errors.Join(errs...); err != nil {
		return Setting{}, err
	}
	if err := s.Validate(); err != nil {
		return Setting{}, err
	}
	return s, nil
}

// Config configures a Proxy.
type Config struct {
	// Upstream is the registry's base URL, e.g. http://127.0.0.1:5000.
	Upstream string
	// Addr is the address to listen on. A port of 0 picks one, which is
	// then kept: after refuse the proxy listens on the same port again.
	Addr string
	// Initial is the setting to start in (zero: pass).
	Initial Setting
	// Logger gets a line for every request and every switch (Info) and
	// for requests the upstream could not be reached for or whose answer
	// was cut (Warn). Nil discards them.
	Logger *slog.Logger
}

// Proxy is a running fault proxy. Its methods are safe for concurrent use.
type Proxy struct {
	rp  *httputil.ReverseProxy
	log *slog.Logger
	// life ends with Close: it bounds the timed returns to pass.
	life    context.Context
	endLife context.CancelFunc

	// cur is what requests are answered with; serve reads it without
	// waiting for a switch under way.
	cur atomic.Pointer[Setting]
	// switched is closed by the switch after cur's setting took effect
	// (and replaced by a new one): what a request held in hang waits for.
	switched atomic.Pointer[chan struct{}]
	// counts has an entry for every mode; the map is never written after
	// Start.
	counts map[Mode]*atomic.Int64

	mu     sync.Mutex // serialises switches; guards the fields below
	addr   string
	srv    *http.Server // nil while refusing
	since  time.Time
	gen    uint64      // bumped by every switch, so a stale timer does nothing
	revert *time.Timer // the pending return to pass of a setting with For
	closed bool
}

// manifestPath is an OCI manifest route: /v2/<name>/manifests/<reference>.
var manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)

// Start starts a proxy in front of cfg.Upstream in cfg.Initial; it returns
// once that setting is in effect (listening, unless it is refuse).
func Start(ctx context.Context, cfg Config) (*Proxy, error) {
	up, err := url.Parse(cfg.Upstream)
	if err != nil || up.Scheme == "" || up.Host == "" {
		return nil, fmt.Errorf("faultproxy: upstream %q: want a URL such as http://127.0.0.1:5000", cfg.Upstream)
	}
	if err := cfg.Initial.Validate(); err != nil {
		return nil, fmt.Errorf("faultproxy: initial setting: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{log: log, addr: cfg.Addr, counts: map[Mode]*atomic.Int64{}}
	if p.addr == "" {
		p.addr = "127.0.0.1:0"
	}
	for _, m := range Modes() {
		p.counts[m] = new(atomic.Int64)
	}
	p.life, p.endLife = context.WithCancel(context.Background())
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(up)
			r.Out.Host = up.Host
		},
		// Blobs stream through as they arrive, as from the registry.
		FlushInterval: -1,
		// What ReverseProxy reports itself (a body cut mid-copy) goes to
		// the Logger too, not to the log package's default.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.log.LogAttrs(r.Context(), slog.LevelWarn, "proxy error",
				slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	// Refusing is where a proxy that does not listen yet is.
	p.cur.Store(&Setting{Mode: Refuse})
	first := make(chan struct{})
	p.switched.Store(&first)
	if err := p.Set(ctx, cfg.Initial); err != nil {
		p.endLife()
		return nil, err
	}
	return p, nil
}

// Addr is the address the proxy listens on (host:port).
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// URL is the proxy's base URL, http://host:port.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Setting is the setting in effect.
func (p *Proxy) Setting() Setting { return *p.cur.Load() }

// Set switches to s; it returns once s is in effect: the listener closed
// (refuse) or accepting (any other mode). A pending return to pass of an
// earlier setting is cancelled.
func (p *Proxy) Set(ctx context.Context, s Setting) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("faultproxy: %w", err)
	}
	s.Mode = s.mode()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("faultproxy: closed")
	}
	return p.switchLocked(ctx, s, nil)
}

// expired is For's timer: return to pass, unless another switch came first.
func (p *Proxy) expired(gen uint64, from Setting) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.gen != gen {
		return
	}
	if err := p.switchLocked(p.life, Setting{Mode: Pass}, &from); err != nil {
		p.log.LogAttrs(p.life, slog.LevelWarn, "mode: return to pass failed",
			slog.String("from", string(from.Mode)), slog.String("error", err.Error()))
	}
}

// switchLocked carries out a switch with p.mu held. from is the setting
// whose For ran out, nil for a switch asked for.
func (p *Proxy) switchLocked(ctx context.Context, s Setting, from *Setting) error {
	if p.revert != nil {
		p.revert.Stop()
		p.revert = nil
	}
	p.gen++
	var ln net.Listener // to serve on once s is in effect
	switch {
	case s.Mode == Refuse && p.srv != nil:
		// Close the listener and every connection, idle or busy, so that
		// a client cannot reuse a kept-alive connection either.
		_ = p.srv.Close()
		p.srv = nil
	case s.Mode != Refuse && p.srv == nil:
		var err error
		if ln, err = p.listen(ctx); err != nil {
			return err
		}
		p.addr = ln.Addr().String()
	}
	attrs := []slog.Attr{slog.String("mode", string(s.Mode)), slog.String("listen", p.addr)}
	if s.RetryAfter != nil {
		attrs = append(attrs, slog.String("retry_after", s.RetryAfter.String()))
	}
	if s.For > 0 {
		attrs = append(attrs, slog.String("for", s.For.String()))
	}
	if s.RateLimitRemaining != nil {
		attrs = append(attrs, slog.Int("ratelimit_remaining", *s.RateLimitRemaining))
	}
	if from != nil {
		attrs = append(attrs, slog.String("from", string(from.Mode)), slog.String("after", from.For.String()))
	}
	// Logged before it takes effect, so that the log has the switch before
	// any request answered in the new mode.
	p.log.LogAttrs(ctx, slog.LevelInfo, "mode", attrs...)
	p.cur.Store(&s)
	next := make(chan struct{})
	close(*p.switched.Swap(&next))
	p.since = time.Now()
	if ln != nil {
		// Connections wait in the listener's backlog until now, so none
		// is answered in the setting before.
		srv := &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 30 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		p.srv = srv
	}
	if s.For > 0 {
		gen := p.gen
		p.revert = time.AfterFunc(s.For, func() { p.expired(gen, s) })
	}
	return nil
}

// listen listens on p.addr. The port was ours a moment ago when coming back
// from refuse: retry briefly in case the kernel has not let go of it yet.
func (p *Proxy) listen(ctx context.Context) (net.Listener, error) {
	var lc net.ListenConfig
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = lc.Listen(ctx, "tcp", p.addr); err == nil {
			return ln, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("faultproxy: listen %s: %w", p.addr, errors.Join(ctx.Err(), err))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("faultproxy: listen %s: %w", p.addr, err)
}

// Stats is what the proxy has handled since it started.
type Stats struct {
	// Mode is the mode in effect.
	Mode Mode `json:"mode"`
	// Since is when it took effect.
	Since time.Time `json:"since"`
	// Requests counts the requests handled in each mode (every mode has
	// an entry). A request that raced a switch to refuse on a connection
	// about to be closed counts under refuse.
	Requests map[Mode]int64 `json:"requests"`
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	st := Stats{Mode: p.cur.Load().Mode, Since: p.since, Requests: map[Mode]int64{}}
	p.mu.Unlock()
	for m, c := range p.counts {
		st.Requests[m] = c.Load()
	}
	return st
}

// Close stops the proxy: the listener and every connection are closed and a
// pending return to pass is cancelled.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.endLife()
	if p.revert != nil {
		p.revert.Stop()
	}
	var err error
	if p.srv != nil {
		err = p.srv.Close()
		p.srv = nil
	}
	return err
}

// serve answers one request according to the setting in effect.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	s := p.hold(r)
	if s == nil {
		// Held in hang until the client gave up or the proxy closed.
		p.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("query", r.URL.RawQuery),
			slog.String("mode", string(Hang)), slog.Int("status", 0))
		return
	}
	// Counted before the answer, so that a client that has its answer can
	// rely on the count.
	p.counts[s.Mode].Add(1)
	rec := &recorder{ResponseWriter: w}
	if n := s.RateLimitRemaining; n != nil {
		// Docker Hub's anonymous quota: 100 pulls per 6 hours.
		rec.extra = http.Header{}
		rec.extra.Set("RateLimit-Limit", "100;w=21600")
		rec.extra.Set("RateLimit-Remaining", strconv.Itoa(*n)+";w=21600")
	}
	switch {
	case s.Mode == TooManyRequests:
		ra := RetryAfter{Seconds: 1}
		if s.RetryAfter != nil {
			ra = *s.RetryAfter
		}
		rec.Header().Set("Retry-After", ra.header(time.Now()))
		ociError(rec, r, http.StatusTooManyRequests, "TOOMANYREQUESTS", "fault proxy: too many requests")
	case s.Mode == Unavailable:
		if s.RetryAfter != nil {
			rec.Header().Set("Retry-After", s.RetryAfter.header(time.Now()))
		}
		ociError(rec, r, http.StatusServiceUnavailable, "UNAVAILABLE", "fault proxy: service unavailable")
	case s.Mode == ManifestNotFound && manifestPath.MatchString(r.URL.Path):
		ociError(rec, r, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
	default:
		// pass, the rest of 404, and a request that raced a switch to
		// refuse on a connection about to be closed.
		p.rp.ServeHTTP(rec, r)
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("query", r.URL.RawQuery),
		slog.String("mode", string(s.Mode)), slog.Int("status", status))
}

// hold returns the setting to answer r in, after holding r for as long as
// the mode is hang; nil when r's client went away or the proxy closed first.
// A request held is counted under hang once (the count shows that requests
// arrive), and again under the mode that answers it, if one does.
func (p *Proxy) hold(r *http.Request) *Setting {
	counted := false
	for {
		// The channel before the setting: a switch stores the setting
		// before it closes the channel, so no switch is missed.
		sw := *p.switched.Load()
		s := p.cur.Load()
		if s.Mode != Hang {
			return s
		}
		if !counted {
			p.counts[Hang].Add(1)
			counted = true
		}
		select {
		case <-sw:
			if r.Context().Err() != nil {
				return nil
			}
		case <-r.Context().Done():
			return nil
		case <-p.life.Done():
			return nil
		}
	}
}

func ociError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// recorder notes the status and adds extra headers to the answer, whether
// the proxy made it or the upstream did; Unwrap lets ReverseProxy flush
// through it.
type recorder struct {
	http.ResponseWriter
	extra  http.Header
	status int
}

func (w *recorder) WriteHeader(code int) {
	// An informational answer (103 Early Hints) is not the status.
	if w.status == 0 && code >= 200 {
		w.status = code
		for k, vs := range w.extra {
			w.Header()[k] = vs
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
