package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/breakwater-registry/breakwater/upstream"
)

// flights runs one manifest fetch per key for all concurrent requests, so
// that they share one upstream request and one retry loop. Unlike
// singleflight, a caller can also see that the fetch has been delayed (a
// try failed and will be retried, or the upstream's circuit or rate limit
// holds it), which is when a request with a cached tag stops waiting.
type flights struct {
	mu     sync.Mutex
	flying map[string]*flight
}

// flight is one fetch under way.
type flight struct {
	// done is closed when m and err are set.
	done chan struct{}
	m    *manifest
	err  error
	// delayed is closed, with delay set, the first time the fetch could
	// not be answered at once.
	delayed   chan struct{}
	delay     *upstream.Error
	delayOnce sync.Once
}

func (f *flights) init() { f.flying = map[string]*flight{} }

// join returns the fetch under way for key, or starts fetch as it. The
// fetch runs on base, not on any client's context: a client hanging up
// must not fail the others, and the result fills the cache. running counts
// it, so that the server's Close waits for it.
func (f *flights) join(key string, base context.Context, running *sync.WaitGroup, fetch func(ctx context.Context, onDelay upstream.CallOption) (*manifest, error)) (fl *flight, shared bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.flying[key]; fl != nil {
		return fl, true
	}
	fl = &flight{done: make(chan struct{}), delayed: make(chan struct{})}
	f.flying[key] = fl
	onDelay := upstream.OnDelay(func(e *upstream.Error) {
		fl.delayOnce.Do(func() {
			fl.delay = e
			close(fl.delayed)
		})
	})
	running.Add(1)
	go func() {
		defer running.Done()
		ctx, cancel := context.WithTimeout(base, 2*time.Minute)
		defer cancel()
		m, err := fetch(ctx, onDelay)
		f.mu.Lock()
		delete(f.flying, key)
		fl.m, fl.err = m, err
		f.mu.Unlock()
		close(fl.done)
	}()
	return fl, false
}

// wait returns the fetch's result, a copy each caller may annotate.
func (fl *flight) wait(ctx context.Context, shared bool) (*manifest, error) {
	select {
	case <-fl.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return fl.result(shared)
}

func (fl *flight) result(shared bool) (*manifest, error) {
	if fl.err != nil {
		return nil, fl.err
	}
	m := *fl.m
	if shared && m.cache == cacheMiss {
		m.cache = cacheCoalesced
	}
	return &m, nil
}

// lookup returns the fetch under way for key, nil if none is.
func (f *flights) lookup(key string) *flight {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flying[key]
}
