// Command seed pushes incompressible test images to a plain-HTTP registry
// for the k6 load tests (loadtest/k6) or for trying Breakwater by hand.
//
//	go run ./loadtest/seed -registry 127.0.0.1:5001 \
//	    -image library/storm:v1=4x2MiB \
//	    -image library/small:v1=64KiB,3000 \
//	    -index library/multi:v1=2x1MiB
//
// -image REPO:TAG=SIZES pushes a linux/amd64 OCI image with one layer per
// size (a comma-separated list; NxSIZE repeats; sizes like 4096, 64KiB,
// 2MiB, 1GiB). -index REPO:TAG=SIZES pushes an OCI index of a linux/amd64
// and a linux/arm64 image, each with such layers. Every layer is an
// uncompressed tar of fresh pseudo-random bytes (see loadtest/internal/testimage),
// so every run pushes content no registry has cached.
//
// It prints one line per image, REPO:TAG@DIGEST SIZE, where SIZE is the sum
// of the config and layer blobs.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

type specs []string

func (s *specs) String() string     { return strings.Join(*s, " ") }
func (s *specs) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	registry := flag.String("registry", "", "registry host:port to push to over plain HTTP (required)")
	var images, indexes specs
	flag.Var(&images, "image", "REPO:TAG=SIZES: push a single-platform image (repeatable)")
	flag.Var(&indexes, "index", "REPO:TAG=SIZES: push a linux/amd64 + linux/arm64 index (repeatable)")
	flag.Parse()
	if *registry == "" || len(images)+len(indexes) == 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: seed -registry HOST:PORT [-image REPO:TAG=SIZES]... [-index REPO:TAG=SIZES]...")
		os.Exit(2)
	}
	for _, group := range []struct {
		specs specs
		index bool
	}{{images, false}, {indexes, true}} {
		for _, spec := range group.specs {
			p, err := push(*registry, spec, group.index)
			if err != nil {
				fmt.Fprintf(os.Stderr, "seed: %s: %v\n", spec, err)
				os.Exit(1)
			}
			fmt.Printf("%s:%s@%s %d\n", p.Repo, p.Tag, p.Digest, p.Size)
		}
	}
}

func push(registry, spec string, index bool) (testimage.Pushed, error) {
	ref, sizeList, ok := strings.Cut(spec, "=")
	repo, tag, ok2 := strings.Cut(ref, ":")
	if !ok || !ok2 || repo == "" || tag == "" {
		return testimage.Pushed{}, fmt.Errorf("want REPO:TAG=SIZES")
	}
	sizes, err := parseSizes(sizeList)
	if err != nil {
		return testimage.Pushed{}, err
	}
	if !index {
		layers, err := testimage.Layers(sizes...)
		if err != nil {
			return testimage.Pushed{}, err
		}
		img, err := testimage.Image("amd64", layers)
		if err != nil {
			return testimage.Pushed{}, err
		}
		return testimage.Push(registry, repo, tag, img)
	}
	archs := []string{"amd64", "arm64"}
	imgs := make([]v1.Image, 0, len(archs))
	for _, arch := range archs {
		layers, err := testimage.Layers(sizes...)
		if err != nil {
			return testimage.Pushed{}, err
		}
		img, err := testimage.Image(arch, layers)
		if err != nil {
			return testimage.Pushed{}, err
		}
		imgs = append(imgs, img)
	}
	return testimage.PushIndex(registry, repo, tag, archs, imgs)
}

// parseSizes reads "4x2MiB,64KiB,3000".
func parseSizes(list string) ([]int64, error) {
	var out []int64
	for _, item := range strings.Split(list, ",") {
		count := 1
		if n, rest, ok := strings.Cut(item, "x"); ok {
			c, err := strconv.Atoi(n)
			if err != nil || c < 1 || c > 128 {
				return nil, fmt.Errorf("bad repeat count in %q", item)
			}
			count, item = c, rest
		}
		sz, err := testimage.ParseSize(item)
		if err != nil {
			return nil, err
		}
		for range count {
			out = append(out, sz)
		}
	}
	return out, nil
}
