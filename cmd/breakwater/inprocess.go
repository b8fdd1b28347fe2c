package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/breakwater-registry/breakwater/proxy"
)

// handlerTransport carries requests to an http.Handler in this process:
// Breakwater asking itself, for the warm API. No socket is involved, so
// it works whatever the listen address, TLS or client authentication;
// the response body streams through a pipe as the handler writes it.
type handlerTransport struct {
	handler http.Handler
	// trusted marks the requests as Breakwater's own (proxy.Trusted):
	// the admission webhook's, which no client credentials come with.
	trusted bool
}

// errHandlerAborted is the body's error when the handler cut its answer
// short on purpose (http.ErrAbortHandler): a client of a socket would see
// the connection close.
var errHandlerAborted = errors.New("handler aborted the response")

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The handler gets a request as a server would: a context of its own
	// that ends with the caller's, but carries none of its values — the
	// caller may itself be a request of this server (the warm API's),
	// whose router and log state must not be shared.
	base := context.Background()
	if t.trusted {
		base = proxy.Trusted(base)
	}
	ctx, cancel := context.WithCancel(base)
	stop := context.AfterFunc(req.Context(), cancel)
	inner := req.Clone(ctx)
	inner.RemoteAddr = "in-process"
	inner.RequestURI = req.URL.RequestURI()
	req = inner
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, started: make(chan struct{})}
	go func() {
		defer func() {
			stop()
			cancel()
		}()
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					pw.CloseWithError(fmt.Errorf("handler panicked: %v", v))
				} else {
					pw.CloseWithError(errHandlerAborted)
				}
				w.start()
				return
			}
			w.start()
			pw.Close()
		}()
		t.handler.ServeHTTP(w, req)
	}()
	select {
	case <-w.started:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	resp := &http.Response{
		StatusCode:    w.status,
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	if req.Method == http.MethodHead {
		resp.Body = http.NoBody
		pr.Close()
	}
	return resp, nil
}

// pipeWriter is the handler's http.ResponseWriter: the header goes out
// with the first write or WriteHeader, the body into the pipe.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter

	once    sync.Once
	started chan struct{}
	status  int
	sent    http.Header // the header as it was when the answer started
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(status int) {
	w.once.Do(func() {
		w.status = status
		w.sent = w.header.Clone()
		close(w.started)
	})
}

// start begins the answer as 200 if the handler did not say otherwise.
func (w *pipeWriter) start() { w.WriteHeader(http.StatusOK) }

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.start()
	return w.pw.Write(p)
}

// Flush lets handlers that flush (streaming answers) do so; the pipe has
// no buffer to flush.
func (w *pipeWriter) Flush() { w.start() }
