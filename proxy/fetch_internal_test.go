package proxy

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/upstream"
)

// TestStartDoesNotRepeatAFinishedFetch: a client that missed the cache
// just before a fetch committed, and reaches start just after the fetch
// left the in-flight set, must be sent to the cache rather than start a
// second upstream GET for the same blob.
func TestStartDoesNotRepeatAFinishedFetch(t *testing.T) {
	store, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("a layer that was fetched a moment ago")
	dgst := digest.FromBytes(content)
	if err := store.PutBlob(dgst, content); err != nil {
		t.Fatal(err)
	}
	var running sync.WaitGroup
	b := newBlobFetches(context.Background(), &running, store, slog.New(slog.DiscardHandler), time.Minute, DefaultMaxBlobSize)
	client, err := upstream.New(upstream.Config{Name: "docker.io", URL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	up := &registry{Client: client}
	f, started := b.start(up, storage.Repo{Upstream: "docker.io", Name: "library/app"}, dgst)
	if f != nil || started {
		t.Fatalf("start = %v, %v; want nil, false for a blob in the cache", f, started)
	}
	if n := b.count(); n != 0 {
		t.Fatalf("%d fetches in flight, want none", n)
	}
	running.Wait()
}
