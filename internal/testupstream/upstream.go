// Package testupstream runs a real registry (distribution v3, in-memory
// storage) on an httptest server for tests, counts the requests it serves,
// and can be told to misbehave in front of it.
package testupstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory" // storage driver for the test registry
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
)

// Request is one request the upstream received.
type Request struct {
	Method string
	Path   string
	Query  string
	Header http.Header
}

// Hook sees each request before the registry does. It returns true when it
// answered the request itself.
type Hook func(w http.ResponseWriter, r *http.Request) bool

// Upstream is a running registry.
type Upstream struct {
	Server *httptest.Server
	// Host is host:port, as image references name it.
	Host string
	// URL is the base URL, http://host:port.
	URL string

	registry http.Handler

	mu       sync.Mutex
	requests []Request
	hook     Hook
}

var quietLogs sync.Once

// Start runs a registry until the test ends.
func Start(t testing.TB) *Upstream {
	t.Helper()
	quietLogs.Do(func() {
		// distribution logs every request through logrus at info level.
		logrus.SetOutput(io.Discard)
	})
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"inmemory":    configuration.Parameters{},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.HTTP.Headers = http.Header{"X-Content-Type-Options": {"nosniff"}}
	// Foreign layers with http(s) URLs are accepted without their blob,
	// as Docker Hub and distribution 2.8 accept them (v3 allows none
	// unless told).
	cfg.Validation.Manifests.URLs.Allow = []string{"^https?://"}
	app := handlers.NewApp(context.Background(), cfg)
	u := &Upstream{registry: app}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests = append(u.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone()})
		hook := u.hook
		u.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		app.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Server.Close)
	u.URL = u.Server.URL
	u.Host = strings.TrimPrefix(u.Server.URL, "http://")
	return u
}

// Handler is the registry itself, without hooks or request counting.
func (u *Upstream) Handler() http.Handler { return u.registry }

// SetHook installs (or, with nil, removes) a hook in front of the registry.
func (u *Upstream) SetHook(h Hook) {
	u.mu.Lock()
	u.hook = h
	u.mu.Unlock()
}

// Requests returns the requests received so far that match method and whose
// path contains pathPart.
func (u *Upstream) Requests(method, pathPart string) []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []Request
	for _, r := range u.requests {
		if (method == "" || r.Method == method) && strings.Contains(r.Path, pathPart) {
			out = append(out, r)
		}
	}
	return out
}

// Count returns how many requests match, as Requests does.
func (u *Upstream) Count(method, pathPart string) int { return len(u.Requests(method, pathPart)) }

// Reset forgets the requests received so far.
func (u *Upstream) Reset() {
	u.mu.Lock()
	u.requests = nil
	u.mu.Unlock()
}

func (u *Upstream) ref(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(u.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatalf("reference %s: %v", repoTag, err)
	}
	return ref
}

// PushImage pushes img as repoTag ("library/app:v1") and returns its
// manifest digest. Pushes are not counted as requests.
func (u *Upstream) PushImage(t testing.TB, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref := u.ref(t, repoTag)
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	u.Reset()
	return d
}

// PushIndex pushes idx and its images as repoTag and returns its digest.
func (u *Upstream) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref := u.ref(t, repoTag)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("push index %s: %v", repoTag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	u.Reset()
	return d
}

// FreeAddr returns a loopback host:port where nothing listens: a port
// picked by the kernel and closed again. Connections to it are refused,
// and a server may take it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// InstallCredentialHelper puts a docker-credential-NAME program on the
// PATH for the rest of the test. It answers "get" with user and the
// content of the returned secret file, read at each run, and appends the
// server it was asked about to the returned runs file.
func InstallCredentialHelper(t testing.TB, name, user string) (secretFile, runs string) {
	t.Helper()
	dir := t.TempDir()
	secretFile = filepath.Join(dir, "secret")
	runs = filepath.Join(dir, "runs")
	script := `#!/bin/sh
[ "$1" = get ] || exit 1
read server
echo "$server" >>` + runs + `
printf '{"ServerURL":"%s","Username":"` + user + `","Secret":"%s"}' "$server" "$(cat ` + secretFile + `)"
`
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return secretFile, runs
}
