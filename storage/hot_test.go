package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestHotServesFromMemory: once read or written, records and manifests are
// served from memory — the files are not read again — and what is served
// is what was verified.
func TestHotServesFromMemory(t *testing.T) {
	s := openTemp(t)
	r := Repo{Upstream: "docker.io", Name: "library/alpine"}
	d := put(t, s, manifestJSON)
	rec := TagRecord{Digest: d, MediaType: "application/vnd.oci.image.manifest.v1+json", Size: int64(len(manifestJSON)), CheckedAt: time.Now().UTC()}
	if err := s.PutTag(r, "v1", "any", rec); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(r, d, ManifestRecord{MediaType: rec.MediaType, Size: rec.Size}); err != nil {
		t.Fatal(err)
	}
	// The files behind them gone or damaged: only memory can answer now.
	if err := os.Rename(s.Root()+"/repos", s.Root()+"/repos.gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(mustPath(t, s, d), 0); err != nil {
		t.Fatal(err)
	}
	before := s.HotStats()
	if got, err := s.GetTag(r, "v1", "any"); err != nil || got.Digest != d || !got.CheckedAt.Equal(rec.CheckedAt) {
		t.Errorf("GetTag = %+v, %v", got, err)
	}
	if got, err := s.GetManifest(r, d); err != nil || got.MediaType != rec.MediaType {
		t.Errorf("GetManifest = %+v, %v", got, err)
	}
	if got, err := s.ReadBlob(d); err != nil || !bytes.Equal(got, manifestJSON) {
		t.Errorf("ReadBlob = %q, %v", got, err)
	}
	if after := s.HotStats(); after.Hits-before.Hits != 3 || after.Misses != before.Misses {
		t.Errorf("hot hits %d → %d, misses %d → %d; want 3 more hits, no miss", before.Hits, after.Hits, before.Misses, after.Misses)
	}
}

// TestHotTakesNewRecords: a record written replaces the one in memory; a
// write that fails leaves the old one.
func TestHotTakesNewRecords(t *testing.T) {
	s := openTemp(t)
	r := Repo{Upstream: "docker.io", Name: "library/alpine"}
	for i := range 3 {
		rec := TagRecord{Digest: digest.FromString(fmt.Sprint(i)), CheckedAt: time.Unix(int64(i), 0).UTC()}
		if err := s.PutTag(r, "v1", "any", rec); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetTag(r, "v1", "any"); err != nil || got != rec {
			t.Fatalf("after put %d: GetTag = %+v, %v", i, got, err)
		}
	}
	if _, err := s.GetTag(r, "v1", "other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another variant: %v, want ErrNotFound", err)
	}
	if err := s.PutTag(r, "../x", "any", TagRecord{}); err == nil {
		t.Error("a tag that leaves the tree was taken")
	}
	if _, err := s.GetTag(r, "../x", "any"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("GetTag of a bad name = %v, want the name's error", err)
	}
}

// TestHotOutlivesDiskDamage: a manifest damaged on disk while its verified
// copy is in memory is served from memory, intact; after a restart the
// damage is found and the file quarantined (TestCorruptManifestNeverRead).
func TestHotOutlivesDiskDamage(t *testing.T) {
	s := openTemp(t)
	d := put(t, s, manifestJSON)
	truncateTo100(t, s, d)
	if got, err := s.ReadBlob(d); err != nil || !bytes.Equal(got, manifestJSON) {
		t.Fatalf("ReadBlob from memory = %d bytes, %v; want the verified %d", len(got), err, len(manifestJSON))
	}
	s = reopen(t, s)
	if got, err := s.ReadBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after restart: ReadBlob = %d bytes, %v; want ErrNotFound", len(got), err)
	}
	assertQuarantined(t, s, d)
}

// TestHotForgetsWhatTheDiskLoses: a manifest quarantined or deleted under
// the store leaves memory too.
func TestHotForgetsWhatTheDiskLoses(t *testing.T) {
	s := openTemp(t, WithScrubRate(0))
	d := put(t, s, manifestJSON)
	if err := os.Remove(mustPath(t, s, d)); err != nil {
		t.Fatal(err)
	}
	// Memory still has it; the index learns of the loss on the next open
	// of the file (OpenBlob), and memory follows.
	if _, err := s.OpenBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob of a deleted blob: %v", err)
	}
	if b, err := s.ReadBlob(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob after the index dropped it = %d bytes, %v; want ErrNotFound", len(b), err)
	}
}

// TestHotBounded: the memory held stays within the bound, a manifest too
// large for it is not kept, and the most recent entries stay.
func TestHotBounded(t *testing.T) {
	const max = 64 << 10
	s := openTemp(t, WithHotSize(max))
	var last digest.Digest
	for i := range 400 {
		last = put(t, s, []byte(fmt.Sprintf(`{"schemaVersion":2,"n":%d,"pad":%q}`, i, bytes.Repeat([]byte("x"), 200))))
		if st := s.HotStats(); st.Bytes > max {
			t.Fatalf("after %d manifests the hot cache holds %d bytes, bound %d", i+1, st.Bytes, max)
		}
	}
	before := s.HotStats()
	if _, err := s.ReadBlob(last); err != nil {
		t.Fatal(err)
	}
	if st := s.HotStats(); st.Hits != before.Hits+1 {
		t.Error("the newest manifest is not in memory")
	}
	big := put(t, s, append([]byte(`{"pad":"`), append(bytes.Repeat([]byte("y"), max/64), '"', '}')...))
	before = s.HotStats()
	if _, err := s.ReadBlob(big); err != nil {
		t.Fatal(err)
	}
	if st := s.HotStats(); st.Misses != before.Misses+1 {
		t.Error("a manifest larger than 1/64 of the bound was kept in memory")
	}
}

// TestHotOff: WithHotSize(0) reads the files every time.
func TestHotOff(t *testing.T) {
	s := openDiskOnly(t)
	d := put(t, s, manifestJSON)
	if _, err := s.ReadBlob(d); err != nil {
		t.Fatal(err)
	}
	truncateTo100(t, s, d)
	if _, err := s.ReadBlob(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob of a damaged manifest with no hot cache: %v", err)
	}
	if st := s.HotStats(); st != (HotStats{}) {
		t.Errorf("HotStats = %+v with the hot cache off", st)
	}
}

// TestHotConcurrent runs readers, writers and evictions together, for the
// race detector, and checks every read against its digest.
func TestHotConcurrent(t *testing.T) {
	s := openTemp(t, WithHotSize(16<<10), WithLimits(Limits{MaxSize: 64 << 10, High: 48 << 10, Low: 32 << 10}))
	r := Repo{Upstream: "docker.io", Name: "library/x"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				body := []byte(fmt.Sprintf(`{"w":%d,"i":%d,"pad":%q}`, w, i%50, bytes.Repeat([]byte("p"), 300)))
				d := digest.FromBytes(body)
				if err := s.PutBlob(d, body); err != nil {
					t.Error(err)
					return
				}
				_ = s.PutTag(r, fmt.Sprintf("t%d", i%7), "any", TagRecord{Digest: d})
				if got, err := s.ReadBlob(d); err == nil && digest.FromBytes(got) != d {
					t.Errorf("ReadBlob(%s) returned other bytes", d)
				}
				if rec, err := s.GetTag(r, fmt.Sprintf("t%d", (i+3)%7), "any"); err == nil && rec.Digest == "" {
					t.Error("empty tag record")
				}
				s.Trim()
			}
		}()
	}
	wg.Wait()
	if st := s.HotStats(); st.Bytes > 16<<10 {
		t.Errorf("hot cache holds %d bytes, bound %d", st.Bytes, 16<<10)
	}
}
