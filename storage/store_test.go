package storage

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func openTemp(t *testing.T, opts ...Option) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openDiskOnly is openTemp without the hot cache, for tests of what is
// read from the files: with it, a record or manifest read once is served
// from memory however the file changes afterwards (hot_test.go).
func openDiskOnly(t *testing.T) *Store { return openTemp(t, WithHotSize(0)) }

func TestIngestCommit(t *testing.T) {
	s := openTemp(t)
	content := []byte("layer bytes")
	d := digest.FromBytes(content)
	in, err := s.NewIngest(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write(content[:5]); err != nil {
		t.Fatal(err)
	}
	// Not visible before commit.
	if _, err := s.StatBlob(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("visible before commit: %v", err)
	}
	if _, err := in.Write(content[5:]); err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadBlob(d)
	if err != nil || string(got) != string(content) {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
	if _, err := os.Stat(in.Path()); !os.IsNotExist(err) {
		t.Errorf("ingest file left behind: %v", err)
	}
}

func TestIngestMismatchKeepsNothing(t *testing.T) {
	s := openTemp(t)
	d := digest.FromBytes([]byte("expected"))
	in, err := s.NewIngest(d)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = in.Write([]byte("something else"))
	if err := in.Commit(); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit = %v, want ErrDigestMismatch", err)
	}
	if _, err := s.StatBlob(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("mismatched content stored: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), "ingest")); len(ents) != 0 {
		t.Errorf("ingest not cleaned: %v", ents)
	}
	in.Abort() // harmless after a failed commit
}

// TestIngestKeepsFirstError: whatever closed an ingest (a digest
// mismatch, a failed write, an Abort) is what every later call reports, so
// a caller that verifies and then commits learns the cause, not "closed".
func TestIngestKeepsFirstError(t *testing.T) {
	content := []byte("what the upstream sent")
	for _, tc := range []struct {
		name  string
		close func(in *Ingest) error
		want  func(error) bool
	}{
		{"mismatch", func(in *Ingest) error {
			_, _ = in.Write([]byte("something else"))
			return in.Verify()
		}, func(err error) bool { return errors.Is(err, ErrDigestMismatch) }},
		{"write failure", func(in *Ingest) error {
			in.file.Close()
			_, err := in.Write(content)
			return err
		}, func(err error) bool { var w *WriteError; return errors.As(err, &w) && errors.Is(err, os.ErrClosed) }},
		{"abort", func(in *Ingest) error {
			in.Abort()
			return nil
		}, func(err error) bool { return err != nil && strings.Contains(err.Error(), "aborted") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t)
			in, err := s.NewIngest(digest.FromBytes(content))
			if err != nil {
				t.Fatal(err)
			}
			first := tc.close(in)
			if first != nil && !tc.want(first) {
				t.Fatalf("first error %v", first)
			}
			in.Abort() // must not replace the cause
			_, werr := in.Write(content)
			_, cerr := in.CopyFrom(bytes.NewReader(content), nil)
			for name, err := range map[string]error{"Verify": in.Verify(), "Commit": in.Commit(), "Write": werr, "CopyFrom": cerr} {
				if !tc.want(err) {
					t.Errorf("%s after %s = %v", name, tc.name, err)
				}
				if first != nil && err != first {
					t.Errorf("%s = %v, not the first error %v", name, err, first)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(s.Root(), "ingest")); len(ents) != 0 {
				t.Errorf("ingest file left behind: %v", ents)
			}
		})
	}
}

func TestOpenDiscardsPartials(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	done := []byte("complete")
	if err := s.PutBlob(digest.FromBytes(done), done); err != nil {
		t.Fatal(err)
	}
	in, err := s.NewIngest(digest.FromBytes([]byte("never finished")))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = in.Write([]byte("never"))
	// The process dies here: no Commit, no Abort.

	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(in.Path()); !os.IsNotExist(err) {
		t.Errorf("partial survived: %v", err)
	}
	if got, err := s2.ReadBlob(digest.FromBytes(done)); err != nil || string(got) != "complete" {
		t.Errorf("complete entry lost: %q %v", got, err)
	}
}

func TestRecords(t *testing.T) {
	s := openTemp(t)
	r := Repo{Upstream: "docker.io", Name: "library/alpine"}
	d := digest.FromString("manifest")
	if s.BlobLinked(r, d) {
		t.Fatal("linked before LinkBlob")
	}
	if err := s.LinkBlob(r, d); err != nil {
		t.Fatal(err)
	}
	if !s.BlobLinked(r, d) || s.BlobLinked(Repo{Upstream: "docker.io", Name: "library/other"}, d) {
		t.Error("link not per repository")
	}
	if err := s.PutManifest(r, d, ManifestRecord{MediaType: "application/x", Size: 8}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.GetManifest(r, d); err != nil || rec.MediaType != "application/x" {
		t.Errorf("GetManifest = %+v, %v", rec, err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := s.PutTag(r, "3.20", "any", TagRecord{Digest: d, MediaType: "application/x", CheckedAt: now}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.GetTag(r, "3.20", "any")
	if err != nil || rec.Digest != d || !rec.CheckedAt.Equal(now) {
		t.Errorf("GetTag = %+v, %v", rec, err)
	}
	if _, err := s.GetTag(r, "3.21", "any"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tag: %v", err)
	}
	recs, err := s.TagRecords(r, "3.20")
	if err != nil || len(recs) != 1 {
		t.Errorf("TagRecords = %v, %v", recs, err)
	}
}

func TestCorruptRecordIsAMiss(t *testing.T) {
	s := openDiskOnly(t)
	r := Repo{Upstream: "docker.io", Name: "library/alpine"}
	if err := s.PutTag(r, "v1", "any", TagRecord{Digest: digest.FromString("x")}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Root(), "repos", "docker.io", "library", "alpine", "_tags", "v1", "any")
	if err := os.WriteFile(p, []byte(`{"digest":"sha2`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTag(r, "v1", "any"); !errors.Is(err, ErrNotFound) {
		t.Errorf("corrupt record: %v, want ErrNotFound", err)
	}
}

// TestPathsStayInside refuses every name that could address a file outside
// the cache, even though the HTTP layer validates names first.
func TestPathsStayInside(t *testing.T) {
	s := openTemp(t)
	d := digest.FromString("x")
	bad := []Repo{
		{Upstream: "docker.io", Name: "../../etc"},
		{Upstream: "docker.io", Name: "library/../../../x"},
		{Upstream: "..", Name: "x"},
		{Upstream: "docker.io/../..", Name: "x"},
		{Upstream: "docker.io", Name: "/abs"},
		{Upstream: "docker.io", Name: "a//b"},
		{Upstream: "docker.io", Name: "a/_links/b"},
		{Upstream: "docker.io", Name: "a\\..\\b"},
		{Upstream: "docker.io", Name: "a\x00b"},
		{Upstream: "", Name: "x"},
		{Upstream: "docker.io", Name: ""},
	}
	for _, r := range bad {
		if err := s.LinkBlob(r, d); err == nil {
			t.Errorf("LinkBlob(%q) accepted", r)
		}
		if err := s.PutTag(r, "v1", "any", TagRecord{}); err == nil {
			t.Errorf("PutTag(%q) accepted", r)
		}
	}
	good := Repo{Upstream: "docker.io", Name: "library/x"}
	for _, tag := range []string{"..", "../x", "_tags", ""} {
		if err := s.PutTag(good, tag, "any", TagRecord{}); err == nil {
			t.Errorf("PutTag tag %q accepted", tag)
		}
	}
	for _, dg := range []digest.Digest{"sha256:../../x", "md5:abc", "sha256:" + digest.Digest(strings.Repeat("z", 64))} {
		if _, err := s.OpenBlob(dg); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("OpenBlob(%q) = %v, want a validation error", dg, err)
		}
		if _, err := s.NewIngest(dg); err == nil {
			t.Errorf("NewIngest(%q) accepted", dg)
		}
	}
	// Nothing escaped into the parent directory.
	ents, _ := os.ReadDir(filepath.Dir(s.Root()))
	if len(ents) != 1 {
		t.Errorf("files appeared beside the cache: %v", ents)
	}
}

func TestOpenUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		// root writes through permissions; a file where the directory
		// should be fails for everyone.
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(f); err == nil {
			t.Fatal("Open on a regular file succeeded")
		}
		return
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(dir, "cache")); err == nil {
		t.Fatal("Open in a read-only directory succeeded")
	}
}

// chunkReader yields its content in reads of the given sizes, in turn,
// then fails with err (io.EOF for a clean end).
type chunkReader struct {
	content []byte
	sizes   []int
	i       int
	err     error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.content) == 0 {
		return 0, r.err
	}
	n := min(len(p), len(r.content), r.sizes[r.i%len(r.sizes)])
	r.i++
	copy(p, r.content[:n])
	r.content = r.content[n:]
	return n, nil
}

// TestIngestCopyFrom: content copied in reads of any size, in one go or
// resumed after a failed read, hashes to its digest, and progress sees
// every size written up to the whole.
func TestIngestCopyFrom(t *testing.T) {
	content := make([]byte, 3*copyBufferSize+12345)
	for i := range content {
		content[i] = byte(i*7 + i>>9)
	}
	cut := errors.New("connection reset by peer")
	cases := []struct {
		name  string
		parts []int // content[:parts[0]] fails with cut, and so on; the last part ends with EOF
		sizes []int
	}{
		{"empty", []int{0}, []int{1}},
		{"one byte", []int{1}, []int{1}},
		{"small reads", []int{len(content)}, []int{1, 7, 4096, 100}},
		{"whole buffers", []int{len(content)}, []int{copyBufferSize}},
		{"resumed twice", []int{1000, copyBufferSize + 5, len(content)}, []int{65536, 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t)
			want := content[:tc.parts[len(tc.parts)-1]]
			d := digest.FromBytes(want)
			in, err := s.NewIngest(d)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Abort()
			var seen []int64
			progress := func(n int64) { seen = append(seen, n) }
			from := 0
			for i, end := range tc.parts {
				r := &chunkReader{content: content[from:end], sizes: tc.sizes, err: io.EOF}
				wantErr := error(nil)
				if i < len(tc.parts)-1 {
					r.err, wantErr = cut, cut
				}
				n, err := in.CopyFrom(r, progress)
				if err != wantErr || n != int64(end-from) || in.Size() != int64(end) {
					t.Fatalf("part %d: CopyFrom = %d, %v; size %d; want %d, %v, size %d", i, n, err, in.Size(), end-from, wantErr, end)
				}
				from = end
			}
			for i := 1; i < len(seen); i++ {
				if seen[i] <= seen[i-1] {
					t.Fatalf("progress went from %d to %d", seen[i-1], seen[i])
				}
			}
			if len(want) > 0 && (len(seen) == 0 || seen[len(seen)-1] != int64(len(want))) {
				t.Fatalf("progress ended at %v, want %d", seen, len(want))
			}
			if err := in.Commit(); err != nil {
				t.Fatal(err)
			}
			got, err := s.ReadBlob(d)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("ReadBlob: %d bytes, %v", len(got), err)
			}
		})
	}
}

// TestIngestCopyFromAnnounces: CopyFrom announces the first buffer and
// every short read at once, batches full reads up to announceEvery, and
// has announced every byte written when it returns, on EOF or on a failure.
func TestIngestCopyFromAnnounces(t *testing.T) {
	const B = copyBufferSize
	cut := errors.New("connection reset by peer")
	cases := []struct {
		name   string
		resume int // bytes copied (and announced) by an earlier CopyFrom
		length int
		sizes  []int
		err    error
		want   []int64
	}{
		{"full reads batched", 0, 10 * B, []int{B}, io.EOF, []int64{B, 5 * B, 9 * B, 10 * B}},
		{"short reads at once", 0, 3000, []int{1000}, io.EOF, []int64{1000, 2000, 3000}},
		{"a short read among full ones", 0, 4*B + 10, []int{B, B, 10, B}, io.EOF, []int64{B, 2*B + 10, 4*B + 10}},
		{"cut after full reads", 0, 3 * B, []int{B}, cut, []int64{B, 3 * B}},
		{"resumed: its first buffer at once", 2 * B, 3 * B, []int{B}, io.EOF, []int64{B, 2 * B, 3 * B, 5 * B}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			content := bytes.Repeat([]byte{7}, tc.resume+tc.length)
			s := openTemp(t)
			in, err := s.NewIngest(digest.FromBytes(content))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Abort()
			var seen []int64
			progress := func(n int64) { seen = append(seen, n) }
			if tc.resume > 0 {
				if _, err := in.CopyFrom(&chunkReader{content: content[:tc.resume], sizes: []int{B}, err: cut}, progress); err != cut {
					t.Fatalf("first CopyFrom: %v, want %v", err, cut)
				}
			}
			r := &chunkReader{content: content[tc.resume:], sizes: tc.sizes, err: tc.err}
			wantErr := tc.err
			if wantErr == io.EOF {
				wantErr = nil
			}
			if _, err := in.CopyFrom(r, progress); err != wantErr {
				t.Fatalf("CopyFrom: %v, want %v", err, wantErr)
			}
			if !slices.Equal(seen, tc.want) {
				t.Fatalf("announced %v, want %v", seen, tc.want)
			}
		})
	}
}

// TestIngestWriteError: a failure to write the file, through Write or
// CopyFrom, is told apart from a reader's failures, and what was hashed is
// what was written.
func TestIngestWriteError(t *testing.T) {
	content := []byte("bytes that will not reach the file")
	for _, tc := range []struct {
		name  string
		write func(in *Ingest) error
	}{
		{"Write", func(in *Ingest) error { _, err := in.Write(content); return err }},
		{"CopyFrom", func(in *Ingest) error { _, err := in.CopyFrom(bytes.NewReader(content), nil); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t)
			in, err := s.NewIngest(digest.FromBytes(content))
			if err != nil {
				t.Fatal(err)
			}
			defer in.Abort()
			in.file.Close() // every write now fails
			err = tc.write(in)
			var werr *WriteError
			if !errors.As(err, &werr) || !errors.Is(err, os.ErrClosed) {
				t.Fatalf("%s = %v, want a *WriteError wrapping os.ErrClosed", tc.name, err)
			}
			if in.Size() != 0 {
				t.Errorf("size %d after a failed write", in.Size())
			}
			if got := in.digester.Digest(); got != digest.FromBytes(nil) {
				t.Errorf("hashed %s, want the digest of nothing", got)
			}
		})
	}
}
