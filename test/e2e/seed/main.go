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
package main

import (
	"flag"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
	flag.Parse()
	if *registry == "" {
		fmt.Fprintln(os.Stderr, "seed: --registry is required")
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
		d, err := push(*registry, im.repo, *tag, im.oci)
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

func push(registry, repo, tag string, oci bool) (v1.Hash, error) {
	img, err := build(oci)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("build image: %w", err)
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
