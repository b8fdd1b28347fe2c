package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
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
	if !linked {
		return nil, 0, false
	}
	size, err = b.shared.StatBlob(sctx, dgst)
	if err != nil {
		if !errors.Is(err, objstore.ErrNotFound) {
			b.sharedFailed("stat", dgst, err)
		}
		return nil, 0, false
	}
	// The body outlives this question: its own context is the fetch's.
	rc, err = b.shared.Reader(ctx, dgst, offset)
	if err != nil {
		b.sharedFailed("read", dgst, err)
		return nil, 0, false
	}
	return rc, size, true
}

func (b *blobFetches) sharedFailed(op string, dgst digest.Digest, err error) {
	b.log.Warn("shared store", "op", op, "digest", dgst, "err", err)
	b.tel.sharedErrors.Add(context.Background(), 1, metric.WithAttributes(attribute.String("op", op)))
}

// share writes a blob just committed to the local cache to the shared
// store, with its link, in the background.
func (b *blobFetches) share(up *registry, repo storage.Repo, dgst digest.Digest) {
	if b.shared == nil {
		return
	}
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		select {
		case b.uploads <- struct{}{}:
		case <-b.base.Done():
			return
		}
		defer func() { <-b.uploads }()
		ctx := b.base
		if _, err := b.shared.StatBlob(ctx, dgst); err != nil {
			blob, err := b.store.OpenBlob(dgst)
			if err != nil {
				return // evicted already: another fetch will share it
			}
			err = b.shared.PutBlob(ctx, dgst, blob.File)
			blob.Close()
			if err != nil {
				b.sharedFailed("put", dgst, err)
				return
			}
			b.tel.sharedUploads.Add(ctx, 1)
		}
		b.shareLink(ctx, up, repo, dgst)
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
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		ctx, cancel := context.WithTimeout(b.base, sharedTimeout)
		defer cancel()
		b.shareLink(ctx, up, repo, dgst)
	}()
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
