package testredis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/breakwater-registry/breakwater/internal/testredis"
)

func client(t *testing.T, srv *testredis.Server) *redis.Client {
	t.Helper()
	// No retries, so that a dead server shows in the first command's error.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLease takes a lease the way replicas will coordinate: SET NX PX
// succeeds for the first taker only, until the lease expires.
func TestLease(t *testing.T) {
	srv := testredis.Start(t)
	c := client(t, srv)
	ctx := context.Background()

	if err := c.Set(ctx, "blob:sha256:1", "stored", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.Get(ctx, "blob:sha256:1").Result(); err != nil || got != "stored" {
		t.Fatalf("GET = %q, %v; want %q", got, err, "stored")
	}

	const lease = "lease:fetch:sha256:1"
	if ok, err := c.SetNX(ctx, lease, "replica-a", 300*time.Millisecond).Result(); err != nil || !ok {
		t.Fatalf("first SET NX PX = %v, %v; want the lease", ok, err)
	}
	if ok, err := c.SetNX(ctx, lease, "replica-b", 300*time.Millisecond).Result(); err != nil || ok {
		t.Fatalf("second SET NX PX while held = %v, %v; want refused", ok, err)
	}
	if ttl, err := c.PTTL(ctx, lease).Result(); err != nil || ttl <= 0 || ttl > 300*time.Millisecond {
		t.Errorf("PTTL = %v, %v; want in (0, 300ms]", ttl, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := c.SetNX(ctx, lease, "replica-b", time.Second).Result()
		if err != nil {
			t.Fatalf("SET NX PX after expiry: %v", err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease never expired")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := c.Get(ctx, lease).Result(); err != nil || got != "replica-b" {
		t.Errorf("lease holder = %q, %v; want replica-b", got, err)
	}
}

// TestKillRestart: after Kill commands fail, after Restart they work
// again on the same address, against an empty server.
func TestKillRestart(t *testing.T) {
	srv := testredis.Start(t)
	addr := srv.Addr
	c := client(t, srv)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	srv.Kill()
	if err := c.Get(ctx, "k").Err(); err == nil {
		t.Fatal("GET after Kill succeeded")
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING after Kill succeeded")
	}

	srv.Restart()
	if srv.Addr != addr {
		t.Errorf("Restart moved the server from %s to %s", addr, srv.Addr)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET of a key set before the kill: %v; want redis.Nil (nothing persisted)", err)
	}
}

// TestPassword: a server started with a password refuses clients without
// it.
func TestPassword(t *testing.T) {
	srv := testredis.StartWithPassword(t, "s3cret pass")
	ctx := context.Background()
	if err := client(t, srv).Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with the password: %v", err)
	}
	anon := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil {
		t.Error("PING without the password succeeded")
	}
}
