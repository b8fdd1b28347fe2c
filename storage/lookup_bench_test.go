package storage

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// lookupFixture is a warm cache: one repository with a tag, its manifest
// and a layer, all stored through the Store's own API.
type lookupFixture struct {
	s        *Store
	repo     Repo
	tag      string
	variant  string
	layer    digest.Digest
	layerLen int64
	manifest []byte
	mdgst    digest.Digest
	mtype    string
	absent   digest.Digest
}

// benchManifest returns an OCI image manifest of about 2 KiB: a config and
// enough layers to reach that size, as a typical multi-layer image has.
func benchManifest(config, layer digest.Digest, layerLen int64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1469},"layers":[`, config)
	for i := range 11 {
		if i > 0 {
			b.WriteByte(',')
		}
		d := layer
		if i > 0 {
			d = digest.FromString(fmt.Sprintf("layer %d", i))
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}`, d, layerLen+int64(i))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func newLookupFixture(b *testing.B) *lookupFixture {
	b.Helper()
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	f := &lookupFixture{
		s:       s,
		repo:    Repo{Upstream: "docker.io", Name: "library/alpine"},
		tag:     "3.20",
		variant: "a1b2c3d4e5f60718", // the shape acceptVariant gives
		mtype:   "application/vnd.oci.image.manifest.v1+json",
		absent:  digest.FromString("never cached"),
	}
	layer := bytes.Repeat([]byte("layer bytes "), 256<<10/12)
	f.layer, f.layerLen = digest.FromBytes(layer), int64(len(layer))
	f.manifest = benchManifest(digest.FromString("config"), f.layer, f.layerLen)
	f.mdgst = digest.FromBytes(f.manifest)

	for _, put := range []struct {
		d       digest.Digest
		content []byte
	}{{f.layer, layer}, {f.mdgst, f.manifest}} {
		if err := s.PutBlob(put.d, put.content); err != nil {
			b.Fatal(err)
		}
		if err := s.LinkBlob(f.repo, put.d); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.PutManifest(f.repo, f.mdgst, ManifestRecord{MediaType: f.mtype, Size: int64(len(f.manifest))}); err != nil {
		b.Fatal(err)
	}
	rec := TagRecord{Digest: f.mdgst, MediaType: f.mtype, Size: int64(len(f.manifest)), CheckedAt: time.Now().UTC()}
	if err := s.PutTag(f.repo, f.tag, f.variant, rec); err != nil {
		b.Fatal(err)
	}
	return f
}

// Each check does one lookup and returns an error when its result is not the
// one the fixture stored; the benchmarks run it once before timing.

func (f *lookupFixture) openBlob(d digest.Digest, size int64) error {
	blob, err := f.s.OpenBlob(d)
	if err != nil {
		return err
	}
	if blob.Size != size {
		blob.Close()
		return fmt.Errorf("OpenBlob(%s): size %d, want %d", d, blob.Size, size)
	}
	return blob.Close()
}

func (f *lookupFixture) openLayer() error { return f.openBlob(f.layer, f.layerLen) }

func (f *lookupFixture) openMiss() error {
	blob, err := f.s.OpenBlob(f.absent)
	if !errors.Is(err, ErrNotFound) {
		if err == nil {
			blob.Close()
		}
		return fmt.Errorf("OpenBlob(absent) = %v, want ErrNotFound", err)
	}
	return nil
}

func (f *lookupFixture) blobLinked() error {
	if !f.s.BlobLinked(f.repo, f.layer) {
		return fmt.Errorf("BlobLinked(%s, %s) = false", f.repo, f.layer)
	}
	return nil
}

func (f *lookupFixture) getTag() error {
	rec, err := f.s.GetTag(f.repo, f.tag, f.variant)
	if err != nil {
		return err
	}
	if rec.Digest != f.mdgst {
		return fmt.Errorf("GetTag: digest %s, want %s", rec.Digest, f.mdgst)
	}
	return nil
}

func (f *lookupFixture) getManifest() error {
	rec, err := f.s.GetManifest(f.repo, f.mdgst)
	if err != nil {
		return err
	}
	if rec.MediaType != f.mtype || rec.Size != int64(len(f.manifest)) {
		return fmt.Errorf("GetManifest = %+v", rec)
	}
	return nil
}

func (f *lookupFixture) readManifest() error {
	got, err := f.s.ReadBlob(f.mdgst)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, f.manifest) {
		return fmt.Errorf("ReadBlob: %d bytes, not the manifest", len(got))
	}
	return nil
}

// The timed loops call the bare API through these, without the checks.

func (f *lookupFixture) opOpenBlob() {
	if blob, err := f.s.OpenBlob(f.layer); err == nil {
		blob.Close()
	}
}

func (f *lookupFixture) opOpenMiss()     { _, _ = f.s.OpenBlob(f.absent) }
func (f *lookupFixture) opBlobLinked()   { f.s.BlobLinked(f.repo, f.layer) }
func (f *lookupFixture) opGetTag()       { _, _ = f.s.GetTag(f.repo, f.tag, f.variant) }
func (f *lookupFixture) opGetManifest()  { _, _ = f.s.GetManifest(f.repo, f.mdgst) }
func (f *lookupFixture) opReadManifest() { _, _ = f.s.ReadBlob(f.mdgst) }

// BenchmarkLookup measures the cache lookups a warm pull makes: resolve the
// tag, check the manifest record, read the manifest, check each blob's link
// and open it; and a miss.
func BenchmarkLookup(b *testing.B) {
	f := newLookupFixture(b)
	if n := len(f.manifest); n < 1800 || n > 2400 {
		b.Fatalf("manifest is %d bytes, want about 2 KiB", n)
	}
	cases := []struct {
		name  string
		check func() error
		op    func()
		bytes int64
	}{
		{"OpenBlob", f.openLayer, f.opOpenBlob, 0},
		{"BlobLinked", f.blobLinked, f.opBlobLinked, 0},
		{"GetTag", f.getTag, f.opGetTag, 0},
		{"GetManifest", f.getManifest, f.opGetManifest, 0},
		{"ReadBlob", f.readManifest, f.opReadManifest, int64(len(f.manifest))},
		{"OpenBlobMiss", f.openMiss, f.opOpenMiss, 0},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if err := tc.check(); err != nil {
				b.Fatal(err)
			}
			if tc.bytes > 0 {
				b.SetBytes(tc.bytes)
			}
			b.ReportAllocs()
			for b.Loop() {
				tc.op()
			}
		})
	}
}

// BenchmarkLookupParallel is BenchmarkLookup's hottest lookups with many
// clients pulling the same tag at once.
func BenchmarkLookupParallel(b *testing.B) {
	f := newLookupFixture(b)
	cases := []struct {
		name  string
		check func() error
		op    func()
	}{
		{"OpenBlob", f.openLayer, f.opOpenBlob},
		{"GetTag", f.getTag, f.opGetTag},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if err := tc.check(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tc.op()
				}
			})
		})
	}
}
