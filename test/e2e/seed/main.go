// Command seed pushes the end-to-end test images to a plain-HTTP registry.
//
//	go run ./test/e2e/seed --registry 127.0.0.1:5000
//
// It pushes three images, each with three random gzip'd tar layers (one regular
// file each) and a config with os=linux, architecture=amd64 and a rootfs whose
// diff_ids match the layers, so that containerd, dockerd and podman can unpack
// them:
//
//   - library/e2e:v1         OCI media types (image manifest v1, OCI config, tar+gzip layers)
//   - library/e2e-docker:v1  Docker schema 2 media types
//   - library/e2e-outage:v1  OCI media types; the outage phase never pulls it
//     before the upstream fails, so Breakwater has nothing of it cached
//
// and prints their manifest digests on one line:
//
//	e2e=sha256:... e2e-docker=sha256:... e2e-outage=sha256:...
//
// With --only it pushes just the repositories listed, each an OCI image of
// the same kind (the outage phase's images that must be new to a mirror),
// and prints them the same way, keyed by the repository's last element:
//
//	go run ./test/e2e/seed --registry 127.0.0.1:5000 --only library/e2e-burst-ctr,library/e2e-recover
//	e2e-burst-ctr=sha256:... e2e-recover=sha256:...
//
// With --binary FILE (and --only) each image is instead one that runs: an
// OCI layer holding FILE as /NAME (NAME its base name, mode 0755), the same
// in every image, and a small one holding /image with the repository's
// name, so that no two repositories share all their blobs; /NAME is the
// config's entrypoint, the platform linux and this machine's architecture.
// The k8s phase pushes its pause program so:
//
//	go run ./test/e2e/seed --registry 127.0.0.1:5000 --binary /tmp/pause --only bw/pause,library/k8s-cached
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// layerSizes are the payload sizes of the three layers: one over 1 MiB so a
// blob is streamed in more than one read, two small ones.
var layerSizes = []int64{1<<20 + 12345, 64 << 10, 3000}

func main() {
	registry := flag.String("registry", "", "registry host:port to push to over plain HTTP (required)")
	repo := flag.String("repo", "library/e2e", "repository of the OCI image; the Docker image goes to REPO-docker, the outage image to REPO-outage")
	tag := flag.String("tag", "v1", "tag of all the images")
	only := flag.String("only", "", "comma-separated repositories to push instead of the three, each an OCI image")
	binary := flag.String("binary", "", "with --only: each image one layer holding this file as /NAME, its entrypoint")
	flag.Parse()
	if *registry == "" {
		fmt.Fprintln(os.Stderr, "seed: --registry is required")
		os.Exit(2)
	}
	if *binary != "" && *only == "" {
		fmt.Fprintln(os.Stderr, "seed: --binary needs --only (the repositories to push it to)")
		os.Exit(2)
	}

	type image struct {
		key, repo string
		oci       bool
	}
	images := []image{
		{"e2e", *repo, true},
		{"e2e-docker", *repo + "-docker", false},
		{"e2e-outage", *repo + "-outage", true},
	}
	if *only != "" {
		images = nil
		for _, r := range strings.Split(*only, ",") {
			if r = strings.TrimSpace(r); r == "" {
				fmt.Fprintf(os.Stderr, "seed: --only %q: empty repository name\n", *only)
				os.Exit(2)
			}
			images = append(images, image{path.Base(r), r, true})
		}
	}

	out := ""
	for _, im := range images {
		var runnable v1.Image
		if *binary != "" {
			var err error
			if runnable, err = buildRunnable(*binary, im.repo); err != nil {
				fmt.Fprintf(os.Stderr, "seed: --binary %s: %v\n", *binary, err)
				os.Exit(1)
			}
		}
		d, err := push(*registry, im.repo, *tag, im.oci, runnable)
		if err != nil {
			fmt.Fprintf(os.Stderr, "seed: %s: %v\n", im.repo, err)
			os.Exit(1)
		}
		if out != "" {
			out += " "
		}
		out += im.key + "=" + d.String()
	}
	fmt.Println(out)
}

// push pushes img, or when it is nil a new image of build(oci), to
// registry/repo:tag and returns its digest.
func push(registry, repo, tag string, oci bool, img v1.Image) (v1.Hash, error) {
	if img == nil {
		var err error
		if img, err = build(oci); err != nil {
			return v1.Hash{}, fmt.Errorf("build image: %w", err)
		}
	}
	ref, err := name.ParseReference(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return img.Digest()
}

// build returns a three-layer image with a runnable-looking linux/amd64
// config. For oci, every media type is OCI's; otherwise Docker schema 2.
func build(oci bool) (v1.Image, error) {
	base := empty.Image
	layerType := types.DockerLayer
	if oci {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		layerType = types.OCILayer
	}
	adds := make([]mutate.Addendum, 0, len(layerSizes))
	for i, size := range layerSizes {
		// random.Layer writes a tar with one regular file of random bytes;
		// the layer is gzip'd on the fly and its diff_id is the tar's sha256.
		l, err := random.Layer(size, layerType)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{
			Layer: l,
			History: v1.History{
				CreatedBy: fmt.Sprintf("breakwater e2e seed layer %d", i+1),
			},
		})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, err
	}
	// mutate.Append filled rootfs.diff_ids and history; keep them and set
	// the platform and a command.
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = "amd64"
	cfg.Created = v1.Time{Time: time.Now().UTC().Truncate(time.Second)}
	cfg.RootFS.Type = "layers"
	cfg.Config.Cmd = []string{"/bin/true"}
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return mutate.ConfigFile(img, cfg)
}

// buildRunnable returns an OCI image of two layers, the file at bin as
// /NAME (mode 0755) and /image holding repo, with /NAME as its entrypoint,
// for linux on this machine's architecture. The same file and repository
// give the same digest.
func buildRunnable(bin, repo string) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(bin)
	epoch := time.Unix(0, 0).UTC()
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var adds []mutate.Addendum
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{name, 0o755, b}, {"image", 0o644, []byte(repo + "\n")}} {
		layer, err := fileLayer(f.name, f.mode, f.data, epoch)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "breakwater e2e seed --binary: /" + f.name, Created: v1.Time{Time: epoch}}})
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
	cfg.Architecture = runtime.GOARCH
	cfg.Created = v1.Time{Time: epoch}
	cfg.RootFS.Type = "layers"
	cfg.Config.Entrypoint = []string{"/" + name}
	return mutate.ConfigFile(img, cfg)
}

// fileLayer is an OCI layer (tar+gzip) holding one regular file.
func fileLayer(name string, mode int64, data []byte, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	tarBytes := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
