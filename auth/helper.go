package auth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker-credential-helpers/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// helperTTL is how long a helper's answer is used before the helper is
// asked again: short next to the lifetime of the tokens helpers hand out
// (an hour for GAR, twelve for ECR), long next to a pull.
const helperTTL = 30 * time.Second

// helperTimeout bounds one run of a helper.
const helperTimeout = 30 * time.Second

// helperAuth asks a docker-credential-NAME program for credentials, as
// docker and containerd do with credHelpers, and asks it again when its
// answer is helperTTL old, so that short-lived tokens are refreshed
// without a restart.
type helperAuth struct {
	program string // docker-credential-NAME
	server  string // what the helper is asked about
	ttl     time.Duration
	now     func() time.Time

	mu     sync.Mutex
	cached *authn.AuthConfig
	at     time.Time
}

func newHelperAuth(host, helper string) (*helperAuth, error) {
	reg, err := name.NewRegistry(host)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", host, err)
	}
	server := reg.RegistryStr()
	if server == name.DefaultRegistry {
		// The key Docker Hub's credentials are stored under, by every
		// helper and by docker login.
		server = "https://index.docker.io/v1/"
	}
	return &helperAuth{program: "docker-credential-" + helper, server: server, ttl: helperTTL, now: time.Now}, nil
}

// Authorization returns the helper's credentials, running it when its last
// answer is too old. A helper that fails is an error, not anonymous access:
// the upstream would only refuse, and the log must say why.
func (h *helperAuth) Authorization() (*authn.AuthConfig, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cached != nil && h.now().Sub(h.at) < h.ttl {
		return h.cached, nil
	}
	creds, err := client.Get(h.run, h.server)
	if err != nil {
		return nil, fmt.Errorf("credential helper %s for %s: %w", h.program, h.server, err)
	}
	cfg := &authn.AuthConfig{Username: creds.Username, Password: creds.Secret}
	if creds.Username == "<token>" {
		// The helpers' way of handing out an identity (refresh) token.
		cfg = &authn.AuthConfig{IdentityToken: creds.Secret}
	}
	h.cached, h.at = cfg, h.now()
	return cfg, nil
}

// run is the helper protocol's program: "get" with the server on stdin,
// the credentials as JSON on stdout, bounded in time.
func (h *helperAuth) run(args ...string) client.Program {
	return &helperRun{program: h.program, args: args}
}

type helperRun struct {
	program string
	args    []string
	input   io.Reader
}

func (p *helperRun) Input(in io.Reader) { p.input = in }

func (p *helperRun) Output() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.program, p.args...)
	cmd.Stdin = p.input
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && stderr.Len() > 0 {
		// The protocol puts a helper's error text on stdout; some write
		// it to stderr.
		return out, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, err
}
