// Package testgcs runs a Google Cloud Storage emulator (fake-gcs-server) on
// loopback for tests, with a bucket made for them, so that distribution's
// gcs driver, which Breakwater's fleet may share its blobs through, is
// exercised against a server that speaks GCS's JSON and upload APIs rather
// than against a mock. It does not check credentials or signed URLs: those
// are GCS's own and are not tested here.
//
// The server binary comes from scripts/gcs.sh, which installs it with go
// install when it is missing. When the script or the server fails, the test
// fails rather than skips.
package testgcs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/testproc"
)

// Server is a running emulator with one empty bucket.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:PORT.
	Endpoint string
	Bucket   string
	keyFile  string
}

// Start runs a server until the test ends, with its data in a temporary
// directory, and points GCS's client library at it: it sets
// STORAGE_EMULATOR_HOST for the rest of the test (so the test must not be
// parallel), which makes the library send no credentials.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := testproc.Script("gcs.sh")
	if err != nil {
		t.Fatalf("no GCS emulator (CI installs it with scripts/gcs.sh): %v", err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	s := &Server{Bucket: "breakwater-test", keyFile: ServiceAccountKey(t)}
	// A directory under the root is a bucket when the server starts.
	if err := os.MkdirAll(filepath.Join(root, s.Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := testproc.FreeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	s.Endpoint = "http://" + addr
	cmd := exec.Command(bin, "-scheme", "http", "-host", host, "-port", port, "-public-host", addr,
		"-backend", "filesystem", "-filesystem-root", root, "-log-level", "warn")
	p, err := testproc.Start(cmd, filepath.Join(dir, "fake-gcs-server.log"))
	if err != nil {
		t.Fatalf("fake-gcs-server: %v", err)
	}
	t.Cleanup(p.Kill)
	// Up once it lists the bucket.
	if err := p.WaitReady(60*time.Second, 50*time.Millisecond, testproc.HTTPStatus(s.Endpoint+"/storage/v1/b/"+s.Bucket, http.StatusOK)); err != nil {
		t.Fatalf("fake-gcs-server on %s: %v\n%s", addr, err, p.Log())
	}
	t.Setenv("STORAGE_EMULATOR_HOST", s.Endpoint)
	return s
}

// DriverParameters returns the parameters of distribution's gcs driver for
// the server's bucket, under rootdirectory. The driver needs credentials to
// start; the key is one made for the test, which the emulator never checks.
func (s *Server) DriverParameters(rootdirectory string) map[string]any {
	return map[string]any{"bucket": s.Bucket, "keyfile": s.keyFile, "rootdirectory": rootdirectory}
}

// ServiceAccountKey writes a service account's JSON key, with an RSA key
// made for the test, and returns its path. Its token_uri is a closed port:
// nothing that uses it reaches the network.
func ServiceAccountKey(t testing.TB) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "breakwater-test",
		"private_key_id": "0123456789abcdef",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "breakwater@breakwater-test.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      "http://127.0.0.1:1/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
