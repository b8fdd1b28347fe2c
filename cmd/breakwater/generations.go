package main

import (
	"log/slog"
	"net/http"
	"sync"

	"github.com/breakwater-registry/breakwater/proxy"
)

// generations serves each request with the proxy built from the
// configuration in force when the request arrived. A reload swaps in a
// new one; the old one finishes the requests it has, and only then is
// closed (its shared fetches stopped), so that no pull in flight is
// dropped by a reload.
type generations struct {
	log *slog.Logger

	mu      sync.Mutex
	cur     *generation
	retired []*generation // replaced, not yet closed
}

// generation is one proxy and the requests it is serving.
type generation struct {
	srv *proxy.Server

	mu      sync.Mutex
	active  int
	retired bool
	closed  bool
}

func (g *generations) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gen := g.enter()
	defer gen.leave()
	gen.srv.ServeHTTP(w, r)
}

// enter counts a request on the current generation. It holds g.mu so that
// a swap happens either before the request is counted, and the request is
// the new generation's, or after, and the old one waits for it.
func (g *generations) enter() *generation {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen := g.cur
	gen.mu.Lock()
	gen.active++
	gen.mu.Unlock()
	return gen
}

func (gen *generation) leave() {
	gen.mu.Lock()
	gen.active--
	idle := gen.retired && gen.active == 0 && !gen.closed
	if idle {
		gen.closed = true
	}
	gen.mu.Unlock()
	if idle {
		gen.srv.Close()
	}
}

func (gen *generation) isClosed() bool {
	gen.mu.Lock()
	defer gen.mu.Unlock()
	return gen.closed
}

// swap serves new requests with srv; the generation it replaces is closed
// once its last request is done.
func (g *generations) swap(srv *proxy.Server) {
	next := &generation{srv: srv}
	g.mu.Lock()
	old := g.cur
	g.cur = next
	kept := g.retired[:0]
	for _, r := range g.retired {
		if !r.isClosed() {
			kept = append(kept, r)
		}
	}
	g.retired = kept
	if old != nil {
		g.retired = append(g.retired, old)
	}
	g.mu.Unlock()
	if old == nil {
		return
	}
	old.mu.Lock()
	old.retired = true
	idle := old.active == 0 && !old.closed
	if idle {
		old.closed = true
	}
	old.mu.Unlock()
	if idle {
		old.srv.Close()
	}
}

// close closes every generation at once, whatever is still in flight: the
// process is done draining.
func (g *generations) close() {
	g.mu.Lock()
	all := append([]*generation{g.cur}, g.retired...)
	g.mu.Unlock()
	for _, gen := range all {
		gen.mu.Lock()
		closeIt := !gen.closed
		gen.closed = true
		gen.mu.Unlock()
		if closeIt {
			gen.srv.Close()
		}
	}
}
