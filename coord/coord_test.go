package coord_test

import (
	"context"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/internal/testredis"
)

func fleet(t *testing.T, addr, password, self string, ttl time.Duration) *coord.Fleet {
	t.Helper()
	f, err := coord.New(coord.Options{Addr: addr, Password: password, Self: self, LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestLease: one replica at a time holds a lease, the others learn its
// address; it lives while renewed, is free once released, and expires
// after its TTL when its holder stops renewing (dies).
func TestLease(t *testing.T) {
	srv := testredis.StartWithPassword(t, "s3cret")
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	a := fleet(t, srv.Addr, "s3cret", "http://a:5000", ttl)
	b := fleet(t, srv.Addr, "s3cret", "http://b:5000", ttl)

	la, owner, err := a.Acquire(ctx, "blob:x")
	if err != nil || la == nil || owner != "" {
		t.Fatalf("a: lease %v, owner %q, %v; want the lease", la, owner, err)
	}
	// Held past several TTLs: a renews it.
	time.Sleep(3 * ttl)
	lb, owner, err := b.Acquire(ctx, "blob:x")
	if err != nil || lb != nil || owner != "http://a:5000" {
		t.Fatalf("b while a holds it: lease %v, owner %q, %v; want a's address", lb, owner, err)
	}
	la.Release()
	la.Release() // twice is harmless
	lb, owner, err = b.Acquire(ctx, "blob:x")
	if err != nil || lb == nil || owner != "" {
		t.Fatalf("b after a released: lease %v, owner %q, %v; want the lease", lb, owner, err)
	}
	// b dies without releasing: its renewals stop with its connection.
	b.Close()
	deadline := time.Now().Add(5 * ttl)
	for {
		la, owner, err = a.Acquire(ctx, "blob:x")
		if err == nil && la != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a, %v after b died: lease %v, owner %q, %v", 5*ttl, la, owner, err)
		}
		time.Sleep(ttl / 10)
	}
	la.Release()
	var nilLease *coord.Lease
	nilLease.Release() // a nil lease (acting alone) releases nothing
}

// TestLeaseOfEarlierSelf: a lease left under this replica's own address by
// an earlier process is taken over at once: nothing of it is left to stream.
func TestLeaseOfEarlierSelf(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	before := fleet(t, srv.Addr, "", "http://a:5000", time.Minute)
	if l, _, err := before.Acquire(ctx, "blob:y"); err != nil || l == nil {
		t.Fatalf("%v %v", l, err)
	}
	before.Close() // killed: the lease stays for a minute
	after := fleet(t, srv.Addr, "", "http://a:5000", time.Minute)
	l, owner, err := after.Acquire(ctx, "blob:y")
	if err != nil || l == nil || owner != "" {
		t.Fatalf("the restarted replica: lease %v, owner %q, %v; want the lease", l, owner, err)
	}
	l.Release()
}

// TestRedisDown: Acquire says Redis cannot be asked, quickly, and works
// again once Redis is back.
func TestRedisDown(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	f := fleet(t, srv.Addr, "", "http://a:5000", time.Second)
	srv.Kill()
	start := time.Now()
	if l, _, err := f.Acquire(ctx, "blob:z"); err == nil {
		l.Release()
		t.Fatal("Acquire with Redis down: no error")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Acquire with Redis down took %v", took)
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, _, err := f.Acquire(ctx, "blob:z")
		if err == nil && l != nil {
			l.Release()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Acquire after Redis restarted: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFinish: a finished lease still names its holder for a while, then
// is free.
func TestFinish(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := fleet(t, srv.Addr, "", "http://a:5000", time.Minute)
	b := fleet(t, srv.Addr, "", "http://b:5000", time.Minute)
	l, _, err := a.Acquire(ctx, "blob:done")
	if err != nil || l == nil {
		t.Fatalf("%v %v", l, err)
	}
	l.Finish(500 * time.Millisecond)
	l.Release() // after Finish, nothing more happens
	if lb, owner, err := b.Acquire(ctx, "blob:done"); err != nil || lb != nil || owner != "http://a:5000" {
		t.Fatalf("b just after a finished: lease %v, owner %q, %v; want a's address", lb, owner, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		lb, _, err := b.Acquire(ctx, "blob:done")
		if err == nil && lb != nil {
			lb.Release()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the finished lease never expired: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHolds: a hold one replica publishes reaches the others while they
// watch, and a replica that starts during it finds it in Redis; a hold
// told as over is heard and no longer found.
func TestHolds(t *testing.T) {
	srv := testredis.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := fleet(t, srv.Addr, "", "http://a:5000", time.Minute)
	b := fleet(t, srv.Addr, "", "http://b:5000", time.Minute)
	heard := make(chan coord.Hold, 16)
	watch, err := b.SubscribeHolds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go watch.Run(ctx, func(h coord.Hold) { heard <- h })
	until := time.Now().Add(5 * time.Second).Truncate(time.Millisecond)
	limit := coord.Hold{Kind: "ratelimit", Upstream: "docker.io", Until: until, Cause: "answered 429 Too Many Requests"}
	// Subscribed once SubscribeHolds returns: the first publish is heard.
	if err := a.PublishHold(ctx, limit); err != nil {
		t.Fatal(err)
	}
	got := nextHold(t, heard, "ratelimit")
	if got != limit {
		t.Errorf("heard %+v, want %+v", got, limit)
	}
	circuit := coord.Hold{Kind: "circuit", Upstream: "docker.io", Until: until, Cause: "circuit open after unreachable: connection refused"}
	if err := a.PublishHold(ctx, circuit); err != nil {
		t.Fatal(err)
	}
	if got := nextHold(t, heard, "circuit"); got != circuit {
		t.Errorf("heard %+v, want %+v", got, circuit)
	}

	count := coord.Hold{Kind: "count", Upstream: "ghcr.io", Until: until, Remaining: 7, Limit: 100, At: time.Unix(0, time.Now().UnixNano())}
	if err := a.PublishHold(ctx, count); err != nil {
		t.Fatal(err)
	}
	if got := nextHold(t, heard, "count"); got != count {
		t.Errorf("heard %+v, want %+v", got, count)
	}

	c := fleet(t, srv.Addr, "", "http://c:5000", time.Minute)
	holds, err := c.Holds(ctx, []string{"docker.io", "ghcr.io"})
	if err != nil || len(holds) != 3 || holds[0] != limit || holds[1] != circuit || holds[2] != count {
		t.Fatalf("a replica that starts during the holds: %+v, %v", holds, err)
	}
	over := coord.Hold{Kind: "circuit", Upstream: "docker.io"}
	if err := a.PublishHold(ctx, over); err != nil {
		t.Fatal(err)
	}
	if got := nextHold(t, heard, "circuit"); got.Until.After(time.Now()) {
		t.Errorf("the circuit's end was heard as %+v", got)
	}
	if holds, _ := c.Holds(ctx, []string{"docker.io"}); len(holds) != 1 || holds[0] != limit {
		t.Errorf("after the circuit's end: %+v, want only the rate limit", holds)
	}
	if err := a.PublishHold(ctx, coord.Hold{Kind: "ratelimit", Upstream: "quay.io", Until: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if holds, _ := c.Holds(ctx, []string{"quay.io"}); len(holds) != 0 {
		t.Errorf("a hold already over was kept: %+v", holds)
	}
	if err := a.PublishHold(ctx, coord.Hold{Kind: "outage", Upstream: "quay.io", Until: until}); err == nil {
		t.Error("a hold of an unknown kind was published")
	}
}

// nextHold is the next hold of kind heard, within a few seconds.
func nextHold(t *testing.T, heard <-chan coord.Hold, kind string) coord.Hold {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case h := <-heard:
			if h.Kind == kind {
				return h
			}
		case <-timeout:
			t.Fatalf("no %s hold heard", kind)
		}
	}
}
