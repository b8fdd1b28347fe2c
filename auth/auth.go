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

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Credentials is how one upstream authenticates.
type Credentials struct {
	Username string
	Password string
	// PasswordFile is read when the authenticator is built: at start and at
	// each configuration reload; trailing newlines are dropped.
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
	case c.Username != "":
		password := c.Password
		if c.PasswordFile != "" {
			b, err := os.ReadFile(c.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("credentials for %s: password_file: %w", host, err)
			}
			password = strings.TrimRight(string(b), "\r\n")
		}
		if password == "" {
			return nil, fmt.Errorf("credentials for %s: %w", host, errors.New("username without a password"))
		}
		return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: password}), nil
	default:
		return authn.Anonymous, nil
	}
}
