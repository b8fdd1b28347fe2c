package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// maxManifestSize matches distribution's limit; a larger answer is not a
// manifest and is not held in memory.
const maxManifestSize = 4 << 20

// defaultAccept is sent upstream for clients that accept anything: every
// manifest type a runtime can use, so the upstream need not guess.
var defaultAccept = []string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}

// manifest is a manifest ready to serve.
type manifest struct {
	dgst        digest.Digest
	contentType string
	body        []byte
	cache       string // how it was obtained, for the request log
	// age is how long ago a stale copy's tag was last checked upstream.
	age time.Duration
}

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, t *target) error {
	var m *manifest
	var err error
	if t.dgst != "" {
		m, err = s.manifestByDigest(r.Context(), t)
	} else {
		m, err = s.manifestByTag(r.Context(), t, s.accepts.of(r.Header))
	}
	if err != nil {
		return err
	}
	noteCache(r, m.cache)
	s.blobs.usedShared(m.dgst)
	// One allocation for the four values, keys already canonical: this is
	// the answer a fleet asks for most.
	vals := [...]string{m.contentType, m.dgst.String(), `"` + m.dgst.String() + `"`, strconv.Itoa(len(m.body))}
	v := vals[:]
	h := w.Header()
	h["Content-Type"] = v[0:1:1]
	h["Docker-Content-Digest"] = v[1:2:2]
	h["Etag"] = v[2:3:3]
	h["Content-Length"] = v[3:4:4]
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.body)
	}
	return nil
}

// manifestByDigest serves immutable content: from cache when the repository
// is known to have it, otherwise fetched and verified against the digest.
func (s *Server) manifestByDigest(ctx context.Context, t *target) (*manifest, error) {
	repo := storage.Repo{Upstream: t.upstream.Name(), Name: t.repo}
	if m, err := s.cachedManifest(repo, t.dgst); err == nil {
		m.cache = cacheHit
		return m, nil
	}
	key := "d\x00" + repo.String() + "\x00" + t.dgst.String()
	fl, shared := s.manifests.join(key, s.base, &s.background, func(ctx context.Context, _ upstream.CallOption) (*manifest, error) {
		m, err := s.fetchManifest(ctx, t.upstream, repo, t.dgst.String(), defaultAccept)
		if err != nil {
			return nil, err
		}
		if m.dgst != t.dgst {
			return nil, &Error{Status: http.StatusBadGateway, Code: CodeDigestInvalid,
				Message: fmt.Sprintf("upstream %s answered %s with a manifest of digest %s; nothing was cached", t.upstream.Name(), t.dgst, m.dgst)}
		}
		if err := s.storeManifest(repo, m); err != nil {
			return nil, err
		}
		s.blobs.shareManifest(repo, m)
		m.cache = cacheMiss
		return m, nil
	})
	return fl.wait(ctx, shared)
}

// manifestByTag serves a tag from cache while its record is fresh. After
// that it asks upstream with a HEAD (which Docker Hub does not count against
// the pull rate limit) and GETs only when the tag moved to a manifest the
// repository lacks. When the upstream cannot answer at once — a try failed
// and is being retried, its circuit is open, it is rate limited, or it has
// not answered within RevalidateTimeout — a cached copy up to MaxStale old
// is served instead (stale-if-error) while the revalidation goes on in the
// background and updates the record when the upstream answers.
// recordedTag is the freshest record of the tag: this replica's, or, when
// askShared, the shared store's when that is newer — another replica asked
// the upstream since, and its record counts as this one's, so the fleet
// asks once per TTL — which the local cache then takes.
func (s *Server) recordedTag(ctx context.Context, repo storage.Repo, tag, variant string, askShared bool) (storage.TagRecord, error) {
	rec, err := s.store.GetTag(repo, tag, variant)
	if !askShared || s.blobs.shared == nil || (err == nil && time.Since(rec.CheckedAt) < s.tagTTL) {
		return rec, err
	}
	if srec, ok := s.sharedTag(ctx, repo, tag, variant); ok && (err != nil || srec.CheckedAt.After(rec.CheckedAt)) {
		if perr := s.store.PutTag(repo, tag, variant, srec); perr != nil {
			s.log.Warn("record tag", "repo", repo.String(), "tag", tag, "err", perr)
		}
		return srec, nil
	}
	return rec, err
}

func (s *Server) manifestByTag(ctx context.Context, t *target, ca clientAccept) (*manifest, error) {
	repo := storage.Repo{Upstream: t.upstream.Name(), Name: t.repo}
	accept, variant := ca.types, ca.variant
	rec, err := s.recordedTag(ctx, repo, t.ref, variant, true)
	if err == nil {
		fresh := time.Since(rec.CheckedAt) < s.tagTTL
		if fresh || s.sparingRateLimit(t.upstream) {
			if m, err := s.cachedManifest(repo, rec.Digest); err == nil {
				m.cache = cacheHit
				if !fresh {
					m.cache = cacheStale
				}
				return m, nil
			}
		}
	}
	upAccept := accept
	if len(upAccept) == 0 {
		upAccept = defaultAccept
	}
	key := tagFlightKey(repo, t.ref, variant)
	fl, shared := s.manifests.join(key, s.base, &s.background, func(ctx context.Context, onDelay upstream.CallOption) (*manifest, error) {
		// In a fleet one replica resolves the tag with the upstream;
		// the others take its answer.
		lease, peer := s.tagFromFleet(ctx, t, repo, variant, upAccept)
		defer lease.Release()
		if peer != nil {
			return peer, nil
		}
		// A lookup that ended since this request read the record (this
		// replica's, or the one whose lease was just released) left a
		// fresh one: the upstream need not hear of the tag again. A
		// shared store that failed is not waited for a second time.
		if rec, err := s.recordedTag(ctx, repo, t.ref, variant, s.blobs.sharedHealth.answering()); err == nil && time.Since(rec.CheckedAt) < s.tagTTL {
			if m, err := s.cachedManifest(repo, rec.Digest); err == nil {
				m.cache = cacheCoalesced
				return m, nil
			}
		}
		known, err := s.store.TagRecords(repo, t.ref)
		if err != nil {
			return nil, err
		}
		if len(known) > 0 {
			// The tag is cached for this or another Accept set: a HEAD
			// may show it points at a manifest already here.
			m, err := s.resolveByHead(ctx, t, repo, upAccept, onDelay)
			if err != nil {
				return nil, err
			}
			if m != nil {
				s.recordTag(repo, t.ref, variant, m)
				m.cache = cacheRevalid
				return m, nil
			}
		}
		m, err := s.fetchManifest(ctx, t.upstream, repo, t.ref, upAccept, onDelay)
		if err != nil {
			return nil, err
		}
		if err := s.storeManifest(repo, m); err != nil {
			return nil, err
		}
		s.blobs.shareManifest(repo, m)
		s.recordTag(repo, t.ref, variant, m)
		m.cache = cacheMiss
		return m, nil
	})
	stale := s.staleTag(repo, t.ref, variant, accept)
	if stale == nil {
		return fl.wait(ctx, shared)
	}
	timer := time.NewTimer(s.revalidate)
	defer timer.Stop()
	select {
	case <-fl.done:
		m, err := fl.result(shared)
		if err != nil && isUnavailable(err) {
			return s.serveStale(stale, repo, t.ref, "upstream unavailable: serving cached tag", err), nil
		}
		return m, err
	case <-fl.delayed:
		return s.serveStale(stale, repo, t.ref, "upstream unavailable: serving cached tag", upstreamError(t.upstream, fl.delay, kindManifest)), nil
	case <-timer.C:
		return s.serveStale(stale, repo, t.ref, "upstream slow: serving cached tag",
			fmt.Errorf("no answer from upstream %s within %s", t.upstream.Name(), s.revalidate)), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// tagFlightKey names the resolution of one tag for one Accept set.
func tagFlightKey(repo storage.Repo, tag, variant string) string {
	return "t\x00" + repo.String() + "\x00" + tag + "\x00" + variant
}

// serveStale logs why a cached tag is served past its TTL.
func (s *Server) serveStale(m *manifest, repo storage.Repo, tag, why string, cause error) *manifest {
	var e *Error
	msg := cause.Error()
	if errors.As(cause, &e) {
		msg = e.Message
	}
	s.log.Warn(why, "upstream", repo.Upstream, "repo", repo.Name, "tag", tag, "digest", m.dgst,
		"age", m.age.Round(time.Second).String(), "cause", msg)
	m.cache = cacheStale
	return m
}

// sparingRateLimit reports whether up has so few pulls left that cached
// tags should be served without asking again.
func (s *Server) sparingRateLimit(up *registry) bool {
	if up.reserve <= 0 {
		return false
	}
	left := up.RateLimitRemaining()
	return left >= 0 && left <= up.reserve
}

func (s *Server) recordTag(repo storage.Repo, tag, variant string, m *manifest) {
	rec := storage.TagRecord{Digest: m.dgst, MediaType: m.contentType, Size: int64(len(m.body)), CheckedAt: time.Now()}
	s.blobs.shareTag(repo, tag, variant, rec)
	if err := s.store.PutTag(repo, tag, variant, rec); err != nil {
		// The manifest is served all the same; the tag is asked again
		// next time.
		s.log.Warn("record tag", "repo", repo.String(), "tag", tag, "err", err)
	}
}

// resolveByHead asks upstream where the tag points now and returns the
// manifest if this repository already has it; nil if the caller must GET.
// A fatal answer (the tag is gone, access denied) is returned as the error.
func (s *Server) resolveByHead(ctx context.Context, t *target, repo storage.Repo, accept []string, opts ...upstream.CallOption) (*manifest, error) {
	resp, err := t.upstream.HeadManifest(ctx, repo.Name, t.ref, accept, opts...)
	if err != nil {
		return nil, upstreamError(t.upstream, err, kindManifest)
	}
	resp.Body.Close()
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return nil, nil
	}
	m, err := s.cachedManifest(repo, d)
	if err != nil {
		return nil, nil
	}
	return m, nil
}

// staleTag returns a cached manifest that may stand in for the tag when
// the upstream cannot be asked: the record of the client's own Accept set,
// then any record of a media type the client accepts, up to MaxStale old;
// nil when there is none or stale-if-error is off.
func (s *Server) staleTag(repo storage.Repo, tag, variant string, accept []string) *manifest {
	if s.maxStale <= 0 {
		return nil
	}
	var candidates []storage.TagRecord
	if rec, err := s.store.GetTag(repo, tag, variant); err == nil {
		candidates = append(candidates, rec)
	}
	others, _ := s.store.TagRecords(repo, tag)
	for _, rec := range others {
		if acceptable(rec.MediaType, accept) {
			candidates = append(candidates, rec)
		}
	}
	for _, rec := range candidates {
		age := time.Since(rec.CheckedAt)
		if age > s.maxStale {
			continue
		}
		m, err := s.cachedManifest(repo, rec.Digest)
		if err != nil {
			continue
		}
		m.age = age
		return m
	}
	return nil
}

// acceptable reports whether a client that sent accept takes mediaType.
func acceptable(mediaType string, accept []string) bool {
	if len(accept) == 0 {
		return true
	}
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return false
	}
	for _, a := range accept {
		if a == mt || a == "*/*" {
			return true
		}
	}
	return false
}

// cachedManifest returns a manifest repo is known to serve, if its bytes are
// in the cache.
func (s *Server) cachedManifest(repo storage.Repo, dgst digest.Digest) (*manifest, error) {
	m, err := s.localManifest(repo, dgst)
	if err != nil && s.blobs.shared != nil {
		return s.sharedManifest(repo, dgst)
	}
	return m, err
}

// localManifest is cachedManifest from this replica's cache only.
func (s *Server) localManifest(repo storage.Repo, dgst digest.Digest) (*manifest, error) {
	rec, err := s.store.GetManifest(repo, dgst)
	if err != nil {
		return nil, err
	}
	body, err := s.store.ReadBlob(dgst)
	if err != nil {
		return nil, err
	}
	return &manifest{dgst: dgst, contentType: rec.MediaType, body: body}, nil
}

// fetchManifest GETs a manifest and checks it against the digest the
// upstream claims. It does not store it.
func (s *Server) fetchManifest(ctx context.Context, up *registry, repo storage.Repo, ref string, accept []string, opts ...upstream.CallOption) (*manifest, error) {
	resp, err := up.Manifest(ctx, repo.Name, ref, accept, opts...)
	if err != nil {
		return nil, upstreamError(up, err, kindManifest)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, unavailable(up.Name(), "unreachable: manifest body cut off: "+upstream.NetworkCause(err), 0)
	}
	if len(body) > maxManifestSize {
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeManifestInvalid,
			Message: fmt.Sprintf("upstream %s sent a manifest larger than %d bytes", up.Name(), maxManifestSize)}
	}
	contentType := resp.Header.Get("Content-Type")
	probe := probeManifest(body)
	if probe.schema1(contentType) {
		// Its digest covers the payload without the signatures, so its
		// bytes cannot be checked against it; and it is long deprecated.
		return nil, errorf(http.StatusNotFound, CodeManifestUnknown,
			"upstream %s has %s only as a Docker schema 1 manifest, which Breakwater does not serve (schema 1 cannot be verified byte for byte)",
			up.Name(), ref)
	}
	if why := probe.notAManifest(); why != "" {
		// A 200 no registry gives (seen from broken proxies and CDNs in
		// front of one): a tag must not move to it, and a cached copy
		// serves meanwhile, as for any upstream failure.
		return nil, badUpstream(up.Name(), "sent no manifest for "+ref+": "+why, 0)
	}
	alg := digest.Canonical
	claimed, claimErr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if claimErr == nil {
		alg = claimed.Algorithm()
	}
	if refDigest, err := digest.Parse(ref); err == nil {
		alg = refDigest.Algorithm()
	}
	got := alg.FromBytes(body)
	if claimErr == nil && claimed != got {
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeDigestInvalid,
			Message: fmt.Sprintf("upstream %s sent a manifest of digest %s but claimed %s; nothing was cached", up.Name(), got, claimed)}
	}
	return &manifest{dgst: got, contentType: probe.contentType(contentType), body: body}, nil
}

// ociArtifactManifest is the artifact manifest of OCI 1.1's release
// candidates, which had no schemaVersion; some registries still serve it.
const ociArtifactManifest = "application/vnd.oci.artifact.manifest.v1+json"

// manifestProbe is what fetchManifest reads of an upstream's manifest
// body before it trusts it, parsed once.
type manifestProbe struct {
	size   int
	blank  bool // nothing but white space
	object bool // a JSON object
	// The body's own fields, when it is a JSON object.
	SchemaVersion *int   `json:"schemaVersion"`
	MediaType     string `json:"mediaType"`
}

func probeManifest(body []byte) manifestProbe {
	p := manifestProbe{size: len(body)}
	trimmed := bytes.TrimSpace(body)
	p.blank = len(trimmed) == 0
	p.object = !p.blank && trimmed[0] == '{' && json.Unmarshal(body, &p) == nil
	return p
}

// schema1 reports a Docker schema 1 manifest, by its media type or, when
// the upstream sent none useful, by its schemaVersion.
func (p manifestProbe) schema1(contentType string) bool {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && isSchema1(mt) {
		return true
	}
	return p.object && p.SchemaVersion != nil && *p.SchemaVersion == 1
}

// notAManifest says what the body is instead of a manifest, "" when it
// is one: a JSON object of schemaVersion 2, as every Docker and OCI image
// manifest and index is (schema 1 is refused before this is asked).
func (p manifestProbe) notAManifest() string {
	switch {
	case p.blank:
		return fmt.Sprintf("an empty body (%d bytes)", p.size)
	case !p.object:
		return fmt.Sprintf("%d bytes that are no JSON object", p.size)
	case p.MediaType == ociArtifactManifest:
		return ""
	case p.SchemaVersion == nil:
		return "a JSON object without schemaVersion"
	case *p.SchemaVersion != 2:
		return fmt.Sprintf("schemaVersion %d", *p.SchemaVersion)
	}
	return ""
}

// contentType keeps the upstream's Content-Type, falling back to the
// manifest's own mediaType field when the upstream sent none useful.
func (p manifestProbe) contentType(header string) string {
	if mt, _, err := mime.ParseMediaType(header); err == nil && mt != "application/octet-stream" && mt != "text/plain" {
		return header
	}
	if p.MediaType != "" {
		return p.MediaType
	}
	if header != "" {
		return header
	}
	return "application/vnd.oci.image.manifest.v1+json"
}

// storeManifest caches a verified manifest for repo and records the blobs
// it references, for eviction. It links none of them to repo: a manifest's
// list is the upstream's word for what the manifest needs, not for what
// repo may read (a foreign layer can name any digest), so a blob becomes
// servable for repo only when the upstream serves or confirms it for repo.
// When the cache cannot take writes (full, unwritable) the manifest is
// served without caching.
func (s *Server) storeManifest(repo storage.Repo, m *manifest) error {
	err := s.cacheManifest(repo, m)
	if err != nil && cannotCache(err) {
		s.log.Warn("manifest served without caching", "repo", repo.String(), "digest", m.dgst, "err", err)
		return nil
	}
	return err
}

func (s *Server) cacheManifest(repo storage.Repo, m *manifest) error {
	if err := s.store.PutBlob(m.dgst, m.body); err != nil {
		return fmt.Errorf("cache manifest %s: %w", m.dgst, err)
	}
	if err := s.store.PutManifest(repo, m.dgst, storage.ManifestRecord{MediaType: m.contentType, Size: int64(len(m.body))}); err != nil {
		return fmt.Errorf("cache manifest %s: %w", m.dgst, err)
	}
	s.store.RecordReferences(m.dgst, storage.ReferencedBlobs(m.body))
	return nil
}

// isSchema1 reports Docker's schema 1 manifest types, signed or not.
func isSchema1(mediaType string) bool {
	return strings.HasPrefix(mediaType, "application/vnd.docker.distribution.manifest.v1+")
}
