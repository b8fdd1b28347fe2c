package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Cache results recorded for each request.
const (
	cacheHit       = "hit"
	cacheMiss      = "miss"
	cacheCoalesced = "coalesced"
	cacheRevalid   = "revalidated"
	cacheStale     = "stale"    // served past its TTL: upstream unavailable or sparing its rate limit
	cachePass      = "pass"     // not cacheable, proxied
	cacheRedirect  = "redirect" // sent to the shared store's presigned URL
)

// requestInfo collects what handlers learn about a request for its log line.
type requestInfo struct {
	route    string
	upstream string
	// user is the authenticated client, "" when anonymous (or when
	// client authentication is off).
	user  string
	cache string
	err   error
	// status and bytes are set by handlers that wrote the answer on a
	// hijacked connection, which the recorder cannot see.
	status int
	bytes  int64
	// wroteAt is when such a handler wrote the answer's first bytes.
	wroteAt time.Time
}

type requestInfoKey struct{}

func requestInfoFrom(r *http.Request) *requestInfo {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

func noteCache(r *http.Request, result string) { requestInfoFrom(r).cache = result }
func noteError(r *http.Request, err error)     { requestInfoFrom(r).err = err }

// logRequests writes one line per request.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{route: routeOf(r.URL.Path)}
		rec := &statusRecorder{ResponseWriter: w}
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := s.tel.tracer.Start(ctx, r.Method+" "+info.route, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if span.IsRecording() { // attributes cost allocations a no-op span throws away
			span.SetAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path))
		}
		ctx = context.WithValue(ctx, requestInfoKey{}, info)
		defer func() {
			// A handler aborting a cut-off body still gets its log line.
			if v := recover(); v != nil {
				if info.err == nil {
					info.err = errAborted
				}
				s.finishRequest(r, rec, info, span, start)
				panic(v)
			}
		}()
		r = r.WithContext(ctx)
		next.ServeHTTP(rec, r)
		s.finishRequest(r, rec, info, span, start)
	})
}

// errAborted notes a response cut off on purpose.
var errAborted = errors.New("response aborted")

// routeOf names the endpoint family of paths outside the pull API.
func routeOf(path string) string {
	switch {
	case path == "/v2/" || path == "/v2":
		return "base"
	case strings.HasPrefix(path, "/v2/"):
		return "pull"
	case strings.HasPrefix(path, "/_breakwater/"):
		return "api"
	case path == "/healthz", path == "/readyz", path == "/metrics":
		return path[1:]
	}
	return "other" // metric labels stay bounded whatever clients send
}

// finishRequest writes the request's log line, metrics and span status.
func (s *Server) finishRequest(r *http.Request, rec *statusRecorder, info *requestInfo, span trace.Span, start time.Time) {
	status, bytes := rec.status, rec.bytes
	if info.status != 0 {
		status, bytes = info.status, info.bytes
	}
	if status == 0 {
		status = http.StatusOK
	}
	end := time.Now()
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("query", r.URL.RawQuery),
		slog.Int("status", status),
		slog.Int64("bytes", bytes),
		slog.Float64("duration_ms", msSince(start, end)),
		slog.Float64("first_byte_ms", msSince(start, firstWrite(rec, info, end))),
		slog.String("remote", r.RemoteAddr),
	}
	if info.upstream != "" {
		attrs = append(attrs, slog.String("upstream", info.upstream))
	}
	if info.user != "" {
		// The user, never the password: the Authorization header is not
		// logged anywhere.
		attrs = append(attrs, slog.String("user", info.user))
		span.SetAttributes(attribute.String("user.name", info.user))
	}
	if info.cache != "" {
		attrs = append(attrs, slog.String("cache", info.cache))
	}
	level := slog.LevelInfo
	if info.err != nil {
		attrs = append(attrs, slog.String("err", info.err.Error()))
		if status >= 500 {
			level = slog.LevelWarn
		}
	}
	if sc := span.SpanContext(); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("http.response.status_code", status), attribute.String("breakwater.cache", info.cache))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	s.tel.recordRequest(r.Context(), info.route, r.Method, status, info.cache, bytes, end.Sub(start))
	s.logAt(r.Context(), end, level, "request", attrs...)
}

// logAt logs a line stamped t rather than now: a request's line carries the
// end of its duration_ms, so that its start is the line's time less
// duration_ms, as a benchmark joining the log with its clients' clocks
// needs. Metrics and a busy machine's scheduling may delay the write by
// milliseconds.
func (s *Server) logAt(ctx context.Context, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) {
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	rec := slog.NewRecord(t, level, msg, 0)
	rec.AddAttrs(attrs...)
	_ = h.Handle(ctx, rec)
}

// msSince is the time from start to t in milliseconds, to the microsecond.
func msSince(start, t time.Time) float64 { return float64(t.Sub(start).Microseconds()) / 1000 }

// firstWrite is when the handler first wrote its answer: its status and
// headers leave then, with or before the first body bytes. A handler that
// wrote nothing has its answer written by net/http when it returns, at end.
// Time to first byte is where a herd's clients wait (a fetch's followers
// wait for its first bytes before their headers go out), and the access
// log is what lets a benchmark split it from the time to the last byte.
func firstWrite(rec *statusRecorder, info *requestInfo, end time.Time) time.Time {
	switch {
	case !rec.wroteAt.IsZero():
		return rec.wroteAt
	case !info.wroteAt.IsZero():
		return info.wroteAt
	}
	return end
}

// statusRecorder notes the status and byte count. It keeps ReadFrom so that
// serving a cached file still uses sendfile, and Unwrap so that
// http.ResponseController reaches the connection.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// wroteAt is the first WriteHeader, Write, ReadFrom or Flush.
	wroteAt time.Time
}

func (w *statusRecorder) noteWrite() {
	if w.wroteAt.IsZero() {
		w.wroteAt = time.Now()
	}
}

func (w *statusRecorder) WriteHeader(code int) {
	w.noteWrite()
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(p []byte) (int, error) {
	w.noteWrite()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusRecorder) ReadFrom(r io.Reader) (int64, error) {
	w.noteWrite()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(w.ResponseWriter, r)
	}
	w.bytes += n
	return n, err
}

func (w *statusRecorder) Flush() {
	w.noteWrite()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
