package proxy_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/storage"
)

// damage changes the cached file of dgst under the mirror: flip one byte
// in place (a write, with its own mtime) or truncate it.
func damage(t *testing.T, m *mirror, dgst string, how string) {
	t.Helper()
	d := digest.Digest(dgst)
	p := filepath.Join(m.dir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
	time.Sleep(20 * time.Millisecond) // past the commit's mtime on a coarse clock
	switch how {
	case "flip":
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, 50); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x80
		if _, err := f.WriteAt(b, 50); err != nil {
			t.Fatal(err)
		}
		f.Close()
	case "truncate":
		if err := os.Truncate(p, 100); err != nil {
			t.Fatal(err)
		}
	}
}

// quarantinedFiles counts the files in the cache's quarantine.
func quarantinedFiles(m *mirror) int {
	ents, _ := os.ReadDir(filepath.Join(m.dir, "quarantine"))
	return len(ents)
}

// TestCorruptCacheRefetched: a cached blob with a byte flipped and a cached
// manifest truncated on disk, with the mirror running and after a restart,
// are never served: they are quarantined, and the client gets the
// upstream's true bytes from a second upstream GET. With the hot cache on
// and no restart, the manifest's verified copy in memory is what is
// served: true bytes, without asking the upstream.
func TestCorruptCacheRefetched(t *testing.T) {
	for _, tc := range []struct {
		restart, hot bool
	}{{false, false}, {true, true}, {false, true}} {
		restart := tc.restart
		// The manifest comes from memory only when the mirror kept it
		// there since it fetched it.
		fromMemory := tc.hot && !restart
		t.Run(fmt.Sprintf("restart=%v,hot=%v", restart, tc.hot), func(t *testing.T) {
			up := testupstream.Start(t)
			var storeOpts []storage.Option
			if !tc.hot {
				storeOpts = append(storeOpts, storage.WithHotSize(0))
			}
			m := newMirror(t, up.URL, mirrorOpts{tagTTL: time.Hour, storeOpts: storeOpts})
			img := randomImage(t, 256<<10, 1, types.DockerManifestSchema2)
			up.PushImage(t, "library/rot:v1", img)
			layer := layersOf(t, img)[0]
			dgst, content := digestOf(t, layer), compressedBytes(t, layer)
			manifest := rawManifest(t, img)
			mdgst := sha256Hex(manifest)

			if resp, body := m.get("/v2/library/rot/manifests/v1"); resp.StatusCode != 200 || !bytes.Equal(body, manifest) {
				t.Fatalf("first manifest GET: %d", resp.StatusCode)
			}
			pullConcurrently(t, m, "library/rot", dgst, 1)
			waitCached(t, m, dgst)

			damage(t, m, dgst, "flip")
			damage(t, m, mdgst, "truncate")
			if restart {
				m.close()
				m = newMirror(t, up.URL, mirrorOpts{dir: m.dir, tagTTL: time.Hour})
			}
			up.Reset()
			for _, path := range []string{"/v2/library/rot/manifests/v1", "/v2/library/rot/manifests/" + mdgst} {
				resp, body := m.get(path)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, manifest) || resp.Header.Get("Docker-Content-Digest") != mdgst {
					t.Errorf("GET %s after damage: %d, %d bytes, want the true manifest", path, resp.StatusCode, len(body))
				}
			}
			wantManifestGETs, wantQuarantined := 1, 2
			if fromMemory {
				wantManifestGETs, wantQuarantined = 0, 1
			}
			if n := up.Count(http.MethodGet, "/manifests/"); n != wantManifestGETs {
				t.Errorf("%d upstream manifest GETs, want %d", n, wantManifestGETs)
			}
			resp, body := m.get("/v2/library/rot/blobs/" + dgst)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
				t.Fatalf("blob after damage: %d, digest %s, want the true bytes", resp.StatusCode, sha256Hex(body))
			}
			if n := up.Count(http.MethodGet, "/blobs/"+dgst); n != 1 {
				t.Errorf("%d upstream blob GETs, want the one refetch", n)
			}
			if q := quarantinedFiles(m); q != wantQuarantined {
				t.Errorf("%d files quarantined, want %d (the blob, and the manifest unless it came from memory)", q, wantQuarantined)
			}
			if st := m.store.Integrity(); st.Quarantined != int64(wantQuarantined) {
				t.Errorf("integrity %+v", st)
			}
			// Refetched and cached again: the next pull is a hit.
			pullCaches(t, m, up, "library/rot", dgst)
		})
	}
}
