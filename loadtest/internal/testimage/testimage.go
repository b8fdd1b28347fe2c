// Package testimage builds incompressible OCI test images of any size without
// holding their layers in memory, and pushes them to a plain-HTTP registry.
//
// Each layer is an uncompressed tar (application/vnd.oci.image.layer.v1.tar)
// holding one regular file of ChaCha8 pseudo-random bytes. The bytes are a
// function of a 32-byte seed, so a layer is generated twice — once to compute
// its digest, once while it is uploaded — and never stored. Random bytes do
// not compress: transfer figures measured with these layers are not flattered
// by gzip on the wire.
package testimage

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarOverhead is what the tar framing adds to the payload: one 512-byte
// header and the two 512-byte zero blocks that end the archive.
const tarOverhead = 3 * 512

// Layer is a v1.Layer of pseudo-random content, regenerated on every read.
type Layer struct {
	seed    [32]byte
	payload int64
	size    int64
	digest  v1.Hash
}

var _ v1.Layer = (*Layer)(nil)

// NewLayer returns a layer whose blob is exactly size bytes when size is a
// multiple of 512 and at least 2048 (otherwise a little more), with content
// derived from seed. It reads the content once to compute the digest.
func NewLayer(seed [32]byte, size int64) (*Layer, error) {
	payload := size - tarOverhead
	if payload < 512 {
		payload = 512
	}
	l := &Layer{seed: seed, payload: payload}
	h := sha256.New()
	n, err := io.CopyBuffer(h, l.reader(), make([]byte, 1<<20))
	if err != nil {
		return nil, err
	}
	l.size = n
	l.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	return l, nil
}

// reader streams the tar: header, payload, padding, end blocks.
func (l *Layer) reader() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg,
			Name:     "payload",
			Size:     l.payload,
			Mode:     0o644,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatUSTAR,
		})
		if err == nil {
			_, err = io.CopyBuffer(tw, io.LimitReader(mrand.NewChaCha8(l.seed), l.payload), make([]byte, 1<<20))
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func (l *Layer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *Layer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *Layer) Compressed() (io.ReadCloser, error)   { return l.reader(), nil }
func (l *Layer) Uncompressed() (io.ReadCloser, error) { return l.reader(), nil }
func (l *Layer) Size() (int64, error)                 { return l.size, nil }
func (l *Layer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }

// Seed returns a fresh random seed, so that every layer built from it is a
// blob no registry has seen.
func Seed() [32]byte {
	var s [32]byte
	_, _ = rand.Read(s[:])
	return s
}

// Layers builds one layer per size, each from a fresh seed.
func Layers(sizes ...int64) ([]*Layer, error) {
	out := make([]*Layer, 0, len(sizes))
	for _, sz := range sizes {
		l, err := NewLayer(Seed(), sz)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// Image is a single-platform OCI image of the given layers with a
// linux/ARCH config whose rootfs lists them.
func Image(arch string, layers []*Layer) (v1.Image, error) {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	adds := make([]mutate.Addendum, 0, len(layers))
	for i, l := range layers {
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: fmt.Sprintf("breakwater loadtest layer %d", i+1)}})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = arch
	cfg.Created = v1.Time{Time: time.Now().UTC().Truncate(time.Second)}
	cfg.RootFS.Type = "layers"
	cfg.Config.Cmd = []string{"/payload"}
	return mutate.ConfigFile(img, cfg)
}

// Blob is a blob of a pushed image.
type Blob struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
}

// Pushed describes an image (or index) written to a registry.
type Pushed struct {
	Repo      string `json:"repo"`
	Tag       string `json:"tag"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// Manifest is the raw manifest (or index) as pushed.
	Manifest []byte `json:"-"`
	// Blobs are the config and layers of every image, each once, config
	// first; Size is their sum.
	Blobs []Blob `json:"blobs"`
	Size  int64  `json:"size"`
	// Content is each blob's bytes by digest, when the pusher kept them
	// (KeepContent), so that a reader can compare what it gets with them
	// instead of hashing it.
	Content map[string][]byte `json:"-"`
}

// KeepContent reads every blob of img into p.Content, each checked against
// its digest first: a reader that finds the same bytes has the same proof
// as one that hashed them, at a small part of the CPU.
func KeepContent(p *Pushed, img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	content := map[string][]byte{m.Config.Digest.String(): cfg}
	for _, l := range m.Layers {
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return err
		}
		rc, err := layer.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		content[l.Digest.String()] = b
	}
	for d, b := range content {
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256(b)); got != d {
			return fmt.Errorf("blob %s: kept content hashes to %s", d, got)
		}
	}
	p.Content = content
	return nil
}

// Push writes img to registry (host:port, plain HTTP) as repo:tag.
func Push(registry, repo, tag string, img v1.Image) (Pushed, error) {
	ref, err := name.ParseReference(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return Pushed{}, err
	}
	if err := remote.Write(ref, img, remote.WithTransport(transport), remote.WithJobs(4)); err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", ref, err)
	}
	p := Pushed{Repo: repo, Tag: tag}
	if err := describeImage(&p, img, map[string]bool{}); err != nil {
		return Pushed{}, err
	}
	d, _ := img.Digest()
	mt, _ := img.MediaType()
	raw, err := img.RawManifest()
	if err != nil {
		return Pushed{}, err
	}
	p.Digest, p.MediaType, p.Manifest = d.String(), string(mt), raw
	return p, nil
}

// PushIndex writes an OCI index of imgs (one per architecture, in the order
// of archs) to registry as repo:tag.
func PushIndex(registry, repo, tag string, archs []string, imgs []v1.Image) (Pushed, error) {
	ref, err := name.ParseReference(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return Pushed{}, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	adds := make([]mutate.IndexAddendum, 0, len(imgs))
	for i, img := range imgs {
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: archs[i]}}})
	}
	idx = mutate.AppendManifests(idx, adds...)
	if err := remote.WriteIndex(ref, idx, remote.WithTransport(transport), remote.WithJobs(4)); err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", ref, err)
	}
	p := Pushed{Repo: repo, Tag: tag}
	seen := map[string]bool{}
	for _, img := range imgs {
		if err := describeImage(&p, img, seen); err != nil {
			return Pushed{}, err
		}
	}
	d, _ := idx.Digest()
	raw, err := idx.RawManifest()
	if err != nil {
		return Pushed{}, err
	}
	p.Digest, p.MediaType, p.Manifest = d.String(), string(types.OCIImageIndex), raw
	return p, nil
}

func describeImage(p *Pushed, img v1.Image, seen map[string]bool) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if seen[d.Digest.String()] {
			continue
		}
		seen[d.Digest.String()] = true
		p.Blobs = append(p.Blobs, Blob{Digest: d.Digest.String(), Size: d.Size, MediaType: string(d.MediaType)})
		p.Size += d.Size
	}
	return nil
}

// transport is a plain transport: pushes go to loopback, never through an
// HTTP proxy from the environment.
var transport = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, DisableCompression: true}

// ParseSize reads 123, 64KiB, 64MiB, 1GiB (also KB/MB/GB as powers of 1000).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q: want e.g. 4096, 64KiB, 64MiB, 1GiB", s)
	}
	return n * mult, nil
}
