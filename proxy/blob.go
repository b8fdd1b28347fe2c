package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, t *target) error {
	repo := storage.Repo{Upstream: t.upstream.Name(), Name: t.repo}

	if served, err := s.serveCachedBlob(w, r, t, repo); served {
		return err
	}
	if s.sharedRedirect && r.Method == http.MethodGet {
		if served := s.redirectToShared(w, r, t, repo); served {
			return nil
		}
	}
	// A fetch started for another repository is joined only with the
	// upstream's yes for this one; if that fetch is then refused
	// (missing, denied), the refusal was for the other name, and this
	// request starts a fetch of its own.
	for own := false; ; own = true {
		f, err := s.joinFetch(w, r, t, repo)
		if f == nil || err != nil {
			return err
		}
		err = s.followFetch(w, r, t, f)
		if err != nil && !own && f.repo != t.repo && isRefusal(err) {
			continue
		}
		return err
	}
}

// joinFetch returns the fetch of the blob under way or one started for
// repo. It returns a nil fetch when it answered the request itself: a
// HEAD asked upstream, a blob that appeared in the cache, a pass-through.
func (s *Server) joinFetch(w http.ResponseWriter, r *http.Request, t *target, repo storage.Repo) (*blobFetch, error) {
	if r.Method == http.MethodHead && s.blobs.inflightFor(fetchKey{t.upstream.Name(), t.dgst}) == nil {
		// A HEAD wants to know, not to download: ask upstream the same.
		return nil, s.headBlob(w, r, t, repo)
	}
	if s.store.Full() {
		return nil, s.passthroughBlob(w, r, t)
	}
	f, started := s.blobs.start(t.upstream, repo, t.dgst)
	if f == nil {
		// A fetch finished since the cache was looked at.
		if served, err := s.serveCachedBlob(w, r, t, repo); served {
			return nil, err
		}
		// ...and its blob was evicted at once: fetch it again.
		if f, started = s.blobs.start(t.upstream, repo, t.dgst); f == nil {
			return nil, fmt.Errorf("blob %s: in the cache and gone again", t.dgst)
		}
	}
	if !started && f.repo != t.repo && !s.linked(r.Context(), t, repo) {
		// Joining a fetch started for another repository: the same rule
		// as for cached content. Decided on the fetch start returned,
		// not on one looked up before it: another repository's fetch
		// may have started in between.
		if err := s.confirmBlob(r.Context(), t, repo); err != nil {
			return nil, err
		}
	}
	if started {
		noteCache(r, cacheMiss)
	} else {
		noteCache(r, cacheCoalesced)
	}
	return f, nil
}

// followFetch serves the blob from a fetch under way, as its bytes arrive.
func (s *Server) followFetch(w http.ResponseWriter, r *http.Request, t *target, f *blobFetch) error {
	ctx := r.Context()
	// The fetch's own request to the upstream ends by its deadline and
	// says why; a second more is a safety net, so that no client, early
	// or late, waits for headers past its own deadline.
	hctx, cancel := context.WithDeadline(ctx, f.started.Add(t.upstream.Policy().Retry.Deadline+time.Second))
	err := f.waitHeaders(hctx)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return unavailable(t.upstream.Name(), "unreachable: i/o timeout", 0)
	}
	if err != nil {
		if cannotCache(err) {
			return s.passthroughBlob(w, r, t)
		}
		return err
	}
	if r.Method == http.MethodGet && r.Header.Get("Range") != "" {
		// Holding back the last byte protects only ranges that reach the
		// end: any other range of a fetch under way waits until every
		// byte is verified, and gets the fetch's failure as an answer.
		if err := f.waitVerified(ctx); err != nil {
			return err
		}
	}
	rd, err := f.reader(ctx, s.store)
	if err != nil {
		return err
	}
	defer rd.Close()
	size, err := rd.knownSize()
	if err != nil {
		if cannotCache(err) {
			// Without a declared size the fetch learnt only part way
			// that the blob does not fit; no header has gone out.
			return s.passthroughBlob(w, r, t)
		}
		return err
	}
	if err := rd.started(); err != nil {
		return err
	}
	if err := serveContent(&followingWriter{ResponseWriter: w, rd: rd}, r, t, rd, size); err != nil {
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

// isRefusal reports the upstream saying no for a repository: missing or
// denied, not unavailable.
func isRefusal(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Status {
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return false
}

// serveCachedBlob answers from the cache; served is false when the blob is
// not there.
func (s *Server) serveCachedBlob(w http.ResponseWriter, r *http.Request, t *target, repo storage.Repo) (served bool, err error) {
	blob, err := s.store.OpenBlob(t.dgst)
	if err != nil {
		return false, nil
	}
	defer blob.Close()
	if !s.linked(r.Context(), t, repo) {
		// Stored for another repository: serve it for this one only if
		// the upstream says this repository has it too.
		if err := s.confirmBlob(r.Context(), t, repo); err != nil {
			return true, err
		}
	}
	noteCache(r, cacheHit)
	s.blobs.usedShared(t.dgst)
	return true, serveContent(w, r, t, blob.File, blob.Size)
}

// serveContent answers GET and HEAD for a blob, with Range support, from a
// cached file (sendfile) or a fetch under way.
func serveContent(w http.ResponseWriter, r *http.Request, t *target, content io.ReadSeeker, size int64) error {
	if err := checkRange(r.Header.Get("Range"), size); err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return err
	}
	h := w.Header()
	setBlobHeaders(h, t)
	http.ServeContent(w, r, "", time.Time{}, content)
	return nil
}

// confirmBlob asks the upstream whether repo has the blob, and links it if
// so. This keeps content fetched for one repository, perhaps with
// credentials, from being served under another repository's name.
func (s *Server) confirmBlob(ctx context.Context, t *target, repo storage.Repo) error {
	resp, err := t.upstream.HeadBlob(ctx, repo.Name, t.dgst)
	if err != nil {
		return upstreamError(t.upstream, err, kindBlob)
	}
	resp.Body.Close()
	s.blobs.shareLinkLater(t.upstream, repo, t.dgst)
	if err := s.store.LinkBlob(repo, t.dgst); err != nil {
		if !cannotCache(err) {
			return fmt.Errorf("link %s to %s: %w", t.dgst, repo, err)
		}
		// The upstream's yes stands for this request; the next one asks
		// again.
		s.log.Warn("link blob", "repo", repo, "digest", t.dgst, "err", err)
	}
	return nil
}

// headBlob answers a HEAD for a blob not in the cache from an upstream HEAD.
func (s *Server) headBlob(w http.ResponseWriter, r *http.Request, t *target, repo storage.Repo) error {
	resp, err := t.upstream.HeadBlob(r.Context(), repo.Name, t.dgst)
	if err != nil {
		return upstreamError(t.upstream, err, kindBlob)
	}
	resp.Body.Close()
	s.blobs.shareLinkLater(t.upstream, repo, t.dgst)
	if err := s.store.LinkBlob(repo, t.dgst); err != nil {
		s.log.Warn("link blob", "repo", repo, "digest", t.dgst, "err", err)
	}
	noteCache(r, cachePass)
	h := w.Header()
	setBlobHeaders(h, t)
	h.Set("Accept-Ranges", "bytes")
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// cannotCache reports a failure of the cache, not of the content: the disk
// is full, the directory unwritable, or this one blob too large to keep.
// The content is served from upstream without caching.
func cannotCache(err error) bool {
	return storage.IsNoSpace(err) || storage.IsUnwritable(err) || storage.IsTooLarge(err)
}

// passthroughBlob streams a blob from upstream to one client without
// caching it: the cache's disk is full or unwritable, or the blob too
// large to keep, and serving beats failing. It is still verified on the
// way: its last byte is sent only if the digest matched, otherwise the
// connection is cut. A range of a blob cannot be verified, so a Range
// request is answered with the whole blob (200), which HTTP allows and
// clients handle.
func (s *Server) passthroughBlob(w http.ResponseWriter, r *http.Request, t *target) error {
	noteCache(r, cachePass)
	var resp *http.Response
	var err error
	if r.Method == http.MethodHead {
		resp, err = t.upstream.HeadBlob(r.Context(), t.repo, t.dgst)
	} else {
		resp, err = t.upstream.Blob(r.Context(), t.repo, t.dgst, "")
	}
	if err != nil {
		return upstreamError(t.upstream, err, kindBlob)
	}
	defer resp.Body.Close()
	if resp.ContentLength > s.blobs.maxBlob {
		return s.blobs.tooLarge(t.upstream, t.dgst, fmt.Sprintf("declared %d bytes, more", resp.ContentLength))
	}
	if impossibleSize(t.dgst, resp.ContentLength) {
		return digestMismatch(t.upstream, t.dgst)
	}
	h := w.Header()
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	setBlobHeaders(h, t)
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	// The status goes out with the first minProgress bytes the client
	// may have (headerOnWrite): a body that fails before is answered with
	// its error, not a 200 and a cut connection.
	out := &headerOnWrite{ResponseWriter: w}
	body := io.LimitReader(&upstreamStall{body: resp.Body, stall: t.upstream.Policy().Retry.AttemptTimeout}, s.blobs.maxBlob)
	err = copyVerified(out, body, t.dgst.Algorithm().Hash(), t.dgst.Encoded())
	switch {
	case err == nil && !out.wrote:
		// A blob smaller than minProgress, the empty one included; a
		// client that went away meanwhile is no one's failure.
		_ = out.flush()
	case err == nil:
	case out.wrote:
		noteError(r, err)
		panic(http.ErrAbortHandler)
	case errors.Is(err, errContentMismatch):
		return digestMismatch(t.upstream, t.dgst)
	default:
		h.Del("Content-Length")
		return unavailable(t.upstream.Name(), "unreachable: body cut off: "+upstream.NetworkCause(err), 0)
	}
	return nil
}

// headerOnWrite sends the 200 status once minProgress bytes the client may
// have were written, or at the end (flush), as a fetch's clients get their
// headers: a body that fails before (cut off, stalled after a few bytes, a
// small blob whose bytes are wrong) is answered with its error, not with
// a 200 and a connection cut before the server's buffer reached the
// client.
type headerOnWrite struct {
	http.ResponseWriter
	wrote   bool
	pending []byte
}

func (w *headerOnWrite) Write(p []byte) (int, error) {
	if w.wrote {
		return w.ResponseWriter.Write(p)
	}
	w.pending = append(w.pending, p...)
	if len(w.pending) < minProgress {
		return len(p), nil
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush sends the status and what is pending.
func (w *headerOnWrite) flush() error {
	w.wrote = true
	w.ResponseWriter.WriteHeader(http.StatusOK)
	_, err := w.ResponseWriter.Write(w.pending)
	w.pending = nil
	return err
}

// upstreamStall gives up on a passed-through body that brings fewer than
// minProgress bytes in stall, as a fetch does (copyWithStallTimeout). Only
// the time spent waiting for the upstream counts: a slow client holds back
// the reads, and its back-pressure is not the upstream stalling.
type upstreamStall struct {
	body    io.ReadCloser
	stall   time.Duration
	waited  time.Duration // waiting for the upstream since the last minProgress bytes
	since   int64         // bytes since then
	stalled atomic.Bool
}

func (s *upstreamStall) Read(p []byte) (int, error) {
	if s.stall <= 0 {
		return s.body.Read(p)
	}
	if s.waited >= s.stall {
		return 0, upstream.ErrStalled
	}
	// Closing the body unblocks the Read under way.
	timer := time.AfterFunc(s.stall-s.waited, func() {
		s.stalled.Store(true)
		s.body.Close()
	})
	start := time.Now()
	n, err := s.body.Read(p)
	timer.Stop()
	s.waited += time.Since(start)
	if s.since += int64(n); s.since >= minProgress {
		s.since, s.waited = 0, 0
	}
	if err != nil && s.stalled.Load() {
		return n, upstream.ErrStalled
	}
	return n, err
}

// errContentMismatch is copyVerified's verdict on content whose digest is
// not the one asked for.
var errContentMismatch = errors.New("upstream content does not match its digest")

// copyVerified copies src to dst holding back the final byte until the
// content hashed to wantHex.
func copyVerified(dst io.Writer, src io.Reader, h hash.Hash, wantHex string) error {
	buf := make([]byte, 256<<10)
	var held []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if len(held) > 0 {
				if _, werr := dst.Write(held); werr != nil {
					return werr
				}
			}
			if _, werr := dst.Write(buf[:n-1]); werr != nil {
				return werr
			}
			held = append(held[:0], buf[n-1])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	got := fmt.Sprintf("%x", h.Sum(nil))
	if subtle.ConstantTimeCompare([]byte(got), []byte(wantHex)) != 1 {
		return fmt.Errorf("%w: got %s, want %s", errContentMismatch, got, wantHex)
	}
	_, err := dst.Write(held)
	return err
}

// setBlobHeaders sets what every blob answer carries. Content addressed by
// digest never changes, so any cache may keep it.
func setBlobHeaders(h http.Header, t *target) {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", t.dgst.String())
	h.Set("Etag", `"`+t.dgst.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")
}
