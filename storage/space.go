package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNoSpace reports that the cache's filesystem is full: the content can
// still be served from upstream, but not kept.
var ErrNoSpace = fmt.Errorf("cache disk full: %w", syscall.ENOSPC)

// ErrTooLarge reports that one blob does not fit: it is larger than the
// cache's max_size, or than the free space less the minimum kept free.
// That blob is passed through without caching; the store stays writable
// for everything else, whatever size an upstream claimed.
var ErrTooLarge = errors.New("blob too large to cache")

// ErrUnwritable reports that the cache's directory cannot be written: it is
// read-only, not permitted, or gone. Like a full disk, content is served
// from upstream without caching until the directory can be written again.
var ErrUnwritable = errors.New("cache directory not writable")

// IsNoSpace reports a write that failed because the disk or quota is full.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// IsTooLarge reports that one blob cannot be cached and must be passed
// through.
func IsTooLarge(err error) bool { return errors.Is(err, ErrTooLarge) }

// IsUnwritable reports a failure because the cache directory cannot be
// written.
func IsUnwritable(err error) bool { return errors.Is(err, ErrUnwritable) }

// unwritableCause reports errors of a write to the cache's own files that
// mean the directory, not this one file, cannot take writes. ENOENT and
// ENOTDIR count: the store writes only inside directories it made, so
// they mean those were deleted or replaced.
func unwritableCause(err error) bool {
	for _, e := range []syscall.Errno{syscall.EROFS, syscall.EACCES, syscall.EPERM, syscall.ENOENT, syscall.ENOTDIR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// WithMinFree sets how much free space the cache's filesystem must keep:
// content that would leave less is not cached. The default is 64 MiB.
func WithMinFree(bytes int64) Option { return func(s *Store) { s.space.minFree = bytes } }

// WithSpaceRecheck sets how often a full disk or an unwritable directory
// is checked again.
func WithSpaceRecheck(d time.Duration) Option { return func(s *Store) { s.space.recheck = d } }

// StateKind says whether the store takes writes.
type StateKind int

const (
	// Writable: content is cached.
	Writable StateKind = iota
	// DiskFull: a write failed for lack of space, or the free space is
	// under the minimum; content is passed through.
	DiskFull
	// Unwritable: the directory is read-only, not permitted or gone;
	// content is passed through.
	Unwritable
)

func (k StateKind) String() string {
	switch k {
	case DiskFull:
		return "full"
	case Unwritable:
		return "unwritable"
	}
	return "writable"
}

// State is whether the store takes writes, and why not.
type State struct {
	Kind  StateKind
	Cause string
	Since time.Time
}

// space tracks whether the cache's filesystem has room and its directory
// takes writes.
type space struct {
	minFree int64
	recheck time.Duration

	mu        sync.Mutex
	state     State
	checkedAt time.Time

	// tooLarge remembers blobs that stopped fitting part way (no or a
	// false Content-Length), with the size they had reached, so that the
	// client's retry passes through at once instead of filling the disk
	// to the same point again.
	tooLarge map[digest.Digest]int64
}

// maxTooLarge bounds space.tooLarge.
const maxTooLarge = 1024

// freeBytes is the space available to unprivileged writers.
func (s *Store) freeBytes() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.root, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.root, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Full reports whether the store cannot take writes: its disk was found
// full or its directory unwritable. Once so, it looks again at most every
// recheck interval and recovers by itself: a full disk when the free space
// is back above twice the minimum (a margin against flapping), an
// unwritable directory when its layout can be made again and written.
func (s *Store) Full() bool {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if s.space.state.Kind == Writable || time.Since(s.space.checkedAt) < s.space.recheck {
		return s.space.state.Kind != Writable
	}
	s.space.checkedAt = time.Now()
	switch s.space.state.Kind {
	case DiskFull:
		if free, err := s.freeBytes(); err == nil && free >= 2*s.space.minFree {
			s.space.state = State{}
			s.logger.Warn("cache disk has space again: caching resumed", "dir", s.root, "free_bytes", free)
		}
	case Unwritable:
		if err := s.makeLayout(); err != nil {
			s.space.state.Cause = err.Error()
		} else if err := s.probe(); err != nil {
			s.space.state.Cause = err.Error()
		} else {
			s.space.state = State{}
			s.logger.Warn("cache directory is writable again: caching resumed", "dir", s.root)
		}
	}
	return s.space.state.Kind != Writable
}

// State returns whether the store takes writes, and why not.
func (s *Store) State() State {
	s.Full() // recheck when due
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	return s.space.state
}

// stateErr is the error for writes refused in the current state.
func (s *Store) stateErr() error {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if s.space.state.Kind == Unwritable {
		return fmt.Errorf("%w: %s", ErrUnwritable, s.space.state.Cause)
	}
	return ErrNoSpace
}

func (s *Store) markFull(cause string) {
	s.mark(DiskFull, cause, "CACHE DISK FULL: serving from upstream without caching until space returns")
}

func (s *Store) markUnwritable(cause string) {
	s.mark(Unwritable, cause, "CACHE DIRECTORY NOT WRITABLE: serving from upstream without caching until it is")
}

// mark enters state kind, logging msg once on the way in, and restarts the
// recheck interval.
func (s *Store) mark(kind StateKind, cause, msg string) {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if s.space.state.Kind != kind {
		s.logger.Error(msg, "dir", s.root, "cause", cause)
		s.space.state = State{Kind: kind, Cause: cause, Since: time.Now()}
	}
	s.space.checkedAt = time.Now()
}

// noteWrite looks at a failed write of the cache's own files: a full disk
// marks the store full, a read-only, forbidden or vanished directory marks
// it unwritable. It returns err, wrapped in ErrUnwritable in the latter
// case so that callers can tell.
func (s *Store) noteWrite(err error) error {
	switch {
	case err == nil:
		return nil
	case IsNoSpace(err):
		s.markFull(err.Error())
	case unwritableCause(err):
		s.markUnwritable(err.Error())
		return fmt.Errorf("%w: %w", ErrUnwritable, err)
	}
	return err
}

// makeLayout creates the cache's directories where missing.
func (s *Store) makeLayout() error {
	for _, dir := range []string{"blobs", "repos", "ingest"} {
		if err := os.MkdirAll(filepath.Join(s.root, dir), 0o755); err != nil {
			return fmt.Errorf("cache %s: %w", s.root, err)
		}
	}
	return nil
}

// probe creates and removes a file where fetches write.
func (s *Store) probe() error {
	f, err := os.CreateTemp(s.ingestDir(), "probe-*")
	if err != nil {
		return fmt.Errorf("cache %s is not writable: %w", s.root, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("cache %s is not writable: %w", s.root, err)
	}
	return nil
}

// CheckWritable proves the cache can take new content right now. While the
// store is unwritable it answers why (after the recovery check when one is
// due); a probe that fails marks it so.
func (s *Store) CheckWritable() error {
	if s.Full() {
		if err := s.stateErr(); IsUnwritable(err) {
			return fmt.Errorf("cache %s is not writable: %w", s.root, err)
		}
	}
	if err := s.probe(); err != nil {
		return s.noteWrite(err)
	}
	return nil
}

// Reserve checks that a blob of the declared size can be cached. A size
// over max_size, or over the free space less the minimum kept free, is
// ErrTooLarge: that blob alone is passed through, and the store stays
// writable. Only a disk already under its minimum free space, whatever the
// size, marks the store full. The declared size is not held: Ingest checks
// the free space again as the bytes arrive, since a declared size may lie.
func (s *Store) Reserve(size int64) error {
	if s.Full() {
		return s.stateErr()
	}
	if max := s.limits.MaxSize; max > 0 && size > max {
		return fmt.Errorf("%d bytes declared, the cache's max_size is %d: %w", size, max, ErrTooLarge)
	}
	free, err := s.freeBytes()
	if err != nil {
		return nil // cannot tell: let the write find out
	}
	if free < s.space.minFree {
		s.markFull(fmt.Sprintf("%d bytes free, %d kept free", free, s.space.minFree))
		return ErrNoSpace
	}
	if free-max(size, 0) < s.space.minFree {
		return fmt.Errorf("%d bytes declared, %d free, %d kept free: %w", size, free, s.space.minFree, ErrTooLarge)
	}
	return nil
}

// spaceStretch is how many bytes an ingest writes between two looks at the
// free space: small enough that a body that lies about its size, or has
// none, stops near the minimum free space; large enough that the statfs
// costs nothing next to the writes.
func (s *Store) spaceStretch() int64 { return min(4<<20, max(s.space.minFree, 64<<10)) }

// checkGrowth is called by an ingest before each write that takes it from
// written to next bytes: it refuses when the blob outgrows max_size, and,
// each time next passes *checkAt, when the write and the stretch after it
// would leave less than the minimum free.
func (s *Store) checkGrowth(dgst digest.Digest, written, next int64, checkAt *int64) error {
	if max := s.limits.MaxSize; max > 0 && next > max {
		s.rememberTooLarge(dgst, next)
		return fmt.Errorf("ingest %s: %d bytes would pass the cache's max_size of %d: %w", dgst, next, max, ErrTooLarge)
	}
	if next <= *checkAt {
		return nil
	}
	// Until the next look the ingest may write this write and a stretch
	// after it.
	*checkAt = next + s.spaceStretch()
	ahead := *checkAt - written
	free, err := s.freeBytes()
	if err != nil {
		return nil
	}
	if free-ahead < s.space.minFree {
		s.rememberTooLarge(dgst, *checkAt)
		return fmt.Errorf("ingest %s: %d bytes written, %d free: %d more would leave less than the %d kept free: %w",
			dgst, written, free, ahead, s.space.minFree, ErrTooLarge)
	}
	return nil
}

func (s *Store) rememberTooLarge(dgst digest.Digest, size int64) {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if s.space.tooLarge == nil {
		s.space.tooLarge = map[digest.Digest]int64{}
	}
	if len(s.space.tooLarge) >= maxTooLarge {
		for d := range s.space.tooLarge {
			delete(s.space.tooLarge, d)
			break
		}
	}
	s.space.tooLarge[dgst] = max(size, s.space.tooLarge[dgst])
}

// stillTooLarge refuses an ingest of a blob that stopped fitting before,
// while it still would not fit: at least the size it reached over max_size,
// or over the free space less the minimum.
func (s *Store) stillTooLarge(dgst digest.Digest) error {
	s.space.mu.Lock()
	reached, ok := s.space.tooLarge[dgst]
	s.space.mu.Unlock()
	if !ok {
		return nil
	}
	if max := s.limits.MaxSize; max > 0 && reached > max {
		return fmt.Errorf("ingest %s: reached %d bytes before, the cache's max_size is %d: %w", dgst, reached, max, ErrTooLarge)
	}
	if free, err := s.freeBytes(); err == nil && free-reached < s.space.minFree {
		return fmt.Errorf("ingest %s: reached %d bytes before, %d free, %d kept free: %w", dgst, reached, free, s.space.minFree, ErrTooLarge)
	}
	s.space.mu.Lock()
	delete(s.space.tooLarge, dgst)
	s.space.mu.Unlock()
	return nil
}
