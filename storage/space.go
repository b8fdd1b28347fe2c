package storage

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ErrNoSpace reports that the cache's filesystem is full: the content can
// still be served from upstream, but not kept.
var ErrNoSpace = fmt.Errorf("cache disk full: %w", syscall.ENOSPC)

// IsNoSpace reports a write that failed because the disk or quota is full.
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// WithMinFree sets how much free space the cache's filesystem must keep:
// content that would leave less is not cached. The default is 64 MiB.
func WithMinFree(bytes int64) Option { return func(s *Store) { s.space.minFree = bytes } }

// WithSpaceRecheck sets how often a full disk is checked for space again.
func WithSpaceRecheck(d time.Duration) Option { return func(s *Store) { s.space.recheck = d } }

// space tracks whether the cache's filesystem has room.
type space struct {
	minFree int64
	recheck time.Duration

	mu        sync.Mutex
	full      bool
	checkedAt time.Time
	// needed is the size that last did not fit: the disk counts as having
	// space again only when it would, so the state does not flap.
	needed int64
}

// freeBytes is the space available to unprivileged writers.
func (s *Store) freeBytes() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.root, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.root, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Full reports whether the disk was found full recently. Once full, it
// looks again at most every recheck interval and recovers by itself when
// space returns.
func (s *Store) Full() bool {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	if !s.space.full || time.Since(s.space.checkedAt) < s.space.recheck {
		return s.space.full
	}
	s.space.checkedAt = time.Now()
	if free, err := s.freeBytes(); err == nil && free >= 2*s.space.minFree+s.space.needed {
		s.space.full = false
		s.logger.Warn("cache disk has space again: caching resumed", "dir", s.root, "free_bytes", free)
	}
	return s.space.full
}

func (s *Store) markFull(cause string, needed int64) {
	s.space.mu.Lock()
	defer s.space.mu.Unlock()
	s.space.needed = needed
	if !s.space.full {
		s.logger.Error("CACHE DISK FULL: serving from upstream without caching until space returns",
			"dir", s.root, "cause", cause)
	}
	s.space.full = true
	s.space.checkedAt = time.Now()
}

// Reserve checks that size more bytes fit while keeping the minimum free
// space, and marks the disk full when they do not.
func (s *Store) Reserve(size int64) error {
	if s.Full() {
		return ErrNoSpace
	}
	free, err := s.freeBytes()
	if err != nil {
		return nil // cannot tell: let the write find out
	}
	if free-max(size, 0) < s.space.minFree {
		s.markFull(fmt.Sprintf("%d bytes needed, %d free, %d kept free", size, free, s.space.minFree), size)
		return ErrNoSpace
	}
	return nil
}

// noteWrite looks at a failed write of the cache's own files: a full disk
// marks the store full. It returns err.
func (s *Store) noteWrite(err error) error {
	if IsNoSpace(err) {
		s.markFull(err.Error(), 0)
	}
	return err
}
