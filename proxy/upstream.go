package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
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
// scoped to one repository, so a transport is kept per repository.
type upstream struct {
	name      string
	base      *url.URL
	registry  name.Registry
	auth      authn.Authenticator
	dockerHub bool
	userAgent string

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

func newUpstream(c UpstreamConfig, userAgent string) (*upstream, error) {
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
	return &upstream{
		name:       c.Name,
		base:       u,
		registry:   reg,
		auth:       a,
		dockerHub:  isDockerHub(c.Name),
		userAgent:  userAgent,
		inner:      newBaseTransport(),
		transports: cache,
	}, nil
}

func newBaseTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
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
		inner := transport.NewUserAgent(u.inner, u.userAgent)
		// The handshake is shared by every waiting request, so it must not
		// die with the one that happened to start it.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		rt, err := transport.NewWithContext(hctx, u.registry, u.auth, inner, scopes)
		if err != nil {
			return nil, err
		}
		u.transports.Add(repo, rt)
		return rt, nil
	})
	if err != nil {
		return nil, fmt.Errorf("handshake with %s for %s: %w", u.name, repo, err)
	}
	return v.(http.RoundTripper), nil
}

// do sends one request for repo's API path (e.g. "manifests/v1") and returns
// the response whatever its status. The caller closes the body.
func (u *upstream) do(ctx context.Context, method, repo, apiPath string, query url.Values, header http.Header) (*http.Response, error) {
	rt, err := u.transportFor(ctx, repo)
	if err != nil {
		return nil, err
	}
	ref := *u.base
	ref.Path = "/v2/" + repo + "/" + apiPath
	ref.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, ref.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, ref.Path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	client := &http.Client{Transport: rt}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", method, u.name, ref.Path, err)
	}
	return resp, nil
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
		return unavailable(u.name, fmt.Sprintf("answered %d %s", s, http.StatusText(s)), retryAfter(resp.Header))
	default:
		code := upCode
		if code == "" {
			code = CodeUnknown
		}
		return errorf(s, code, "%s", msg(fmt.Sprintf("answered %d %s", s, http.StatusText(s))))
	}
}

// transportError turns a failure to get any answer into the client's answer.
func (u *upstream) transportError(err error) *Error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode != 0 {
		// The handshake itself got an HTTP answer (a 401 from the token
		// server, a 503 from /v2/): judge it like any other answer.
		resp := &http.Response{StatusCode: te.StatusCode, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(""))}
		e := u.statusError(resp, 0)
		if te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden {
			e.Message = fmt.Sprintf("upstream %s: %v", u.name, te)
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
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), isTimeout(err):
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

// retryAfter reads Retry-After as seconds or an HTTP date; 0 when absent.
func retryAfter(h http.Header) int {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	var secs int
	if _, err := fmt.Sscanf(v, "%d", &secs); err == nil && secs >= 0 {
		return secs
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return int(d.Round(time.Second) / time.Second)
		}
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
