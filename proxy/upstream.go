package proxy

import (
	"context"
	"encoding/json"
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
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
)

// UpstreamConfig is one registry Breakwater pulls from.
type UpstreamConfig struct {
	// Name is the registry host as clients name it ("docker.io").
	Name string
	// URL is where Breakwater reaches it ("https://registry-1.docker.io").
	URL string
	// Auth authenticates towards this upstream only.
	Auth authn.Authenticator
}

// upstream is the client towards one registry. go-containerregistry's
// transport performs the ping and bearer-token handshake; its result is
// scoped to one repository, so a transport is kept per repository. Around
// it: one retry policy, a circuit breaker and a cap on requests in flight.
type upstream struct {
	name      string
	base      *url.URL
	registry  name.Registry
	auth      authn.Authenticator
	dockerHub bool
	userAgent string
	retry     RetryPolicy
	breaker   *breaker
	log       *slog.Logger
	// slots caps requests in flight; nil means no cap.
	slots chan struct{}
	// rateLimit is Docker Hub's ratelimit-remaining as last seen.
	rateLimit rateLimit
	tel       *telemetry

	// inner carries every request to this upstream; connections are pooled
	// across repositories.
	inner      http.RoundTripper
	transports *lru.Cache[string, http.RoundTripper]
	handshakes singleflight.Group
}

// dockerHubNames are the names Docker Hub goes by; any of them, configured
// or named by a client, means the same upstream.
var dockerHubNames = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

func isDockerHub(host string) bool {
	for _, n := range dockerHubNames {
		if host == n {
			return true
		}
	}
	return false
}

// maxTransports bounds the per-repository handshake cache; an evicted
// repository simply handshakes again.
const maxTransports = 4096

type upstreamSettings struct {
	userAgent     string
	retry         RetryPolicy
	breaker       BreakerPolicy
	maxConcurrent int
	log           *slog.Logger
	now           func() time.Time
}

func newUpstream(c UpstreamConfig, set upstreamSettings) (*upstream, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.Name, err)
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
	a := c.Auth
	if a == nil {
		a = authn.Anonymous
	}
	retry := set.retry.withDefaults()
	up := &upstream{
		name:       c.Name,
		base:       u,
		registry:   reg,
		auth:       a,
		dockerHub:  isDockerHub(c.Name),
		userAgent:  set.userAgent,
		retry:      retry,
		breaker:    newBreaker(c.Name, set.breaker, set.log, set.now),
		log:        set.log,
		inner:      newBaseTransport(retry.AttemptTimeout),
		transports: cache,
	}
	up.rateLimit.remaining.Store(-1)
	if set.maxConcurrent > 0 {
		up.slots = make(chan struct{}, set.maxConcurrent)
	}
	return up, nil
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

// transportFor returns an authenticated transport for repo, performing the
// handshake once however many requests arrive together.
func (u *upstream) transportFor(ctx context.Context, repo string) (http.RoundTripper, error) {
	if rt, ok := u.transports.Get(repo); ok {
		return rt, nil
	}
	v, err, _ := u.handshakes.Do(repo, func() (any, error) {
		if rt, ok := u.transports.Get(repo); ok {
			return rt, nil
		}
		scopes := []string{"repository:" + repo + ":pull"}
		hints := &retryAfterHints{inner: u.inner}
		inner := transport.NewUserAgent(hints, u.userAgent)
		// The handshake is shared by every waiting request, so it must not
		// die with the one that happened to start it.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*u.retry.AttemptTimeout)
		defer cancel()
		rt, err := transport.NewWithContext(hctx, u.registry, u.auth, inner, scopes)
		if err != nil {
			return nil, &handshakeError{err: err, retryAfter: hints.last()}
		}
		u.transports.Add(repo, rt)
		return rt, nil
	})
	if err != nil {
		return nil, fmt.Errorf("handshake with %s for %s: %w", u.name, repo, err)
	}
	return v.(http.RoundTripper), nil
}

// handshakeError is a failed ping or token exchange, with the Retry-After
// the upstream sent with it: go-containerregistry's error keeps the status
// but not the headers, and a rate-limited registry often refuses the very
// first request.
type handshakeError struct {
	err        error
	retryAfter time.Duration
}

func (e *handshakeError) Error() string { return e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// retryAfterHints remembers the Retry-After of the last answer it carried.
type retryAfterHints struct {
	inner http.RoundTripper
	mu    sync.Mutex
	hint  time.Duration
}

func (h *retryAfterHints) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.inner.RoundTrip(req)
	if err == nil {
		h.mu.Lock()
		h.hint = retryAfter(resp.Header)
		h.mu.Unlock()
	}
	return resp, err
}

func (h *retryAfterHints) last() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hint
}

// do sends a request for repo's API path (e.g. "manifests/v1"), retrying
// transient failures — 5xx, 429, 408, refused and reset connections,
// timeouts — with full-jitter backoff or the upstream's Retry-After, within
// the policy's attempts and deadline, and never while the circuit is open.
//
// It returns the final response whatever its status (the caller closes the
// body). An answer that stayed transient is returned as the response; a
// failure to get any answer, or an open circuit, as an *Error ready for the
// client (503 with the crafted message). If ctx ends, ctx.Err() is returned.
func (u *upstream) do(ctx context.Context, method, repo, apiPath string, query url.Values, header http.Header) (*http.Response, error) {
	deadline := time.Now().Add(u.retry.Deadline)
	for attempt := 1; ; attempt++ {
		if ok, wait := u.breaker.allow(); !ok {
			return nil, unavailable(u.name, "circuit open", ceilSeconds(wait))
		}
		resp, err := u.traced(ctx, attempt, method, repo, apiPath, query, header)
		if ctx.Err() != nil {
			// The caller went away; that says nothing about the upstream.
			u.breaker.release()
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		}
		transient, cause, retryAfterHint := u.judge(resp, err)
		if !transient {
			u.breaker.record(true, "")
			if err != nil {
				return nil, err
			}
			u.noteRateLimit(resp.Header)
			return resp, nil
		}
		u.breaker.record(false, cause)
		wait := u.retry.wait(attempt, retryAfterHint, jitter)
		if attempt >= u.retry.Attempts || time.Now().Add(wait).After(deadline) {
			u.log.Warn("upstream request failed", "upstream", u.name, "method", method, "repo", repo,
				"path", apiPath, "attempts", attempt, "cause", cause)
			if resp != nil {
				return resp, nil
			}
			return nil, unavailable(u.name, cause, ceilSeconds(retryAfterHint))
		}
		if resp != nil {
			drain(resp.Body)
		}
		u.tel.upRetries.Add(ctx, 1, metric.WithAttributes(attribute.String("upstream", u.name)))
		u.log.Debug("retrying upstream request", "upstream", u.name, "method", method, "repo", repo,
			"path", apiPath, "attempt", attempt, "cause", cause, "wait", wait)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

// judge decides whether one try failed transiently, naming the cause in
// the standard spelling classifiers know and giving any Retry-After.
func (u *upstream) judge(resp *http.Response, err error) (transient bool, cause string, retryAfterHint time.Duration) {
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode != 0 {
			// The handshake itself got an HTTP answer.
			if isTransientStatus(te.StatusCode) {
				var he *handshakeError
				if errors.As(err, &he) {
					retryAfterHint = he.retryAfter
				}
				return true, fmt.Sprintf("answered %d %s", te.StatusCode, http.StatusText(te.StatusCode)), retryAfterHint
			}
			return false, "", 0
		}
		return true, "unreachable: " + networkCause(err), 0
	}
	if isTransientStatus(resp.StatusCode) {
		return true, fmt.Sprintf("answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode)), retryAfter(resp.Header)
	}
	return false, "", 0
}

// traced runs one try in its own span and records its metrics.
func (u *upstream) traced(ctx context.Context, attempt int, method, repo, apiPath string, query url.Values, header http.Header) (*http.Response, error) {
	ctx, span := u.tel.tracer.Start(ctx, "upstream "+method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("breakwater.upstream", u.name), attribute.String("breakwater.repository", repo),
			attribute.String("url.path", apiPath), attribute.Int("breakwater.attempt", attempt)))
	defer span.End()
	start := time.Now()
	resp, err := u.try(ctx, method, repo, apiPath, query, header)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			span.SetStatus(codes.Error, resp.Status)
		}
	} else {
		span.RecordError(err)
		span.SetStatus(codes.Error, oneLine(err.Error(), 200))
	}
	attrs := metric.WithAttributes(attribute.String("upstream", u.name), attribute.String("status", status))
	u.tel.upRequests.Add(ctx, 1, attrs)
	u.tel.upDuration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attribute.String("upstream", u.name)))
	return resp, err
}

// try sends one request, holding one of the upstream's slots until the
// response body is closed.
func (u *upstream) try(ctx context.Context, method, repo, apiPath string, query url.Values, header http.Header) (*http.Response, error) {
	if u.slots != nil {
		select {
		case u.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	release := func() {
		if u.slots != nil {
			<-u.slots
		}
	}
	rt, err := u.transportFor(ctx, repo)
	if err != nil {
		release()
		return nil, err
	}
	ref := *u.base
	ref.Path = "/v2/" + repo + "/" + apiPath
	ref.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, ref.String(), nil)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s %s: %w", method, ref.Path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	client := &http.Client{Transport: rt}
	resp, err := client.Do(req)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s %s%s: %w", method, u.name, ref.Path, err)
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
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

func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// statusError turns a non-success upstream answer into the answer for the
// client: fatal statuses keep their meaning, transient ones become 503.
// It reads a little of the body for the upstream's own error code and
// closes it.
func (u *upstream) statusError(resp *http.Response, k kind) *Error {
	defer resp.Body.Close()
	upCode, upMsg := readErrorBody(resp.Body)
	msg := func(fallback string) string {
		if upMsg != "" {
			return fmt.Sprintf("upstream %s: %s", u.name, upMsg)
		}
		return fmt.Sprintf("upstream %s: %s", u.name, fallback)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound:
		code := upCode
		switch code {
		case CodeManifestUnknown, CodeBlobUnknown, CodeNameUnknown:
		default:
			code = map[kind]string{kindManifest: CodeManifestUnknown, kindBlob: CodeBlobUnknown}[k]
			if code == "" {
				code = CodeNameUnknown
			}
		}
		return errorf(http.StatusNotFound, code, "%s", msg("not found"))
	case s == http.StatusUnauthorized:
		return errorf(http.StatusUnauthorized, CodeUnauthorized, "%s", msg("authentication required"))
	case s == http.StatusForbidden:
		return errorf(http.StatusForbidden, CodeDenied, "%s", msg("access denied"))
	case isTransientStatus(s):
		return unavailable(u.name, fmt.Sprintf("answered %d %s", s, http.StatusText(s)), ceilSeconds(retryAfter(resp.Header)))
	default:
		code := upCode
		if code == "" {
			code = CodeUnknown
		}
		return errorf(s, code, "%s", msg(fmt.Sprintf("answered %d %s", s, http.StatusText(s))))
	}
}

// transportError turns an error from do into the client's answer: an
// *Error passes through; an HTTP answer to the handshake is judged like any
// other answer; anything else is a failure to reach the upstream.
func (u *upstream) transportError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode != 0 {
		resp := &http.Response{StatusCode: te.StatusCode, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(""))}
		e := u.statusError(resp, 0)
		if te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden {
			e.Message = fmt.Sprintf("upstream %s: %s", u.name, oneLine(te.Error(), 300))
		}
		return e
	}
	return unavailable(u.name, "unreachable: "+networkCause(err), 0)
}

// isTransientStatus reports answers worth retrying later: the registry is
// overloaded, rate-limiting or broken, not saying no.
func isTransientStatus(s int) bool {
	return s == http.StatusTooManyRequests || s == http.StatusRequestTimeout || s >= 500
}

// networkCause names a transport failure in the standard spelling that
// runtimes and classifiers know.
func networkCause(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, errStalled), isTimeout(err):
		return "i/o timeout"
	case errors.As(err, &dnsErr):
		return "no such host"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected EOF"
	}
	return "connection failed"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retryAfter reads Retry-After as seconds or an HTTP date; 0 when absent
// or unreadable.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// readErrorBody extracts the first OCI error's code and message, if the
// body is one. It reads at most 64 KiB.
func readErrorBody(r io.Reader) (code, message string) {
	var body errorBody
	if err := json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&body); err != nil || len(body.Errors) == 0 {
		return "", ""
	}
	return body.Errors[0].Code, oneLine(body.Errors[0].Message, 200)
}

// oneLine makes upstream text safe to repeat in a header or log: no control
// characters, bounded length.
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return strings.TrimSpace(s)
}
