// Package warm pulls images into a running Breakwater's cache ahead of need.
//
// It reads each image through Breakwater's own pull API, with host-in-path
// routing (/v2/<registry-host>/<repository>/...), so the mirror's normal
// fetch, verify and cache path does the work: the manifest (and, for an
// index, the manifests of the selected platforms), the config and every
// layer. The requests go through an *upstream.Client pointed at the mirror
// (see MirrorConfig); an answer that is not a success comes back as that
// package's *upstream.Error, wrapped with what warm was reading. Every body
// is read to the end and checked against its digest while it arrives;
// nothing the mirror says is trusted.
package warm

import (
	"bytes"
	"context"
	_ "crypto/sha256" // digest algorithms for go-digest
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/breakwater-registry/breakwater/upstream"
)

// DefaultConcurrency is how many blobs of one image are fetched in parallel
// when Options.Concurrency is not set.
const DefaultConcurrency = 4

// maxManifestSize bounds a manifest body (the distribution spec's limit that
// registries enforce on push is 4 MiB).
const maxManifestSize = 4 << 20

// maxIndexDepth bounds how deep indexes may nest.
const maxIndexDepth = 4

// idleTimeout is how long a response body may send nothing before the
// request is abandoned. A variable for tests.
var idleTimeout = 2 * time.Minute

// ManifestTypes is the Accept list of a manifest request: the indexes and
// image manifests a runtime pulls.
func ManifestTypes() []string {
	return []string{
		string(types.OCIImageIndex),
		string(types.DockerManifestList),
		string(types.OCIManifestSchema1),
		string(types.DockerManifestSchema2),
	}
}

// mirrorWait bounds the wait for a mirror's response headers, generously:
// the mirror answers a manifest only once its own tries towards the
// upstream are over, which its configuration bounds, not ours. The callers'
// own limits (warm's idle timeout, a caller's context) usually end a wait
// first.
const mirrorWait = 5 * time.Minute

// MirrorConfig is the configuration of a client towards the Breakwater at
// mirror (http://127.0.0.1:5000), for upstream.New: one try per request,
// since the mirror has already retried its upstream and its answer says
// so, and no circuit breaker, since the mirror has its own and one here
// would answer for it with less to say. It is anonymous but for requests
// whose context carries credentials (WithCredentials), which it sends when
// the mirror asks for them.
func MirrorConfig(mirror string) upstream.Config {
	c := upstream.Config{
		Name:      mirror,
		URL:       mirror,
		Auth:      contextCredentials{},
		UserAgent: "breakwater-warm",
		Policy: upstream.Policy{
			Retry:   upstream.Retry{Attempts: 1, Deadline: mirrorWait, AttemptTimeout: mirrorWait},
			Breaker: upstream.Breaker{MinRequests: math.MaxInt},
		},
	}
	if u, err := url.Parse(mirror); err == nil && u.Host != "" {
		// The mirror as its errors name it; the pull API is at its root.
		c.Name, c.URL = u.Host, u.Scheme+"://"+u.Host
	}
	return c
}

type credentialsKey struct{}

// WithCredentials returns ctx with the user and password a client built
// with MirrorConfig authenticates with towards a Breakwater that has client
// authentication on. The warm API passes on its caller's, so that it pulls
// what that user may pull, as that user.
func WithCredentials(ctx context.Context, user, password string) context.Context {
	return context.WithValue(ctx, credentialsKey{}, authn.AuthConfig{Username: user, Password: password})
}

// contextCredentials authenticates with the credentials of the request's
// context, none without. go-containerregistry asks it on every request
// (AuthorizationContext), not once per client or repository, so that one
// client serves requests of different users.
type contextCredentials struct{}

func (contextCredentials) Authorization() (*authn.AuthConfig, error) { return &authn.AuthConfig{}, nil }

func (contextCredentials) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	if c, ok := ctx.Value(credentialsKey{}).(authn.AuthConfig); ok {
		return &c, nil
	}
	return &authn.AuthConfig{}, nil
}

// Options configures warming.
type Options struct {
	// Mirror is the client towards the running Breakwater, as
	// upstream.New(MirrorConfig(url)) builds it; a caller that wants the
	// mirror retried, say, builds it with a Policy of its own. One client
	// serves any number of images and calls at once.
	Mirror *upstream.Client
	// Platforms selects the manifests of an index to warm (os, architecture
	// and variant are compared; see ParsePlatform). Empty means every
	// platform of the index.
	Platforms []v1.Platform
	// Progress, when set, is told what happens. It is called from one
	// goroutine at a time.
	Progress func(Event)
	// Concurrency is how many blobs of one image are fetched in parallel;
	// 0 means DefaultConcurrency.
	Concurrency int
}

// Result is what warming one image did.
type Result struct {
	// Image is the reference as normalised (docker.io/library/alpine:3.20),
	// or as given when it could not be parsed.
	Image string
	// Digest is the digest of the manifest (or index) the reference named.
	Digest string
	// Manifests is how many manifests were read and verified (the index
	// and the selected platforms' manifests).
	Manifests int
	// Blobs and Bytes count the configs and layers read and verified.
	Blobs int
	Bytes int64
	// Duration is how long warming took.
	Duration time.Duration
	// Err is nil when the image is warmed completely.
	Err error
}

// MarshalJSON renders a Result as
// {"image","digest","manifests","blobs","bytes","seconds","error"}.
func (r Result) MarshalJSON() ([]byte, error) {
	type out struct {
		Image     string  `json:"image"`
		Digest    string  `json:"digest,omitempty"`
		Manifests int     `json:"manifests"`
		Blobs     int     `json:"blobs"`
		Bytes     int64   `json:"bytes"`
		Seconds   float64 `json:"seconds"`
		Error     string  `json:"error,omitempty"`
	}
	o := out{Image: r.Image, Digest: r.Digest, Manifests: r.Manifests, Blobs: r.Blobs, Bytes: r.Bytes, Seconds: r.Duration.Seconds()}
	if r.Err != nil {
		o.Error = r.Err.Error()
	}
	return json.Marshal(o)
}

// EventKind says what an Event reports.
type EventKind int

// Kinds of events, in the order they happen for one image.
const (
	// ImageStarted: warming of Event.Image begins.
	ImageStarted EventKind = iota + 1
	// ImagePlanned: the manifests are read; BlobsTotal and BytesTotal are
	// known.
	ImagePlanned
	// BlobProgress: bytes arrived (at most about ten events a second per
	// image); BytesDone is up to date.
	BlobProgress
	// BlobDone: the blob Event.Blob of Event.Bytes bytes is read and
	// verified (or failed: Event.Err).
	BlobDone
	// ImageDone: Event.Result holds the outcome.
	ImageDone
)

func (k EventKind) String() string {
	switch k {
	case ImageStarted:
		return "image-started"
	case ImagePlanned:
		return "image-planned"
	case BlobProgress:
		return "blob-progress"
	case BlobDone:
		return "blob-done"
	case ImageDone:
		return "image-done"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one step of warming, for progress displays.
type Event struct {
	Kind  EventKind
	Image string
	// Blob and Bytes: the blob a BlobDone event is about, and its size.
	Blob  string
	Bytes int64
	// Err is set on a BlobDone event for a blob that failed.
	Err error
	// Running totals of the image.
	BlobsDone, BlobsTotal int
	BytesDone, BytesTotal int64
	// Result is set on ImageDone.
	Result *Result
}

// ParsePlatform parses os/arch[/variant], as --platform takes it.
func ParsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 {
		return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, " \t:") {
			return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
		}
	}
	p := v1.Platform{OS: strings.ToLower(parts[0]), Architecture: strings.ToLower(parts[1])}
	if len(parts) == 3 {
		p.Variant = strings.ToLower(parts[2])
	}
	return p, nil
}

// defaultVariant is the variant an architecture means when none is named.
var defaultVariant = map[string]string{"arm64": "v8", "arm": "v7", "amd64": "v1"}

// matches reports whether a manifest for platform have satisfies the
// requested platform want: same os and architecture, and the same variant
// when want names one (arm64 and arm64/v8 are the same).
func matches(want, have v1.Platform) bool {
	if !strings.EqualFold(want.OS, have.OS) || !strings.EqualFold(want.Architecture, have.Architecture) {
		return false
	}
	if want.Variant == "" {
		return true
	}
	hv := strings.ToLower(have.Variant)
	if hv == "" {
		hv = defaultVariant[strings.ToLower(have.Architecture)]
	}
	return strings.EqualFold(want.Variant, hv)
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	return o
}

// emitter serialises Progress calls and keeps an image's running totals.
type emitter struct {
	fn func(Event)
	mu sync.Mutex
}

func (e *emitter) emit(ev Event) {
	if e.fn == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fn(ev)
}

// Image warms one image through the mirror and says what it did.
func Image(ctx context.Context, image string, o Options) Result {
	o = o.withDefaults()
	return warmImage(ctx, image, o, &emitter{fn: o.Progress})
}

// Images warms images one after another, so a progress display shows one
// image at a time, and returns their results in the same order.
func Images(ctx context.Context, images []string, o Options) []Result {
	o = o.withDefaults()
	em := &emitter{fn: o.Progress}
	out := make([]Result, 0, len(images))
	for _, img := range images {
		out = append(out, warmImage(ctx, img, o, em))
	}
	return out
}

// NormalizeReference parses image as a pull would and returns the registry
// host as Breakwater routes it (docker.io for Docker Hub), the repository
// (library/alpine), the tag or digest, and the full normalised name.
func NormalizeReference(image string) (host, repo, ref, full string, err error) {
	r, err := name.ParseReference(strings.TrimSpace(image))
	if err != nil {
		return "", "", "", "", err
	}
	host = r.Context().RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	repo = r.Context().RepositoryStr()
	ref = r.Identifier()
	sep := ":"
	if _, ok := r.(name.Digest); ok {
		sep = "@"
	}
	return host, repo, ref, host + "/" + repo + sep + ref, nil
}

// warmer warms one image.
type warmer struct {
	o     Options
	em    *emitter
	image string
	repo  string // the repository on the mirror: <registry-host>/<repository>

	// Running totals of the image, guarded by mu.
	mu                    sync.Mutex
	blobsDone, blobsTotal int
	bytesDone, bytesTotal int64
	lastProgress          time.Time
	verifiedBlobs         int
	verifiedBytes         int64
}

func warmImage(ctx context.Context, image string, o Options, em *emitter) (res Result) {
	start := time.Now()
	host, repo, ref, full, perr := NormalizeReference(image)
	res.Image = strings.TrimSpace(image)
	if perr == nil {
		res.Image = full
	}
	em.emit(Event{Kind: ImageStarted, Image: res.Image})
	w := &warmer{o: o, em: em, image: res.Image}
	defer func() {
		res.Duration = time.Since(start)
		res.Blobs, res.Bytes = w.verifiedBlobs, w.verifiedBytes
		em.emit(Event{Kind: ImageDone, Image: res.Image, Result: &res,
			BlobsDone: w.blobsDone, BlobsTotal: w.blobsTotal, BytesDone: w.bytesDone, BytesTotal: w.bytesTotal})
	}()

	if perr != nil {
		res.Err = fmt.Errorf("invalid image reference: %w", perr)
		return res
	}
	if o.Mirror == nil {
		res.Err = errors.New("no mirror client")
		return res
	}
	w.repo = host + "/" + repo

	top, err := w.manifest(ctx, ref, nil)
	if err != nil {
		res.Err = err
		return res
	}
	res.Digest = top.digest.String()
	res.Manifests = 1

	var blobs []v1.Descriptor
	var errs []error
	if top.mediaType.IsIndex() {
		n, b, errs2 := w.walkIndex(ctx, top, 0)
		res.Manifests += n
		blobs, errs = b, errs2
	} else {
		blobs, err = imageBlobs(top)
		if err != nil {
			errs = append(errs, err)
		}
	}
	blobs = dedupe(blobs)
	w.mu.Lock()
	w.blobsTotal = len(blobs)
	for _, b := range blobs {
		w.bytesTotal += b.Size
	}
	ev := w.eventLocked(ImagePlanned)
	w.mu.Unlock()
	em.emit(ev)

	errs = append(errs, w.fetchBlobs(ctx, blobs)...)
	res.Err = joinErrors(errs)
	return res
}

// joinErrors keeps the first error and says how many more there were, so
// that one unreachable mirror does not print a line per layer.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return fmt.Errorf("%w (and %d more errors)", errs[0], len(errs)-1)
}

// fetched is a manifest as read and verified.
type fetched struct {
	digest    digest.Digest
	mediaType types.MediaType
	body      []byte
}

// walkIndex reads the manifests of idx's selected platforms and returns
// how many it read and the blobs of their images.
func (w *warmer) walkIndex(ctx context.Context, idx *fetched, depth int) (int, []v1.Descriptor, []error) {
	if depth >= maxIndexDepth {
		return 0, nil, []error{fmt.Errorf("index %s: indexes nested deeper than %d", idx.digest, maxIndexDepth)}
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(idx.body))
	if err != nil {
		return 0, nil, []error{fmt.Errorf("index %s: %w", idx.digest, err)}
	}
	var (
		count    int
		blobs    []v1.Descriptor
		errs     []error
		selected int
		seen     []string
	)
	for _, child := range im.Manifests {
		if !child.MediaType.IsIndex() && !child.MediaType.IsImage() {
			continue // artifacts, schema 1: nothing a runtime pulls
		}
		if child.MediaType.IsImage() {
			seen = append(seen, platformString(child.Platform))
			if !w.wanted(child.Platform) {
				continue
			}
		}
		selected++
		m, err := w.manifest(ctx, child.Digest.String(), &child)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		count++
		if m.mediaType.IsIndex() {
			n, b, e := w.walkIndex(ctx, m, depth+1)
			count, blobs, errs = count+n, append(blobs, b...), append(errs, e...)
			continue
		}
		b, err := imageBlobs(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		blobs = append(blobs, b...)
	}
	if selected == 0 && len(w.o.Platforms) > 0 && depth == 0 {
		want := make([]string, len(w.o.Platforms))
		for i := range w.o.Platforms {
			want[i] = platformString(&w.o.Platforms[i])
		}
		errs = append(errs, fmt.Errorf("index %s has no manifest for %s (it has %s)",
			idx.digest, strings.Join(want, ", "), strings.Join(seen, ", ")))
	}
	return count, blobs, errs
}

// wanted reports whether an index entry for platform p is to be warmed.
func (w *warmer) wanted(p *v1.Platform) bool {
	if len(w.o.Platforms) == 0 {
		// Every platform, but not buildx's attestation manifests
		// (unknown/unknown), which no runtime pulls.
		return p == nil || p.OS != "unknown" || p.Architecture != "unknown"
	}
	if p == nil {
		return false
	}
	for _, want := range w.o.Platforms {
		if matches(want, *p) {
			return true
		}
	}
	return false
}

// imageBlobs returns the config and the distributable layers of an image
// manifest.
func imageBlobs(m *fetched) ([]v1.Descriptor, error) {
	man, err := v1.ParseManifest(bytes.NewReader(m.body))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", m.digest, err)
	}
	out := []v1.Descriptor{man.Config}
	for _, l := range man.Layers {
		if len(l.URLs) > 0 {
			continue // foreign layer: fetched from its URLs, never from the registry
		}
		out = append(out, l)
	}
	for _, d := range out {
		if d.Size < 0 {
			return nil, fmt.Errorf("manifest %s: blob %s has negative size %d", m.digest, d.Digest, d.Size)
		}
	}
	return out, nil
}

func dedupe(ds []v1.Descriptor) []v1.Descriptor {
	seen := map[v1.Hash]bool{}
	out := ds[:0:0]
	for _, d := range ds {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d)
		}
	}
	return out
}

// manifest reads the manifest ref (a tag or digest) and verifies it: against
// want when the manifest is named by a descriptor, otherwise against the
// Docker-Content-Digest the mirror sent, when it sent one.
func (w *warmer) manifest(ctx context.Context, ref string, want *v1.Descriptor) (*fetched, error) {
	fail := func(err error) (*fetched, error) { return nil, fmt.Errorf("manifest %s: %w", ref, err) }
	resp, err := w.idle(ctx, func(ctx context.Context) (*http.Response, error) {
		return w.o.Mirror.Manifest(ctx, w.repo, ref, ManifestTypes())
	})
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()

	limit := int64(maxManifestSize)
	if want != nil {
		if want.Size < 0 || want.Size > maxManifestSize {
			return fail(fmt.Errorf("descriptor size %d out of range", want.Size))
		}
		limit = want.Size
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fail(err)
	}
	if int64(len(body)) > limit {
		if want != nil {
			return fail(fmt.Errorf("body longer than the %d bytes its descriptor says", want.Size))
		}
		return fail(fmt.Errorf("body larger than %d bytes", maxManifestSize))
	}

	var dgst digest.Digest
	switch {
	case want != nil:
		dgst, err = digest.Parse(want.Digest.String())
		if err != nil {
			return fail(err)
		}
		if int64(len(body)) != want.Size {
			return fail(fmt.Errorf("got %d bytes, descriptor says %d", len(body), want.Size))
		}
	case strings.Contains(ref, ":"):
		dgst, err = digest.Parse(ref)
		if err != nil {
			return fail(err)
		}
	case resp.Header.Get("Docker-Content-Digest") != "":
		dgst, err = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
		if err != nil {
			return fail(fmt.Errorf("header Docker-Content-Digest: %w", err))
		}
	default:
		dgst = digest.FromBytes(body)
	}
	if !dgst.Algorithm().Available() {
		return fail(fmt.Errorf("unsupported digest algorithm in %s", dgst))
	}
	if got := dgst.Algorithm().FromBytes(body); got != dgst {
		return fail(fmt.Errorf("digest mismatch: content is %s, expected %s", got, dgst))
	}

	mt := manifestMediaType(body, resp.Header.Get("Content-Type"), want)
	if !mt.IsIndex() && !mt.IsImage() {
		return fail(fmt.Errorf("unsupported manifest media type %q", mt))
	}
	return &fetched{digest: dgst, mediaType: mt, body: body}, nil
}

// manifestMediaType decides what a manifest is: its own mediaType field
// (part of the verified content) first, then the Content-Type, then the
// descriptor that named it, then its shape.
func manifestMediaType(body []byte, contentType string, want *v1.Descriptor) types.MediaType {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Layers    json.RawMessage `json:"layers"`
	}
	_ = json.Unmarshal(body, &probe)
	if probe.MediaType != "" {
		return probe.MediaType
	}
	if ct, _, _ := strings.Cut(contentType, ";"); ct != "" {
		if mt := types.MediaType(strings.TrimSpace(ct)); mt.IsIndex() || mt.IsImage() {
			return mt
		}
	}
	if want != nil && want.MediaType != "" {
		return want.MediaType
	}
	switch {
	case probe.Manifests != nil:
		return types.OCIImageIndex
	case probe.Layers != nil:
		return types.OCIManifestSchema1
	}
	return types.MediaType(contentType)
}

// fetchBlobs reads every blob, o.Concurrency at a time, and returns the
// errors in the order of blobs. A failed blob does not stop the others:
// whatever can be warmed is.
func (w *warmer) fetchBlobs(ctx context.Context, blobs []v1.Descriptor) []error {
	errs := make([]error, len(blobs))
	var g errgroup.Group
	g.SetLimit(w.o.Concurrency)
	for i, d := range blobs {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				errs[i] = fmt.Errorf("blob %s: %w", d.Digest, err)
			} else {
				errs[i] = w.blob(ctx, d)
			}
			w.mu.Lock()
			w.blobsDone++
			if errs[i] == nil {
				w.verifiedBlobs++
				w.verifiedBytes += d.Size
			}
			ev := w.eventLocked(BlobDone)
			ev.Blob, ev.Bytes, ev.Err = d.Digest.String(), d.Size, errs[i]
			// Emit under w.mu so totals never go backwards.
			w.em.emit(ev)
			w.mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

func (w *warmer) eventLocked(k EventKind) Event {
	return Event{Kind: k, Image: w.image,
		BlobsDone: w.blobsDone, BlobsTotal: w.blobsTotal, BytesDone: w.bytesDone, BytesTotal: w.bytesTotal}
}

// arrived counts n bytes of some blob and, now and then, says so.
func (w *warmer) arrived(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bytesDone += n
	if now := time.Now(); now.Sub(w.lastProgress) >= 100*time.Millisecond {
		w.lastProgress = now
		w.em.emit(w.eventLocked(BlobProgress))
	}
}

// blob reads one blob to its end and verifies its size and digest.
func (w *warmer) blob(ctx context.Context, d v1.Descriptor) error {
	fail := func(err error) error { return fmt.Errorf("blob %s: %w", d.Digest, err) }
	want, err := digest.Parse(d.Digest.String())
	if err != nil {
		return fail(err)
	}
	if !want.Algorithm().Available() {
		return fail(fmt.Errorf("unsupported digest algorithm %s", want.Algorithm()))
	}
	resp, err := w.idle(ctx, func(ctx context.Context) (*http.Response, error) {
		return w.o.Mirror.Blob(ctx, w.repo, want, "")
	})
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()

	verifier := want.Verifier()
	var n int64
	buf := make([]byte, 128<<10)
	body := io.LimitReader(resp.Body, d.Size+1)
	for {
		k, rerr := body.Read(buf)
		if k > 0 {
			_, _ = verifier.Write(buf[:k])
			n += int64(k)
			w.arrived(int64(k))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail(fmt.Errorf("after %d of %d bytes: %w", n, d.Size, rerr))
		}
	}
	switch {
	case n > d.Size:
		return fail(fmt.Errorf("body longer than the %d bytes the manifest says", d.Size))
	case n < d.Size:
		return fail(fmt.Errorf("body ended after %d of %d bytes", n, d.Size))
	case !verifier.Verified():
		return fail(errors.New("digest mismatch: content does not match its digest"))
	}
	return nil
}

var errIdle = errors.New("no data from the mirror")

// idle sends one request with send and gives up on it when idleTimeout
// passes with nothing from the mirror: no answer, or no byte of the body
// since the last. Closing the body ends the request.
func (w *warmer) idle(ctx context.Context, send func(context.Context) (*http.Response, error)) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(idleTimeout, func() { cancel(fmt.Errorf("%w for %s", errIdle, idleTimeout)) })
	b := &idleBody{ctx: rctx, timer: timer, stop: func() { timer.Stop(); cancel(nil) }}
	resp, err := send(rctx)
	if err != nil {
		err = b.cause(err)
		b.stop()
		return nil, err
	}
	b.ReadCloser, resp.Body = resp.Body, b
	return resp, nil
}

// idleBody pushes the idle deadline back at every read that brings data.
type idleBody struct {
	io.ReadCloser
	ctx   context.Context
	timer *time.Timer
	stop  func()
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(idleTimeout)
	}
	if err != nil && err != io.EOF {
		err = b.cause(err)
	}
	return n, err
}

func (b *idleBody) Close() error {
	err := b.ReadCloser.Close()
	b.stop()
	return err
}

// cause names the idle timeout when it is what ended the request.
func (b *idleBody) cause(err error) error {
	if cause := context.Cause(b.ctx); errors.Is(cause, errIdle) {
		return cause
	}
	return err
}
