package storage

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testdisk"
)

// TestReserveTooLarge: a declared size over the free space or over
// max_size refuses that blob only; the store stays writable and the next
// blob is cached.
func TestReserveTooLarge(t *testing.T) {
	s, err := Open(t.TempDir(), WithLimits(Limits{MaxSize: 1 << 30, High: 1 << 29, Low: 1 << 28}))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{1 << 40, 1<<30 + 1} {
		err := s.Reserve(size)
		if !IsTooLarge(err) || IsNoSpace(err) {
			t.Errorf("Reserve(%d) = %v, want ErrTooLarge", size, err)
		}
	}
	if s.Full() {
		t.Fatal("a declared size marked the store full")
	}
	if err := s.Reserve(1 << 20); err != nil {
		t.Errorf("Reserve(1 MiB) after a huge one: %v", err)
	}
	put(t, s, []byte("still cached"))
}

// TestIngestStopsNearMinFree: an ingest that grows without a declared size
// stops, with ErrTooLarge and without marking the store full, once the
// next stretch would leave less than the minimum free; the same digest is
// refused at once afterwards, other content is not.
func TestIngestStopsNearMinFree(t *testing.T) {
	// A disk of its own: on a shared one, the other tests writing at the
	// same time eat the 8 MiB margin, and the small put at the end fails.
	dir := testdisk.Tmpfs(t, "96m")
	probe, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	free, err := probe.freeBytes()
	if err != nil {
		t.Fatal(err)
	}
	// Leave this ingest about 8 MiB before the minimum free space.
	s, err := Open(dir, WithMinFree(free-8<<20))
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("endless body "), 64<<20/13)
	d := digest.FromBytes(content)
	in, err := s.NewIngest(d)
	if err != nil {
		t.Fatal(err)
	}
	_, err = in.CopyFrom(bytes.NewReader(content), nil)
	var werr *WriteError
	if !IsTooLarge(err) || !errors.As(err, &werr) {
		t.Fatalf("CopyFrom of 64 MiB with 8 MiB to spare = %v, want a *WriteError wrapping ErrTooLarge", err)
	}
	if in.Size() >= int64(len(content)) {
		t.Errorf("wrote all %d bytes", in.Size())
	}
	if !errors.Is(in.Commit(), ErrTooLarge) {
		t.Error("Commit does not report why the ingest ended")
	}
	if s.Full() {
		t.Error("an ingest that stopped in time marked the store full")
	}
	if _, err := s.NewIngest(d); !IsTooLarge(err) {
		t.Errorf("NewIngest of the same digest again = %v, want ErrTooLarge at once", err)
	}
	put(t, s, []byte("small content still fits"))
	if ents, _ := os.ReadDir(filepath.Join(dir, "ingest")); len(ents) != 0 {
		t.Errorf("ingest file left behind: %v", ents)
	}
}

// TestOneWriteLargerThanTheStretch: a write bigger than the stretch between
// two looks at the free space is counted whole, so it is refused as too
// large rather than failing on the disk and marking the store full.
func TestOneWriteLargerThanTheStretch(t *testing.T) {
	disk := testdisk.Tmpfs(t, "4m")
	s, err := Open(filepath.Join(disk, "cache"), WithMinFree(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	free, err := s.freeBytes()
	if err != nil {
		t.Fatal(err)
	}
	// Leave 512 KiB: room for the stretch (64 KiB) and the minimum, not
	// for one 1 MiB write.
	if err := os.WriteFile(filepath.Join(disk, "filler"), make([]byte, free-512<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("y"), copyBufferSize)
	in, err := s.NewIngest(digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Abort()
	if _, err := in.CopyFrom(bytes.NewReader(content), nil); !IsTooLarge(err) {
		t.Fatalf("one %d-byte write with 512 KiB free = %v, want ErrTooLarge", len(content), err)
	}
	if s.Full() {
		t.Error("a write refused in time marked the store full")
	}
}

// TestIngestStopsAtMaxSize: a blob that grows past max_size is refused part
// way, whatever was declared.
func TestIngestStopsAtMaxSize(t *testing.T) {
	s, err := Open(t.TempDir(), WithLimits(Limits{MaxSize: 1 << 20, High: 900 << 10, Low: 800 << 10}))
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte{7}, 3<<20)
	in, err := s.NewIngest(digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.CopyFrom(bytes.NewReader(content), nil); !IsTooLarge(err) {
		t.Fatalf("3 MiB into a 1 MiB cache: %v, want ErrTooLarge", err)
	}
	if in.Size() > 1<<20 {
		t.Errorf("wrote %d bytes past max_size", in.Size())
	}
	if s.Full() {
		t.Error("marked full")
	}
}

// TestWriteFailureMarksFullAndRecovers: only a write that really fails for
// lack of space marks the store full, and it recovers by itself once the
// free space is back above twice the minimum, not the size that failed.
func TestWriteFailureMarksFullAndRecovers(t *testing.T) {
	disk := testdisk.Tmpfs(t, "4m")
	s, err := Open(filepath.Join(disk, "cache"), WithMinFree(256<<10), WithSpaceRecheck(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("x"), 3<<20)
	in, err := s.NewIngest(digest.FromBytes(content))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write(content[:64<<10]); err != nil {
		t.Fatal(err)
	}
	// Another writer takes the rest of the disk between two checks.
	filler := filepath.Join(disk, "filler")
	_ = os.WriteFile(filler, make([]byte, 4<<20), 0o644)
	_, err = in.CopyFrom(&chunkReader{content: content[64<<10:], sizes: []int{64 << 10}, err: io.EOF}, nil)
	// The next look at the free space is a stretch away: a write fails.
	if !IsNoSpace(err) || !s.Full() {
		t.Fatalf("writing on a full disk: %v, full %v; want ENOSPC and full", err, s.Full())
	}
	if err := s.Reserve(1); !IsNoSpace(err) || !s.Full() {
		t.Fatalf("Reserve on a full disk = %v, Full %v; want ErrNoSpace and full", err, s.Full())
	}
	if st := s.State(); st.Kind != DiskFull || st.Cause == "" {
		t.Errorf("State = %+v", st)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if s.Full() {
		t.Fatal("still full with the space back")
	}
	put(t, s, []byte("cached again"))
}

// TestUnwritableRecovers: a cache directory deleted, then replaced by a
// file, makes the store unwritable (writes fail with ErrUnwritable, Full
// is true) and it recovers by itself, recreating its layout, once it can.
func TestUnwritableRecovers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	s, err := Open(root, WithSpaceRecheck(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	before := put(t, s, []byte("cached before"))
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("new content")
	if _, err := s.NewIngest(d); !IsUnwritable(err) {
		t.Fatalf("NewIngest with the directory gone = %v, want ErrUnwritable", err)
	}
	if !s.Full() || s.State().Kind != Unwritable {
		t.Fatalf("state %+v, want unwritable", s.State())
	}
	if err := s.CheckWritable(); !IsUnwritable(err) {
		t.Errorf("CheckWritable = %v", err)
	}
	if _, err := s.OpenBlob(before); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob of content that is gone = %v, want ErrNotFound", err)
	}
	if _, err := s.GetTag(Repo{Upstream: "docker.io", Name: "library/x"}, "v1", "any"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetTag under a file = %v, want ErrNotFound", err)
	}
	time.Sleep(20 * time.Millisecond)
	if !s.Full() {
		t.Fatal("recovered while the directory is a file")
	}
	if err := os.Remove(root); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if s.Full() {
		t.Fatalf("not recovered: %+v", s.State())
	}
	if err := s.CheckWritable(); err != nil {
		t.Fatal(err)
	}
	put(t, s, []byte("new content"))
}
