package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func put(t *testing.T, s *Store, content []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(content)
	if err := s.PutBlob(d, content); err != nil {
		t.Fatal(err)
	}
	return d
}

func present(s *Store, d digest.Digest) bool {
	_, err := s.StatBlob(d)
	return err == nil
}

func use(t *testing.T, s *Store, d digest.Digest) {
	t.Helper()
	b, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
}

func TestEvictionOrderAndWatermarks(t *testing.T) {
	s, err := Open(t.TempDir(), WithLimits(Limits{MaxSize: 1000, High: 900, Low: 600}))
	if err != nil {
		t.Fatal(err)
	}
	a := put(t, s, bytes.Repeat([]byte("a"), 300))
	b := put(t, s, bytes.Repeat([]byte("b"), 300))
	c := put(t, s, bytes.Repeat([]byte("c"), 300))
	if u := s.Usage(); u.Bytes != 900 || u.Entries != 3 || u.Evictions != 0 {
		t.Fatalf("at the high mark nothing is evicted: %+v", u)
	}
	use(t, s, a) // a is now the most recently used of the three
	d := put(t, s, bytes.Repeat([]byte("d"), 300))
	// Over 900: evict oldest first (b, then c) until at most 600.
	for name, tc := range map[string]struct {
		d    digest.Digest
		want bool
	}{"a": {a, true}, "b": {b, false}, "c": {c, false}, "d": {d, true}} {
		if got := present(s, tc.d); got != tc.want {
			t.Errorf("%s present = %v, want %v", name, got, tc.want)
		}
	}
	if u := s.Usage(); u.Bytes != 600 || u.Evictions != 2 {
		t.Errorf("usage after eviction %+v", u)
	}
}

func TestEvictionSkipsBlobsBeingRead(t *testing.T) {
	s, err := Open(t.TempDir(), WithLimits(Limits{MaxSize: 1000, High: 900, Low: 600}))
	if err != nil {
		t.Fatal(err)
	}
	a := put(t, s, bytes.Repeat([]byte("a"), 300))
	b := put(t, s, bytes.Repeat([]byte("b"), 300))
	c := put(t, s, bytes.Repeat([]byte("c"), 300))
	reading, err := s.OpenBlob(a) // oldest, but a client is reading it
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, bytes.Repeat([]byte("d"), 300))
	if !present(s, a) {
		t.Error("a blob being read was evicted")
	}
	if present(s, b) || present(s, c) {
		t.Error("the next oldest were not evicted in its place")
	}
	got := make([]byte, 300)
	if _, err := reading.File.ReadAt(got, 0); err != nil || got[0] != 'a' {
		t.Errorf("reader broken: %v", err)
	}
	reading.Close()
}

func TestEvictingABlobRemovesManifestsThatNeedIt(t *testing.T) {
	s, err := Open(t.TempDir(), WithLimits(Limits{MaxSize: 1000, High: 900, Low: 500}))
	if err != nil {
		t.Fatal(err)
	}
	layer := put(t, s, bytes.Repeat([]byte("L"), 400))
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,"layers":[{"digest":%q}]}`, layer))
	m := put(t, s, manifest)
	s.RecordReferences(m, ReferencedBlobs(manifest))
	r := Repo{Upstream: "docker.io", Name: "library/x"}
	if err := s.PutManifest(r, m, ManifestRecord{MediaType: "application/vnd.oci.image.manifest.v1+json"}); err != nil {
		t.Fatal(err)
	}
	use(t, s, m) // the manifest is recent, its layer old
	put(t, s, bytes.Repeat([]byte("n"), 450))
	if present(s, layer) {
		t.Fatal("oldest blob not evicted")
	}
	if present(s, m) {
		t.Error("a manifest survived the eviction of a blob it needs")
	}
	// Nor does its copy in memory (it was put, so the hot cache had it).
	if b, err := s.ReadBlob(m); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadBlob of the evicted manifest = %d bytes, %v; want ErrNotFound", len(b), err)
	}
}

func TestRestartRebuildsIndexAndDropsDanglingRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := put(t, s, []byte("old"))
	recent := put(t, s, []byte("recent"))
	past := time.Now().Add(-48 * time.Hour)
	p, _ := s.blobPath(old)
	if err := os.Chtimes(p, past, past); err != nil {
		t.Fatal(err)
	}
	r := Repo{Upstream: "docker.io", Name: "library/x"}
	gone := digest.FromString("gone")
	if err := s.PutTag(r, "v1", "any", TagRecord{Digest: gone}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(r, gone, ManifestRecord{}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(r, "v2", "any", TagRecord{Digest: recent}); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkBlob(r, gone); err != nil {
		t.Fatal(err)
	}
	if err := s.LinkBlob(r, recent); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir, WithLimits(Limits{MaxSize: 100, High: 8, Low: 5}))
	if err != nil {
		t.Fatal(err)
	}
	st := s2.StartupScan()
	if st.Blobs != 2 || st.Removed != 3 {
		t.Errorf("scan %+v, want 2 blobs and 3 dangling records (tag, manifest, link) removed", st)
	}
	if s2.BlobLinked(r, gone) || !s2.BlobLinked(r, recent) {
		t.Error("links: the dangling one must go, the good one stay")
	}
	if _, err := s2.GetTag(r, "v1", "any"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dangling tag kept: %v", err)
	}
	if _, err := s2.GetTag(r, "v2", "any"); err != nil {
		t.Errorf("good tag lost: %v", err)
	}
	// Over the high mark at start: the older (by mtime) goes first.
	if present(s2, old) || !present(s2, recent) {
		t.Errorf("start-up eviction did not follow recency: old %v recent %v", present(s2, old), present(s2, recent))
	}
}

// BenchmarkStartupScan measures Open on a cache of 100,000 blobs with
// 10,000 manifest records (go test -bench StartupScan -benchtime 3x ./storage).
func BenchmarkStartupScan(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	r := Repo{Upstream: "docker.io", Name: "library/bench"}
	for i := 0; i < 100_000; i++ {
		content := []byte(fmt.Sprintf("blob %d", i))
		if i%10 == 0 {
			content = []byte(fmt.Sprintf(`{"schemaVersion":2,"config":{"digest":%q}}`, digest.FromString(fmt.Sprint(i+1))))
		}
		d := digest.FromBytes(content)
		if err := s.PutBlob(d, content); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			if err := s.PutManifest(r, d, ManifestRecord{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s2, err := Open(filepath.Clean(dir))
		if err != nil {
			b.Fatal(err)
		}
		if st := s2.StartupScan(); st.Blobs != 100_000 || st.Manifests != 10_000 {
			b.Fatalf("scan %+v", st)
		}
	}
}
