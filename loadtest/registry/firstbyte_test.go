package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/loadtest/internal/firstbyte"
)

// fakeBlobs serves a blob after a pause, or fails without writing.
type fakeBlobs struct {
	distribution.BlobStore
	pause time.Duration
	fail  bool
}

func (f fakeBlobs) ServeBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, dgst digest.Digest) error {
	time.Sleep(f.pause)
	if f.fail {
		return distribution.ErrBlobUnknown
	}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte("blob"))
	return err
}

// startedCtx carries a request start the way distribution's request
// context does.
type startedCtx struct {
	context.Context
	at time.Time
}

func (c startedCtx) Value(k any) any {
	if k == startedAtKey {
		return c.at
	}
	return c.Context.Value(k)
}

// TestFirstByteLogsArrivalAndFirstWrite: a served blob gets one line with
// the request's own start as distribution recorded it and the time of the
// store's first write, at least the store's pause later; a blob the store
// did not serve gets none.
func TestFirstByteLogsArrivalAndFirstWrite(t *testing.T) {
	const pause = 30 * time.Millisecond
	for _, tc := range []struct {
		name  string
		fail  bool
		lines int
	}{{"served", false, 1}, {"not served", true, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			b := firstByteBlobs{BlobStore: fakeBlobs{pause: pause, fail: tc.fail}, log: &lineLog{w: &out}}
			started := time.Now().Add(-time.Second) // distinct from anything the middleware could take itself
			r := httptest.NewRequest(http.MethodGet, "/v2/app/blobs/sha256:abc", nil)
			r.RemoteAddr = "127.0.0.1:40123"
			w := httptest.NewRecorder()
			err := b.ServeBlob(startedCtx{Context: context.Background(), at: started}, w, r, "sha256:abc")
			if tc.fail != errors.Is(err, distribution.ErrBlobUnknown) {
				t.Fatalf("ServeBlob: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if out.Len() == 0 {
				lines = nil
			}
			if len(lines) != tc.lines {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), tc.lines, out.String())
			}
			if tc.lines == 0 {
				return
			}
			var l firstbyte.Line
			if err := json.Unmarshal([]byte(lines[0]), &l); err != nil {
				t.Fatal(err)
			}
			if l.Msg != firstbyte.Msg || l.Path != r.URL.Path || l.Remote != r.RemoteAddr || l.Method != http.MethodGet || l.Status != http.StatusOK {
				t.Errorf("line %+v: want msg %q, the request's path, remote and method, status 200", l, firstbyte.Msg)
			}
			if !l.Arrived.Equal(started) {
				t.Errorf("arrived %s, want the request's start %s", l.Arrived, started)
			}
			if got := l.FirstByte.Sub(l.Arrived); got < time.Second+pause {
				t.Errorf("first byte %s after arrival, want at least %s", got, time.Second+pause)
			}
		})
	}
}
