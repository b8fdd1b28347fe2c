package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// lineHandler writes the log in the format test/e2e's scripts read, which
// predates slog: one JSON object a line, "time" (UTC, RFC 3339 with
// nanoseconds) then "msg" then the attributes in the order logged, values
// encoded by encoding/json (so &, < and > are escaped as \u0026 ... as they
// always were; slog's JSONHandler would write them as they are, and add a
// "level"). Records above Info (the upstream could not be reached) go to
// errW as text instead, so that the log holds request and mode lines only.
type lineHandler struct {
	mu    *sync.Mutex // one per destination pair, shared by derived handlers
	w     io.Writer
	errW  io.Writer
	attrs []slog.Attr
	group string // prefix of the keys, "a.b." for WithGroup("a").WithGroup("b")
}

func newLineHandler(w, errW io.Writer) *lineHandler {
	return &lineHandler{mu: new(sync.Mutex), w: w, errW: errW}
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, slog.Attr{Key: h.group + a.Key, Value: a.Value})
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level > slog.LevelInfo {
		var b strings.Builder
		fmt.Fprintf(&b, "faultproxy: %s %s %s", r.Time.Format(time.RFC3339), r.Level, r.Message)
		for _, a := range attrs {
			fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		}
		b.WriteByte('\n')
		_, err := io.WriteString(h.errW, b.String())
		return err
	}
	var b strings.Builder
	b.WriteString(`{"time":`)
	writeJSON(&b, r.Time.UTC().Format(time.RFC3339Nano))
	b.WriteString(`,"msg":`)
	writeJSON(&b, r.Message)
	for _, a := range attrs {
		b.WriteByte(',')
		writeJSON(&b, a.Key)
		b.WriteByte(':')
		writeJSON(&b, a.Value.Resolve().Any())
	}
	b.WriteString("}\n")
	_, err := io.WriteString(h.w, b.String())
	return err
}

func writeJSON(b *strings.Builder, v any) {
	j, err := json.Marshal(v)
	if err != nil {
		j, _ = json.Marshal(fmt.Sprint(v))
	}
	b.Write(j)
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		h2.attrs = append(h2.attrs, slog.Attr{Key: h.group + a.Key, Value: a.Value})
	}
	return &h2
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}
