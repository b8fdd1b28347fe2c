// Package upstream is Breakwater's client towards one registry: the pull
// API's verbs (Manifest, HeadManifest, Blob, HeadBlob, Tags, Referrers),
// the token handshake, and what keeps a failing registry from failing
// Breakwater's clients longer than it fails itself:
//
//   - a retry loop per request, with full-jitter backoff, until the
//     request's deadline; a recovery seen by any request wakes every
//     request waiting out a backoff;
//   - a circuit breaker that counts requests (after their retries) over a
//     window, opens only when the upstream is down, probes after a short
//     open time that grows while probes fail, and closes at the first
//     answer;
//   - a rate-limit gate: after a 429 nothing is sent before the time the
//     upstream gave, and requests are held if that fits their deadline;
//   - a cap on requests in flight.
//
// Every answer that is not a success comes back as an *Error carrying the
// status, the cause in the standard spelling and the retry hint; turning it
// into an answer for a client is the caller's business. The package knows
// nothing of the proxy that uses it.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

// Config describes one upstream registry.
type Config struct {
	// Name is the registry as clients name it ("docker.io").
	Name string
	// URL is where it is reached: scheme://host[:port], no path.
	URL string
	// Auth authenticates towards this upstream only; nil is anonymous.
	Auth authn.Authenticator
	// Policy governs retries, the breaker and concurrency; fields left
	// zero take DefaultPolicy's.
	Policy Policy
	// UserAgent is sent with every request.
	UserAgent string
	// Logger receives breaker and rate-limit transitions; nil discards.
	Logger *slog.Logger
	// Telemetry records metrics and spans; nil records nothing.
	Telemetry *Telemetry
	// Clock and Rand are the retry loop's time and jitter; nil means the
	// real ones. Tests set them.
	Clock Clock
	Rand  func() float64
	// Transport carries the requests instead of a connection pool of the
	// client's own: a Breakwater asking itself uses one that goes
	// straight to its handler.
	Transport http.RoundTripper
	// OnHold, when set, is told whenever the client starts holding back
	// on its own findings: the upstream's answer set a rate limit (a 429,
	// or no pulls left), or the circuit opened or closed. Other clients
	// of the same upstream (a fleet's replicas) then hold with it through
	// Client.Hold, so that the fleet obeys a 429 together and meets a down
	// upstream with one probe, not one per replica. It is called without
	// locks held and must not block.
	OnHold func(Hold)
	// OnRemaining, when set, is told whenever the upstream's answer says
	// a new count of pulls left (Docker Hub's ratelimit-remaining), for
	// other clients of the same upstream to hear through HearRateLimit.
	// It is called without locks held and must not block.
	OnRemaining func(RateLimitCount)
}

// Client is the client towards one registry. It is safe for concurrent
// use; all requests share its breaker, rate-limit gate and connection pool.
type Client struct {
	name      string
	base      *url.URL
	registry  name.Registry
	auth      authn.Authenticator
	dockerHub bool
	userAgent string
	policy    Policy
	log       *slog.Logger
	clock     Clock
	rnd       func() float64
	tel       *Telemetry
	gate      *gate
	limits    rateLimits
	// slots caps requests in flight; nil means no cap.
	slots chan struct{}

	// inner carries every request; connections are pooled across
	// repositories. The handshake's result is scoped to one repository,
	// so an authenticated transport is kept per repository.
	inner      http.RoundTripper
	transports *lru.Cache[string, http.RoundTripper]
	handshakes singleflight.Group
}

// dockerHubNames are the names Docker Hub goes by.
var dockerHubNames = [...]string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// DockerHubNames returns the names Docker Hub goes by; any of them,
// configured or named by a client, means the same upstream.
func DockerHubNames() []string { return dockerHubNames[:] }

// IsDockerHub reports whether host is one of Docker Hub's names.
func IsDockerHub(host string) bool {
	for _, n := range dockerHubNames {
		if host == n {
			return true
		}
	}
	return false
}

// maxTransports bounds the per-repository handshake cache; an evicted
// repository handshakes again.
const maxTransports = 4096

// New builds a Client. It does not contact the upstream.
func New(c Config) (*Client, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.Name, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("upstream %s: URL %q: want http(s)://host[:port]", c.Name, c.URL)
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.Name, err)
	}
	cache, err := lru.New[string, http.RoundTripper](maxTransports)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.Name, err)
	}
	cl := &Client{
		name:       c.Name,
		base:       u,
		registry:   reg,
		auth:       c.Auth,
		dockerHub:  IsDockerHub(c.Name),
		userAgent:  c.UserAgent,
		policy:     c.Policy.withDefaults(),
		log:        c.Logger,
		clock:      c.Clock,
		rnd:        c.Rand,
		tel:        c.Telemetry,
		transports: cache,
	}
	if cl.auth == nil {
		cl.auth = authn.Anonymous
	}
	if cl.log == nil {
		cl.log = slog.New(slog.DiscardHandler)
	}
	if cl.clock == nil {
		cl.clock = realClock{}
	}
	if cl.rnd == nil {
		cl.rnd = jitter
	}
	if cl.userAgent == "" {
		cl.userAgent = "breakwater"
	}
	cl.inner = c.Transport
	if cl.inner == nil {
		cl.inner = newBaseTransport(cl.policy.Retry.AttemptTimeout)
	}
	cl.gate = newGate(c.Name, cl.policy, cl.clock, cl.rnd, cl.log)
	cl.gate.onHold = c.OnHold
	cl.limits.remaining.Store(-1)
	cl.limits.onRemaining = c.OnRemaining
	if n := cl.policy.MaxConcurrent; n > 0 {
		cl.slots = make(chan struct{}, n)
	}
	cl.tel.register(cl)
	return cl, nil
}

func newBaseTransport(headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   min(headerTimeout, 10*time.Second),
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(headerTimeout, 10*time.Second),
		ResponseHeaderTimeout: headerTimeout,
		ExpectContinueTimeout: time.Second,
		// Manifest bytes must reach clients exactly as the upstream sent
		// them; transparent gzip would change them.
		DisableCompression: true,
	}
}

// Name is the registry as clients name it.
func (c *Client) Name() string { return c.name }

// URL is where the registry is reached.
func (c *Client) URL() string { return c.base.String() }

// DockerHub reports whether this upstream is Docker Hub, whose one-element
// repository names mean library/NAME.
func (c *Client) DockerHub() bool { return c.dockerHub }

// Policy is the policy in force, defaults filled in.
func (c *Client) Policy() Policy { return c.policy }

// Health reports the breaker and the rate limit as they stand.
func (c *Client) Health() Health { return c.gate.health() }

// CallOption adjusts one call.
type CallOption func(*callOptions)

type callOptions struct {
	onDelay func(*Error)
}

// OnDelay calls f, once, the first time the call cannot be answered at
// once: a try failed and will be retried, or the circuit or a rate limit
// holds it back. f gets the failure the call would return if it gave up
// now. A caller with something to fall back on (a cached tag) answers its
// client with that while the call goes on.
func OnDelay(f func(*Error)) CallOption {
	return func(o *callOptions) { o.onDelay = f }
}

// Manifest GETs a manifest by tag or digest, asking for the media types in
// accept.
func (c *Client) Manifest(ctx context.Context, repo, ref string, accept []string, opts ...CallOption) (*http.Response, error) {
	return c.do(ctx, request{method: http.MethodGet, repo: repo, path: "manifests/" + ref, header: acceptHeader(accept)}, opts)
}

// HeadManifest asks where a tag points, or whether a manifest exists,
// without its body. Docker Hub does not count a HEAD against the pull rate
// limit.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string, accept []string, opts ...CallOption) (*http.Response, error) {
	return c.do(ctx, request{method: http.MethodHead, repo: repo, path: "manifests/" + ref, header: acceptHeader(accept)}, opts)
}

// Blob GETs a blob, or the part of it rangeHeader asks for ("bytes=N-");
// the answer is 200 or, for a range, 206.
func (c *Client) Blob(ctx context.Context, repo string, dgst digest.Digest, rangeHeader string, opts ...CallOption) (*http.Response, error) {
	r := request{method: http.MethodGet, repo: repo, path: "blobs/" + dgst.String()}
	if rangeHeader != "" {
		r.header = http.Header{"Range": {rangeHeader}}
	}
	return c.do(ctx, r, opts)
}

// HeadBlob asks whether the repository has a blob, and its size.
func (c *Client) HeadBlob(ctx context.Context, repo string, dgst digest.Digest, opts ...CallOption) (*http.Response, error) {
	return c.do(ctx, request{method: http.MethodHead, repo: repo, path: "blobs/" + dgst.String()}, opts)
}

// Tags GETs a page of the repository's tag list: at most n tags (n < 0:
// as many as the upstream gives) after last (empty: from the start).
func (c *Client) Tags(ctx context.Context, repo string, n int, last string, opts ...CallOption) (*http.Response, error) {
	q := url.Values{}
	if n >= 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	return c.do(ctx, request{method: http.MethodGet, repo: repo, path: "tags/list", query: q}, opts)
}

// Referrers GETs the manifests that refer to dgst, filtered by
// artifactType when it is not empty.
func (c *Client) Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string, accept []string, opts ...CallOption) (*http.Response, error) {
	q := url.Values{}
	if artifactType != "" {
		q.Set("artifactType", artifactType)
	}
	return c.do(ctx, request{method: http.MethodGet, repo: repo, path: "referrers/" + dgst.String(), query: q, header: acceptHeader(accept)}, opts)
}

func acceptHeader(accept []string) http.Header {
	if len(accept) == 0 {
		return nil
	}
	return http.Header{"Accept": {strings.Join(accept, ", ")}}
}

// request is one call's request, sent again on each try.
type request struct {
	method string
	repo   string
	path   string // after /v2/<repo>/
	query  url.Values
	header http.Header
}

func (r request) urlPath() string { return "/v2/" + r.repo + "/" + r.path }

// do sends r until it gets an answer that is not transient, the deadline
// leaves no room for another try, or ctx ends. Success (200, or 206 for a
// range) comes back as the response, for the caller to read and close;
// anything else as an *Error, the body read and closed; ctx's end as
// ctx.Err().
func (c *Client) do(ctx context.Context, r request, opts []CallOption) (*http.Response, error) {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	now := c.clock.Now()
	deadline := now.Add(c.policy.Retry.Deadline)
	if d, ok := ctx.Deadline(); ok {
		// The caller's own budget, in the loop's time.
		if own := now.Add(time.Until(d)); own.Before(deadline) {
			deadline = own
		}
	}
	delayed := false
	onWait := func(e *Error) {
		if delayed || o.onDelay == nil {
			return
		}
		delayed = true
		o.onDelay(r.describe(e))
	}
	// tries counts the tries sent; last and lastErr are the last one's.
	tries := 0
	last := answered
	var lastErr *Error
	// giveUp ends a request that did not get an answer: it counts once
	// for the breaker, however many tries it made, and is logged.
	giveUp := func(e *Error) (*http.Response, error) {
		level := slog.LevelDebug // refused untried: the gate logged why
		if tries > 0 {
			c.gate.finish(last)
			level = slog.LevelWarn
		}
		c.log.Log(ctx, level, "upstream request failed", "upstream", c.name, "method", r.method, "path", r.urlPath(),
			"tries", tries, "cause", e.Cause, "retry_after", e.RetryAfter.String())
		return nil, e
	}
	var w waited
	retriedStale := false
	for {
		t, refusal, err := c.gate.admit(ctx, deadline, true, &w, onWait)
		if err != nil {
			return nil, err
		}
		if refusal != nil {
			return giveUp(r.describe(refusal))
		}
		tries++
		// Whatever changes from now on — another request finding the
		// upstream back, above all — ends this request's backoff early.
		woken := c.gate.changes()
		resp, tryErr := c.traced(ctx, r, tries, deadline)
		if errors.Is(tryErr, ErrBusy) {
			// Never sent: not a try, and nothing heard of the upstream.
			tries--
			c.gate.release(t)
			if lastErr != nil {
				return giveUp(lastErr)
			}
			return giveUp(r.describe(&Error{Upstream: c.name, Err: ErrBusy, Transient: true, RetryAfter: time.Second,
				Cause: fmt.Sprintf("busy: %s from this mirror in flight (max_concurrent) until the deadline", requests(cap(c.slots)))}))
		}
		if ctx.Err() != nil {
			// The caller went away; that says nothing about the upstream.
			if resp != nil {
				resp.Body.Close()
			}
			c.gate.release(t)
			return nil, ctx.Err()
		}
		if errors.Is(tryErr, errDeadline) && lastErr != nil {
			// The budget ran out during a try: the cause the caller must
			// hear is what the upstream did before, not our own clock.
			c.gate.release(t)
			return giveUp(lastErr)
		}
		var cut *deadlineError
		if errors.As(tryErr, &cut) && (cut.slotWait || w.held) {
			// The budget went to waiting — for a slot, a probe's verdict,
			// a rate limit — and the one try left was cut by the deadline
			// before its attempt timeout, with less time than a try that
			// waited for nothing gets: a slow upstream is not a down one,
			// so this is no verdict for the breaker. A try that waited
			// for nothing had all the time the policy gives and is judged
			// below.
			c.gate.release(t)
			last, lastErr = unheard, r.describe(&Error{Upstream: c.name, Err: tryErr, Transient: true, RetryAfter: time.Second,
				Cause: fmt.Sprintf("slow: no answer in the %s this request had left before its deadline", cut.left.Round(time.Millisecond))})
			return giveUp(lastErr)
		}
		outcome, e, header := c.judge(r, resp, tryErr)
		hold, holdCause := c.limitHold(outcome, header)
		cause := holdCause
		if e != nil {
			cause = e.Cause
		}
		stale := c.gate.observe(t, outcome, cause, hold)
		c.limits.note(c, header)
		last, lastErr = outcome, e
		switch {
		case !outcome.transient():
			c.gate.finish(answered)
			if e != nil {
				return nil, e
			}
			return resp, nil
		case t.circuit && outcome == down:
			// This request was the probe and heard the verdict itself.
			return giveUp(r.describe(c.gate.circuitRefusal()))
		case c.policy.Retry.Attempts > 0 && tries >= c.policy.Retry.Attempts:
			return giveUp(e)
		case outcome == rateLimited:
			// Not retried around: the gate holds the next try until the
			// time the upstream gave, or refuses it if that is too late.
			continue
		case stale && !retriedStale:
			// The upstream answered another request while this try was
			// out: its failure is older news, and nothing would end a
			// backoff started now. Once, so that a flapping upstream
			// still sees this request back off.
			retriedStale = true
			continue
		}
		wait := c.policy.Retry.backoff(tries, e.RetryAfter, c.rnd)
		if !c.clock.Now().Add(wait).Before(deadline) {
			return giveUp(e)
		}
		onWait(e)
		c.tel.retried(ctx, c.name)
		c.log.Debug("retrying upstream request", "upstream", c.name, "method", r.method, "path", r.urlPath(),
			"try", tries, "cause", e.Cause, "wait", wait.String())
		select {
		case <-c.clock.After(wait):
		case <-woken:
			// The upstream came back, or a hold changed: go now, through
			// the gate.
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if outcome == down {
			ok, err := c.gate.pace(ctx, deadline)
			if err != nil {
				return nil, err
			}
			if !ok {
				return giveUp(e)
			}
		}
	}
}

// describe fills in which request an error is about.
func (r request) describe(e *Error) *Error {
	e.Method, e.Path = r.method, r.urlPath()
	return e
}

// judge says what one try's result tells of the upstream, and turns a
// result that is not a success into an *Error (reading and closing the
// body). header is the answer's header, nil when there was none.
func (c *Client) judge(r request, resp *http.Response, err error) (outcome, *Error, http.Header) {
	now := c.clock.Now()
	if err != nil {
		e := &Error{Upstream: c.name, Err: err}
		var he *handshakeError
		if s := handshakeStatus(err); s != 0 {
			// The ping or the token exchange got an HTTP answer.
			var h http.Header
			if errors.As(err, &he) {
				h = he.header
			}
			e.Status, e.StatusLine, e.Cause = s, strconv.Itoa(s)+" "+statusText(s), statusCause(s)
			e.RetryAfter = min(retryAfter(h, now), c.policy.Retry.MaxRetryAfter)
			o := classifyStatus(s)
			e.Transient = o.transient()
			if !e.Transient {
				e.Message = OneLine(err.Error(), 300)
			}
			return o, r.describe(e), h
		}
		e.Cause, e.Transient = "unreachable: "+networkCause(err), true
		return down, r.describe(e), nil
	}
	ok := resp.StatusCode == http.StatusOK || (resp.StatusCode == http.StatusPartialContent && r.header.Get("Range") != "")
	if ok {
		return answered, nil, resp.Header
	}
	o := classifyStatus(resp.StatusCode)
	e := &Error{
		Upstream:   c.name,
		Status:     resp.StatusCode,
		StatusLine: resp.Status,
		Cause:      statusCause(resp.StatusCode),
		Transient:  o.transient(),
		RetryAfter: min(retryAfter(resp.Header, now), c.policy.Retry.MaxRetryAfter),
	}
	if r.method != http.MethodHead {
		e.Code, e.Message = readErrorBody(resp.Body)
	}
	drain(resp.Body)
	return o, r.describe(e), resp.Header
}

// limitHold says how long the upstream asked to be left alone: a 429's
// Retry-After, or Docker Hub's window once it says no pulls are left
// (on a 429 or on the success that spent the last one), capped at
// MaxRetryAfter. 0 means it did not say.
func (c *Client) limitHold(o outcome, h http.Header) (time.Duration, string) {
	capAt := c.policy.Retry.MaxRetryAfter
	if o == rateLimited {
		if ra := retryAfter(h, c.clock.Now()); ra > 0 {
			return min(ra, capAt), statusCause(http.StatusTooManyRequests)
		}
	}
	if left, w, ok := dockerHubRemaining(h); ok && left == 0 && w > 0 {
		return min(w, capAt), "has no pulls left (ratelimit-remaining: 0)"
	}
	return 0, statusCause(http.StatusTooManyRequests)
}

// try sends one request, holding one of the upstream's slots until the
// response body is closed, and gives up on the headers at the deadline.
func (c *Client) try(ctx context.Context, r request, deadline time.Time) (*http.Response, error) {
	slotWait, err := c.takeSlot(ctx, deadline)
	if err != nil {
		return nil, err
	}
	tctx, cancel := context.WithCancel(ctx)
	// Only the wait for headers is bounded here: a blob's body may take
	// far longer than a request's budget.
	left := deadline.Sub(c.clock.Now())
	timer := time.AfterFunc(left, cancel)
	release := func() {
		cancel()
		if c.slots != nil {
			<-c.slots
		}
	}
	resp, err := c.send(tctx, r)
	if !timer.Stop() {
		// The deadline came first: the try's context is, or is about to
		// be, cancelled, so even an answer that made it cannot be read.
		if resp != nil {
			resp.Body.Close()
		}
		release()
		return nil, fmt.Errorf("%s %s%s: %w", r.method, c.name, r.urlPath(), &deadlineError{left: left, slotWait: slotWait})
	}
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	rt, err := c.transportFor(ctx, r.repo)
	if err != nil {
		return nil, err
	}
	ref := *c.base
	ref.Path = r.urlPath()
	ref.RawQuery = r.query.Encode()
	req, err := http.NewRequestWithContext(ctx, r.method, ref.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, ref.Path, err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", r.method, c.name, ref.Path, err)
	}
	return resp, nil
}

// transportFor returns an authenticated transport for repo, performing the
// handshake once however many requests arrive together.
func (c *Client) transportFor(ctx context.Context, repo string) (http.RoundTripper, error) {
	if rt, ok := c.transports.Get(repo); ok {
		return rt, nil
	}
	done := c.handshakes.DoChan(repo, func() (any, error) {
		if rt, ok := c.transports.Get(repo); ok {
			return rt, nil
		}
		scopes := []string{"repository:" + repo + ":pull"}
		hints := &lastHeader{inner: c.inner}
		inner := transport.NewUserAgent(hints, c.userAgent)
		// The handshake is shared by every waiting request, so it must not
		// die with the one that happened to start it.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*c.policy.Retry.AttemptTimeout)
		defer cancel()
		rt, err := transport.NewWithContext(hctx, c.registry, c.auth, inner, scopes)
		if err != nil {
			return nil, &handshakeError{err: err, header: hints.last()}
		}
		c.transports.Add(repo, rt)
		return rt, nil
	})
	select {
	case r := <-done:
		if r.Err != nil {
			return nil, fmt.Errorf("handshake with %s for %s: %w", c.name, repo, r.Err)
		}
		return r.Val.(http.RoundTripper), nil
	case <-ctx.Done():
		// The caller's deadline holds during the handshake too; the
		// handshake goes on for the others and for the next request.
		return nil, fmt.Errorf("handshake with %s for %s: %w", c.name, repo, ctx.Err())
	}
}

// takeSlot waits for one of the max_concurrent slots until the request's
// deadline. A slot that comes later would leave the try no time, and the
// request would fail as an i/o timeout of an upstream that is fine: the
// wait ends with ErrBusy instead, which says the truth and is no verdict
// on the upstream.
// It reports whether it had to wait.
func (c *Client) takeSlot(ctx context.Context, deadline time.Time) (waited bool, err error) {
	if c.slots == nil {
		return false, nil
	}
	// A free slot, the usual case, is taken without a timer.
	select {
	case c.slots <- struct{}{}:
		return false, nil
	default:
	}
	select {
	case c.slots <- struct{}{}:
		return true, nil
	case <-c.clock.After(deadline.Sub(c.clock.Now())):
		return true, ErrBusy
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return true, ErrBusy // the caller's budget, spent waiting for a slot
		}
		return true, ctx.Err()
	}
}

// errDeadline is a try cut short by its request's deadline. It is an
// i/o timeout to whoever has no better cause to give.
var errDeadline = fmt.Errorf("request deadline reached: %w", context.DeadlineExceeded)

// requests is "1 request", "64 requests".
func requests(n int) string {
	if n == 1 {
		return "1 request"
	}
	return strconv.Itoa(n) + " requests"
}

// deadlineError is a try the request's deadline ended, left after it was
// sent; slotWait says it first waited for a max_concurrent slot. It is
// errDeadline to errors.Is.
type deadlineError struct {
	left     time.Duration
	slotWait bool
}

func (e *deadlineError) Error() string {
	return fmt.Sprintf("%v, %s after the try was sent", errDeadline, e.left.Round(time.Millisecond))
}

func (e *deadlineError) Unwrap() error { return errDeadline }

// handshakeError is a failed ping or token exchange, with the header of the
// answer that failed it: go-containerregistry's error keeps the status but
// not the headers, and a rate-limited registry often refuses the very first
// request with a Retry-After.
type handshakeError struct {
	err    error
	header http.Header
}

func (e *handshakeError) Error() string { return e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// lastHeader remembers the header of the last answer it carried.
type lastHeader struct {
	inner http.RoundTripper
	mu    sync.Mutex
	h     http.Header
}

func (l *lastHeader) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.inner.RoundTrip(req)
	if err == nil {
		l.mu.Lock()
		l.h = resp.Header.Clone()
		l.mu.Unlock()
	}
	return resp, err
}

func (l *lastHeader) last() http.Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.h
}

// releasingBody gives back the request's slot when the body is closed.
type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// drain reads a little of a body being discarded so the connection can be
// reused, then closes it.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}
