package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testproc"
	"github.com/breakwater-registry/breakwater/internal/testredis"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestServeFleet: two serve loops configured as a fleet from a file
// (redis.addr, cluster.secret_file) and the --advertise override fetch a
// blob from the upstream once between them.
func TestServeFleet(t *testing.T) {
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	img, err := random.Image(300_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/fleet:v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			time.Sleep(300 * time.Millisecond) // both replicas' fetches overlap
		}
		return false
	})
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("redis:\n  addr: %s\ncluster:\n  secret_file: %s\n", rds.Addr, secret)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without --advertise serve refuses to start: a replica must be
	// reachable.
	cfg, err := loadConfig(file, testproc.FreeAddr(t), filepath.Join(dir, "cache-x"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := serve(t.Context(), cfg, slog.New(slog.DiscardHandler), nil, nil); err == nil || !strings.Contains(err.Error(), "cluster.advertise (or --advertise): required") {
		t.Fatalf("serve without an advertised address: %v", err)
	}
	var addrs []string
	for i := range 2 {
		listen := testproc.FreeAddr(t)
		cfg, err := loadConfig(file, listen, filepath.Join(dir, fmt.Sprintf("cache-%d", i)), "1h", []string{"docker.io=" + up.URL},
			func(c *config.Config) { c.Cluster.Advertise = "http://" + listen })
		if err != nil {
			t.Fatal(err)
		}
		addr, stop := startServeLoop(t, cfg, slog.New(slog.DiscardHandler), nil)
		t.Cleanup(func() { _ = stop() })
		addrs = append(addrs, addr)
	}

	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := "http://" + addrs[i%2] + "/v2/library/fleet/"
			resp, err := http.Get(base + "manifests/v1")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			resp, err = http.Get(base + "blobs/" + ld.String())
			if err != nil {
				errs <- err
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || int64(len(body)) == 0 {
				errs <- fmt.Errorf("replica %d: %s %v", i%2, resp.Status, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(up.Requests(http.MethodGet, "/blobs/"+ld.String())); n != 1 {
		t.Errorf("%d upstream GETs of the layer for two replicas, want 1", n)
	}
}
