package fleetlru_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/fleetlru"
	"github.com/breakwater-registry/breakwater/internal/testredis"
	"github.com/breakwater-registry/breakwater/objstore"
)

// rig is a store, a Redis and two replicas' LRUs over them.
type rig struct {
	store *objstore.Store
	a, b  *fleetlru.LRU
}

func newRig(t *testing.T, maxBytes int64) *rig {
	t.Helper()
	return newRigOn(t, testredis.Start(t), maxBytes)
}

func newRigOn(t *testing.T, srv *testredis.Server, maxBytes int64) *rig {
	t.Helper()
	store, err := objstore.Open(context.Background(), "filesystem", map[string]any{"rootdirectory": t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	lru := func(self string) *fleetlru.LRU {
		f, err := coord.New(coord.Options{Addr: srv.Addr, Self: self})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		l, err := fleetlru.New(fleetlru.Options{Fleet: f, Store: store, MaxBytes: maxBytes, LowPercent: 50, PinTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	return &rig{store: store, a: lru("http://a:5000"), b: lru("http://b:5000")}
}

// put writes a blob of size bytes to the store and, when index is set,
// records it as a replica that put it does.
func (r *rig) put(t *testing.T, l *fleetlru.LRU, i, size int, index bool) digest.Digest {
	t.Helper()
	content := bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), size/8)
	d := digest.FromBytes(content)
	if err := r.store.PutBlob(context.Background(), d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if index {
		if err := l.Stored(context.Background(), d, int64(len(content))); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (r *rig) has(d digest.Digest) bool {
	_, err := r.store.StatBlob(context.Background(), d)
	return !errors.Is(err, objstore.ErrNotFound)
}

// TestEvictsLeastRecentlyUsedFleetWide: blobs one replica stored and
// another used are evicted in the fleet's order of use, least recent
// first, down to the low mark, by whichever replica runs the pass; a
// pinned blob survives although it is the oldest, and goes once its pin is
// released and has run out.
func TestEvictsLeastRecentlyUsedFleetWide(t *testing.T) {
	ctx := context.Background()
	const kib = 1 << 10
	r := newRig(t, 6*kib) // evicts down to 3 KiB
	var d []digest.Digest
	for i := range 6 {
		d = append(d, r.put(t, r.a, i, kib, true))
		time.Sleep(5 * time.Millisecond) // distinct times of use
	}
	// Within the bound: nothing goes.
	if _, err := r.b.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	for i := range d {
		if !r.has(d[i]) {
			t.Fatalf("blob %d evicted under the bound", i)
		}
	}
	// Replica b serves blob 1 (from its own cache: a touch), blob 0 is
	// being streamed by a, and one more blob takes the store over.
	r.b.Touch(d[1])
	release, err := r.a.Pin(ctx, d[0])
	if err != nil {
		t.Fatal(err)
	}
	d = append(d, r.put(t, r.a, 6, kib, true))
	if _, err := r.b.Pass(ctx, false); err != nil { // b's pass sends b's touch
		t.Fatal(err)
	}
	// 7 KiB over 6: the least recent (2, 3, 4, 5) go until 3 KiB are
	// left; 0 is pinned, 1 was used, 6 is newest.
	for i, want := range []bool{true, true, false, false, false, false, true} {
		if r.has(d[i]) != want {
			t.Errorf("blob %d in the store: %v, want %v", i, !want, want)
		}
	}
	u, err := r.a.Usage(ctx)
	if err != nil || u.Bytes != 3*kib || u.Blobs != 3 {
		t.Errorf("usage %+v (%v), want 3 KiB in 3 blobs", u, err)
	}
	release()
}

// TestPinOfClaimedBlobFails: a replica that means to stream a blob an
// evictor has claimed (lru:deleting, between its claim and the deletion)
// is told so, and reads it elsewhere; once the eviction is done, a pin of
// the digest is harmless (the caller's stat finds nothing).
func TestPinOfClaimedBlobFails(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	r := newRigOn(t, srv, 1)
	d := r.put(t, r.a, 0, 1<<10, true)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	if err := rdb.SAdd(ctx, "bw:lru:deleting", d.String()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.Pin(ctx, d); !errors.Is(err, fleetlru.ErrEvicting) {
		t.Fatalf("pin of a claimed blob: %v, want ErrEvicting", err)
	}
	if err := rdb.SRem(ctx, "bw:lru:deleting", d.String()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if r.has(d) {
		t.Fatal("a blob over the bound was kept")
	}
	release, err := r.b.Pin(ctx, d)
	if err != nil {
		t.Fatalf("pin after the eviction finished: %v", err)
	}
	release()
}

// TestReconcileIndexesWhatRedisMissed: blobs written while Redis was down
// (never recorded) are found by the walk, as used when written, and
// evicted like the others; an index entry whose blob is gone is dropped.
func TestReconcileIndexesWhatRedisMissed(t *testing.T) {
	ctx := context.Background()
	const kib = 1 << 10
	r := newRig(t, 4*kib)
	unindexed := r.put(t, r.a, 0, kib, false)
	time.Sleep(20 * time.Millisecond)
	var d []digest.Digest
	for i := 1; i <= 4; i++ {
		d = append(d, r.put(t, r.a, i, kib, true))
	}
	gone := d[3]
	if err := r.store.DeleteBlob(ctx, gone); err != nil {
		t.Fatal(err)
	}
	// Without the walk the index holds 4 KiB: nothing to do.
	if _, err := r.a.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !r.has(unindexed) {
		t.Fatal("evicted without a walk")
	}
	walked, err := r.a.Pass(ctx, true)
	if err != nil || !walked {
		t.Fatalf("pass with a walk: walked %v, %v", walked, err)
	}
	// The walk found 4 KiB (the unindexed blob in, the gone one out):
	// within the bound.
	u, err := r.a.Usage(ctx)
	if err != nil || u.Bytes != 4*kib || u.Blobs != 4 {
		t.Fatalf("usage after the walk %+v (%v), want 4 KiB in 4 blobs", u, err)
	}
	d = append(d, r.put(t, r.a, 5, kib, true))
	if _, err := r.a.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	// Over by one: down to 2 KiB, oldest first — the one written before
	// the others, then blobs 1 and 2.
	for name, want := range map[string]bool{"unindexed": false, "1": false, "2": false, "3": true, "5": true} {
		dg := map[string]digest.Digest{"unindexed": unindexed, "1": d[0], "2": d[1], "3": d[2], "5": d[4]}[name]
		if r.has(dg) != want {
			t.Errorf("blob %s in the store: %v, want %v", name, !want, want)
		}
	}
}

// TestOneEvictorAtATime: while one replica holds the evictor's lease,
// another's pass does nothing.
func TestOneEvictorAtATime(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	store, err := objstore.Open(ctx, "filesystem", map[string]any{"rootdirectory": t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	holder, err := coord.New(coord.Options{Addr: srv.Addr, Self: "http://a:5000"})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	lease, _, err := holder.Acquire(ctx, "lru:evict")
	if err != nil || lease == nil {
		t.Fatalf("acquire: %v", err)
	}
	defer lease.Release()
	f, err := coord.New(coord.Options{Addr: srv.Addr, Self: "http://b:5000"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := fleetlru.New(fleetlru.Options{Fleet: f, Store: store, MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("over the bound")
	dg := digest.FromBytes(content)
	if err := store.PutBlob(ctx, dg, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if err := l.Stored(ctx, dg, int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if walked, err := l.Pass(ctx, true); err != nil || walked {
		t.Fatalf("pass under another's lease: walked %v, %v", walked, err)
	}
	if _, err := store.StatBlob(ctx, dg); err != nil {
		t.Fatalf("evicted under another replica's lease: %v", err)
	}
}
