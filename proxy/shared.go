package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/breakwater-registry/breakwater/objstore"
	"github.com/breakwater-registry/breakwater/storage"
)

// sharedTimeout bounds one question to the shared store on a request's
// path: a store that does not answer costs a pull this much, then the
// upstream is asked as if there were no store.
const sharedTimeout = 5 * time.Second

// maxUploads is how many blobs a replica writes to the shared store at
// once; more wait, so that uploads never take the upstream fetches'
// bandwidth and memory all at once.
const maxUploads = 4

// sharedSource opens the blob in the shared store from offset on when the
// store holds it and says repo may serve it. ok is false when the caller
// should ask the upstream instead: the store lacks it, lacks the link, or
// fails (which is logged and counted, never the client's error).
func (b *blobFetches) sharedSource(ctx context.Context, up *registry, repo storage.Repo, dgst digest.Digest, offset int64) (rc io.ReadCloser, size int64, ok bool) {
	if b.shared == nil {
		return nil, 0, false
	}
	sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	linked, err := b.shared.Linked(sctx, up.Name(), repo.Name, dgst)
	if err != nil {
		b.sharedFailed("link", dgst, err)
		return nil, 0, false
	}
	b.sharedHealth.ok()
	if !linked {
		return nil, 0, false
	}
	release, ok := b.pinShared(sctx, dgst, time.Time{})
	if !ok {
		return nil, 0, false
	}
	size, err = b.shared.StatBlob(sctx, dgst)
	if err != nil {
		release()
		if !errors.Is(err, objstore.ErrNotFound) {
			b.sharedFailed("stat", dgst, err)
		}
		return nil, 0, false
	}
	// The body outlives this question: its own context is the fetch's.
	rc, err = b.shared.Reader(ctx, dgst, offset)
	if err != nil {
		release()
		b.sharedFailed("read", dgst, err)
		return nil, 0, false
	}
	return &pinnedReader{ReadCloser: rc, release: release}, size, true
}

// health is whether a shared part of the fleet answered last time it was
// asked, and if not, why.
type health struct {
	mu  sync.Mutex
	err string
}

func (h *health) ok() {
	h.mu.Lock()
	h.err = ""
	h.mu.Unlock()
}

func (h *health) fail(err error) {
	h.mu.Lock()
	h.err = err.Error()
	h.mu.Unlock()
}

// answering reports that the part answered the last question asked of it.
func (h *health) answering() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err == ""
}

// state is ok or failing with the last error; ok before the first question.
func (h *health) state() (string, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != "" {
		return "failing", h.err
	}
	return "ok", ""
}

func (b *blobFetches) sharedFailed(op string, dgst digest.Digest, err error) {
	b.sharedHealth.fail(fmt.Errorf("%s: %w", op, err))
	b.log.Warn("shared store", "op", op, "digest", dgst, "err", err)
	b.tel.sharedErrors.Add(context.Background(), 1, metric.WithAttributes(attribute.String("op", op)))
}

// share writes a blob just committed to the local cache to the shared
// store, with its link, in the background.
func (b *blobFetches) share(up *registry, repo storage.Repo, dgst digest.Digest) {
	if b.shared == nil {
		return
	}
	b.later(0, func(ctx context.Context) {
		select {
		case b.uploads <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-b.uploads }()
		size, err := b.shared.StatBlob(ctx, dgst)
		if err != nil {
			blob, err := b.store.OpenBlob(dgst)
			if err != nil {
				return // evicted already: another fetch will share it
			}
			size = blob.Size
			err = b.shared.PutBlob(ctx, dgst, blob.File)
			blob.Close()
			if err != nil {
				b.sharedFailed("put", dgst, err)
				return
			}
			b.tel.sharedUploads.Add(ctx, 1)
		}
		b.storedShared(ctx, dgst, size)
		b.shareLink(ctx, up, repo, dgst)
	})
}

// later runs work in the background under the server's lifetime, bounded
// by timeout when it is not 0; the server's Close waits for it.
func (b *blobFetches) later(timeout time.Duration, work func(ctx context.Context)) {
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		ctx := b.base
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		work(ctx)
	}()
}

// shareLink records in the shared store that the upstream said yes to repo
// for dgst. Without the blob there the link is harmless: a replica reads
// a blob there only when both are.
func (b *blobFetches) shareLink(ctx context.Context, up *registry, repo storage.Repo, dgst digest.Digest) {
	if b.shared == nil {
		return
	}
	if err := b.shared.Link(ctx, up.Name(), repo.Name, dgst); err != nil {
		b.sharedFailed("link", dgst, err)
	}
}

// shareLinkLater is shareLink in the background, for a request that has
// its answer already.
func (b *blobFetches) shareLinkLater(up *registry, repo storage.Repo, dgst digest.Digest) {
	if b.shared == nil {
		return
	}
	b.later(sharedTimeout, func(ctx context.Context) { b.shareLink(ctx, up, repo, dgst) })
}

// linked reports whether repo may serve the blob without asking the
// upstream: the local cache says so, or the shared store does because an
// upstream said yes to another replica (then the cache learns it too).
func (s *Server) linked(ctx context.Context, t *target, repo storage.Repo) bool {
	if s.store.BlobLinked(repo, t.dgst) {
		return true
	}
	if s.blobs.shared == nil {
		return false
	}
	sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	ok, err := s.blobs.shared.Linked(sctx, t.upstream.Name(), repo.Name, t.dgst)
	if err != nil {
		s.blobs.sharedFailed("link", t.dgst, err)
		return false
	}
	if ok {
		if err := s.store.LinkBlob(repo, t.dgst); err != nil {
			s.log.Warn("link blob", "repo", repo, "digest", t.dgst, "err", err)
		}
	}
	return ok
}

// redirectToShared answers a GET with a redirect to the shared store's
// presigned URL of the blob when the store has it for repo; served is
// false when the request is to be answered otherwise.
func (s *Server) redirectToShared(w http.ResponseWriter, r *http.Request, t *target, repo storage.Repo) (served bool) {
	ctx, cancel := context.WithTimeout(r.Context(), sharedTimeout)
	defer cancel()
	shared := s.blobs.shared
	if ok, err := shared.Linked(ctx, t.upstream.Name(), repo.Name, t.dgst); err != nil || !ok {
		return false
	}
	if _, ok := s.blobs.pinShared(ctx, t.dgst, time.Now().Add(presignLifetime)); !ok {
		return false
	}
	if _, err := shared.StatBlob(ctx, t.dgst); err != nil {
		return false
	}
	u, err := shared.URL(r, t.dgst)
	if err != nil || u == "" {
		if err != nil {
			s.blobs.sharedFailed("presign", t.dgst, err)
		}
		return false
	}
	noteCache(r, cacheRedirect)
	setBlobHeaders(w.Header(), t)
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
	return true
}

// shareManifest writes a manifest just verified, and its record for repo,
// to the shared store in the background.
func (b *blobFetches) shareManifest(repo storage.Repo, m *manifest) {
	if b.shared == nil {
		return
	}
	rec, err := json.Marshal(storage.ManifestRecord{MediaType: m.contentType, Size: int64(len(m.body))})
	if err != nil {
		return
	}
	b.later(time.Minute, func(ctx context.Context) {
		if _, err := b.shared.StatBlob(ctx, m.dgst); err != nil {
			if err := b.shared.PutBlob(ctx, m.dgst, bytes.NewReader(m.body)); err != nil {
				b.sharedFailed("put", m.dgst, err)
				return
			}
		}
		b.storedShared(ctx, m.dgst, int64(len(m.body)))
		key := m.dgst.Algorithm().String() + "/" + m.dgst.Encoded()
		if err := b.shared.PutRecord(ctx, repo.Upstream, repo.Name, objstore.Manifests, key, rec); err != nil {
			b.sharedFailed("record", m.dgst, err)
		}
	})
}

// shareTag writes a tag record to the shared store in the background, so
// that the fleet asks the upstream about a tag once per tag TTL.
func (b *blobFetches) shareTag(repo storage.Repo, tag, variant string, rec storage.TagRecord) {
	if b.shared == nil {
		return
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return
	}
	b.later(sharedTimeout, func(ctx context.Context) {
		if err := b.shared.PutRecord(ctx, repo.Upstream, repo.Name, objstore.Tags, tag+"/"+variant, body); err != nil {
			b.sharedFailed("record", rec.Digest, err)
		}
	})
}

// sharedManifest returns a manifest repo serves from the shared store,
// verified against its digest, and caches it; an error when the store
// lacks it or fails.
func (s *Server) sharedManifest(repo storage.Repo, dgst digest.Digest) (*manifest, error) {
	shared := s.blobs.shared
	ctx, cancel := context.WithTimeout(s.base, sharedTimeout)
	defer cancel()
	b, err := shared.GetRecord(ctx, repo.Upstream, repo.Name, objstore.Manifests, dgst.Algorithm().String()+"/"+dgst.Encoded())
	if err != nil {
		if !errors.Is(err, objstore.ErrNotFound) {
			s.blobs.sharedFailed("record", dgst, err)
		}
		return nil, err
	}
	var rec storage.ManifestRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		s.blobs.sharedFailed("record", dgst, err)
		return nil, err
	}
	rc, err := shared.Reader(ctx, dgst, 0)
	if err != nil {
		if !errors.Is(err, objstore.ErrNotFound) {
			s.blobs.sharedFailed("read", dgst, err)
		}
		return nil, err
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		s.blobs.sharedFailed("read", dgst, err)
		return nil, err
	}
	if len(body) > maxManifestSize || dgst.Algorithm().FromBytes(body) != dgst {
		s.log.Error("shared store: a manifest does not match its digest; deleted", "digest", dgst)
		s.blobs.sharedFailed("verify", dgst, storage.ErrDigestMismatch)
		if err := shared.DeleteBlob(ctx, dgst); err != nil {
			s.blobs.sharedFailed("delete", dgst, err)
		}
		return nil, storage.ErrDigestMismatch
	}
	m := &manifest{dgst: dgst, contentType: rec.MediaType, body: body}
	if err := s.storeManifest(repo, m); err != nil {
		s.log.Warn("cache manifest from the shared store", "repo", repo.String(), "digest", dgst, "err", err)
	}
	return m, nil
}

// sharedTag returns the shared store's record of a tag, if it has one.
func (s *Server) sharedTag(ctx context.Context, repo storage.Repo, tag, variant string) (storage.TagRecord, bool) {
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	b, err := s.blobs.shared.GetRecord(ctx, repo.Upstream, repo.Name, objstore.Tags, tag+"/"+variant)
	if err != nil {
		if !errors.Is(err, objstore.ErrNotFound) {
			s.blobs.sharedFailed("record", "", err)
		}
		return storage.TagRecord{}, false
	}
	var rec storage.TagRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Digest.Validate() != nil {
		s.blobs.sharedFailed("record", "", fmt.Errorf("tag %s of %s: %w", tag, repo, err))
		return storage.TagRecord{}, false
	}
	return rec, true
}
