package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/breakwater-registry/breakwater/internal/imagebuild"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestRefusedBeforeBuilding: a wrong output directory or platform fails at
// once, before minutes of compiling, and the directory keeps its files.
func TestRefusedBeforeBuilding(t *testing.T) {
	notOurs := t.TempDir()
	keep := filepath.Join(notOurs, "keep")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a directory of other files", []string{"--out", notOurs}, 1, "holds no OCI image layout"},
		{"a platform that is not linux", []string{"--out", t.TempDir(), "--platforms", "windows/amd64"}, 1, "--platforms"},
		{"a bad reference to push", []string{"--out", t.TempDir(), "--push", "Not A Ref"}, 1, "--push"},
		{"tags that are not", []string{"--out", t.TempDir(), "--tags", "breakwater_nogcs breakwater_noazure"}, 1, "--tags"},
		{"an empty tag", []string{"--out", t.TempDir(), "--tags", "breakwater_nogcs,"}, 1, "--tags"},
		{"a bad timestamp", []string{"--created", "yesterday"}, 2, "--created"},
		{"an argument", []string{"extra"}, 2, "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
			if strings.Contains(stdout.String(), "building") {
				t.Errorf("built before refusing: %s", stdout.String())
			}
		})
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
		t.Fatalf("the refused directory's file: %q %v", b, err)
	}
}

// binaryOf takes Breakwater's binary out of the image's layer.
func binaryOf(t *testing.T, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	bin := filepath.Join(t.TempDir(), "breakwater")
	if err := extract(rc, strings.TrimPrefix(imagebuild.Binary, "/"), bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// buildImage builds the real image for this machine's platform into a new
// layout, with the flags every test takes and extra, and returns the
// layout's index manifest and the platform's image.
func buildImage(t *testing.T, extra ...string) (*v1.IndexManifest, v1.Image) {
	t.Helper()
	if testing.Short() {
		t.Skip("compiles Breakwater")
	}
	out := filepath.Join(t.TempDir(), "image")
	platform := "linux/" + runtime.GOARCH
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{
		"--out", out, "--platforms", platform, "--version", "9.9.9", "--created", "1700000000",
		"--package", "../../cmd/breakwater", "--config", "../../config.yaml",
	}, extra...), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	root, err := layout.ImageIndexFromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := root.IndexManifest()
	if err != nil || len(rm.Manifests) != 1 {
		t.Fatalf("index.json: %v %v", rm, err)
	}
	idx, err := root.ImageIndex(rm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Platform.String() != platform {
		t.Fatalf("image index: %+v %v", im, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return rm, img
}

// TestBuildWithTags: --tags reaches go build: an image built without the
// GCS and Azure drivers has a binary that refuses a storage.gcs block,
// naming the tag.
func TestBuildWithTags(t *testing.T) {
	_, img := buildImage(t, "--tags", "breakwater_nogcs,breakwater_noazure")
	bin := binaryOf(t, img)
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("listen: 127.0.0.1:0\ncache:\n  dir: "+filepath.Join(dir, "cache")+"\nstorage:\n  gcs:\n    bucket: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(bin, "serve", "--config", config).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(got), "built with -tags breakwater_nogcs") {
		t.Fatalf("serve with storage.gcs: %v, %q; want exit 2 naming the tag", err, got)
	}
}

// TestBuildAndPush builds the real image for this machine's platform,
// writes the layout and pushes it to a registry, then runs the binary
// taken out of the image's layer: it says the version it was stamped with.
func TestBuildAndPush(t *testing.T) {
	up := testupstream.Start(t)
	push := up.Host + "/breakwater:9.9.9"
	rm, img := buildImage(t, "--push", push, "--revision", "0123456789ab")
	if got := rm.Manifests[0].Annotations["io.containerd.image.name"]; got != "ghcr.io/breakwater-registry/breakwater:9.9.9" {
		t.Errorf("the layout names the image %q", got)
	}
	ref, err := name.ParseReference(push)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("the pushed index: %v", err)
	}
	if d, _ := pushed.Digest(); d != rm.Manifests[0].Digest {
		t.Errorf("pushed %s, the layout holds %s", d, rm.Manifests[0].Digest)
	}
	bin := binaryOf(t, img)
	got, err := exec.Command(bin, "version").CombinedOutput()
	want := fmt.Sprintf("breakwater 9.9.9 (revision 0123456789ab, %s)\n", runtime.Version())
	if err != nil || string(got) != want {
		t.Fatalf("the image's binary says %q (%v), want %q", got, err, want)
	}
	// Static: no dynamic loader, so it runs on an empty base.
	if ldd, err := exec.Command("ldd", bin).CombinedOutput(); err == nil && !strings.Contains(string(ldd), "not a dynamic executable") {
		t.Errorf("the image's binary is dynamically linked:\n%s", ldd)
	}
}

// extract writes the tar entry name to path, executable.
func extract(r io.Reader, name, path string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s not in the layer", name)
		}
		if err != nil {
			return err
		}
		if h.Name != name {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		return os.WriteFile(path, b, 0o755)
	}
}
