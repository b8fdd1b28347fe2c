package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/breakwater-registry/breakwater/storage"
)

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, t *target) error {
	ctx := r.Context()
	repo := storage.Repo{Upstream: t.upstream.name, Name: t.repo}

	if blob, err := s.store.OpenBlob(t.dgst); err == nil {
		defer blob.Close()
		if !s.store.BlobLinked(repo, t.dgst) {
			// Stored for another repository: serve it for this one only if
			// the upstream says this repository has it too.
			if err := s.confirmBlob(ctx, t, repo); err != nil {
				return err
			}
		}
		noteCache(r, cacheHit)
		return serveContent(w, r, t, blob.File, blob.Size)
	}

	if f := s.blobs.inflightFor(fetchKey{t.upstream.name, t.dgst}); f != nil && f.repo != t.repo && !s.store.BlobLinked(repo, t.dgst) {
		if err := s.confirmBlob(ctx, t, repo); err != nil {
			return err
		}
	}
	if r.Method == http.MethodHead && s.blobs.inflightFor(fetchKey{t.upstream.name, t.dgst}) == nil {
		// A HEAD wants to know, not to download: ask upstream the same.
		return s.headBlob(w, r, t, repo)
	}

	f, started := s.blobs.start(t.upstream, repo, t.dgst)
	if started {
		noteCache(r, cacheMiss)
	} else {
		noteCache(r, cacheCoalesced)
	}
	if err := f.waitHeaders(ctx); err != nil {
		return err
	}
	rd, err := f.reader(ctx, s.store)
	if err != nil {
		return err
	}
	defer rd.Close()
	size, err := rd.knownSize()
	if err != nil {
		return err
	}
	if err := serveContent(w, r, t, rd, size); err != nil {
		return err
	}
	if rd.err != nil {
		// Headers and part of the body are out; the only honest signal
		// left is to cut the connection so the client sees a short body.
		noteError(r, rd.err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// serveContent answers GET and HEAD for a blob, with Range support, from a
// cached file (sendfile) or a fetch under way.
func serveContent(w http.ResponseWriter, r *http.Request, t *target, content io.ReadSeeker, size int64) error {
	if err := checkRange(r.Header.Get("Range"), size); err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", t.dgst.String())
	h.Set("Etag", `"`+t.dgst.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")
	http.ServeContent(w, r, "", time.Time{}, content)
	return nil
}

// confirmBlob asks the upstream whether repo has the blob, and links it if
// so. This keeps content fetched for one repository, perhaps with
// credentials, from being served under another repository's name.
func (s *Server) confirmBlob(ctx context.Context, t *target, repo storage.Repo) error {
	resp, err := t.upstream.do(ctx, http.MethodHead, repo.Name, "blobs/"+t.dgst.String(), nil, nil)
	if err != nil {
		return t.upstream.transportError(err)
	}
	if resp.StatusCode != http.StatusOK {
		return t.upstream.statusError(resp, kindBlob)
	}
	resp.Body.Close()
	if err := s.store.LinkBlob(repo, t.dgst); err != nil {
		return fmt.Errorf("link %s to %s: %w", t.dgst, repo, err)
	}
	return nil
}

// headBlob answers a HEAD for a blob not in the cache from an upstream HEAD.
func (s *Server) headBlob(w http.ResponseWriter, r *http.Request, t *target, repo storage.Repo) error {
	resp, err := t.upstream.do(r.Context(), http.MethodHead, repo.Name, "blobs/"+t.dgst.String(), nil, nil)
	if err != nil {
		return t.upstream.transportError(err)
	}
	if resp.StatusCode != http.StatusOK {
		return t.upstream.statusError(resp, kindBlob)
	}
	resp.Body.Close()
	if err := s.store.LinkBlob(repo, t.dgst); err != nil {
		s.log.Warn("link blob", "repo", repo, "digest", t.dgst, "err", err)
	}
	noteCache(r, cachePass)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", t.dgst.String())
	h.Set("Etag", `"`+t.dgst.String()+`"`)
	h.Set("Accept-Ranges", "bytes")
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
