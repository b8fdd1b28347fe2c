// Package testdistribution runs Debian's docker-registry (distribution 2.8)
// on loopback for tests, with filesystem storage and htpasswd
// authentication: the registry Docker Hub's behaviour is closest to, and
// the one issue 10's attacks were found against. Where a test must show
// what a real 2.8 upstream says (which manifests it accepts, which
// repository has which blob), it runs this one rather than the in-process
// distribution v3 of internal/testupstream.
//
// The binary comes from scripts/docker-registry.sh, which installs Debian's
// docker-registry package with apt-get when it is missing (as root); a
// registry then starts in well under a second. When the script or the
// registry fails, the test fails rather than skips: CI relies on the
// script to provide the binary.
package testdistribution

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/breakwater-registry/breakwater/internal/testproc"
)

// Registry is a running docker-registry that requires Basic credentials
// for every request. Like Docker Hub it accepts manifests whose foreign
// layers have http(s) URLs, without their blobs (2.8 refuses any URL
// unless validation.manifests.urls.allow is set).
type Registry struct {
	// Host is host:port, as image references name it.
	Host string
	// URL is the base URL, http://host:port.
	URL string
	// User and Password are the one account in its htpasswd file.
	User, Password string
}

// Start runs a registry with one user until the test ends.
func Start(t testing.TB, user, password string) *Registry {
	t.Helper()
	bin, err := testproc.Script("docker-registry.sh")
	if err != nil {
		t.Fatalf("no docker-registry (CI installs it with scripts/docker-registry.sh): %v", err)
	}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &Registry{Host: testproc.FreeAddr(t), User: user, Password: password}
	r.URL = "http://" + r.Host
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
auth:
  htpasswd:
    realm: testdistribution
    path: %s
validation:
  manifests:
    urls:
      allow:
        - ^https?://
`, filepath.Join(dir, "data"), r.Host, htpasswd)
	configPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := testproc.Start(exec.Command(bin, "serve", configPath), filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatalf("docker-registry: %v", err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(p.Kill)
	// Without credentials, a registry that serves answers GET /v2/ 401.
	if err := p.WaitReady(20*time.Second, 20*time.Millisecond, testproc.HTTPStatus(r.URL+"/v2/", http.StatusUnauthorized)); err != nil {
		t.Fatalf("docker-registry on %s: %v\n%s", r.Host, err, p.Log())
	}
	return r
}
