package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testcerts"
	"github.com/breakwater-registry/breakwater/internal/testproc"
	"github.com/breakwater-registry/breakwater/internal/testredis"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestServeFleet: two serve loops configured as a fleet from a file
// (redis.addr, cluster.secret_file) and the --advertise override fetch a
// blob from the upstream once between them, the follower streaming it from
// the owner: over plain HTTP, over TLS with the replicas' certificates
// verified against cluster.ca_file, and with mutual TLS, where each
// replica shows cluster.cert_file to the other.
func TestServeFleet(t *testing.T) {
	for _, mode := range []string{"http", "https", "https, a shared name", "mutual TLS"} {
		t.Run(mode, func(t *testing.T) { serveFleet(t, mode) })
	}
}

func serveFleet(t *testing.T, mode string) {
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
	text := fmt.Sprintf("redis:\n  addr: %s\ncluster:\n  secret_file: %s\n", rds.Addr, secret)
	scheme, client := "http", http.DefaultClient
	if mode != "http" {
		ca := testcerts.NewCA(t, "breakwater-fleet-ca")
		certFile, keyFile := ca.WriteServer(t, dir, 2)
		tc := &tls.Config{RootCAs: ca.Pool()}
		if mode == "https, a shared name" {
			// The pods' IPs are in no certificate; the peers Service's
			// name is in every replica's.
			const name = "breakwater-peers.breakwater.svc"
			certFile, keyFile = ca.WriteServerNamed(t, dir, 2, name)
			text += "  server_name: " + name + "\n"
			tc.ServerName = name
		}
		text += fmt.Sprintf("  ca_file: %s\ntls:\n  cert_file: %s\n  key_file: %s\n", ca.WriteCA(t, dir), certFile, keyFile)
		if mode == "mutual TLS" {
			peerCert, peerKey := ca.WriteClient(t, dir, 3)
			text = strings.Replace(text, "tls:\n", fmt.Sprintf("  cert_file: %s\n  key_file: %s\ntls:\n  client_ca_file: %s\n", peerCert, peerKey, ca.WriteCA(t, dir)), 1)
			tc.Certificates = []tls.Certificate{ca.Client(t, 4)}
		}
		scheme, client = "https", &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
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
			func(c *config.Config) { c.Cluster.Advertise = scheme + "://" + listen })
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
			base := scheme + "://" + addrs[i%2] + "/v2/library/fleet/"
			resp, err := client.Get(base + "manifests/v1")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			resp, err = client.Get(base + "blobs/" + ld.String())
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
	// The follower says so in the metrics the docs name.
	sum := map[string]float64{}
	sample := regexp.MustCompile(`^(breakwater_fleet_followed_total|breakwater_fleet_peer_fetched_bytes_total|breakwater_fleet_alone_total)\{([^}]*)\} (\S+)$`)
	for _, addr := range addrs {
		resp, err := client.Get(scheme + "://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if m := sample.FindStringSubmatch(line); m != nil {
				v, _ := strconv.ParseFloat(m[3], 64)
				name := m[1]
				if strings.Contains(m[2], `what="tag"`) {
					name += "{tag}" // the blob's follow is what is asked for
				}
				sum[name] += v
			}
		}
	}
	if sum["breakwater_fleet_followed_total"] < 1 || sum["breakwater_fleet_peer_fetched_bytes_total"] < 1 || sum["breakwater_fleet_alone_total"] != 0 {
		t.Errorf("fleet metrics over both replicas: %v, want a follow and its bytes, nothing alone", sum)
	}
}

// TestFleetKillOwner kills with SIGKILL the replica process that owns a
// fetch, in the middle of the blob: the client of the other replica, which
// was streaming it from the owner, still gets every byte, verified. Its
// lease outlives the owner for its TTL, so the other replica fetches the
// rest alone, resuming from the upstream where the owner's stream stopped.
func TestFleetKillOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	rds := testredis.Start(t)
	up := testupstream.Start(t)
	ld, content := pushOneLayer(t, up, "library/fleet:v1", 4<<20)

	release := make(chan struct{})
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) || r.Header.Get("Range") != "" {
			return false // a resume with Range is answered in full by the registry
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		_, _ = w.Write(content[:len(content)/2])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return true
		}
		_, _ = w.Write(content[len(content)/2:])
		return true
	})

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(name string) (*exec.Cmd, string) {
		addr := testproc.FreeAddr(t)
		cfg := filepath.Join(dir, name+".yaml")
		yaml := fmt.Sprintf("resilience:\n  retry:\n    deadline: 5s\nredis:\n  addr: %s\ncluster:\n  secret_file: %s\n", rds.Addr, secret)
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config", cfg, "--listen", addr, "--advertise", "http://"+addr,
			"--cache-dir", filepath.Join(dir, name), "--upstream", "docker.io="+up.URL, "--tag-ttl", "1h")
		if testing.Verbose() {
			cmd.Stderr = os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		deadline := time.Now().Add(20 * time.Second)
		for {
			if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
				resp.Body.Close()
				return cmd, addr
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ownerCmd, owner := start("owner")
	_, other := start("other")
	for _, addr := range []string{owner, other} {
		resp, err := http.Get("http://" + addr + "/v2/library/fleet/manifests/v1")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("manifest through %s: %v %v", addr, resp, err)
		}
		resp.Body.Close()
	}

	go func() {
		if resp, err := http.Get("http://" + owner + "/v2/library/fleet/blobs/" + ld.String()); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(up.Requests(http.MethodGet, "/blobs/"+ld.String())) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the owner never asked the upstream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	result := pullBlob("http://"+other+"/v2/library/fleet/blobs/"+ld.String(), content)
	time.Sleep(500 * time.Millisecond) // the other replica streams from the owner
	if err := ownerCmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("the other replica's client: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the other replica's client got no answer within 60 s")
	}
	var resumed bool
	for _, r := range up.Requests(http.MethodGet, "/blobs/"+ld.String()) {
		resumed = resumed || strings.HasPrefix(r.Header.Get("Range"), "bytes=")
	}
	if !resumed {
		t.Error("the other replica did not resume from the upstream with a Range")
	}
}

func TestBracketIPv6(t *testing.T) {
	for in, want := range map[string]string{
		"http://fd00::5:5000":       "http://[fd00::5]:5000",
		"https://2001:db8::1:443":   "https://[2001:db8::1]:443",
		"http://[fd00::5]:5000":     "http://[fd00::5]:5000",
		"http://10.0.0.5:5000":      "http://10.0.0.5:5000",
		"http://breakwater-0:5000":  "http://breakwater-0:5000",
		"http://::ffff:10.0.0.5:80": "http://::ffff:10.0.0.5:80", // IPv4-mapped: left for the check
		"10.0.0.5:5000":             "10.0.0.5:5000",
	} {
		if got := bracketIPv6(in); got != want {
			t.Errorf("bracketIPv6(%q) = %q, want %q", in, got, want)
		}
	}
	// What it makes passes the configuration's check.
	cfg, err := loadConfig("", "", "", "", nil, func(c *config.Config) {
		c.Redis.Addr, c.Cluster.SecretFile, c.Cluster.Advertise = "127.0.0.1:6379", "secret", bracketIPv6("http://fd00::5:5000")
	})
	if err != nil || cfg.Cluster.Advertise != "http://[fd00::5]:5000" {
		t.Fatalf("%v %q", err, cfg.Cluster.Advertise)
	}
}

// pushOneLayer pushes a random image of one layer of size bytes as ref and
// returns the layer's digest and compressed bytes.
func pushOneLayer(t *testing.T, up *testupstream.Upstream, ref string, size int64) (v1.Hash, []byte) {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, ref, img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	content, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return ld, content
}
