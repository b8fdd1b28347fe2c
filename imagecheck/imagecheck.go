// Package imagecheck resolves image references before pods need them, and
// sorts what it finds into what a pod would meet: the image exists; it is
// missing, forbidden or not a valid reference (fatal: a pod would never
// start); or its registry cannot be asked now (transient). `breakwater
// check` and the admission webhook both judge images with it.
package imagecheck

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/breakwater-registry/breakwater/upstream"
)

// Verdict is what a Check found, in the words `breakwater check` prints.
type Verdict string

const (
	Exists      Verdict = "exists"
	Missing     Verdict = "missing"
	Denied      Verdict = "denied"
	Invalid     Verdict = "invalid"
	Unavailable Verdict = "unavailable"
)

// TimedOut is the Detail of an image whose context ended first.
const TimedOut = "no answer within the time allowed for the image"

// Fatal reports a verdict a pod never recovers from.
func (v Verdict) Fatal() bool { return v == Missing || v == Denied || v == Invalid }

// Result is one image's verdict.
type Result struct {
	// Image is the reference as given, normalised when it parsed
	// (nginx → index.docker.io/library/nginx:latest).
	Image     string  `json:"image"`
	Verdict   Verdict `json:"verdict"`
	Digest    string  `json:"digest,omitempty"`
	MediaType string  `json:"mediaType,omitempty"`
	Detail    string  `json:"detail,omitempty"`
	// Host is the registry as clients name it (docker.io), once parsed.
	Host string `json:"-"`
	// Unmirrored is set when Host is not an upstream of the
	// configuration (Verdict is Denied): nothing Breakwater knows.
	Unmirrored bool `json:"-"`
	// Status and Code are the registry's answer, when it gave one.
	Status int    `json:"-"`
	Code   string `json:"-"`
	// Message is the registry's own message, when it gave one.
	Message string `json:"-"`
}

// Checker resolves images through one client per registry, or through one
// Breakwater for all of them, so that the images of a registry share its
// handshakes, breaker and rate limit. It is safe for concurrent use.
type Checker struct {
	upstreams map[string]bool
	// mirror, when set, asks every image through a Breakwater, host in
	// path; otherwise direct makes the client of each upstream.
	mirror *upstream.Client
	direct func(host string) (*upstream.Client, error)
	// head resolves with HEAD (no pull counted by Docker Hub); false
	// resolves with GET, whose error body names the registry's code.
	head bool

	mu      sync.Mutex
	clients map[string]*upstream.Client
}

// Direct asks each upstream itself, with the client newClient makes for
// it (its credentials and resilience settings). upstreams are the
// registries the configuration mirrors, as clients name them.
func Direct(upstreams []string, newClient func(host string) (*upstream.Client, error)) *Checker {
	return &Checker{upstreams: set(upstreams), direct: newClient, head: true, clients: map[string]*upstream.Client{}}
}

// ThroughMirror asks every image through the Breakwater mirror reaches.
// get resolves with GET rather than HEAD: the answer's body then carries
// the registry's error code and message, and a manifest by tag is cached
// for the pull that follows.
func ThroughMirror(mirror *upstream.Client, upstreams []string, get bool) *Checker {
	return &Checker{upstreams: set(upstreams), mirror: mirror, head: !get}
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Check resolves one image reference to its manifest.
func (c *Checker) Check(ctx context.Context, image string, accept []string) Result {
	res := Result{Image: image}
	ref, err := name.ParseReference(image)
	if err != nil {
		res.Verdict, res.Detail = Invalid, err.Error()
		return res
	}
	res.Image = ref.Name()
	host := ref.Context().RegistryStr()
	if host == name.DefaultRegistry { // go-containerregistry's name for Docker Hub
		host = "docker.io"
	}
	res.Host = host
	if !c.upstreams[host] {
		res.Verdict, res.Unmirrored = Denied, true
		res.Detail = fmt.Sprintf("registry %s is not an upstream of this configuration", host)
		return res
	}
	client, repo := c.mirror, ref.Context().RepositoryStr()
	if client != nil {
		// Host-in-path routing reaches any of the mirror's upstreams.
		repo = host + "/" + repo
	} else if client, err = c.client(host); err != nil {
		res.Verdict, res.Detail = Denied, err.Error()
		return res
	}
	var resp *http.Response
	if c.head {
		resp, err = client.HeadManifest(ctx, repo, ref.Identifier(), accept)
	} else {
		resp, err = client.Manifest(ctx, repo, ref.Identifier(), accept)
	}
	if err != nil {
		res.judge(err)
		return res
	}
	resp.Body.Close()
	res.Verdict, res.MediaType = Exists, resp.Header.Get("Content-Type")
	res.Digest = resp.Header.Get("Docker-Content-Digest")
	if d, ok := ref.(name.Digest); ok && res.Digest == "" {
		res.Digest = d.DigestStr()
	}
	return res
}

func (c *Checker) client(host string) (*upstream.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[host]; ok {
		return cl, nil
	}
	cl, err := c.direct(host)
	if err != nil {
		return nil, err
	}
	c.clients[host] = cl
	return cl, nil
}

// judge sorts a failed resolution into fatal and transient. The detail is
// the client's error, which names the cause as the registry (or the
// mirror, in its reason phrase) gave it.
func (r *Result) judge(err error) {
	e, ok := upstream.AsError(err)
	if !ok {
		r.Verdict = Unavailable
		if errors.Is(err, context.DeadlineExceeded) {
			r.Detail = TimedOut
		} else {
			r.Detail = err.Error()
		}
		return
	}
	r.Detail, r.Status, r.Code = e.Error(), e.Status, e.Code
	// A Breakwater names the upstream before its message; the registry's
	// own words follow.
	r.Message = e.Message
	if rest, ok := strings.CutPrefix(e.Message, "upstream "+r.Host+": "); ok {
		r.Message = rest
	}
	switch {
	case e.Status == http.StatusNotFound:
		r.Verdict = Missing
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		r.Verdict = Denied
	case e.Transient:
		r.Verdict = Unavailable
	default:
		r.Verdict = Invalid
	}
}
