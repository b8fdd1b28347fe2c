// Package testazurite runs Azurite's blob service, Microsoft's Azure
// Storage emulator, on loopback for tests, with a container made for them,
// so that distribution's azure driver, which Breakwater's fleet may share
// its blobs through, is exercised against a server that checks Shared Key
// signatures and answers Azure's blob API, not against a mock. It is not
// Azure: its consistency and its copies (which Azure may complete later,
// and which the driver polls) are its own.
//
// The server comes from scripts/azurite.sh, which installs it with npm
// when it is missing. When the script or the server fails, the test fails
// rather than skips.
package testazurite

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/breakwater-registry/breakwater/internal/testproc"
)

// Azurite's one account and its key, which Azurite documents and every
// installation shares: it is no secret.
const (
	Account    = "devstoreaccount1"
	AccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Server is a running blob service with one empty container.
type Server struct {
	// ServiceURL is the account's blob endpoint,
	// http://127.0.0.1:PORT/devstoreaccount1.
	ServiceURL string
	Container  string
}

// Start runs a server until the test ends, with its data in a temporary
// directory, and creates its container.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := testproc.Script("azurite.sh")
	if err != nil {
		t.Fatalf("no Azurite (CI installs it with scripts/azurite.sh): %v", err)
	}
	dir := t.TempDir()
	addr := testproc.FreeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	s := &Server{ServiceURL: "http://" + addr + "/" + Account, Container: "breakwater-test"}
	cmd := exec.Command(bin, "--blobHost", host, "--blobPort", port, "--location", filepath.Join(dir, "data"),
		"--silent", "--disableTelemetry", "--skipApiVersionCheck")
	p, err := testproc.Start(cmd, filepath.Join(dir, "azurite.log"))
	if err != nil {
		t.Fatalf("Azurite: %v", err)
	}
	t.Cleanup(p.Kill)
	if err := s.createContainer(p); err != nil {
		t.Fatalf("Azurite on %s: %v\n%s", addr, err, p.Log())
	}
	return s
}

// DriverParameters returns the parameters of distribution's azure driver
// for the server's container, under rootdirectory, signed with the
// account's shared key.
func (s *Server) DriverParameters(rootdirectory string) map[string]any {
	return map[string]any{
		"accountname":   Account,
		"accountkey":    AccountKey,
		"container":     s.Container,
		"serviceurl":    s.ServiceURL,
		"rootdirectory": rootdirectory,
		"credentials":   map[string]any{"type": "shared_key"},
	}
}

// createContainer makes the container, again until the server takes the
// request: it listens a moment after it starts.
func (s *Server) createContainer(p *testproc.Process) error {
	cred, err := azblob.NewSharedKeyCredential(Account, AccountKey)
	if err != nil {
		return err
	}
	client, err := azblob.NewClientWithSharedKeyCredential(s.ServiceURL, cred, nil)
	if err != nil {
		return err
	}
	return p.WaitReady(60*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := client.CreateContainer(ctx, s.Container, nil); err != nil {
			return fmt.Errorf("create container %s: %w", s.Container, err)
		}
		return nil
	})
}
