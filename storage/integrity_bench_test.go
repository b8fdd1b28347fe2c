package storage

import (
	"bytes"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkFirstOpen measures what verification costs a blob's first open
// after a restart: one whole hash of a 64 MiB blob (page-cached), against
// an open of the same blob once verified
// (go test -run '^$' -bench FirstOpen -benchtime 20x ./storage).
func BenchmarkFirstOpen(b *testing.B) {
	const size = 64 << 20
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	content := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	d := digest.FromBytes(content)
	if err := s.PutBlob(d, content); err != nil {
		b.Fatal(err)
	}
	b.Run("unverified", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			s.Close()
			s2, err := Open(s.Root())
			if err != nil {
				b.Fatal(err)
			}
			s = s2
			b.StartTimer()
			blob, err := s.OpenBlob(d)
			if err != nil {
				b.Fatal(err)
			}
			blob.Close()
		}
	})
	b.Run("verified", func(b *testing.B) {
		for b.Loop() {
			blob, err := s.OpenBlob(d)
			if err != nil {
				b.Fatal(err)
			}
			blob.Close()
		}
	})
	s.Close()
}
