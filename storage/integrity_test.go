package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// flipByte changes one byte of d's file in place, as bit rot or a stray
// writer would: same size, the mtime of the write. It waits first so that
// the write's mtime is past the commit's even on a coarse clock.
func flipByte(t *testing.T, s *Store, d digest.Digest, at int64) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	p, _ := s.blobPath(d)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// quarantined lists the quarantine's files of d.
func quarantined(t *testing.T, s *Store, d digest.Digest) []string {
	t.Helper()
	ents, err := os.ReadDir(s.quarantineDir())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), string(d.Algorithm())+"-"+d.Encoded()+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// assertQuarantined checks that d is not served, not in blobs/ nor in the
// index, and is in quarantine/.
func assertQuarantined(t *testing.T, s *Store, d digest.Digest) {
	t.Helper()
	if b, err := s.OpenBlob(d); !errors.Is(err, ErrNotFound) {
		if err == nil {
			b.Close()
		}
		t.Errorf("OpenBlob of corrupt content = %v, want ErrNotFound", err)
	}
	if _, err := s.StatBlob(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("corrupt content still in blobs/: %v", err)
	}
	if s.idx.verified(d) || s.recordedSize(d) != -1 {
		t.Error("corrupt content still in the index")
	}
	if len(quarantined(t, s, d)) != 1 {
		t.Errorf("quarantine holds %v", quarantined(t, s, d))
	}
}

func reopen(t *testing.T, s *Store, opts ...Option) *Store {
	t.Helper()
	s.Close()
	s2, err := Open(s.Root(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s2
}

var manifestJSON = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:` + strings.Repeat("a", 64) + `"},"layers":[]}`)

// TestCorruptManifestNeverRead: a manifest truncated or with a byte flipped
// on disk (even with its mtime put back) is never returned by ReadBlob,
// while the store runs and after a restart; it is quarantined and counted.
func TestCorruptManifestNeverRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool
		damage  func(t *testing.T, s *Store, d digest.Digest)
	}{
		{"truncated", false, truncateTo100},
		{"truncated, restart", true, truncateTo100},
		{"flipped, mtime kept", false, flipKeepMtime},
		{"flipped, mtime kept, restart", true, flipKeepMtime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openDiskOnly(t) // the hot cache's side: TestHotOutlivesDiskDamage
			d := put(t, s, manifestJSON)
			if got, err := s.ReadBlob(d); err != nil || !bytes.Equal(got, manifestJSON) {
				t.Fatalf("first read: %v", err)
			}
			tc.damage(t, s, d)
			if tc.restart {
				s = reopen(t, s)
			}
			if got, err := s.ReadBlob(d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("ReadBlob of a damaged manifest = %d bytes, %v; want ErrNotFound", len(got), err)
			}
			assertQuarantined(t, s, d)
			if q := s.Integrity().Quarantined; q != 1 {
				t.Errorf("Quarantined = %d", q)
			}
			// Fetched again, it is stored and read as before.
			put(t, s, manifestJSON)
			if got, err := s.ReadBlob(d); err != nil || !bytes.Equal(got, manifestJSON) {
				t.Errorf("after storing it again: %v", err)
			}
		})
	}
}

func truncateTo100(t *testing.T, s *Store, d digest.Digest) {
	p, _ := s.blobPath(d)
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
}

func flipKeepMtime(t *testing.T, s *Store, d digest.Digest) {
	p, _ := s.blobPath(d)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, s, d, 10)
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptBlobNeverOpened: a blob with a byte flipped after it was
// served, with the store running and after a restart, or changed in size,
// is never returned by OpenBlob; it is quarantined.
func TestCorruptBlobNeverOpened(t *testing.T) {
	content := bytes.Repeat([]byte("layer "), 200<<10)
	for _, tc := range []struct {
		name    string
		restart bool
		damage  func(t *testing.T, s *Store, d digest.Digest)
	}{
		{"flipped", false, func(t *testing.T, s *Store, d digest.Digest) { flipByte(t, s, d, 12345) }},
		{"flipped, restart", true, func(t *testing.T, s *Store, d digest.Digest) { flipByte(t, s, d, 12345) }},
		{"grown", false, func(t *testing.T, s *Store, d digest.Digest) {
			p, _ := s.blobPath(d)
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.Write([]byte("x"))
			f.Close()
		}},
		{"truncated", false, func(t *testing.T, s *Store, d digest.Digest) {
			p, _ := s.blobPath(d)
			if err := os.Truncate(p, 1000); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t)
			d := put(t, s, content)
			use(t, s, d) // served once
			tc.damage(t, s, d)
			if tc.restart {
				s = reopen(t, s)
			}
			assertQuarantined(t, s, d)
		})
	}
}

// TestSizeChangeIsCorruption: a file whose size is not the recorded one is
// quarantined on open without hashing it, even with its mtime put back.
func TestSizeChangeIsCorruption(t *testing.T) {
	s := openTemp(t)
	d := put(t, s, bytes.Repeat([]byte("sized "), 100<<10))
	p, _ := s.blobPath(d)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob of a shortened blob = %v", err)
	}
	if h := s.Integrity().HashedBytes; h != 0 {
		t.Errorf("hashed %d bytes: the size alone should have told", h)
	}
	assertQuarantined(t, s, d)
}

// TestMtimeChangeRehashes: a blob whose mtime changed is hashed again
// before it is served: with its content intact it is served and verified
// again, never lost; with a byte changed behind a restored size it is
// quarantined.
func TestMtimeChangeRehashes(t *testing.T) {
	s := openTemp(t)
	content := bytes.Repeat([]byte("intact "), 100<<10)
	d := put(t, s, content)
	p, _ := s.blobPath(d)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	before := s.Integrity().HashedBytes
	use(t, s, d)
	if got := s.Integrity().HashedBytes - before; got != int64(len(content)) {
		t.Errorf("hashed %d bytes after an mtime change, want the blob's %d", got, len(content))
	}
	if !s.idx.verified(d) || s.Integrity().Quarantined != 0 {
		t.Error("an intact blob with a new mtime was not kept as verified")
	}
	before = s.Integrity().HashedBytes
	use(t, s, d)
	if s.Integrity().HashedBytes != before {
		t.Error("a verified blob was hashed again on the next open")
	}

	flipByte(t, s, d, 7)
	assertQuarantined(t, s, d)
}

// TestRestartVerifiesLazily: after a restart every blob is unverified; the
// first open hashes it, the next does not.
func TestRestartVerifiesLazily(t *testing.T) {
	s := openTemp(t)
	content := bytes.Repeat([]byte("good "), 100<<10)
	d := put(t, s, content)
	if st := s.Integrity(); st.Verified != 1 || st.Unverified != 0 {
		t.Fatalf("a committed blob is verified by construction: %+v", st)
	}
	s = reopen(t, s)
	if st := s.Integrity(); st.Verified != 0 || st.Unverified != 1 || st.UnverifiedBytes != int64(len(content)) {
		t.Fatalf("after a restart: %+v", st)
	}
	use(t, s, d)
	use(t, s, d)
	if st := s.Integrity(); st.Verified != 1 || st.Unverified != 0 || st.HashedBytes != int64(len(content)) {
		t.Errorf("after two opens: %+v, want one hash", st)
	}
}

// TestConcurrentFirstOpenSharesOneHash: clients that open an unverified
// blob at once wait for one hash of it.
func TestConcurrentFirstOpenSharesOneHash(t *testing.T) {
	s := openTemp(t)
	content := bytes.Repeat([]byte("shared hash "), 16<<20/12)
	d := put(t, s, content)
	s = reopen(t, s)
	const clients = 16
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			b, err := s.OpenBlob(d)
			if err != nil {
				errs <- err
				return
			}
			b.Close()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.Integrity().HashedBytes; got != int64(len(content)) {
		t.Errorf("%d clients hashed %d bytes, want one hash of %d", clients, got, len(content))
	}
}

// TestScrubFindsCorruption: the background scrub hashes every unverified
// blob without any request, quarantines the corrupt one, and stops on
// Close.
func TestScrubFindsCorruption(t *testing.T) {
	s := openTemp(t)
	var ds []digest.Digest
	for i := range 5 {
		ds = append(ds, put(t, s, bytes.Repeat([]byte(fmt.Sprint(i)), 64<<10)))
	}
	flipByte(t, s, ds[2], 100)
	s = reopen(t, s, WithScrubRate(64<<20))
	deadline := time.Now().Add(10 * time.Second)
	for s.Integrity().Unverified > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := s.Integrity()
	if st.Unverified != 0 || st.Verified != 4 || st.Quarantined != 1 {
		t.Fatalf("after the scrub: %+v, want 4 verified and 1 quarantined", st)
	}
	if _, err := s.StatBlob(ds[2]); !errors.Is(err, ErrNotFound) {
		t.Errorf("corrupt blob still in blobs/: %v", err)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the scrub")
	}
}

// TestScrubRate: the scrub hashes no faster than its rate.
func TestScrubRate(t *testing.T) {
	s := openTemp(t)
	put(t, s, bytes.Repeat([]byte("r"), 4<<20))
	s = reopen(t, s, WithScrubRate(4<<20)) // 1 s for the blob
	time.Sleep(300 * time.Millisecond)
	if h := s.Integrity().HashedBytes; h > 3<<20 {
		t.Errorf("hashed %d bytes in 300 ms at 4 MiB/s", h)
	}
}

// TestQuarantineBounded: the quarantine keeps only the newest few files.
func TestQuarantineBounded(t *testing.T) {
	s := openDiskOnly(t)
	for i := range quarantineKeep.files + 4 {
		d := put(t, s, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		if err := os.Truncate(mustPath(t, s, d), 3); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadBlob(d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ReadBlob of a damaged blob: %v", err)
		}
	}
	ents, _ := os.ReadDir(s.quarantineDir())
	if len(ents) != quarantineKeep.files {
		t.Errorf("quarantine holds %d files, want %d", len(ents), quarantineKeep.files)
	}
	if q := s.Integrity().Quarantined; q != int64(quarantineKeep.files+4) {
		t.Errorf("Quarantined = %d", q)
	}
}

func mustPath(t *testing.T, s *Store, d digest.Digest) string {
	t.Helper()
	p, err := s.blobPath(d)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReadBlobOtherAlgorithm: a manifest addressed by SHA-512 is checked on
// read like a SHA-256 one.
func TestReadBlobOtherAlgorithm(t *testing.T) {
	s := openDiskOnly(t)
	d := digest.SHA512.FromBytes(manifestJSON)
	if err := s.PutBlob(d, manifestJSON); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadBlob(d); err != nil || !bytes.Equal(got, manifestJSON) {
		t.Fatalf("ReadBlob: %v", err)
	}
	flipKeepMtime(t, s, d)
	if _, err := s.ReadBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadBlob of a flipped SHA-512 manifest = %v", err)
	}
	assertQuarantined(t, s, d)
}
