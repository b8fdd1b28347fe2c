package proxy

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// peerPath is the internal endpoint replicas stream blobs from each other
// through; only a request with the fleet's secret gets an answer.
const peerPath = "/_breakwater/v1/peer/blobs/"

// peerManifestPath is where a replica asks the one resolving a tag for its
// answer.
const peerManifestPath = "/_breakwater/v1/peer/manifest"

// peerTimeout bounds a peer's answer's headers; the body then flows as the
// owner's fetch does, each read bounded by the stall timeout.
const peerTimeout = 5 * time.Second

// finishedLeaseTTL is how long a finished fetch's lease still names the
// replica that has the blob.
const finishedLeaseTTL = 10 * time.Minute

// fleet is what a replica needs of the others: the leases, the secret
// they share, and a client to stream from them.
type fleet struct {
	coord  *coord.Fleet
	secret string
	client *http.Client
}

// whatBlob and whatTag label the fleet's counters by what was followed or
// done alone.
var (
	whatBlob = metric.WithAttributes(attribute.String("what", "blob"))
	whatTag  = metric.WithAttributes(attribute.String("what", "tag"))
)

// fetchRole is what this replica is for one fetch: its lease's holder, a
// follower of the replica at owner, or alone (no fleet, or Redis down).
type fetchRole struct {
	lease *coord.Lease
	owner string
}

// newFleet is the fleet of c, whose replicas share secret.
func newFleet(c *coord.Fleet, secret string, tc *tls.Config) *fleet {
	return &fleet{coord: c, secret: secret, client: &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: peerTimeout}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: peerTimeout,
		MaxIdleConnsPerHost: 16,
		// Blobs are compressed already.
		DisableCompression: true,
	}}}
}

func leaseKey(key fetchKey) string { return "blob:" + key.upstream + ":" + key.dgst.String() }

// claim takes the fetch's lease, or learns who holds it. Redis that cannot
// be asked leaves the replica alone: it fetches, and the duplicate is
// counted.
func (b *blobFetches) claim(ctx context.Context, key fetchKey) fetchRole {
	if b.fleet == nil {
		return fetchRole{}
	}
	lctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	lease, owner, err := b.fleet.coord.Acquire(lctx, leaseKey(key))
	if err != nil {
		b.redisHealth.fail(err)
		b.log.Warn("fleet: Redis unreachable; fetching alone", "digest", key.dgst, "err", err)
		b.tel.fleetAlone.Add(ctx, 1, whatBlob)
		return fetchRole{}
	}
	b.redisHealth.ok()
	return fetchRole{lease: lease, owner: owner}
}

// peerSource streams the blob from offset on from the replica at owner,
// which is fetching it or has it. repo must have the upstream's yes for
// the blob first: the owner's fetch may be for another repository.
func (b *blobFetches) peerSource(ctx context.Context, owner string, up *registry, repo storage.Repo, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	if err := b.confirmForPeer(ctx, up, repo, dgst); err != nil {
		return nil, 0, err
	}
	u := strings.TrimSuffix(owner, "/") + peerPath + url.PathEscape(up.Name()) + "/" + dgst.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("peer %s: %w", owner, err)
	}
	req.Header.Set("Authorization", "Bearer "+b.fleet.secret)
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	// The owner answers once its own upstream request has headers, which
	// may take that upstream's whole retry deadline; the body then flows
	// as the owner's fetch does, under this fetch's stall timeout.
	rctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(up.Policy().Retry.Deadline+peerTimeout, cancel)
	resp, err := b.fleet.client.Do(req.WithContext(rctx))
	timer.Stop()
	if err != nil {
		cancel()
		return nil, 0, fmt.Errorf("peer %s: %w", owner, err)
	}
	body := &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	switch {
	case resp.StatusCode == http.StatusOK && offset == 0:
		return body, resp.ContentLength, nil
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && start == offset {
			return body, total, nil
		}
	}
	body.Close()
	return nil, 0, fmt.Errorf("peer %s answered %s", owner, resp.Status)
}

// cancelOnClose ends a request's context with its body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// confirmForPeer makes sure the upstream said yes to repo for the blob,
// to this replica or (through the shared store) another, asking it with a
// HEAD when neither knows.
func (b *blobFetches) confirmForPeer(ctx context.Context, up *registry, repo storage.Repo, dgst digest.Digest) error {
	if b.store.BlobLinked(repo, dgst) {
		return nil
	}
	if b.shared != nil {
		sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		ok, err := b.shared.Linked(sctx, up.Name(), repo.Name, dgst)
		cancel()
		if err == nil && ok {
			return nil
		}
	}
	resp, err := up.HeadBlob(ctx, repo.Name, dgst)
	if err != nil {
		return upstreamError(up, err, kindBlob)
	}
	resp.Body.Close()
	b.shareLinkLater(up, repo, dgst)
	return nil
}

// handlePeerBlob serves another replica a blob from the cache or from the
// fetch under way, as it arrives, with the last byte held back until the
// whole blob is verified, as for any client. Range "bytes=N-" resumes.
func (s *Server) handlePeerBlob(w http.ResponseWriter, r *http.Request) {
	if s.blobs.fleet == nil || !peerAuthorized(r, s.blobs.fleet.secret) {
		writeError(w, r, errorf(http.StatusForbidden, CodeDenied, "not a replica of this fleet"))
		return
	}
	up, err := s.upstreamFor(chi.URLParam(r, "upstream"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	dgst, err := digest.Parse(chi.URLParam(r, "digest"))
	if err != nil {
		writeError(w, r, errorf(http.StatusBadRequest, CodeDigestInvalid, "%v", err))
		return
	}
	t := &target{upstream: up, dgst: dgst, kind: kindBlob}
	if blob, err := s.store.OpenBlob(dgst); err == nil {
		defer blob.Close()
		noteCache(r, cacheHit)
		if err := serveContent(w, r, t, blob.File, blob.Size); err != nil {
			writeError(w, r, err)
		}
		return
	}
	f := s.blobs.inflightFor(fetchKey{up.Name(), dgst})
	if f == nil {
		writeError(w, r, errorf(http.StatusNotFound, CodeBlobUnknown, "no fetch of %s here", dgst))
		return
	}
	noteCache(r, cacheCoalesced)
	ctx := r.Context()
	if err := f.waitHeaders(ctx); err != nil {
		writeError(w, r, err)
		return
	}
	rd, err := f.reader(ctx, s.store)
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer rd.Close()
	size, err := rd.knownSize()
	if err == nil {
		err = rd.started()
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := serveContent(&followingWriter{ResponseWriter: w, rd: rd}, r, t, rd, size); err != nil {
		writeError(w, r, err)
		return
	}
	if rd.err != nil {
		noteError(r, rd.err)
		panic(http.ErrAbortHandler)
	}
}

func peerAuthorized(r *http.Request, secret string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && secret != "" && subtle.ConstantTimeCompare([]byte(got), []byte(secret)) == 1
}

// errPeer marks a peer that could not stream: the fetch takes over or
// fetches alone.
var errPeer = errors.New("peer could not stream")

// fromPeer opens the blob from the lease's owner; when the owner cannot
// stream (it died, or finished and its blob is in the shared store), the
// lease is claimed again, and the caller goes on as owner or alone.
func (b *blobFetches) fromPeer(ctx context.Context, role *fetchRole, up *registry, repo storage.Repo, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	rc, total, err := b.peerSource(ctx, role.owner, up, repo, dgst, offset)
	if err == nil {
		b.tel.fleetFollowed.Add(ctx, 1, whatBlob)
		return rc, total, nil
	}
	var e *Error
	if errors.As(err, &e) && isRefusal(err) {
		return nil, 0, err // the upstream said no to this repository
	}
	b.log.Info("fleet: the fetch's owner cannot stream; taking over", "owner", role.owner, "digest", dgst, "cause", err)
	*role = b.claim(ctx, fetchKey{up.Name(), dgst})
	if role.owner != "" {
		// Still held, by a replica that does not stream: rather than
		// wait for its lease to expire, fetch alone, and count it.
		b.tel.fleetAlone.Add(ctx, 1, metric.WithAttributes(attribute.String("what", "blob"), attribute.String("why", "owner not streaming")))
		role.owner = ""
	}
	return nil, 0, errPeer
}

// tagFromFleet takes the lease on resolving a tag, or, when another
// replica holds it, that replica's answer, verified and cached as if from
// the upstream. A nil manifest means this replica resolves the tag itself,
// holding the returned lease (nil when alone) until it has.
func (s *Server) tagFromFleet(ctx context.Context, t *target, repo storage.Repo, variant string, accept []string) (*coord.Lease, *manifest) {
	fl := s.blobs.fleet
	if fl == nil {
		return nil, nil
	}
	lctx, cancel := context.WithTimeout(ctx, peerTimeout)
	lease, owner, err := fl.coord.Acquire(lctx, "tag:"+repo.String()+":"+t.ref+":"+variant)
	cancel()
	if err != nil {
		s.blobs.redisHealth.fail(err)
		s.log.Warn("fleet: Redis unreachable; resolving the tag alone", "repo", repo.String(), "tag", t.ref, "err", err)
		s.blobs.tel.fleetAlone.Add(ctx, 1, whatTag)
		return nil, nil
	}
	s.blobs.redisHealth.ok()
	if owner == "" {
		return lease, nil
	}
	m, err := s.manifestFromPeer(ctx, owner, t, repo, variant, accept)
	if err != nil {
		s.log.Info("fleet: the replica resolving the tag did not answer; resolving it alone", "owner", owner, "repo", repo.String(), "tag", t.ref, "cause", err)
		s.blobs.tel.fleetAlone.Add(ctx, 1, whatTag)
		return nil, nil
	}
	if err := s.storeManifest(repo, m); err != nil {
		s.log.Warn("cache manifest from a peer", "repo", repo.String(), "digest", m.dgst, "err", err)
	}
	s.recordTag(repo, t.ref, variant, m)
	s.blobs.tel.fleetFollowed.Add(ctx, 1, whatTag)
	m.cache = cacheCoalesced
	return nil, m
}

// manifestFromPeer asks the replica at owner for its answer to a tag, and
// checks that the body is the manifest its digest names.
func (s *Server) manifestFromPeer(ctx context.Context, owner string, t *target, repo storage.Repo, variant string, accept []string) (*manifest, error) {
	q := url.Values{"upstream": {repo.Upstream}, "repo": {repo.Name}, "tag": {t.ref}, "variant": {variant}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(owner, "/")+peerManifestPath+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.blobs.fleet.secret)
	rctx, cancel := context.WithTimeout(ctx, t.upstream.Policy().Retry.Deadline+peerTimeout)
	defer cancel()
	resp, err := s.blobs.fleet.client.Do(req.WithContext(rctx))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	dgst, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil || len(body) > maxManifestSize || dgst.Algorithm().FromBytes(body) != dgst {
		return nil, fmt.Errorf("a manifest that does not match its digest %q", resp.Header.Get("Docker-Content-Digest"))
	}
	ct := resp.Header.Get("Content-Type")
	if !acceptable(ct, accept) {
		return nil, fmt.Errorf("a manifest of type %s, not one the client accepts", ct)
	}
	return &manifest{dgst: dgst, contentType: ct, body: body}, nil
}

// handlePeerManifest answers another replica with this one's resolution of
// a tag: the flight under way, or the record it just left.
func (s *Server) handlePeerManifest(w http.ResponseWriter, r *http.Request) {
	if s.blobs.fleet == nil || !peerAuthorized(r, s.blobs.fleet.secret) {
		writeError(w, r, errorf(http.StatusForbidden, CodeDenied, "not a replica of this fleet"))
		return
	}
	q := r.URL.Query()
	up, err := s.upstreamFor(q.Get("upstream"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	repo := storage.Repo{Upstream: up.Name(), Name: q.Get("repo")}
	tag, variant := q.Get("tag"), q.Get("variant")
	var m *manifest
	if fl := s.manifests.lookup(tagFlightKey(repo, tag, variant)); fl != nil {
		if m, err = fl.wait(r.Context(), true); err != nil {
			writeError(w, r, err)
			return
		}
	} else {
		rec, err := s.store.GetTag(repo, tag, variant)
		if err != nil || time.Since(rec.CheckedAt) >= s.tagTTL {
			writeError(w, r, errorf(http.StatusNotFound, CodeManifestUnknown, "no fresh resolution of %s:%s here", repo, tag))
			return
		}
		if m, err = s.localManifest(repo, rec.Digest); err != nil {
			writeError(w, r, errorf(http.StatusNotFound, CodeManifestUnknown, "no fresh resolution of %s:%s here", repo, tag))
			return
		}
	}
	noteCache(r, cacheCoalesced)
	h := w.Header()
	h.Set("Content-Type", m.contentType)
	h.Set("Docker-Content-Digest", m.dgst.String())
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	_, _ = w.Write(m.body)
}

// publishHold is an upstream client's OnHold in a fleet: the hold (a rate
// limit, the circuit opening or closing) goes to Redis, so that every
// replica holds with it; nil outside a fleet.
func (f *fleet) publishHold(base context.Context, name string, log *slog.Logger) func(upstream.Hold) {
	if f == nil {
		return nil
	}
	return func(h upstream.Hold) {
		f.publish(base, log, coord.Hold{Kind: string(h.Kind), Upstream: name, Until: h.Until, Cause: h.Cause})
	}
}

// publishCount is an upstream client's OnRemaining in a fleet: the count of
// pulls left goes to Redis, for every replica's rate_limit_reserve to
// spare the limit as soon as any replica sees it low; nil outside a fleet.
func (f *fleet) publishCount(base context.Context, name string, log *slog.Logger) func(upstream.RateLimitCount) {
	if f == nil {
		return nil
	}
	return func(n upstream.RateLimitCount) {
		window := n.Window
		if window <= 0 {
			window = time.Hour
		}
		f.publish(base, log, coord.Hold{Kind: "count", Upstream: name, Until: n.At.Add(window), Remaining: n.Remaining, Limit: n.Limit, At: n.At})
	}
}

// publish sends h to the fleet in the background: the upstream client
// that told of it must not wait for Redis.
func (f *fleet) publish(base context.Context, log *slog.Logger, h coord.Hold) {
	go func() {
		ctx, cancel := context.WithTimeout(base, peerTimeout)
		defer cancel()
		if err := f.coord.PublishHold(ctx, h); err != nil {
			log.Warn("fleet: not shared", "kind", h.Kind, "upstream", h.Upstream, "err", err)
		}
	}()
}

// holdWithFleet applies the holds other replicas found, those in force now
// and those to come, to this replica's upstream clients: a rate limit, and
// a circuit opened on a down upstream or closed by a probe answered.
func (s *Server) holdWithFleet() {
	fl := s.blobs.fleet
	if fl == nil {
		return
	}
	apply := func(h coord.Hold) {
		up := s.upstreams[h.Upstream]
		switch {
		case up == nil:
		case h.Kind == "count":
			up.HearRateLimit(upstream.RateLimitCount{Remaining: h.Remaining, Limit: h.Limit, At: h.At})
		default:
			up.Hold(upstream.Hold{Kind: upstream.HoldKind(h.Kind), Until: h.Until, Cause: h.Cause})
		}
	}
	names := make([]string, 0, len(s.upstreams))
	for n := range s.upstreams {
		names = append(names, n)
	}
	// Before the first request: a replica that starts during a hold must
	// not be the one that breaks it. Subscribed first, then read, so that
	// a hold published meanwhile is heard. Redis down costs the start a
	// second.
	ctx, cancel := context.WithTimeout(s.base, time.Second)
	defer cancel()
	watch, err := fl.coord.SubscribeHolds(ctx)
	if err != nil {
		s.log.Warn("fleet: not subscribed to the fleet's holds yet", "err", err)
	}
	holds, err := fl.coord.Holds(ctx, names)
	if err != nil {
		s.log.Warn("fleet: the rate limits in force not read", "err", err)
	}
	for _, h := range holds {
		apply(h)
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		watch.Run(s.base, apply)
	}()
}
