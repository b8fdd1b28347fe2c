package testupstream

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Step is what the upstream does with one request matched by a Script.
type Step struct {
	status  int
	header  http.Header
	reset   bool
	cutAt   float64 // serve the real answer but cut its body at this fraction
	drip    int     // serve the real answer this many bytes at a time...
	every   time.Duration
	stallAt float64 // ...and stop sending at this fraction, holding the connection
}

// Status answers with status and header pairs ("Retry-After", "2") and an
// OCI error body.
func Status(status int, headerPairs ...string) Step {
	h := http.Header{}
	for i := 0; i+1 < len(headerPairs); i += 2 {
		h.Set(headerPairs[i], headerPairs[i+1])
	}
	return Step{status: status, header: h}
}

// Reset closes the connection with a TCP reset before answering.
func Reset() Step { return Step{reset: true} }

// Cut serves the registry's answer with its full Content-Length but closes
// the connection after fraction of the body.
func Cut(fraction float64) Step { return Step{cutAt: fraction} }

// Drip serves the registry's answer chunk bytes every interval.
func Drip(chunk int, every time.Duration) Step { return Step{drip: chunk, every: every} }

// Stall serves fraction of the registry's answer, then sends nothing more
// and holds the connection until the client gives up.
func Stall(fraction float64) Step { return Step{stallAt: fraction, drip: 1 << 20} }

// Pass hands the request to the registry.
func Pass() Step { return Step{} }

// Script plays steps, one per matching request, then passes every further
// request to the registry. It is safe for concurrent use.
type Script struct {
	match   func(*http.Request) bool
	mu      sync.Mutex
	steps   []Step
	seen    int
	forever bool
}

// Play installs a script for requests matching method (empty for any) and
// whose path contains pathPart. The steps repeat with Forever.
func (u *Upstream) Play(method, pathPart string, steps ...Step) *Script {
	s := &Script{
		match: func(r *http.Request) bool {
			return (method == "" || r.Method == method) && strings.Contains(r.URL.Path, pathPart)
		},
		steps: steps,
	}
	u.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !s.match(r) {
			return false
		}
		step, ok := s.next()
		if !ok {
			return false
		}
		return u.perform(step, w, r)
	})
	return s
}

// Forever makes the script repeat its last step for every further request.
func (s *Script) Forever() *Script {
	s.mu.Lock()
	s.forever = true
	s.mu.Unlock()
	return s
}

// Played returns how many requests the script has answered.
func (s *Script) Played() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forever {
		return s.seen
	}
	return min(s.seen, len(s.steps))
}

func (s *Script) next() (Step, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen >= len(s.steps) {
		s.seen++
		if s.forever && len(s.steps) > 0 {
			return s.steps[len(s.steps)-1], true
		}
		return Step{}, false
	}
	st := s.steps[s.seen]
	s.seen++
	return st, true
}

// perform carries out one step; it returns false to pass the request on.
func (u *Upstream) perform(st Step, w http.ResponseWriter, r *http.Request) bool {
	switch {
	case st.reset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return false
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST, not FIN
		}
		conn.Close()
		return true
	case st.status != 0:
		for k, vs := range st.header {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(st.status)
		code := map[int]string{404: "MANIFEST_UNKNOWN", 401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}[st.status]
		if code == "" {
			code = "UNAVAILABLE"
		}
		_, _ = w.Write([]byte(`{"errors":[{"code":"` + code + `","message":"scripted ` + strconv.Itoa(st.status) + `"}]}`))
		return true
	case st.cutAt > 0 || st.drip > 0:
		rec := httptest.NewRecorder()
		u.registry.ServeHTTP(rec, r)
		res := rec.Result()
		body := rec.Body.Bytes()
		for k, vs := range res.Header {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(res.StatusCode)
		if r.Method == http.MethodHead {
			return true
		}
		flusher := w.(http.Flusher)
		end := len(body)
		if st.cutAt > 0 {
			end = int(float64(len(body)) * st.cutAt)
		}
		if st.stallAt > 0 {
			end = int(float64(len(body)) * st.stallAt)
		}
		chunk := st.drip
		if chunk <= 0 {
			chunk = end
		}
		for off := 0; off < end; off += chunk {
			_, _ = w.Write(body[off:min(off+chunk, end)])
			flusher.Flush()
			if st.every > 0 {
				select {
				case <-time.After(st.every):
				case <-r.Context().Done():
					return true
				}
			}
		}
		if end == len(body) {
			return true
		}
		if st.stallAt > 0 {
			<-r.Context().Done()
			return true
		}
		// Cut: drop the connection mid-body.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return true
	}
	return false
}

// HalfThenWait answers a GET with content's first half, flushed, and sends
// the rest once release is closed; it gives up when the client goes away.
// Hooks use it to keep a fetch under way for as long as a test needs.
func HalfThenWait(w http.ResponseWriter, r *http.Request, content []byte, release <-chan struct{}) {
	w.Header().Set("Content-Length", strconv.Itoa(len(content)))
	_, _ = w.Write(content[:len(content)/2])
	w.(http.Flusher).Flush()
	select {
	case <-release:
	case <-r.Context().Done():
		return
	}
	_, _ = w.Write(content[len(content)/2:])
}
