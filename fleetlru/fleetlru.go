// Package fleetlru bounds the object store a fleet shares: a size-bounded
// LRU across every replica, with the index in Redis and one replica
// evicting at a time under a lease.
//
// Redis holds, under the fleet's prefix:
//
//	lru:atime     sorted set  digest → last use (Unix ms), fleet-wide
//	lru:size      hash        digest → bytes
//	lru:bytes     string      the sum of lru:size
//	lru:pins      sorted set  digest → Unix ms until which it is being served
//	lru:deleting  set         digests an evictor claimed and is deleting
//
// A replica records a blob when it is in the store, touches it whenever it
// serves it (from its own cache too: the store's copy is what the next
// replica needs), and pins it while it streams it from the store or has
// handed a client a presigned URL of it. The evictor claims a blob before
// deleting it, atomically with the pin check, and a replica's pin of a
// claimed blob fails, so no blob is deleted under a stream that pinned it:
// that replica reads it from the upstream instead. A blob the index lacks
// (written while Redis was down) is found by a walk of the store, so the
// bound holds however the index was lost.
package fleetlru

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/objstore"
)

// Defaults of Options.
const (
	DefaultInterval  = time.Minute
	DefaultReconcile = time.Hour
	DefaultPinTTL    = 2 * time.Minute
	// DefaultLowPercent is how far below MaxBytes a pass evicts to, so
	// that it does not run again at the next blob.
	DefaultLowPercent = 90
)

// Options configures an LRU.
type Options struct {
	Fleet *coord.Fleet
	Store *objstore.Store
	// MaxBytes bounds the store's blobs; 0 records uses but never evicts.
	MaxBytes int64
	// LowPercent of MaxBytes is what a pass evicts down to.
	LowPercent int
	// Interval between passes, Reconcile between walks of the store.
	Interval, Reconcile time.Duration
	// PinTTL is how long a pin outlives its holder's last renewal.
	PinTTL time.Duration
	// TouchEvery is how often touches are sent to Redis, in one batch.
	TouchEvery time.Duration
	Logger     *slog.Logger
	// OnEvict, when set, is told of each blob evicted, for metrics.
	OnEvict func(size int64)
}

// LRU is one replica's part in the fleet's LRU of the shared store.
type LRU struct {
	o   Options
	rdb *redis.Client
	log *slog.Logger

	keys struct{ atime, size, bytes, pins, deleting, lease string }

	mu      sync.Mutex
	touched map[digest.Digest]time.Time
}

// New returns the LRU; Run does the work in the background.
func New(o Options) (*LRU, error) {
	if o.Fleet == nil || o.Store == nil {
		return nil, errors.New("fleetlru: a fleet and its shared store are needed")
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("fleetlru: max bytes %d", o.MaxBytes)
	}
	if o.LowPercent <= 0 || o.LowPercent > 100 {
		o.LowPercent = DefaultLowPercent
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Reconcile <= 0 {
		o.Reconcile = DefaultReconcile
	}
	if o.PinTTL <= 0 {
		o.PinTTL = DefaultPinTTL
	}
	if o.TouchEvery <= 0 {
		o.TouchEvery = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &LRU{o: o, rdb: o.Fleet.Redis(), log: o.Logger, touched: map[digest.Digest]time.Time{}}
	k := o.Fleet.Key
	l.keys.atime, l.keys.size, l.keys.bytes = k("lru:atime"), k("lru:size"), k("lru:bytes")
	l.keys.pins, l.keys.deleting, l.keys.lease = k("lru:pins"), k("lru:deleting"), "lru:evict"
	return l, nil
}

// recordScript indexes a blob in the store: its size once, its use now.
var recordScript = redis.NewScript(`
if redis.call("hsetnx", KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call("incrby", KEYS[3], ARGV[2])
end
redis.call("zadd", KEYS[1], "GT", ARGV[3], ARGV[1])
return 1`)

// Stored records that the store holds dgst, used now: a replica put it
// there, or found it there when it meant to.
func (l *LRU) Stored(ctx context.Context, dgst digest.Digest, size int64) error {
	return l.record(ctx, dgst, size, time.Now())
}

func (l *LRU) record(ctx context.Context, dgst digest.Digest, size int64, used time.Time) error {
	err := recordScript.Run(ctx, l.rdb, []string{l.keys.atime, l.keys.size, l.keys.bytes},
		dgst.String(), size, used.UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("index %s: %w", dgst, err)
	}
	return nil
}

// Touch notes a use of dgst; the uses are sent in one batch every
// TouchEvery, and only for blobs the index holds.
func (l *LRU) Touch(dgst digest.Digest) {
	now := time.Now()
	l.mu.Lock()
	l.touched[dgst] = now
	l.mu.Unlock()
}

// flushTouches sends the uses noted since the last flush.
func (l *LRU) flushTouches(ctx context.Context) error {
	l.mu.Lock()
	batch := l.touched
	l.touched = make(map[digest.Digest]time.Time, len(batch))
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	members := make([]redis.Z, 0, len(batch))
	for d, at := range batch {
		members = append(members, redis.Z{Score: float64(at.UnixMilli()), Member: d.String()})
	}
	// XX: a blob only in a replica's own cache is not the store's to
	// index. GT: a late batch never makes a blob look older.
	if err := l.rdb.ZAddArgs(ctx, l.keys.atime, redis.ZAddArgs{XX: true, GT: true, Members: members}).Err(); err != nil {
		return fmt.Errorf("send %d uses: %w", len(batch), err)
	}
	return nil
}

// pinScript pins a blob unless an evictor has claimed it.
var pinScript = redis.NewScript(`
if redis.call("sismember", KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call("zadd", KEYS[1], "GT", ARGV[2], ARGV[1])
return 1`)

// ErrEvicting reports a blob an evictor is deleting: read it elsewhere.
var ErrEvicting = errors.New("being evicted from the shared store")

// Pin keeps dgst from eviction until release is called (and PinTTL after,
// which covers a replica that died holding it); ErrEvicting when it is
// already being deleted. Other errors mean Redis could not be asked: the
// caller may read the blob unpinned, at the small risk that it vanishes
// half way, which a fetch survives by resuming elsewhere.
func (l *LRU) Pin(ctx context.Context, dgst digest.Digest) (release func(), err error) {
	if err := l.pinUntil(ctx, dgst, time.Now().Add(l.o.PinTTL)); err != nil {
		return func() {}, err
	}
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(l.o.PinTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rctx, cancel := context.WithTimeout(context.Background(), l.o.PinTTL/3)
				if err := l.pinUntil(rctx, dgst, time.Now().Add(l.o.PinTTL)); err != nil {
					l.log.Warn("shared store LRU: pin not renewed", "digest", dgst, "err", err)
				}
				cancel()
			}
		}
	}()
	return func() { once.Do(func() { close(stop) }) }, nil
}

// PinUntil keeps dgst from eviction until until, unrenewed: a presigned
// URL handed to a client is good until it expires.
func (l *LRU) PinUntil(ctx context.Context, dgst digest.Digest, until time.Time) error {
	return l.pinUntil(ctx, dgst, until)
}

func (l *LRU) pinUntil(ctx context.Context, dgst digest.Digest, until time.Time) error {
	n, err := pinScript.Run(ctx, l.rdb, []string{l.keys.pins, l.keys.deleting}, dgst.String(), until.UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("pin %s: %w", dgst, err)
	}
	if n == 0 {
		return fmt.Errorf("pin %s: %w", dgst, ErrEvicting)
	}
	return nil
}

// claimScript takes a blob for deletion unless it is pinned: out of the
// LRU order and into the deleting set, so that no pin can start.
var claimScript = redis.NewScript(`
local pin = redis.call("zscore", KEYS[1], ARGV[1])
if pin and tonumber(pin) > tonumber(ARGV[2]) then return 0 end
redis.call("sadd", KEYS[2], ARGV[1])
redis.call("zrem", KEYS[3], ARGV[1])
return 1`)

// forgetScript drops a deleted blob from the index.
var forgetScript = redis.NewScript(`
local size = redis.call("hget", KEYS[2], ARGV[1])
if size then
  redis.call("hdel", KEYS[2], ARGV[1])
  redis.call("decrby", KEYS[3], size)
end
redis.call("srem", KEYS[1], ARGV[1])
redis.call("zrem", KEYS[4], ARGV[1])
return 1`)

// unclaimScript puts back a blob whose deletion failed, as used at ARGV[2].
var unclaimScript = redis.NewScript(`
redis.call("srem", KEYS[1], ARGV[1])
redis.call("zadd", KEYS[2], "NX", ARGV[2], ARGV[1])
return 1`)

// Usage is what the index says of the store.
type Usage struct {
	Bytes, Blobs int64
}

// Usage reads the index's totals.
func (l *LRU) Usage(ctx context.Context) (Usage, error) {
	pipe := l.rdb.Pipeline()
	b := pipe.Get(ctx, l.keys.bytes)
	n := pipe.HLen(ctx, l.keys.size)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Usage{}, fmt.Errorf("shared store usage: %w", err)
	}
	bytes, _ := strconv.ParseInt(b.Val(), 10, 64)
	return Usage{Bytes: bytes, Blobs: n.Val()}, nil
}

// Run flushes touches and, when this replica holds the evictor's lease,
// reconciles and evicts, until ctx ends.
func (l *LRU) Run(ctx context.Context) {
	touch := time.NewTicker(l.o.TouchEvery)
	defer touch.Stop()
	pass := time.NewTicker(l.o.Interval)
	defer pass.Stop()
	var lastWalk time.Time
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = l.flushTouches(fctx)
			cancel()
			return
		case <-touch.C:
			if err := l.flushTouches(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("shared store LRU: uses not recorded", "err", err)
			}
		case <-pass.C:
			walked, err := l.Pass(ctx, time.Since(lastWalk) >= l.o.Reconcile)
			if err != nil && ctx.Err() == nil {
				l.log.Warn("shared store LRU: eviction pass", "err", err)
			}
			if walked {
				lastWalk = time.Now()
			}
		}
	}
}

// Pass is one eviction pass, if this replica gets the evictor's lease:
// first a walk of the store when walk is set, then eviction down to
// LowPercent of MaxBytes when the store holds more than MaxBytes. walked
// says whether the walk ran.
func (l *LRU) Pass(ctx context.Context, walk bool) (walked bool, err error) {
	if err := l.flushTouches(ctx); err != nil {
		return false, err
	}
	lease, _, err := l.o.Fleet.Acquire(ctx, l.keys.lease)
	if err != nil || lease == nil {
		return false, err // another replica evicts, or Redis is down
	}
	defer lease.Release()
	// Pins that ran out (their holders finished or died) are no news.
	if err := l.rdb.ZRemRangeByScore(ctx, l.keys.pins, "-inf", strconv.FormatInt(time.Now().UnixMilli(), 10)).Err(); err != nil {
		return false, fmt.Errorf("drop old pins: %w", err)
	}
	if walk {
		if err := l.reconcile(ctx); err != nil {
			return false, err
		}
		walked = true
	}
	if l.o.MaxBytes == 0 {
		return walked, nil
	}
	return walked, l.evict(ctx)
}

// reconcile indexes the blobs the store holds and the index lacks, as last
// used when they were written, and drops index entries whose blob is gone.
func (l *LRU) reconcile(ctx context.Context) error {
	have := map[string]bool{}
	added := 0
	err := l.o.Store.WalkBlobs(ctx, func(dgst digest.Digest, size int64, written time.Time) error {
		have[dgst.String()] = true
		ok, err := l.rdb.HExists(ctx, l.keys.size, dgst.String()).Result()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		added++
		return l.record(ctx, dgst, size, written)
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	indexed, err := l.rdb.HKeys(ctx, l.keys.size).Result()
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	dropped := 0
	for _, d := range indexed {
		if have[d] {
			continue
		}
		// Written after the walk passed its place, or deleted: ask.
		dgst, err := digest.Parse(d)
		if err == nil {
			if _, err := l.o.Store.StatBlob(ctx, dgst); !errors.Is(err, objstore.ErrNotFound) {
				continue
			}
		}
		if err := l.forget(ctx, d); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		dropped++
	}
	if added > 0 || dropped > 0 {
		l.log.Info("shared store LRU reconciled with the store", "indexed", added, "dropped", dropped)
	}
	return nil
}

func (l *LRU) forget(ctx context.Context, d string) error {
	return forgetScript.Run(ctx, l.rdb, []string{l.keys.deleting, l.keys.size, l.keys.bytes, l.keys.atime}, d).Err()
}

// evict deletes the least recently used blobs that are not pinned until
// the store holds LowPercent of MaxBytes or less.
func (l *LRU) evict(ctx context.Context) error {
	u, err := l.Usage(ctx)
	if err != nil || u.Bytes <= l.o.MaxBytes {
		return err
	}
	low := int64(l.o.LowPercent)
	target := l.o.MaxBytes/100*low + l.o.MaxBytes%100*low/100 // exact, and no overflow
	total, evicted, freed := u.Bytes, 0, int64(0)
	var skipped int64
	for total > target {
		batch, err := l.rdb.ZRangeWithScores(ctx, l.keys.atime, skipped, skipped+63).Result()
		if err != nil {
			return fmt.Errorf("evict: %w", err)
		}
		if len(batch) == 0 {
			break // everything left is pinned
		}
		for _, z := range batch {
			if total <= target {
				break
			}
			d, _ := z.Member.(string)
			n, err := claimScript.Run(ctx, l.rdb, []string{l.keys.pins, l.keys.deleting, l.keys.atime}, d, time.Now().UnixMilli()).Int()
			if err != nil {
				return fmt.Errorf("evict: %w", err)
			}
			if n == 0 {
				skipped++ // being served
				continue
			}
			size, err := l.delete(ctx, d, int64(z.Score))
			if err != nil {
				return err
			}
			total -= size
			freed += size
			evicted++
			if l.o.OnEvict != nil {
				l.o.OnEvict(size)
			}
		}
	}
	l.log.Info("shared store LRU: evicted", "blobs", evicted, "bytes", freed, "left_bytes", total,
		"max_bytes", l.o.MaxBytes, "pinned_skipped", skipped)
	return nil
}

// delete deletes a claimed blob from the store and the index, returning
// its size; a failed deletion puts it back in the LRU order.
func (l *LRU) delete(ctx context.Context, d string, usedMs int64) (int64, error) {
	size, _ := l.rdb.HGet(ctx, l.keys.size, d).Int64()
	dgst, err := digest.Parse(d)
	if err != nil {
		// Not a digest: nothing in the store answers to it.
		return 0, l.forget(ctx, d)
	}
	if err := l.o.Store.DeleteBlob(ctx, dgst); err != nil {
		if uerr := unclaimScript.Run(ctx, l.rdb, []string{l.keys.deleting, l.keys.atime}, d, usedMs).Err(); uerr != nil {
			l.log.Warn("shared store LRU: a blob not put back", "digest", d, "err", uerr)
		}
		return 0, fmt.Errorf("evict %s: %w", d, err)
	}
	if err := l.forget(ctx, d); err != nil {
		return 0, fmt.Errorf("evict %s: %w", d, err)
	}
	return size, nil
}
