package objstore_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/testgcs"
	"github.com/breakwater-registry/breakwater/objstore"
)

// TestCloudDriversAreCompiledIn: Open reaches distribution's gcs and azure
// drivers, which build their clients from the parameters without asking
// the network; what they refuse, they refuse in their own words, not
// distribution's "StorageDriver not registered", which a driver left out
// of the build gives.
func TestCloudDriversAreCompiledIn(t *testing.T) {
	keyfile := testgcs.ServiceAccountKey(t)
	notAKey := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(notAKey, []byte(`{"type": "authorized_user"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Azure's shared keys are base64; this one is no account's.
	sharedKey := map[string]any{"type": "shared_key"}
	for _, c := range []struct {
		name, driver string
		params       map[string]any
		want         string // "": opens
	}{
		{"gcs with a key file", "gcs", map[string]any{"bucket": "breakwater", "keyfile": keyfile, "rootdirectory": "/bw", "chunksize": int64(16 << 20)}, ""},
		{"gcs without a bucket", "gcs", map[string]any{"keyfile": keyfile}, "no bucket parameter provided"},
		{"gcs with a key file that is not one", "gcs", map[string]any{"bucket": "b", "keyfile": notAKey}, "google: read JWT from JSON credentials"},
		{"gcs with a key file that is not there", "gcs", map[string]any{"bucket": "b", "keyfile": filepath.Join(t.TempDir(), "none.json")}, "no such file or directory"},
		{"gcs with chunks not of 256 KiB", "gcs", map[string]any{"bucket": "b", "keyfile": keyfile, "chunksize": int64(300 << 10)}, "chunksize should be a multiple of 262144"},
		{"azure with a shared key", "azure", map[string]any{"accountname": "breakwater", "accountkey": "YnJlYWt3YXRlcg==", "container": "breakwater", "credentials": sharedKey}, ""},
		{"azure with a client secret", "azure", map[string]any{"accountname": "breakwater", "container": "breakwater",
			"credentials": map[string]any{"type": "client_secret", "clientid": "00000000-0000-0000-0000-000000000001", "tenantid": "00000000-0000-0000-0000-000000000002", "secret": "s"}}, ""},
		{"azure without an account", "azure", map[string]any{"container": "breakwater", "credentials": sharedKey}, "no accountname parameter provided"},
		{"azure without a container", "azure", map[string]any{"accountname": "breakwater", "credentials": sharedKey}, "no container parameter provide"},
		{"azure without a credentials type", "azure", map[string]any{"accountname": "breakwater", "container": "breakwater"}, `invalid credentials type: ""`},
		{"azure with a key that is not base64", "azure", map[string]any{"accountname": "breakwater", "accountkey": "not base64!", "container": "breakwater", "credentials": sharedKey}, "shared key credentials"},
		{"azure with a tenant that is none", "azure", map[string]any{"accountname": "breakwater", "container": "breakwater",
			"credentials": map[string]any{"type": "client_secret", "clientid": "c", "tenantid": "no/tenant", "secret": "s"}}, "client secret credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Nothing here should wait on anything: a driver that dialled
			// would fail on this machine, and not hang the test.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := objstore.Open(ctx, c.driver, c.params)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Open: %v", err)
			case c.want == "" && s.Name() != c.driver:
				t.Fatalf("Open(%s): a store of driver %q", c.driver, s.Name())
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Open: error %v, want the driver's %q", err, c.want)
			case err != nil && strings.Contains(err.Error(), "not registered"):
				t.Fatalf("Open: %v: the driver is not in the build", err)
			}
		})
	}
	// What the test tells apart: a driver not in the build.
	if _, err := objstore.Open(context.Background(), "oss", map[string]any{}); err == nil || !strings.Contains(err.Error(), "StorageDriver not registered: oss") {
		t.Errorf("Open of a driver not in the build: %v", err)
	}
}

// request is what a fake cloud endpoint was asked.
type request struct{ method, path, auth string }

// recorder is an endpoint that answers every request 404, as a store with
// nothing in it would, and keeps what it was asked.
func recorder(t *testing.T, answer func(w http.ResponseWriter)) (*httptest.Server, func() []request) {
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, request{r.Method, r.URL.Path, r.Header.Get("Authorization")})
		mu.Unlock()
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), got...)
	}
}

// TestAzureAsksItsServiceURL: the parameters reach the azure driver as
// Breakwater passes them: it asks serviceurl, signs with the account's
// shared key and looks under the container and rootdirectory.
func TestAzureAsksItsServiceURL(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter) {
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		w.WriteHeader(http.StatusNotFound)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := objstore.Open(ctx, "azure", map[string]any{
		"accountname": "breakwater", "accountkey": "YnJlYWt3YXRlcg==", "container": "fleet",
		"serviceurl": srv.URL, "rootdirectory": "/bw", "credentials": map[string]any{"type": "shared_key"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// An endpoint that is no Azure may make Check fail; what matters is
	// whom the driver asked, and how.
	_ = s.Check(ctx)
	reqs := got()
	if len(reqs) == 0 {
		t.Fatal("the driver asked its serviceurl nothing")
	}
	if r := reqs[0]; r.method != http.MethodHead || r.path != "/fleet/bw/blobs" || !strings.HasPrefix(r.auth, "SharedKey breakwater:") {
		t.Errorf("first request %+v, want HEAD /fleet/bw/blobs signed SharedKey breakwater:…", r)
	}
}

// TestGCSAsksItsEndpoint: the parameters reach the gcs driver as
// Breakwater passes them: it looks in the bucket, under rootdirectory.
// STORAGE_EMULATOR_HOST, which GCS's client library reads, points it at a
// fake endpoint, which it asks without a token.
func TestGCSAsksItsEndpoint(t *testing.T) {
	srv, got := recorder(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error": {"code": 404, "message": "No such object"}}`))
	})
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := objstore.Open(ctx, "gcs", map[string]any{"bucket": "fleet", "keyfile": testgcs.ServiceAccountKey(t), "rootdirectory": "/bw"})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Check(ctx)
	reqs := got()
	if len(reqs) == 0 {
		t.Fatal("the driver asked its endpoint nothing")
	}
	if r := reqs[0]; r.method != http.MethodGet || r.path != "/storage/v1/b/fleet/o/bw/blobs" {
		t.Errorf("first request %+v, want GET /storage/v1/b/fleet/o/bw/blobs", r)
	}
}
