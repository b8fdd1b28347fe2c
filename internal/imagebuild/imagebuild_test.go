package imagebuild

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func testSpec() Spec {
	return Spec{
		Version:  "1.2.3",
		Revision: "0123456789ab",
		Source:   "https://example.com/breakwater",
		Created:  time.Unix(1700000000, 0),
		CACerts:  []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"),
		Config:   []byte("listen: \":5000\"\n"),
	}
}

func testPlatforms(t *testing.T) []Platform {
	t.Helper()
	ps, err := ParsePlatforms("linux/amd64,linux/arm64")
	if err != nil {
		t.Fatal(err)
	}
	var out []Platform
	for _, p := range ps {
		out = append(out, Platform{Platform: p, Binary: []byte("binary for " + p.Architecture)})
	}
	return out
}

// fileInfo is what the test looks at of one tar entry.
type fileInfo struct {
	mode int64
	uid  int
	typ  byte
	data string
}

func layerFiles(t *testing.T, img v1.Image) map[string]fileInfo {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want exactly one", len(layers), err)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]fileInfo{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files["/"+strings.TrimSuffix(h.Name, "/")] = fileInfo{mode: h.Mode, uid: h.Uid, typ: h.Typeflag, data: string(b)}
	}
	return files
}

// TestIndex: one OCI image per platform, each with the binary for its
// platform, CA certificates, the nonroot user and a configuration that
// runs serve as that user.
func TestIndex(t *testing.T) {
	spec := testSpec()
	idx, err := Index(spec, testPlatforms(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatalf("invalid index: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index %s with %d manifests, want an OCI index of 2", im.MediaType, len(im.Manifests))
	}
	if im.Annotations["org.opencontainers.image.version"] != "1.2.3" {
		t.Errorf("index annotations %v", im.Annotations)
	}
	for _, desc := range im.Manifests {
		arch := desc.Platform.Architecture
		t.Run(arch, func(t *testing.T) {
			if desc.MediaType != types.OCIManifestSchema1 || desc.Platform.OS != "linux" {
				t.Fatalf("descriptor %s %s", desc.MediaType, desc.Platform)
			}
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Architecture != arch || cfg.OS != "linux" {
				t.Errorf("config platform %s/%s", cfg.OS, cfg.Architecture)
			}
			c := cfg.Config
			if c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != Binary ||
				strings.Join(c.Cmd, " ") != "serve --config "+ConfigFile || c.WorkingDir != WorkDir {
				t.Errorf("config %+v", c)
			}
			if _, ok := c.ExposedPorts[Port]; !ok {
				t.Errorf("exposed ports %v", c.ExposedPorts)
			}
			if c.Labels["org.opencontainers.image.revision"] != "0123456789ab" || c.Labels["org.opencontainers.image.licenses"] != "Apache-2.0" {
				t.Errorf("labels %v", c.Labels)
			}
			if !cfg.Created.Equal(spec.Created) {
				t.Errorf("created %v, want %v", cfg.Created, spec.Created)
			}

			files := layerFiles(t, img)
			want := map[string]fileInfo{
				Binary:     {mode: 0o755, typ: tar.TypeReg, data: "binary for " + arch},
				CAFile:     {mode: 0o644, typ: tar.TypeReg, data: string(spec.CACerts)},
				ConfigFile: {mode: 0o644, typ: tar.TypeReg, data: string(spec.Config)},
				WorkDir:    {mode: 0o750, uid: UID, typ: tar.TypeDir},
				"/tmp":     {mode: 0o1777, typ: tar.TypeDir},
			}
			for path, w := range want {
				got, ok := files[path]
				if !ok || got != w {
					t.Errorf("%s: %+v (present %v), want %+v", path, got, ok, w)
				}
			}
			if !strings.Contains(files["/etc/passwd"].data, "nonroot:x:65532:65532:") {
				t.Errorf("/etc/passwd: %q", files["/etc/passwd"].data)
			}
			if !strings.Contains(files["/etc/group"].data, "nonroot:x:65532:") {
				t.Errorf("/etc/group: %q", files["/etc/group"].data)
			}
		})
	}
}

// TestReproducible: the same inputs make the same digest; any input that
// changes makes another.
func TestReproducible(t *testing.T) {
	digestOf := func(spec Spec, ps []Platform) v1.Hash {
		t.Helper()
		idx, err := Index(spec, ps)
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	base := digestOf(testSpec(), testPlatforms(t))
	if again := digestOf(testSpec(), testPlatforms(t)); again != base {
		t.Fatalf("two builds of the same inputs: %s and %s", base, again)
	}
	later := testSpec()
	later.Created = later.Created.Add(time.Second)
	otherBinary := testPlatforms(t)
	otherBinary[1].Binary = []byte("another binary")
	for name, d := range map[string]v1.Hash{
		"created": digestOf(later, testPlatforms(t)),
		"binary":  digestOf(testSpec(), otherBinary),
	} {
		if d == base {
			t.Errorf("a different %s made the same digest", name)
		}
	}
}

func TestRefused(t *testing.T) {
	spec := testSpec()
	noCA := spec
	noCA.CACerts = nil
	noConfig := spec
	noConfig.Config = nil
	noBinary := testPlatforms(t)
	noBinary[0].Binary = nil
	cases := []struct {
		name      string
		spec      Spec
		platforms []Platform
		want      string
	}{
		{"no platform", spec, nil, "no platform"},
		{"no CA certificates", noCA, testPlatforms(t), "no CA certificates"},
		{"no configuration", noConfig, testPlatforms(t), "no default configuration"},
		{"no binary", spec, noBinary, "no binary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Index(tc.spec, tc.platforms); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParsePlatforms(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{in: "linux/amd64,linux/arm64", want: "linux/amd64 linux/arm64"},
		{in: " linux/arm/v7 ", want: "linux/arm/v7"},
		{in: "", err: "no platform"},
		{in: "windows/amd64", err: "want linux/ARCH"},
		{in: "linux", err: "want linux/ARCH"},
	}
	for _, tc := range cases {
		ps, err := ParsePlatforms(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestWriteLayout: the layout is valid, names the image for containerd and
// for OCI tools, replaces an earlier layout, and refuses a directory that
// holds anything else without touching it.
func TestWriteLayout(t *testing.T) {
	idx, err := Index(testSpec(), testPlatforms(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "image")
	for i := 0; i < 2; i++ { // the second replaces the first
		if err := WriteLayout(dir, idx, "example.com/breakwater:1.2.3", "1.2.3"); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want the one image index", len(rm.Manifests))
	}
	a := rm.Manifests[0].Annotations
	if a["io.containerd.image.name"] != "example.com/breakwater:1.2.3" || a["org.opencontainers.image.ref.name"] != "1.2.3" {
		t.Errorf("annotations %v", a)
	}
	want, _ := idx.Digest()
	if rm.Manifests[0].Digest != want {
		t.Errorf("layout holds %s, want %s", rm.Manifests[0].Digest, want)
	}
	written, err := root.ImageIndex(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(written); err != nil {
		t.Fatalf("the layout's index does not validate: %v", err)
	}
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if fi, _ := d.Info(); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", path, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	other := t.TempDir()
	keep := filepath.Join(other, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(other, idx, "example.com/breakwater:1.2.3", "1.2.3"); err == nil || !strings.Contains(err.Error(), "holds no OCI image layout") {
		t.Fatalf("a directory of other files: %v, want refused", err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
		t.Fatalf("the refused directory's file: %q %v", b, err)
	}
}
