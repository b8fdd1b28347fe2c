// Package storage is Breakwater's on-disk cache: content-addressed blobs
// (layers, configs and manifests alike), and per-repository records that say
// which of those blobs a repository may serve and what its tags point at.
//
// Layout under the cache root:
//
//	blobs/<alg>/<hex[:2]>/<hex>                     verified content, immutable
//	ingest/<random>                                 content being fetched
//	repos/<upstream>/<name>/_links/<alg>/<hex>      blob linked to the repository
//	repos/<upstream>/<name>/_manifests/<alg>/<hex>  manifest record (JSON)
//	repos/<upstream>/<name>/_tags/<tag>/<variant>   tag record (JSON)
//	quarantine/<alg>-<hex>-<unixnano>               blob found corrupt (bounded)
//
// A blob file exists only once its digest has been verified: content is
// written to ingest/, fsynced, hashed and then renamed into blobs/. Whatever
// is left in ingest/ at start is a fetch that never finished and is removed.
// Records are small JSON files replaced atomically by rename. What happens
// to a blob file changed on disk afterwards is in integrity.go.
//
// The package knows nothing of HTTP; callers validate names, but every path
// is checked again here so that no input can address a file outside root.
package storage

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // register the digest algorithms go-digest checks for
	_ "crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNotFound reports that the cache holds no such entry.
var ErrNotFound = errors.New("not in cache")

// ErrDigestMismatch reports content whose digest is not the one expected.
var ErrDigestMismatch = errors.New("digest mismatch")

// Store is a cache rooted at one directory. It is safe for concurrent use by
// any number of goroutines and processes that share nothing but the files.
type Store struct {
	root   string
	limits Limits
	logger *slog.Logger
	idx    *index
	scan0  ScanStats
	space  space
	// copyBuffers are the buffers of Ingest.CopyFrom and of the
	// integrity checks, copyBufferSize each.
	copyBuffers sync.Pool
	integrity   integrity
	scrubRate   int64
	// hot holds recent records and manifests in memory (hot.go); nil
	// when turned off.
	hot *hot

	// stop ends the background work; bg counts it.
	stop context.CancelFunc
	bg   sync.WaitGroup
}

// Option configures a Store.
type Option func(*Store)

// WithLimits bounds the cache's size.
func WithLimits(l Limits) Option { return func(s *Store) { s.limits = l } }

// WithLogger sets where the store reports evictions and clean-ups.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.logger = l } }

// Open prepares the cache directory, creating it when missing, discards
// partial content left behind by an earlier process, and rebuilds the
// in-memory index of what is cached.
func Open(root string, opts ...Option) (*Store, error) {
	if root == "" {
		return nil, errors.New("open cache: empty directory name")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", root, err)
	}
	s := &Store{root: abs, idx: newIndex(), logger: slog.New(slog.DiscardHandler),
		space: space{minFree: 64 << 20, recheck: 10 * time.Second}}
	s.copyBuffers.New = func() any { b := make([]byte, copyBufferSize); return &b }
	s.integrity.hashing = map[digest.Digest]*hashJob{}
	s.hot = newHot(DefaultHotSize)
	for _, o := range opts {
		o(s)
	}
	if h := s.hot; h != nil {
		s.idx.onDrop = func(d digest.Digest) { h.remove(bodyKey(d)) }
	}
	// ingest/ holds only fetches in flight; after a restart there are none.
	if err := os.RemoveAll(s.ingestDir()); err != nil {
		return nil, fmt.Errorf("open cache: discard partial fetches: %w", err)
	}
	if err := s.makeLayout(); err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	if err := s.probe(); err != nil {
		return nil, err
	}
	st, err := s.scan()
	if err != nil {
		return nil, err
	}
	s.scan0 = st
	s.Trim()
	s.pruneQuarantine()
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.background(ctx)
	return s, nil
}

// StartupScan says what Open found on disk.
func (s *Store) StartupScan() ScanStats { return s.scan0 }

// Trim evicts least recently used content if the cache is over its high
// mark. Callers run it after adding content.
func (s *Store) Trim() { s.maybeEvict() }

func (s *Store) log(msg string) { s.logger.Info("cache: " + msg) }

// Root returns the absolute cache directory.
func (s *Store) Root() string { return s.root }

func (s *Store) ingestDir() string { return filepath.Join(s.root, "ingest") }

// blobPath returns where verified content for dgst lives.
func (s *Store) blobPath(dgst digest.Digest) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("blob path %q: %w", dgst, err)
	}
	enc := dgst.Encoded()
	return filepath.Join(s.root, "blobs", string(dgst.Algorithm()), enc[:2], enc), nil
}

// Blob is open verified content. While it is open it is not evicted.
type Blob struct {
	// File is the content; serve it directly so that sendfile applies.
	File *os.File
	Size int64

	release func()
}

// Close closes the file and lets the blob be evicted again.
func (b *Blob) Close() error {
	err := b.File.Close()
	b.release()
	return err
}

// OpenBlob opens verified content. The caller closes it. The file's size
// and mtime must be those the index recorded; a blob this process has not
// verified since it started, or whose mtime changed, is hashed whole before
// it is returned (once for all concurrent callers). Content that fails is
// quarantined, and OpenBlob reports ErrNotFound so that the caller fetches
// it again.
func (s *Store) OpenBlob(dgst digest.Digest) (*Blob, error) {
	blob, v, err := s.openBlob(dgst)
	if err != nil || v == trusted {
		return blob, err
	}
	p, _ := s.blobPath(dgst)
	if err := s.verify(dgst, p, nil); err != nil {
		blob.Close()
		return nil, err
	}
	return blob, nil
}

// openBlob opens and pins dgst's file and checks it against the index. A
// file of the wrong size is quarantined at once; the verdict says whether
// the content is trusted or must be hashed first.
func (s *Store) openBlob(dgst digest.Digest) (*Blob, verdict, error) {
	p, err := s.blobPath(dgst)
	if err != nil {
		return nil, 0, err
	}
	s.idx.pin(dgst)
	f, err := os.Open(p)
	if missing(err) {
		s.idx.unpin(dgst)
		s.idx.forget(dgst) // deleted under the store's feet
		return nil, 0, ErrNotFound
	}
	if err != nil {
		s.idx.unpin(dgst)
		return nil, 0, fmt.Errorf("open blob %s: %w", dgst, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		s.idx.unpin(dgst)
		return nil, 0, fmt.Errorf("stat blob %s: %w", dgst, err)
	}
	v := s.idx.check(dgst, p, f, fi)
	if v == wrongSize {
		s.quarantine(dgst, p, f, fmt.Sprintf("size %d, not the %d recorded", fi.Size(), s.recordedSize(dgst)))
		f.Close()
		s.idx.unpin(dgst)
		return nil, 0, fmt.Errorf("blob %s: %w", dgst, errCorrupt)
	}
	var once sync.Once
	return &Blob{File: f, Size: fi.Size(), release: func() { once.Do(func() { s.idx.unpin(dgst) }) }}, v, nil
}

// recordedSize is the size the index holds for d, for messages.
func (s *Store) recordedSize(d digest.Digest) int64 {
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	if e, ok := s.idx.lru.Peek(d); ok {
		return e.size
	}
	return -1
}

// StatBlob returns the size of verified content.
func (s *Store) StatBlob(dgst digest.Digest) (int64, error) {
	p, err := s.blobPath(dgst)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if missing(err) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", dgst, err)
	}
	return fi.Size(), nil
}

// ReadBlob returns small verified content (a manifest) whole. It hashes
// what it reads from disk on every read: a manifest is small, and a wrong
// one would be served with its digest as proof. Content that fails is
// quarantined and ReadBlob reports ErrNotFound. What it returns may be
// shared with other callers (the hot cache keeps it): do not modify it.
func (s *Store) ReadBlob(dgst digest.Digest) ([]byte, error) {
	if b, ok := s.hotBody(dgst); ok {
		return b, nil
	}
	blob, _, err := s.openBlob(dgst)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	b := make([]byte, blob.Size)
	if _, err := io.ReadFull(blob.File, b); err != nil {
		return nil, fmt.Errorf("read blob %s: %w", dgst, err)
	}
	s.integrity.hashed.Add(int64(len(b)))
	if !sameDigest(dgst, b) {
		p, _ := s.blobPath(dgst)
		s.quarantine(dgst, p, blob.File, fmt.Sprintf("%d bytes hash to %s", len(b), dgst.Algorithm().FromBytes(b)))
		return nil, fmt.Errorf("blob %s: %w", dgst, errCorrupt)
	}
	if fi, err := blob.File.Stat(); err == nil {
		s.idx.markVerified(dgst, fi.Size(), fi.ModTime())
	}
	s.putHotBody(dgst, b)
	return b, nil
}

// PutBlob stores small content (a manifest) already held in memory.
func (s *Store) PutBlob(dgst digest.Digest, content []byte) error {
	in, err := s.NewIngest(dgst)
	if err != nil {
		return err
	}
	if _, err := in.Write(content); err != nil {
		in.Abort()
		return err
	}
	if err := in.Commit(); err != nil {
		return err
	}
	s.putHotBody(dgst, append([]byte(nil), content...))
	return nil
}

// Ingest is content on its way into the cache. Write hashes as it goes;
// Commit makes the content visible only if it hashed to the expected digest.
type Ingest struct {
	store    *Store
	dgst     digest.Digest
	file     *os.File
	digester digest.Digester
	size     int64
	closed   bool
	// nextCheck is the size at which the free space is looked at again.
	nextCheck int64
	// err is what closed the ingest other than a Commit: a digest
	// mismatch, a failed write, an Abort. Every later call returns it, so
	// that the caller's last step reports the first cause, not "closed".
	err error
}

// NewIngest starts writing content expected to hash to dgst.
func (s *Store) NewIngest(dgst digest.Digest) (*Ingest, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("ingest %q: %w", dgst, err)
	}
	if s.Full() {
		return nil, fmt.Errorf("ingest %s: %w", dgst, s.stateErr())
	}
	if err := s.stillTooLarge(dgst); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.ingestDir(), dgst.Encoded()[:12]+"-*")
	if err != nil {
		return nil, fmt.Errorf("ingest %s: %w", dgst, s.noteWrite(err))
	}
	return &Ingest{store: s, dgst: dgst, file: f, digester: dgst.Algorithm().Digester()}, nil
}

// Path is the temporary file's name. Readers may open it to follow the
// content as it grows; it disappears on Commit or Abort.
func (in *Ingest) Path() string { return in.file.Name() }

// Size is the number of bytes written so far.
func (in *Ingest) Size() int64 { return in.size }

// Write writes and hashes p. A failure to write the file is a *WriteError.
func (in *Ingest) Write(p []byte) (int, error) {
	if err := in.usable("write"); err != nil {
		return 0, err
	}
	n, err := in.writeFile(p)
	in.digester.Hash().Write(p[:n])
	return n, err
}

// writeFile appends p to the file without hashing it; the caller hashes
// the n bytes written.
func (in *Ingest) writeFile(p []byte) (n int, err error) {
	// Space is reserved as bytes arrive, not as declared.
	if err := in.store.checkGrowth(in.dgst, in.size, in.size+int64(len(p)), &in.nextCheck); err != nil {
		return 0, in.fail(&WriteError{err})
	}
	n, err = in.file.Write(p)
	in.size += int64(n)
	if err != nil {
		return n, in.fail(&WriteError{fmt.Errorf("ingest %s: %w", in.dgst, in.store.noteWrite(err))})
	}
	return n, nil
}

// usable returns nil while the ingest takes writes, and otherwise the error
// that closed it.
func (in *Ingest) usable(op string) error {
	if in.err != nil {
		return in.err
	}
	if in.closed {
		return fmt.Errorf("%s %s: ingest already committed", op, in.dgst)
	}
	return nil
}

// fail closes the ingest, discarding its file, and keeps err as the answer
// to every later call unless an earlier error already closed it.
func (in *Ingest) fail(err error) error {
	if in.err == nil {
		in.err = err
	}
	if !in.closed {
		in.closed = true
		in.file.Close()
		os.Remove(in.file.Name())
	}
	return in.err
}

// WriteError is a failure to write the cache, as opposed to a failure of
// the reader that CopyFrom copies from.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// copyBufferSize is the size of CopyFrom's one buffer. Larger reads and
// writes mean fewer syscalls, fewer wake-ups of the clients following the
// fetch and fewer of the runtime's hand-offs around long syscalls, which
// together cost more than the copy itself (BENCHMARKS.md, issue 14); a
// fetch holds it only while it runs.
const copyBufferSize = 1 << 20

// announceEvery bounds the bytes CopyFrom writes without announcing them
// while reads come back full. A full read means the upstream is ahead of
// the fetch, so the followers' wait for a batch is a few buffers' worth
// of local copying, not the network; and each announcement wakes every
// follower for one more sendfile, which on a fast upstream cost about 7 %
// of the fetch's CPU per GB (BENCHMARKS.md, issue 14).
const announceEvery = 4 * copyBufferSize

// CopyFrom writes what r yields to the ingest until r ends, calling
// progress (when not nil) with the size written so far. It announces the
// first buffer, every buffer that came from a short read (the upstream is
// the slower side: followers should not wait for more) and otherwise at
// least every announceEvery bytes; before it returns, on any path, every
// byte written has been announced. Each buffer is announced before it is
// hashed, on the same goroutine: the readers following the fetch send it
// on while it hashes, and no other goroutine has to be woken per buffer.
// When CopyFrom returns, every byte written has been hashed. A failure to
// write the file is a *WriteError; r's errors are returned as they are.
func (in *Ingest) CopyFrom(r io.Reader, progress func(size int64)) (int64, error) {
	if err := in.usable("copy into"); err != nil {
		return 0, err
	}
	bufp := in.store.copyBuffers.Get().(*[]byte)
	defer in.store.copyBuffers.Put(bufp)
	buf := *bufp
	h := in.digester.Hash()
	start := in.size
	announced := start
	announce := func() {
		if progress != nil && in.size > announced {
			announced = in.size
			progress(announced)
		}
	}
	defer announce()
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			w, werr := in.writeFile(buf[:n])
			total += int64(w)
			if werr != nil {
				h.Write(buf[:w])
				return total, werr
			}
			if n < len(buf) || announced == start || in.size-announced >= announceEvery {
				announce()
			}
			h.Write(buf[:w])
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Commit verifies the digest and moves the content into place, durably.
// On a mismatch nothing is kept and the error wraps ErrDigestMismatch. On
// an ingest already closed by a failure, it returns that failure.
func (in *Ingest) Commit() error {
	if err := in.usable("commit"); err != nil {
		return err
	}
	if err := in.Verify(); err != nil {
		return err
	}
	tmp := in.file.Name()
	if err := in.file.Sync(); err != nil {
		return in.fail(fmt.Errorf("commit %s: sync: %w", in.dgst, in.store.noteWrite(err)))
	}
	// The index keeps the mtime of the last write: OpenBlob compares it.
	fi, err := in.file.Stat()
	if err != nil {
		return in.fail(fmt.Errorf("commit %s: %w", in.dgst, err))
	}
	mtime := fi.ModTime()
	if err := in.file.Close(); err != nil {
		return in.fail(fmt.Errorf("commit %s: close: %w", in.dgst, in.store.noteWrite(err)))
	}
	final, err := in.store.blobPath(in.dgst)
	if err != nil {
		return in.fail(err)
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return in.fail(fmt.Errorf("commit %s: %w", in.dgst, in.store.noteWrite(err)))
	}
	if err := in.store.place(in.dgst, tmp, final, in.size, mtime); err != nil {
		return in.fail(fmt.Errorf("commit %s: %w", in.dgst, in.store.noteWrite(err)))
	}
	in.closed = true
	// The rename is durable only once the directory entry is.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("commit %s: %w", in.dgst, err)
	}
	in.store.Trim()
	return nil
}

// place renames a verified file into blobs/ and indexes it as verified,
// ordered against quarantine so that a quarantine never moves it out for
// the fault of the file it replaced.
func (s *Store) place(d digest.Digest, tmp, final string, size int64, mtime time.Time) error {
	s.integrity.quarantineMu.Lock()
	defer s.integrity.quarantineMu.Unlock()
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	s.idx.add(d, size, mtime, true)
	return nil
}

// Verify checks the content written so far hashes to the expected digest.
// On a mismatch nothing is kept and the error wraps ErrDigestMismatch. A
// verified ingest may be read whole before Commit makes it durable. On an
// ingest already closed by a failure, it returns that failure.
func (in *Ingest) Verify() error {
	if err := in.usable("verify"); err != nil {
		return err
	}
	if got := in.digester.Digest(); got != in.dgst {
		return in.fail(fmt.Errorf("ingest %s: %d bytes hashed to %s: %w", in.dgst, in.size, got, ErrDigestMismatch))
	}
	return nil
}

// Abort discards the content. It is safe to call more than once and after
// Commit; it does not replace the error of an earlier failure.
func (in *Ingest) Abort() {
	if in.closed {
		return
	}
	in.fail(fmt.Errorf("ingest %s: aborted", in.dgst))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Repo names one repository of one upstream, as the upstream names it
// (Docker Hub's "library/alpine", not "alpine").
type Repo struct {
	Upstream string
	Name     string
}

func (r Repo) String() string { return r.Upstream + "/" + r.Name }

// repoDir returns the repository's metadata directory, refusing any name that
// would leave the repos/ tree.
func (s *Store) repoDir(r Repo) (string, error) {
	if err := checkSegments(r.Upstream, false); err != nil {
		return "", fmt.Errorf("repository %s: upstream: %w", r, err)
	}
	if err := checkSegments(r.Name, true); err != nil {
		return "", fmt.Errorf("repository %s: name: %w", r, err)
	}
	return filepath.Join(s.root, "repos", r.Upstream, filepath.FromSlash(r.Name)), nil
}

// checkSegments refuses anything that is not a plain relative path of
// ordinary names. Names starting with '_' are reserved for records, and no
// valid repository component starts with one.
func checkSegments(p string, slashes bool) error {
	if p == "" {
		return errors.New("empty")
	}
	if !slashes && strings.Contains(p, "/") {
		return fmt.Errorf("%q contains '/'", p)
	}
	if strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("%q contains a forbidden character", p)
	}
	for rest, more := p, true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, "_") {
			return fmt.Errorf("%q has a forbidden path element %q", p, seg)
		}
	}
	if !filepath.IsLocal(filepath.FromSlash(p)) {
		return fmt.Errorf("%q is not a local path", p)
	}
	return nil
}

func (s *Store) recordPath(r Repo, kind string, dgst digest.Digest) (string, error) {
	dir, err := s.repoDir(r)
	if err != nil {
		return "", err
	}
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("%s record %q: %w", kind, dgst, err)
	}
	return filepath.Join(dir, kind, string(dgst.Algorithm()), dgst.Encoded()), nil
}

// LinkBlob records that r may serve the blob dgst: a manifest of r references
// it, or the upstream confirmed it for r.
func (s *Store) LinkBlob(r Repo, dgst digest.Digest) error {
	p, err := s.recordPath(r, "_links", dgst)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("link %s to %s: %w", dgst, r, s.noteWrite(err))
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("link %s to %s: %w", dgst, r, s.noteWrite(err))
	}
	return f.Close()
}

// BlobLinked reports whether r may serve dgst.
func (s *Store) BlobLinked(r Repo, dgst digest.Digest) bool {
	p, err := s.recordPath(r, "_links", dgst)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// ManifestRecord describes a manifest a repository may serve. Its bytes are
// the blob with the same digest.
type ManifestRecord struct {
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
}

// PutManifest records that r serves the manifest dgst.
func (s *Store) PutManifest(r Repo, dgst digest.Digest, rec ManifestRecord) error {
	p, err := s.recordPath(r, "_manifests", dgst)
	if err != nil {
		return err
	}
	if err := s.noteWrite(writeJSONAtomic(s.ingestDir(), p, rec)); err != nil {
		return err
	}
	s.hot.put(manifestKey(r, dgst), &hotEntry{man: rec})
	return nil
}

// GetManifest returns the record of manifest dgst in r, or ErrNotFound.
func (s *Store) GetManifest(r Repo, dgst digest.Digest) (ManifestRecord, error) {
	if e, ok := s.hot.get(manifestKey(r, dgst)); ok {
		return e.man, nil
	}
	var rec ManifestRecord
	p, err := s.recordPath(r, "_manifests", dgst)
	if err != nil {
		return rec, err
	}
	if err := readJSON(p, &rec); err != nil {
		return rec, err
	}
	s.hot.put(manifestKey(r, dgst), &hotEntry{man: rec})
	return rec, nil
}

// TagRecord is what a tag pointed at when Breakwater last asked upstream.
type TagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	// CheckedAt is when the upstream last confirmed the tag.
	CheckedAt time.Time `json:"checkedAt"`
}

func (s *Store) tagDir(r Repo, tag string) (string, error) {
	dir, err := s.repoDir(r)
	if err != nil {
		return "", err
	}
	if err := checkSegments(tag, false); err != nil {
		return "", fmt.Errorf("tag %q: %w", tag, err)
	}
	return filepath.Join(dir, "_tags", tag), nil
}

// PutTag records what tag points at for clients of one variant. A tag can
// resolve to different manifests depending on the media types a client
// accepts, so each distinct Accept set has its own record; variant is a
// short name for that set chosen by the caller.
func (s *Store) PutTag(r Repo, tag, variant string, rec TagRecord) error {
	dir, err := s.tagDir(r, tag)
	if err != nil {
		return err
	}
	if err := checkSegments(variant, false); err != nil {
		return fmt.Errorf("tag %q variant: %w", tag, err)
	}
	if err := s.noteWrite(writeJSONAtomic(s.ingestDir(), filepath.Join(dir, variant), rec)); err != nil {
		return err
	}
	s.hot.put(tagKey(r, tag, variant), &hotEntry{tag: rec})
	return nil
}

// GetTag returns the record for one variant of tag, or ErrNotFound.
func (s *Store) GetTag(r Repo, tag, variant string) (TagRecord, error) {
	if e, ok := s.hot.get(tagKey(r, tag, variant)); ok {
		return e.tag, nil
	}
	var rec TagRecord
	dir, err := s.tagDir(r, tag)
	if err != nil {
		return rec, err
	}
	if err := checkSegments(variant, false); err != nil {
		return rec, fmt.Errorf("tag %q variant: %w", tag, err)
	}
	if err := readJSON(filepath.Join(dir, variant), &rec); err != nil {
		return rec, err
	}
	s.hot.put(tagKey(r, tag, variant), &hotEntry{tag: rec})
	return rec, nil
}

// TagRecords returns every variant's record of tag.
func (s *Store) TagRecords(r Repo, tag string) ([]TagRecord, error) {
	dir, err := s.tagDir(r, tag)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if missing(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tag %s:%s: %w", r, tag, err)
	}
	var recs []TagRecord
	for _, e := range entries {
		var rec TagRecord
		if err := readJSON(filepath.Join(dir, e.Name()), &rec); err != nil {
			continue // a record that cannot be read is a miss, not a failure
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// missing reports a file that is not there: absent, or under a path one of
// whose directories was replaced by a file.
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if missing(err) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read record %s: %w", p, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		// A record cut short by a crash is as good as absent: the caller
		// asks upstream again and rewrites it.
		return fmt.Errorf("%w: corrupt record %s: %v", ErrNotFound, p, err)
	}
	return nil
}

// writeJSONAtomic replaces p with v's JSON so that readers see the old record
// or the new one, never a mix. The temporary file lives in tmpDir, on the
// same filesystem, so a crash leaves it where Open discards it.
func writeJSONAtomic(tmpDir, p string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("write record %s: %w", p, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write record %s: %w", p, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(tmpDir, "record-"+hex.EncodeToString(rnd[:]))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write record %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write record %s: %w", p, err)
	}
	return nil
}
