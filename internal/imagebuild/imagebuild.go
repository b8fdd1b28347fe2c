// Package imagebuild assembles Breakwater's container image without a
// Docker daemon, the way ko does: a static binary, CA certificates, an
// /etc/passwd for the unprivileged user and the default configuration, as
// one layer on an empty base, one image per platform under an OCI index.
//
// Everything that goes in is given, and every timestamp is Spec.Created,
// so the same inputs always make the same digests.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed facts. UID 65532 is distroless's and ko's "nonroot":
// charts and admission policies commonly expect it.
const (
	UID        = 65532
	Binary     = "/usr/local/bin/breakwater"
	ConfigFile = "/etc/breakwater/config.yaml"
	// WorkDir is the working directory, writable by UID, so that the
	// default configuration's relative cache directory lands there.
	WorkDir = "/var/lib/breakwater"
	CAFile  = "/etc/ssl/certs/ca-certificates.crt"
	Port    = "5000/tcp"
)

// Spec is what one build puts into the image.
type Spec struct {
	Version  string // 0.1.0; labels and annotations
	Revision string // the commit; labels
	Source   string // the repository's URL; labels
	Created  time.Time
	// CACerts is the PEM bundle installed at CAFile.
	CACerts []byte
	// Config is the default configuration installed at ConfigFile.
	Config []byte
}

// Platform is one image of the index with the binary built for it.
type Platform struct {
	Platform v1.Platform
	Binary   []byte
}

// ParsePlatforms reads a comma-separated list such as
// "linux/amd64,linux/arm64".
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := v1.ParsePlatform(f)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", f, err)
		}
		if p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want linux/ARCH", f)
		}
		out = append(out, *p)
	}
	if len(out) == 0 {
		return nil, errors.New("no platform given")
	}
	return out, nil
}

// Index builds one image per platform and the index over them.
func Index(spec Spec, platforms []Platform) (v1.ImageIndex, error) {
	if len(platforms) == 0 {
		return nil, errors.New("no platform given")
	}
	if len(spec.CACerts) == 0 {
		return nil, errors.New("no CA certificates given")
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := Image(spec, p)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p.Platform.String(), err)
		}
		platform := p.Platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &platform},
		})
	}
	return mutate.Annotations(idx, annotations(spec)).(v1.ImageIndex), nil
}

// Image builds the image for one platform.
func Image(spec Spec, p Platform) (v1.Image, error) {
	rootfs, err := rootFS(spec, p.Binary)
	if err != nil {
		return nil, err
	}
	// Compressed once here: from an uncompressed opener the layer is
	// gzipped again for its digest, its size, the layout and each push
	// (minutes for a 50 MB binary under the race detector). The gzip
	// header carries no name or time, so the bytes are reproducible.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(rootfs); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: spec.Created.UTC()}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		// Without any, mutate's manifest and its raw bytes disagree on
		// an empty map and a missing one, which validate refuses.
		Annotations: map[string]string{"org.opencontainers.image.title": "breakwater " + spec.Version + " " + p.Platform.String()},
		History:     v1.History{Created: created, CreatedBy: "make image", Comment: "breakwater " + spec.Version},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = created
	cfg.OS, cfg.Architecture, cfg.Variant = p.Platform.OS, p.Platform.Architecture, p.Platform.Variant
	cfg.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, UID),
		Entrypoint:   []string{Binary},
		Cmd:          []string{"serve", "--config", ConfigFile},
		WorkingDir:   WorkDir,
		Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=" + CAFile},
		ExposedPorts: map[string]struct{}{Port: {}},
		Labels:       annotations(spec),
		// The chart's own terminationGracePeriodSeconds applies in a
		// cluster; this is what `docker stop` and `ctr` send.
		StopSignal: "SIGTERM",
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return mutate.Annotations(img, annotations(spec)).(v1.Image), nil
}

// annotations are the OCI's standard ones, as labels and annotations both.
func annotations(spec Spec) map[string]string {
	a := map[string]string{
		"org.opencontainers.image.title":       "breakwater",
		"org.opencontainers.image.description": "A pull-through mirror for OCI container registries",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     spec.Version,
		"org.opencontainers.image.created":     spec.Created.UTC().Format(time.RFC3339),
	}
	if spec.Revision != "" {
		a["org.opencontainers.image.revision"] = spec.Revision
	}
	if spec.Source != "" {
		a["org.opencontainers.image.source"] = spec.Source
	}
	return a
}

// entry is one file or directory of the root filesystem.
type entry struct {
	name string // without the leading slash
	mode int64
	uid  int
	data []byte
	dir  bool
}

// rootFS is the image's only layer, as an uncompressed tar.
func rootFS(spec Spec, binary []byte) ([]byte, error) {
	if len(binary) == 0 {
		return nil, errors.New("no binary given")
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, UID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", UID)
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(CAFile, "/"), mode: 0o644, data: spec.CACerts},
		{name: "etc/breakwater/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(ConfigFile, "/"), mode: 0o644, data: spec.Config},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: UID, dir: true},
		// Go's os.TempDir, and so TLS reload and ingest fallbacks.
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(Binary, "/"), mode: 0o755, data: binary},
		{name: "var/", mode: 0o755, dir: true},
		{name: "var/lib/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(WorkDir, "/") + "/", mode: 0o750, uid: UID, dir: true},
	}
	if len(spec.Config) == 0 {
		return nil, errors.New("no default configuration given")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.uid,
			ModTime: spec.Created.UTC(),
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if e.uid != 0 {
			h.Uname, h.Gname = "nonroot", "nonroot"
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayout writes idx as an OCI image layout in dir, named ref (a full
// reference such as ghcr.io/breakwater-registry/breakwater:0.1.0) so that
// `ctr images import` and skopeo's oci: transport find it. A layout
// already in dir is replaced; anything else there is refused, so that a
// mistyped IMAGE_OUT never empties a directory that is not ours.
func WriteLayout(dir string, idx v1.ImageIndex, ref, tag string) error {
	if err := CheckOutDir(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	err = p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		// The OCI's own name is the tag; containerd's is the whole
		// reference.
		"org.opencontainers.image.ref.name": tag,
		"io.containerd.image.name":          ref,
	}))
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	// Blobs are written through temporary files of mode 0600; content
	// addressed by digest hides nothing, and a layout is often served or
	// copied by another user.
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chmod(path, 0o644)
	})
}

// CheckOutDir refuses an output directory that exists and holds something
// other than an OCI image layout. It is checked before anything is built.
func CheckOutDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("output directory %s is not empty and holds no OCI image layout (no oci-layout file); not replacing it", dir)
	}
	return nil
}
