package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

// TestPullerVerifiesEveryByte: whatever a target gets wrong — a flipped
// byte, a short or long body, a wrong Docker-Content-Digest — the harness
// reports it as a verification failure, which fails the run; right
// content passes.
func TestPullerVerifiesEveryByte(t *testing.T) {
	blob := []byte("layer bytes the upstream was pushed")
	manifest := []byte(`{"schemaVersion":2}`)
	sum := func(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }
	wantBlob := testimage.Blob{Digest: sum(blob), Size: int64(len(blob))}
	wantManifest := &testimage.Pushed{Repo: "bench/app", Tag: "v1", Digest: sum(manifest), Manifest: manifest}

	flipped := append([]byte(nil), blob...)
	flipped[7] ^= 1
	cases := []struct {
		name       string
		body       []byte
		digestHdr  string // Docker-Content-Digest sent with the manifest
		manifest   bool
		wantVerify bool
	}{
		{"right blob", blob, "", false, false},
		{"flipped byte", flipped, "", false, true},
		{"short blob", blob[:len(blob)-1], "", false, true},
		{"long blob", append(append([]byte(nil), blob...), 'x'), "", false, true},
		{"right manifest", manifest, sum(manifest), true, false},
		{"manifest with another digest header", manifest, sum(blob), true, true},
		{"other manifest bytes", []byte(`{"schemaVersion":3}`), "", true, true},
	}
	for _, tc := range cases {
		// A blob is checked either by its sha256 or, when the puller holds
		// the content pushed (the herds), by comparing with it: both must
		// catch the same faults.
		for _, by := range []string{"sha256", "content"} {
			if tc.manifest && by == "content" {
				continue
			}
			t.Run(tc.name+"/"+by, func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if tc.digestHdr != "" {
						w.Header().Set("Docker-Content-Digest", tc.digestHdr)
					}
					w.Header().Set("Content-Length", strconv.Itoa(len(tc.body)))
					_, _ = w.Write(tc.body)
				}))
				defer srv.Close()
				p := &puller{client: newClient(), base: srv.URL, parallel: 1, pipelined: true, timeout: time.Minute}
				if by == "content" {
					p.content = map[string][]byte{wantBlob.Digest: blob}
				}
				before := verifyFailures.Load()
				var err error
				if tc.manifest {
					_, _, err = p.getManifest(context.Background(), wantManifest.Repo, wantManifest.Tag, wantManifest)
				} else {
					_, err = p.getBlob(context.Background(), "bench/app", wantBlob)
				}
				var verr *verifyError
				if got := errors.As(err, &verr); got != tc.wantVerify {
					t.Fatalf("error %v; want a verification failure: %v", err, tc.wantVerify)
				}
				if tc.wantVerify && verifyFailures.Load() != before+1 {
					t.Errorf("verification failures went from %d to %d, want one more", before, verifyFailures.Load())
				}
				if !tc.wantVerify && err != nil {
					t.Errorf("right content: %v", err)
				}
			})
		}
	}
}
