// Package auth provides the credentials Breakwater presents to upstream
// registries. Each upstream gets its own authenticator, built from that
// upstream's configuration alone, so credentials never travel to another
// registry.
package auth

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Credentials is how one upstream authenticates.
type Credentials struct {
	Username string
	Password string
	// PasswordFile is read when the authenticator is built, and again
	// whenever the file changes, so that a rotated Secret (which the
	// kubelet swaps in place) is used without a reload; trailing newlines
	// are dropped.
	PasswordFile string
	// DockerConfig resolves credentials from the Docker config file
	// ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
	DockerConfig bool
	// Helper names a credential helper: docker-credential-Helper on the
	// PATH is asked for credentials, and asked again every 30 s, so that
	// short-lived tokens (ECR, GAR, ACR) are refreshed.
	Helper string
}

// For returns the authenticator for the registry clients call host
// (e.g. "docker.io"). Without credentials it is anonymous, which still
// performs the bearer-token handshake public registries require.
func For(host string, c Credentials) (authn.Authenticator, error) {
	switch {
	case c.Helper != "":
		return newHelperAuth(host, c.Helper)
	case c.DockerConfig:
		reg, err := name.NewRegistry(host)
		if err != nil {
			return nil, fmt.Errorf("credentials for %s: %w", host, err)
		}
		a, err := authn.DefaultKeychain.Resolve(reg)
		if err != nil {
			return nil, fmt.Errorf("credentials for %s from the Docker config: %w", host, err)
		}
		return a, nil
	case c.Username != "" && c.PasswordFile != "":
		a := &passwordFileAuth{username: c.Username, path: c.PasswordFile}
		if err := a.load(); err != nil {
			return nil, fmt.Errorf("credentials for %s: password_file: %w", host, err)
		}
		return a, nil
	case c.Username != "":
		if c.Password == "" {
			return nil, fmt.Errorf("credentials for %s: %w", host, errors.New("username without a password"))
		}
		return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password}), nil
	default:
		return authn.Anonymous, nil
	}
}

// passwordFileAuth is a username and the password in a file, re-read when
// the file changes. A file that cannot be read or is empty leaves the
// last good password in use: a Secret half way through an update must not
// turn credentials into none.
type passwordFileAuth struct {
	username, path string

	mu       sync.Mutex
	seen     os.FileInfo
	password string
}

// load reads the file; the password is kept only if it is not empty.
func (a *passwordFileAuth) load() error {
	fi, err := os.Stat(a.path)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(a.path)
	if err != nil {
		return err
	}
	password := strings.TrimRight(string(b), "\r\n")
	if password == "" {
		return fmt.Errorf("%s is empty", a.path)
	}
	a.seen, a.password = fi, password
	return nil
}

func (a *passwordFileAuth) Authorization() (*authn.AuthConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// The kubelet updates a Secret volume by swapping a symlink, which
	// Stat follows: a new file, another inode and modification time.
	if fi, err := os.Stat(a.path); err == nil && !sameFile(fi, a.seen) {
		_ = a.load()
	}
	return &authn.AuthConfig{Username: a.username, Password: a.password}, nil
}

func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}
