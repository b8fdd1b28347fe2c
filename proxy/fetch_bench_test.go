package proxy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// The coalesced read path: one upstream fetch streamed to clients that
// arrive while it runs, measured against the same clients pulling straight
// from the upstream and against a warm cache, in one run so that the
// ratios mean something on a noisy machine:
//
//	go test -run '^$' -bench Blob -benchtime 20x ./proxy
//
// MB/s counts bytes delivered to all clients. Every client hashes what it
// gets; a wrong byte fails the benchmark.

const benchLayerSize = 16 << 20

func BenchmarkColdBlob(b *testing.B) {
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("via=breakwater/clients=%d", clients), func(b *testing.B) {
			benchBlob(b, clients, "breakwater")
		})
		b.Run(fmt.Sprintf("via=direct/clients=%d", clients), func(b *testing.B) {
			benchBlob(b, clients, "direct")
		})
	}
}

func BenchmarkWarmBlob(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchBlob(b, clients, "warm")
		})
	}
}

// benchBlob has clients GET one blob at once, b.N times. via is
// "breakwater" (a fresh, empty mirror each time), "warm" (one mirror that
// has the blob) or "direct" (the upstream itself).
func benchBlob(b *testing.B, clients int, via string) {
	up := testupstream.Start(b)
	img := randomImage(b, benchLayerSize, 1, types.DockerManifestSchema2)
	up.PushImage(b, "library/bench:v1", img)
	layer := layersOf(b, img)[0]
	dgst := digestOf(b, layer)
	size := int64(len(compressedBytes(b, layer)))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: time.Minute}

	newCache := func() *mirror {
		m := newMirror(b, up.URL, mirrorOpts{tagTTL: time.Hour})
		m.get("/v2/library/bench/manifests/v1") // links the blob to the repository
		return m
	}
	var m *mirror
	if via == "warm" {
		m = newCache()
		if err := getVerified(client, m.srv.URL, dgst, size); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(size * int64(clients))
	b.ReportAllocs()
	fetchesBefore := up.Count(http.MethodGet, "/blobs/"+dgst)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		base := up.URL
		switch via {
		case "breakwater":
			m = newCache()
			base = m.srv.URL
		case "warm":
			base = m.srv.URL
		}
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		b.StartTimer()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- getVerified(client, base, dgst, size)
			}()
		}
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		if via == "breakwater" {
			m.close()
		}
		b.StartTimer()
	}
	b.StopTimer()
	fetches := up.Count(http.MethodGet, "/blobs/"+dgst) - fetchesBefore
	b.ReportMetric(float64(fetches)/float64(b.N), "upstream-GETs/op")
	if via == "breakwater" && fetches != b.N {
		b.Fatalf("%d upstream GETs for %d cold rounds of %d clients, want one per round", fetches, b.N, clients)
	}
}

// getVerified GETs the blob from base and checks its size and digest.
func getVerified(c *http.Client, base, dgst string, size int64) error {
	resp, err := c.Get(base + "/v2/library/bench/blobs/" + dgst)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET blob: %s", resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("GET blob: after %d bytes: %w", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != size || got != dgst {
		return fmt.Errorf("GET blob: %d bytes hashing to %s, want %d bytes of %s", n, got, size, dgst)
	}
	return nil
}

// BenchmarkWarmManifestByTag is the request a fleet sends most: HEAD then
// GET of a tag the mirror has fresh, as a runtime sends them.
func BenchmarkWarmManifestByTag(b *testing.B) {
	up := testupstream.Start(b)
	img := randomImage(b, 1024, 2, types.DockerManifestSchema2)
	up.PushImage(b, "library/bench:v1", img)
	m := newMirror(b, up.URL, mirrorOpts{tagTTL: time.Hour})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	want, err := img.Digest()
	if err != nil {
		b.Fatal(err)
	}
	probe := func(method string) error {
		req, _ := http.NewRequest(method, m.srv.URL+"/v2/library/bench/manifests/v1", nil)
		req.Header.Set("Accept", string(types.DockerManifestSchema2))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != want.String() {
			return fmt.Errorf("%s: %s, digest %q, want %s", method, resp.Status, resp.Header.Get("Docker-Content-Digest"), want)
		}
		return nil
	}
	if err := probe(http.MethodGet); err != nil { // warms the tag
		b.Fatal(err)
	}
	upstreamBefore := up.Count("", "/manifests/")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			method := http.MethodHead
			if i%2 == 1 {
				method = http.MethodGet
			}
			if err := probe(method); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if n := up.Count("", "/manifests/") - upstreamBefore; n != 0 {
		b.Fatalf("%d upstream requests for a fresh tag", n)
	}
}

// BenchmarkWarmSmallBlob is a blob GET's fixed cost — routing, access,
// the cache lookup, the log line, the headers — with almost no body: what
// each of a herd's hundreds of simultaneous requests spends before its
// first byte.
//
//	go test -run '^$' -bench WarmSmallBlob -benchtime 20000x ./proxy
func BenchmarkWarmSmallBlob(b *testing.B) {
	up := testupstream.Start(b)
	img := randomImage(b, 1024, 1, types.DockerManifestSchema2)
	up.PushImage(b, "library/bench:v1", img)
	layer := layersOf(b, img)[0]
	dgst := digestOf(b, layer)
	size := int64(len(compressedBytes(b, layer)))
	m := newMirror(b, up.URL, mirrorOpts{tagTTL: time.Hour})
	m.get("/v2/library/bench/manifests/v1")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	if err := getVerified(client, m.srv.URL, dgst, size); err != nil { // caches it
		b.Fatal(err)
	}
	before := up.Count(http.MethodGet, "/blobs/")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := getVerified(client, m.srv.URL, dgst, size); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if n := up.Count(http.MethodGet, "/blobs/") - before; n != 0 {
		b.Fatalf("%d upstream blob GETs for a cached blob", n)
	}
}
