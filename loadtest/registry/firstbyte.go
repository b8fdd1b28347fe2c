package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	repomw "github.com/distribution/distribution/v3/registry/middleware/repository"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/loadtest/internal/firstbyte"
)

// The "firstbyte" repository middleware logs, for every blob the registry
// serves, when the request arrived and when the registry wrote the answer's
// first bytes. The benchmark harness enables it on its upstream
// (`middleware: repository: [{name: firstbyte}]`) to tell the upstream's
// own share of a proxy's time to first byte from the proxy's. It changes
// nothing else: the blob is served by the wrapped store, sendfile included.
func init() {
	if err := repomw.Register("firstbyte", func(_ context.Context, repo distribution.Repository, _ map[string]any) (distribution.Repository, error) {
		return firstByteRepo{Repository: repo, log: stderrLog}, nil
	}); err != nil {
		panic(err)
	}
}

// lineLog writes whole lines under a lock, so that concurrent answers do
// not interleave.
type lineLog struct {
	mu sync.Mutex
	w  io.Writer
}

var stderrLog = &lineLog{w: os.Stderr}

func (l *lineLog) write(line firstbyte.Line) {
	b, err := json.Marshal(line)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(append(b, '\n'))
}

type firstByteRepo struct {
	distribution.Repository
	log *lineLog
}

func (r firstByteRepo) Blobs(ctx context.Context) distribution.BlobStore {
	return firstByteBlobs{BlobStore: r.Repository.Blobs(ctx), log: r.log}
}

type firstByteBlobs struct {
	distribution.BlobStore
	log *lineLog
}

// startedAtKey is distribution's context key of the request's start.
const startedAtKey = "http.request.startedat"

func (b firstByteBlobs) ServeBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, dgst digest.Digest) error {
	arrived, ok := ctx.Value(startedAtKey).(time.Time)
	if !ok {
		arrived = time.Now()
	}
	rec := &firstWrite{ResponseWriter: w}
	err := b.BlobStore.ServeBlob(ctx, rec, r, dgst)
	if !rec.at.IsZero() {
		b.log.write(firstbyte.Line{Msg: firstbyte.Msg, Method: r.Method, Path: r.URL.Path, Remote: r.RemoteAddr,
			Arrived: arrived, FirstByte: rec.at, Status: rec.status})
	}
	return err
}

// firstWrite notes the first write to a response. It forwards ReadFrom,
// so that a file is still sent with sendfile, and Flush.
type firstWrite struct {
	http.ResponseWriter
	at     time.Time
	status int
}

func (w *firstWrite) note(status int) {
	if w.at.IsZero() {
		w.at, w.status = time.Now(), status
	}
}

func (w *firstWrite) WriteHeader(code int) {
	w.note(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.note(http.StatusOK)
	return w.ResponseWriter.Write(p)
}

func (w *firstWrite) ReadFrom(src io.Reader) (int64, error) {
	w.note(http.StatusOK)
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
}

func (w *firstWrite) Flush() {
	w.note(http.StatusOK)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *firstWrite) Unwrap() http.ResponseWriter { return w.ResponseWriter }
