package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/fleetlru"
)

// presignLifetime is how long a presigned URL of the shared store is good
// for (distribution's s3 driver makes them for 20 minutes): the blob is
// pinned that long, so that a client following the redirect finds it.
const presignLifetime = 20 * time.Minute

// newSharedLRU is the fleet's LRU of the shared store. It records every
// blob the store holds and every use even without a bound, so that one set
// later has an index to go by.
func newSharedLRU(opts Options, log *slog.Logger, b *blobFetches) (*fleetlru.LRU, error) {
	return fleetlru.New(fleetlru.Options{
		Fleet: opts.Fleet, Store: opts.Shared, MaxBytes: opts.SharedMaxSize,
		Interval: opts.SharedEvictInterval, Logger: log,
		OnEvict: func(size int64) {
			if b.tel != nil {
				b.tel.sharedEvicted.Add(context.Background(), 1)
			}
		},
	})
}

// runSharedLRU sends the uses and runs the eviction passes until Close.
func (s *Server) runSharedLRU() {
	if s.blobs.lru == nil {
		return
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		s.blobs.lru.Run(s.base)
	}()
}

// usedShared notes a use of a blob, wherever it was served from: the
// store's copy is what the next replica without it needs.
func (b *blobFetches) usedShared(dgst digest.Digest) {
	if b.lru != nil {
		b.lru.Touch(dgst)
	}
}

// storedShared indexes a blob the shared store holds.
func (b *blobFetches) storedShared(ctx context.Context, dgst digest.Digest, size int64) {
	if b.lru == nil {
		return
	}
	if err := b.lru.Stored(ctx, dgst, size); err != nil {
		// The walk of the store finds it later.
		b.log.Warn("shared store LRU: a blob not indexed", "digest", dgst, "err", err)
	}
}

// pinShared keeps the blob from eviction while it is read from the shared
// store; ok is false when an evictor is deleting it. Redis that cannot be
// asked leaves the read unpinned: a blob deleted half way is resumed from
// elsewhere by the fetch.
func (b *blobFetches) pinShared(ctx context.Context, dgst digest.Digest, until time.Time) (release func(), ok bool) {
	if b.lru == nil {
		return func() {}, true
	}
	var err error
	if until.IsZero() {
		release, err = b.lru.Pin(ctx, dgst)
	} else {
		release, err = func() {}, b.lru.PinUntil(ctx, dgst, until)
	}
	if errors.Is(err, fleetlru.ErrEvicting) {
		return release, false
	}
	if err != nil {
		b.log.Debug("shared store LRU: read unpinned", "digest", dgst, "err", err)
	}
	b.usedShared(dgst)
	return release, true
}

// pinnedReader releases its pin when closed.
type pinnedReader struct {
	io.ReadCloser
	release func()
}

func (r *pinnedReader) Close() error {
	r.release()
	return r.ReadCloser.Close()
}
