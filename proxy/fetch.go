package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/breakwater-registry/breakwater/fleetlru"
	"github.com/breakwater-registry/breakwater/objstore"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// blobFetches runs at most one upstream fetch per (upstream, digest) and
// lets any number of clients read a fetch while it is under way.
type blobFetches struct {
	store *storage.Store
	log   *slog.Logger
	tel   *telemetry
	// maxBlob is the most bytes a blob may have; a longer body is cut
	// and discarded.
	maxBlob int64
	// timeout bounds one whole fetch, which outlives the client that
	// started it.
	timeout time.Duration
	// base ends every fetch when the server closes; running counts them.
	base    context.Context
	running *sync.WaitGroup
	// shared, when set, is read before the upstream and written after
	// each fetch, uploads at a time.
	shared  *objstore.Store
	uploads chan struct{}
	// lru is the fleet's LRU of shared, nil outside a fleet.
	lru *fleetlru.LRU
	// fleet, when set, leases each fetch fleet-wide; the replicas that
	// do not hold a fetch's lease stream it from the one that does.
	fleet *fleet
	// sharedHealth and redisHealth say whether the shared store and Redis
	// answered when last asked.
	sharedHealth, redisHealth health

	mu       sync.Mutex
	inflight map[fetchKey]*blobFetch
}

type fetchKey struct {
	upstream string
	dgst     digest.Digest
}

// blobFetch is one upstream fetch into an ingest file. Readers follow the
// file as it grows; state changes are announced by closing changed.
type blobFetch struct {
	key     fetchKey
	repo    string    // repository the fetch was started for
	started time.Time // when it was

	// headers is closed once size is known or the fetch failed before any
	// byte arrived.
	headers chan struct{}

	mu        sync.Mutex
	size      int64 // -1 while unknown
	written   int64
	done      bool
	err       error
	path      string // the ingest file; once committed, readers open the blob
	changed   chan struct{}
	committed bool
	verified  bool // every byte written hashed to the digest
}

// count returns the fetches under way.
func (b *blobFetches) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.inflight)
}

func newBlobFetches(base context.Context, running *sync.WaitGroup, store *storage.Store, log *slog.Logger, timeout time.Duration, maxBlob int64) *blobFetches {
	return &blobFetches{base: base, running: running, store: store, log: log, timeout: timeout, maxBlob: maxBlob,
		inflight: map[fetchKey]*blobFetch{}, uploads: make(chan struct{}, maxUploads)}
}

// inflightFor returns the fetch under way for key, if any.
func (b *blobFetches) inflightFor(key fetchKey) *blobFetch {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight[key]
}

// start joins the fetch under way for key or starts one for repo. started
// reports whether this call started it. It returns nil when the blob is
// in the cache after all: a fetch that completed after the caller looked
// in the cache has left the in-flight set, and must not be repeated.
func (b *blobFetches) start(up *registry, repo storage.Repo, dgst digest.Digest) (f *blobFetch, started bool) {
	key := fetchKey{up.Name(), dgst}
	b.mu.Lock()
	defer b.mu.Unlock()
	if f := b.inflight[key]; f != nil && !f.finished() {
		return f, false
	}
	// A fetch leaves the set only after its blob is in place, so looking
	// now, under the lock, closes the window.
	if _, err := b.store.StatBlob(dgst); err == nil {
		return nil, false
	}
	f = &blobFetch{
		key:     key,
		repo:    repo.Name,
		started: time.Now(),
		headers: make(chan struct{}),
		size:    -1,
		changed: make(chan struct{}),
	}
	b.inflight[key] = f
	// The fetch fills the cache for everyone; the client that started it
	// may hang up without stopping it. Only closing the server does.
	fctx, cancel := context.WithTimeout(b.base, b.timeout)
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		defer cancel()
		err := b.run(fctx, up, repo, f)
		if err != nil {
			b.log.Warn("blob fetch failed", "upstream", up.Name(), "repo", repo.Name, "digest", dgst, "err", err)
		}
		f.finish(err)
		b.mu.Lock()
		// A fetch started after this one finished may have taken its
		// place already.
		if b.inflight[key] == f {
			delete(b.inflight, key)
		}
		b.mu.Unlock()
	}()
	return f, true
}

// run fetches the blob into an ingest file and commits it. A body cut off
// or stalled part way is resumed with a Range request from the byte
// reached; the whole blob is still verified against its digest at the end.
func (b *blobFetches) run(ctx context.Context, up *registry, repo storage.Repo, f *blobFetch) error {
	in, err := b.store.NewIngest(f.key.dgst)
	if err != nil {
		return err
	}
	defer in.Abort() // a no-op once committed

	size := int64(-1)
	// fromShared marks a fetch any of whose bytes came from the shared
	// store (a mismatch then condemns its copy); fromUpstream one any of
	// whose bytes came from the upstream, which this replica alone has
	// and so writes to the store. A follower's bytes came from the owner,
	// which writes them itself.
	fromShared, fromUpstream := false, false
	role := b.claim(ctx, f.key)
	defer func() { role.lease.Release() }()
	// begun: the first answer's headers were announced. Not offset == 0:
	// a first body cut before its first byte is resumed from 0, and its
	// headers must not be announced twice.
	begun := false
	for stalled := 0; ; {
		offset := in.Size()
		body, total, src, err := b.open(ctx, &role, up, repo, f.key.dgst, offset)
		if err != nil {
			return err
		}
		fromShared = fromShared || src == sourceShared
		fromUpstream = fromUpstream || src == sourceUpstream
		if total > b.maxBlob {
			body.Close()
			return b.tooLarge(up, f.key.dgst, fmt.Sprintf("declared %d bytes, more", total))
		}
		if !begun {
			begun = true
			size = total
			if impossibleSize(f.key.dgst, size) {
				body.Close()
				return digestMismatch(up, f.key.dgst)
			}
			// Refuse before the first byte rather than fail clients half
			// way: they fall back to streaming from upstream.
			if err := b.store.Reserve(size); err != nil {
				body.Close()
				return err
			}
			// The upstream has just said yes to this repository: link
			// now, before any client holds the bytes and may ask for them
			// again, which would otherwise need the upstream's yes anew.
			if err := b.store.LinkBlob(repo, f.key.dgst); err != nil {
				b.log.Warn("link blob", "repo", repo, "digest", f.key.dgst, "err", err)
			}
			f.begin(in.Path(), size)
		} else if total >= 0 && size >= 0 && total != size {
			body.Close()
			return unavailable(up.Name(), fmt.Sprintf("unreachable: resumed body has size %d, not %d", total, size), 0)
		}
		before := in.Size()
		cause := copyWithStallTimeout(body, in, f, up.Policy().Retry.AttemptTimeout, b.maxBlob-offset)
		switch src {
		case sourceShared:
			b.tel.sharedFetched.Add(ctx, in.Size()-before)
		case sourcePeer:
			b.tel.peerFetched.Add(ctx, in.Size()-before)
		default:
			b.tel.bytesFetched.Add(ctx, in.Size()-before, metric.WithAttributes(attribute.String("upstream", up.Name())))
		}
		body.Close()
		if cause == nil {
			break
		}
		var writeErr *storage.WriteError
		if errors.As(cause, &writeErr) || ctx.Err() != nil {
			return cause
		}
		if errors.Is(cause, errTooLong) {
			return b.tooLarge(up, f.key.dgst, "sent more bytes")
		}
		// A try that brought less than a trickle's worth is no progress:
		// an upstream that drips a byte a second is as stuck as one that
		// sends nothing.
		if in.Size()-offset < minProgress {
			stalled++
		} else {
			stalled = 0
		}
		if stalled >= maxStalledResumes {
			return unavailable(up.Name(), fmt.Sprintf("unreachable: body cut off at byte %d: %s", in.Size(), upstream.NetworkCause(cause)), 0)
		}
		b.log.Info("resuming blob fetch", "upstream", up.Name(), "repo", repo.Name, "digest", f.key.dgst,
			"offset", in.Size(), "size", size, "cause", cause.Error())
	}
	if size >= 0 && in.Size() != size {
		return unavailable(up.Name(), fmt.Sprintf("unreachable: body cut off at %d of %d bytes", in.Size(), size), 0)
	}
	// Verified content may reach clients while it is made durable: the
	// fsync of a large blob would otherwise hold every client's last byte.
	err = in.Verify()
	if err == nil {
		f.verify()
		err = in.Commit()
	}
	if errors.Is(err, storage.ErrDigestMismatch) {
		if fromShared {
			// Only verified bytes are written there; these changed
			// since. Gone, the next fetch asks the upstream.
			b.log.Error("shared store: a blob does not match its digest; deleted", "digest", f.key.dgst)
			b.sharedFailed("verify", f.key.dgst, storage.ErrDigestMismatch)
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedTimeout)
			if err := b.shared.DeleteBlob(dctx, f.key.dgst); err != nil {
				b.sharedFailed("delete", f.key.dgst, err)
			}
			cancel()
			return &Error{Status: http.StatusBadGateway, Code: CodeDigestInvalid,
				Message: fmt.Sprintf("the shared store's copy of %s does not match it; it was deleted, and the next pull asks upstream %s", f.key.dgst, up.Name())}
		}
		return digestMismatch(up, f.key.dgst)
	}
	if err != nil {
		return err
	}
	f.commit()
	// Late replicas ask this one, which has the blob now, rather than
	// the upstream.
	role.lease.Finish(finishedLeaseTTL)
	if fromUpstream {
		b.share(up, repo, f.key.dgst)
	}
	return nil
}

// impossibleSize reports a declared size that no content with this digest
// can have. An empty body has one digest per algorithm, and with no last
// byte to hold back it would reach clients as complete before it was
// verified.
func impossibleSize(dgst digest.Digest, size int64) bool {
	return size == 0 && dgst != dgst.Algorithm().FromBytes(nil)
}

// digestMismatch is the answer for an upstream's content that is not what
// its digest names.
func digestMismatch(up *registry, dgst digest.Digest) error {
	return &Error{Status: http.StatusBadGateway, Code: CodeDigestInvalid,
		Message: fmt.Sprintf("upstream %s sent content that does not match %s; nothing was cached", up.Name(), dgst)}
}

// source is where a fetch's bytes came from.
type source int

const (
	sourceUpstream source = iota
	sourceShared          // the fleet's object store
	sourcePeer            // the replica that holds the fetch's lease
)

// open returns a body of the blob positioned at offset and the blob's total
// size (-1 when the upstream did not say): from the shared store when it
// has the blob for repo, else from the replica that holds the fetch's lease
// when another does, else from the upstream.
func (b *blobFetches) open(ctx context.Context, role *fetchRole, up *registry, repo storage.Repo, dgst digest.Digest, offset int64) (io.ReadCloser, int64, source, error) {
	if rc, size, ok := b.sharedSource(ctx, up, repo, dgst, offset); ok {
		return rc, size, sourceShared, nil
	}
	if role.owner != "" {
		rc, total, err := b.fromPeer(ctx, role, up, repo, dgst, offset)
		if err == nil {
			return rc, total, sourcePeer, nil
		}
		if !errors.Is(err, errPeer) {
			return nil, 0, sourcePeer, err
		}
		// The owner may have finished, its blob in the shared store.
		if rc, size, ok := b.sharedSource(ctx, up, repo, dgst, offset); ok {
			return rc, size, sourceShared, nil
		}
	}
	body, total, err := b.openUpstream(ctx, up, repo, dgst, offset)
	return body, total, sourceUpstream, err
}

// openUpstream GETs the blob from offset on and returns a body positioned
// there and the blob's total size (-1 when the upstream did not say).
func (b *blobFetches) openUpstream(ctx context.Context, up *registry, repo storage.Repo, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	var rng string
	if offset > 0 {
		rng = fmt.Sprintf("bytes=%d-", offset)
	}
	resp, err := up.Blob(ctx, repo.Name, dgst, rng)
	if err != nil {
		return nil, 0, upstreamError(up, err, kindBlob)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// The upstream ignored the Range: skip what we have.
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, 0, unavailable(up.Name(), "unreachable: "+upstream.NetworkCause(err), 0)
			}
		}
		return resp.Body, resp.ContentLength, nil
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return nil, 0, unavailable(up.Name(), fmt.Sprintf("unreachable: answered a resume from byte %d with Content-Range %q", offset, resp.Header.Get("Content-Range")), 0)
		}
		return resp.Body, total, nil
	}
	resp.Body.Close()
	return nil, 0, unavailable(up.Name(), fmt.Sprintf("unreachable: answered a blob GET with %s", upstream.OneLine(resp.Status, 100)), 0)
}

// parseContentRange reads "bytes START-END/TOTAL"; total is -1 for "*".
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	startStr, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(startStr, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	return start, total, err == nil
}

// maxStalledResumes is how many tries in a row may bring no progress
// before a blob fetch gives up: one resume, since a cut connection is
// often the connection's fault, and a second is the upstream's.
const maxStalledResumes = 2

// minProgress is what a body must bring within the attempt timeout to be
// making progress: 32 KiB in 10 s is 3 KiB/s, below which no layer is
// worth waiting for.
const minProgress = 32 << 10

// errTooLong reports a body longer than the blob may be.
var errTooLong = errors.New("body longer than the largest blob allowed")

// tooLarge is the answer for a blob past MaxBlobSize: nothing is cached,
// and asking again gets the same.
func (b *blobFetches) tooLarge(up *registry, dgst digest.Digest, what string) error {
	return &Error{Status: http.StatusBadGateway, Code: CodeUnknown,
		Message: fmt.Sprintf("upstream %s %s than the %d bytes a blob may have (cache.max_blob_size) for %s; nothing was cached",
			up.Name(), what, b.maxBlob, dgst)}
}

// copyWithStallTimeout copies body into the ingest, announcing progress,
// and gives up when fewer than minProgress bytes arrive within stall, or
// when the body goes past limit bytes. It returns nil at the end of the
// body.
func copyWithStallTimeout(body io.ReadCloser, in *storage.Ingest, f *blobFetch, stall time.Duration, limit int64) error {
	sr := &stallReader{r: body, stall: stall, left: limit}
	sr.timer = time.AfterFunc(stall, func() {
		sr.stalled.Store(true)
		body.Close() // unblocks the Read under way
	})
	defer sr.timer.Stop()
	_, err := in.CopyFrom(sr, f.advance)
	if err != nil && sr.stalled.Load() {
		var writeErr *storage.WriteError
		if !errors.As(err, &writeErr) {
			return upstream.ErrStalled
		}
	}
	return err
}

// stallReader restarts the stall timer whenever minProgress more bytes
// have arrived, and refuses to read past left bytes.
type stallReader struct {
	r       io.Reader
	stall   time.Duration
	timer   *time.Timer
	stalled atomic.Bool
	since   int64 // bytes since the timer was last reset
	left    int64
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		// One byte more than allowed tells a long body from an exact one.
		var one [1]byte
		n, err := s.r.Read(one[:])
		if n > 0 {
			return 0, errTooLong
		}
		return 0, err
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	s.since += int64(n)
	if s.since >= minProgress {
		s.timer.Reset(s.stall)
		s.since = 0
	}
	return n, err
}

func (f *blobFetch) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// begin announces the headers. The clients it wakes run on this
// goroutine's P, and only once the fetch blocks or is preempted, which with
// a fast upstream can be a whole time slice; begin yields so that they
// answer at once.
func (f *blobFetch) begin(path string, size int64) {
	f.mu.Lock()
	f.path, f.size = path, size
	f.notifyLocked()
	f.mu.Unlock()
	close(f.headers)
	runtime.Gosched()
}

// advance announces bytes written, and yields after the first ones for the
// same reason as begin.
func (f *blobFetch) advance(written int64) {
	f.mu.Lock()
	first := f.written == 0
	f.written = written
	f.notifyLocked()
	f.mu.Unlock()
	if first {
		runtime.Gosched()
	}
}

// commit points new readers at the verified blob. Readers that opened the
// ingest file keep reading it: the rename keeps the same inode.
func (f *blobFetch) verify() {
	f.mu.Lock()
	f.verified = true
	f.notifyLocked()
	f.mu.Unlock()
}

func (f *blobFetch) commit() {
	f.mu.Lock()
	f.committed, f.verified = true, true
	f.notifyLocked()
	f.mu.Unlock()
}

func (f *blobFetch) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	f.notifyLocked()
	f.mu.Unlock()
	select {
	case <-f.headers:
	default:
		close(f.headers)
	}
}

// finished reports whether the fetch has ended, well or not.
func (f *blobFetch) finished() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done
}

// waitVerified blocks until every byte of the blob has been verified, and
// returns the fetch's failure if it ended without.
func (f *blobFetch) waitVerified(ctx context.Context) error {
	for {
		f.mu.Lock()
		verified, done, err, changed := f.verified, f.done, f.err, f.changed
		f.mu.Unlock()
		switch {
		case verified:
			return nil
		case done && err != nil:
			return err
		case done:
			return fmt.Errorf("fetch of %s ended unverified", f.key.dgst)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitHeaders blocks until the size is known or the fetch failed first.
func (f *blobFetch) waitHeaders(ctx context.Context) error {
	select {
	case <-f.headers:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.path == "" {
		return f.err
	}
	return nil
}

// reader opens a reader over the fetch. The file is opened under the lock
// so that it cannot be renamed or removed between looking at path and
// opening it.
func (f *blobFetch) reader(ctx context.Context, store *storage.Store) (*fetchReader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.committed {
		file, err := os.Open(f.path)
		if err == nil {
			return &fetchReader{ctx: ctx, f: f, file: file, close: file.Close, fileAt: -1}, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("follow fetch of %s: %w", f.key.dgst, err)
		}
		// The ingest file was renamed into place a moment ago, or the
		// fetch failed and the blob file will not exist either.
	}
	blob, err := store.OpenBlob(f.key.dgst)
	if err != nil {
		if f.done && f.err != nil {
			// The fetch failed (a digest mismatch, say) and its file is
			// gone: the client gets the fetch's own answer.
			return nil, f.err
		}
		return nil, fmt.Errorf("follow fetch of %s: %w", f.key.dgst, err)
	}
	return &fetchReader{ctx: ctx, f: f, file: blob.File, close: blob.Close, fileAt: -1}, nil
}

// servable is how many bytes of the fetch a client may be handed: all
// written ones once verified, all but the last before. Callers hold f.mu.
func (f *blobFetch) servable() int64 {
	if f.verified {
		return f.written
	}
	return f.written - 1
}

// fetchReader reads a blob while it is being fetched, waiting for bytes
// that have not arrived yet. It never hands out the final byte before the
// whole blob has been verified, so a client of a blob whose digest turns
// out wrong gets a cut-off body rather than complete wrong content.
type fetchReader struct {
	ctx   context.Context
	f     *blobFetch
	file  *os.File
	close func() error
	pos   int64
	// fileAt is the file's own offset when known, -1 when not: sendTo
	// seeks only when it differs from pos.
	fileAt int64
	err    error // the fetch's failure, once seen
}

func (r *fetchReader) Read(p []byte) (int, error) {
	avail, err := r.next(int64(len(p)))
	if err != nil {
		return 0, err
	}
	m, err := r.file.ReadAt(p[:avail], r.pos)
	r.pos += int64(m)
	if err == io.EOF && m > 0 {
		err = nil
	}
	return m, err
}

// next waits until bytes past pos may be handed out and returns how many,
// at most limit; io.EOF once the whole blob has been handed out.
func (r *fetchReader) next(limit int64) (int64, error) {
	for {
		r.f.mu.Lock()
		visible, done, ferr, changed, size, verified := r.f.servable(), r.f.done, r.f.err, r.f.changed, r.f.size, r.f.verified
		r.f.mu.Unlock()

		if r.pos < visible {
			return min(limit, visible-r.pos), nil
		}
		if verified && size >= 0 && r.pos >= size {
			// Every byte was verified; a later failure to make the blob
			// durable costs the cache, not this client.
			return 0, io.EOF
		}
		if done {
			if ferr != nil {
				r.err = ferr
				return 0, ferr
			}
			if size < 0 || r.pos >= size {
				return 0, io.EOF
			}
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// sendTo copies up to n bytes from pos to dst with dst's own ReadFrom, one
// stretch of the file at a time as the fetch makes it visible, so that a
// TCP connection sends them with sendfile rather than through a user-space
// buffer.
func (r *fetchReader) sendTo(dst io.ReaderFrom, n int64) (int64, error) {
	var sent int64
	for sent < n {
		avail, err := r.next(n - sent)
		if err == io.EOF {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
		if r.fileAt != r.pos {
			if _, err := r.file.Seek(r.pos, io.SeekStart); err != nil {
				return sent, fmt.Errorf("follow fetch of %s: %w", r.f.key.dgst, err)
			}
			r.fileAt = r.pos
		}
		k, err := dst.ReadFrom(&io.LimitedReader{R: r.file, N: avail})
		r.pos += k
		r.fileAt += k
		sent += k
		if err != nil {
			// A copy that failed may have read past what it sent.
			r.fileAt = -1
			return sent, err
		}
		if k < avail {
			return sent, fmt.Errorf("follow fetch of %s: file ended at byte %d, %d bytes were written", r.f.key.dgst, r.pos, r.pos+avail-k)
		}
	}
	return sent, nil
}

// followingWriter hands http.ServeContent's body copy of a fetch under way
// to fetchReader.sendTo. ServeContent copies with io.CopyN, which reaches
// the writer's ReadFrom with the fetchReader inside an io.LimitedReader;
// any other copy takes the ordinary path.
type followingWriter struct {
	http.ResponseWriter
	rd *fetchReader
}

func (w *followingWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, canReadFrom := w.ResponseWriter.(io.ReaderFrom)
	if !canReadFrom {
		return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	if lr, ok := src.(*io.LimitedReader); ok && lr.R == w.rd {
		n, err := w.rd.sendTo(rf, lr.N)
		lr.N -= n
		return n, err
	}
	return rf.ReadFrom(src)
}

func (w *followingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Seek supports what http.ServeContent needs: finding the size and moving
// to a range's start.
func (r *fetchReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		size, err := r.knownSize()
		if err != nil {
			return 0, err
		}
		offset += size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	r.pos = offset
	return offset, nil
}

// started waits until the fetch has made progress a client may be handed
// (minProgress bytes, or all but the last of a smaller blob), or has ended,
// and returns its failure when it ended without. Headers go out only then:
// a fetch that fails before (a one-byte blob's only byte is held back
// until verified; an upstream that drips a few bytes and stalls) is
// answered with its error, the crafted 503 naming the cause, not with a
// 200 and a connection cut before the server's buffer reached the client.
func (r *fetchReader) started() error {
	for {
		r.f.mu.Lock()
		visible, verified, done, ferr, changed := r.f.servable(), r.f.verified, r.f.done, r.f.err, r.f.changed
		r.f.mu.Unlock()
		// The last byte is held back until verified, so a blob of at most
		// minProgress bytes never gets here before it is verified: its
		// headers wait for the verdict, and a mismatch is answered as one
		// (502) instead of cut off with the headers still in net/http's
		// buffer, which the client would see as no answer at all.
		switch {
		case visible >= minProgress || verified || (done && ferr == nil):
			return nil
		case done:
			return ferr
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}

// knownSize returns the blob's size, waiting for the fetch to end when the
// upstream did not announce it.
func (r *fetchReader) knownSize() (int64, error) {
	for {
		r.f.mu.Lock()
		size, done, ferr, written, changed := r.f.size, r.f.done, r.f.err, r.f.written, r.f.changed
		r.f.mu.Unlock()
		if size >= 0 {
			return size, nil
		}
		if done {
			if ferr != nil {
				return 0, ferr
			}
			return written, nil
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *fetchReader) Close() error { return r.close() }
