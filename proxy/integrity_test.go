package proxy_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/storage"
)

// TestChunkedWrongDigest: a complete body without Content-Length whose
// bytes do not hash to the digest answers 502 DIGEST_INVALID (the
// verification's own error, not "ingest already closed"), and nothing is
// cached.
func TestChunkedWrongDigest(t *testing.T) {
	up := testupstream.Start(t)
	m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Minute})
	content, dgst := pushLinkedLayer(t, up, m, "library/chunked", 64<<10)
	wrong := append([]byte(nil), content...)
	wrong[len(wrong)/2] ^= 0x01
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			return false
		}
		// Flushing before the end makes net/http send it chunked.
		_, _ = w.Write(wrong[:1000])
		w.(http.Flusher).Flush()
		_, _ = w.Write(wrong[1000:])
		return true
	})
	resp, body := m.get("/v2/library/chunked/blobs/" + dgst)
	if resp.StatusCode != http.StatusBadGateway || errorCode(body) != "DIGEST_INVALID" {
		t.Fatalf("wrong chunked body: %d %s, want 502 DIGEST_INVALID", resp.StatusCode, body)
	}
	if _, err := m.store.StatBlob(digest.Digest(dgst)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("wrong content cached: %v", err)
	}
}
