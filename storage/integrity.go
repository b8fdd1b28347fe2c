package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// What is checked when (docs/cache-integrity.md):
//
//   - ReadBlob (manifests) hashes what it read on every read.
//   - OpenBlob compares the open file's size and mtime with the index. A
//     wrong size is corruption; a changed mtime, a blob not verified since
//     this process started, or one the index did not know is hashed whole
//     before it is served, once, however many clients open it at that time.
//   - A background scrub hashes the blobs not yet verified at a bounded
//     rate, so that after a while no first open pays.
//
// Content that fails is moved to quarantine/, dropped from the index and
// reported as ErrNotFound, so that the caller fetches it again.

// WithScrubRate sets how many bytes per second the background scrub hashes
// of the blobs not verified since start; 0 (the default) turns it off.
func WithScrubRate(bytesPerSecond int64) Option {
	return func(s *Store) { s.scrubRate = bytesPerSecond }
}

// IntegrityStats says how much of the cache this process has verified.
type IntegrityStats struct {
	// Verified and Unverified count the blobs in the index that this
	// process has hashed (or wrote itself) and that it has not yet.
	Verified, Unverified int64
	// UnverifiedBytes is the size of the Unverified blobs.
	UnverifiedBytes int64
	// Quarantined counts the blobs found corrupt since start.
	Quarantined int64
	// HashedBytes counts the bytes hashed to verify cached content since
	// start, by opens, reads and the scrub.
	HashedBytes int64
}

// Integrity returns what this process has verified so far.
func (s *Store) Integrity() IntegrityStats {
	s.idx.mu.Lock()
	st := IntegrityStats{Unverified: s.idx.unverified, UnverifiedBytes: s.idx.unverifiedBytes}
	st.Verified = int64(s.idx.lru.Len()) - st.Unverified
	s.idx.mu.Unlock()
	st.Quarantined = s.integrity.quarantined.Load()
	st.HashedBytes = s.integrity.hashed.Load()
	return st
}

// integrity is the store's verification state.
type integrity struct {
	quarantined, hashed atomic.Int64

	mu sync.Mutex
	// hashing holds the hash under way for each blob, which every opener
	// of that blob waits for instead of hashing it again.
	hashing map[digest.Digest]*hashJob
	// quarantineMu orders quarantining against commits, so that a file
	// renamed into place a moment ago is never moved out for the fault of
	// the one it replaced.
	quarantineMu sync.Mutex
}

// hashJob is one hash of one blob file.
type hashJob struct {
	done chan struct{}
	err  error
	// urgent: a client waits, so the scrub that started the job stops
	// pacing it.
	urgent atomic.Bool
}

// errCorrupt reports content that did not verify; it was quarantined.
var errCorrupt = fmt.Errorf("corrupt content quarantined: %w", ErrNotFound)

// verify hashes the blob at p whole, once for all concurrent callers, and
// marks it verified; content that does not match is quarantined and the
// error wraps ErrNotFound. pace, when not nil, bounds the rate (the scrub);
// a client that joins lifts it.
func (s *Store) verify(d digest.Digest, p string, pace *pacer) error {
	s.integrity.mu.Lock()
	j := s.integrity.hashing[d]
	if j == nil && s.idx.verified(d) {
		// A hash that ended a moment ago, after the caller looked.
		s.integrity.mu.Unlock()
		return nil
	}
	owner := j == nil
	if owner {
		j = &hashJob{done: make(chan struct{})}
		s.integrity.hashing[d] = j
	}
	if pace == nil {
		j.urgent.Store(true)
	}
	s.integrity.mu.Unlock()
	if !owner {
		<-j.done
		return j.err
	}
	j.err = s.hashFile(d, p, pace, &j.urgent)
	s.integrity.mu.Lock()
	delete(s.integrity.hashing, d)
	s.integrity.mu.Unlock()
	close(j.done)
	return j.err
}

// hashFile is verify's work.
func (s *Store) hashFile(d digest.Digest, p string, pace *pacer, urgent *atomic.Bool) error {
	f, err := os.Open(p)
	if missing(err) {
		s.idx.forget(d)
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("verify blob %s: %w", d, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("verify blob %s: %w", d, err)
	}
	h := d.Algorithm().Hash()
	bufp := s.copyBuffers.Get().(*[]byte)
	defer s.copyBuffers.Put(bufp)
	buf := *bufp
	var total int64
	for {
		n, rerr := f.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		s.integrity.hashed.Add(int64(n))
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("verify blob %s: %w", d, rerr)
		}
		if pace != nil && !urgent.Load() {
			if err := pace.wait(n); err != nil {
				return err
			}
		}
	}
	var sum [64]byte
	got := hex.EncodeToString(h.Sum(sum[:0]))
	if got != d.Encoded() {
		s.quarantine(d, p, f, fmt.Sprintf("%d bytes hash to %s:%s", total, d.Algorithm(), got))
		return fmt.Errorf("blob %s: %w", d, errCorrupt)
	}
	s.idx.markVerified(d, fi.Size(), fi.ModTime())
	return nil
}

// sameDigest reports whether content hashes to d. It runs on every
// manifest read, so the common SHA-256 case hashes on the stack and the
// comparison allocates nothing.
func sameDigest(d digest.Digest, content []byte) bool {
	var enc [128]byte
	var n int
	if d.Algorithm() == digest.SHA256 {
		sum := sha256.Sum256(content)
		n = hex.Encode(enc[:], sum[:])
	} else {
		h := d.Algorithm().Hash()
		h.Write(content)
		var sum [64]byte
		n = hex.Encode(enc[:], h.Sum(sum[:0]))
	}
	return string(enc[:n]) == d.Encoded()
}

// quarantineDir holds blobs found corrupt: evidence for the operator,
// bounded by quarantineKeep.
func (s *Store) quarantineDir() string { return filepath.Join(s.root, "quarantine") }

// quarantineKeep bounds the quarantine so that it cannot fill the disk: the
// newest files only, up to these many, bytes and age. The log line of each
// quarantine stays the record of those removed.
var quarantineKeep = struct {
	files int
	bytes int64
	age   time.Duration
}{16, 1 << 30, 7 * 24 * time.Hour}

// quarantine moves the blob file at p out of blobs/ when it is still the
// file f that failed, drops it from the index and says so. A file that
// cannot be moved is removed: the one thing that must not happen is that
// it is served again.
func (s *Store) quarantine(d digest.Digest, p string, f *os.File, cause string) {
	s.integrity.quarantineMu.Lock()
	defer s.integrity.quarantineMu.Unlock()
	bad, err := f.Stat()
	if err != nil {
		return
	}
	cur, err := os.Stat(p)
	if err != nil || !os.SameFile(cur, bad) {
		return // replaced or removed meanwhile: nothing of it to serve
	}
	dst := filepath.Join(s.quarantineDir(), string(d.Algorithm())+"-"+d.Encoded()+"-"+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.MkdirAll(s.quarantineDir(), 0o755); err != nil || os.Rename(p, dst) != nil {
		dst = ""
		if err := os.Remove(p); err != nil && !missing(err) {
			s.logger.Error("CACHE CORRUPTION: cannot remove a corrupt blob; it is not served", "digest", d, "path", p, "err", err)
		}
	}
	s.idx.forget(d)
	s.integrity.quarantined.Add(1)
	s.logger.Warn("CACHE CORRUPTION: blob does not match its digest; quarantined, it will be fetched again",
		"digest", d, "path", p, "cause", cause, "quarantined_to", dst)
	s.pruneQuarantine()
}

// pruneQuarantine keeps the quarantine within quarantineKeep, newest first.
func (s *Store) pruneQuarantine() {
	ents, err := os.ReadDir(s.quarantineDir())
	if err != nil {
		return
	}
	type file struct {
		name  string
		size  int64
		mtime time.Time
	}
	var files []file
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			files = append(files, file{e.Name(), fi.Size(), fi.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mtime.After(files[j].mtime) })
	var kept int64
	for i, f := range files {
		kept += f.size
		if i >= quarantineKeep.files || kept > quarantineKeep.bytes || time.Since(f.mtime) > quarantineKeep.age {
			_ = os.Remove(filepath.Join(s.quarantineDir(), f.name))
			kept -= f.size
		}
	}
}

// scrub hashes unverified blobs, oldest first, at s.scrubRate bytes per
// second, until ctx ends. Blobs become unverified only at start (opens
// hash the others themselves), so once done it looks again only now and
// then, for a hash an I/O error cut short.
func (s *Store) scrub(ctx context.Context) {
	pace := &pacer{ctx: ctx, rate: float64(s.scrubRate)}
	for {
		for _, d := range s.idx.unhashedBlobs() {
			p, err := s.blobPath(d)
			if err != nil {
				continue
			}
			err = s.verify(d, p, pace)
			if ctx.Err() != nil {
				return
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				s.logger.Warn("cache: scrub", "digest", d, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

// pacer spreads work at rate units per second across calls.
type pacer struct {
	ctx  context.Context
	rate float64
	next time.Time
}

// wait accounts for n units done and sleeps until the rate allows more.
func (p *pacer) wait(n int) error {
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	d := time.Until(p.next)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// background runs the scrub (when on) and the periodic recheck of a full or
// unwritable store until Close.
func (s *Store) background(ctx context.Context) {
	if s.scrubRate > 0 {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.scrub(ctx)
		}()
	}
	if s.space.recheck <= 0 {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		t := time.NewTicker(s.space.recheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.Full() // recovers by itself when due
			}
		}
	}()
}

// Close stops the store's background work (the scrub, the recheck of a
// full or unwritable disk) and waits for it to end. The store still
// serves and takes content afterwards; it only stops looking by itself.
func (s *Store) Close() error {
	s.stop()
	s.bg.Wait()
	return nil
}
