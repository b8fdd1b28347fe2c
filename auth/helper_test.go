package auth

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestCredentialHelper: the helper is asked about the registry the way
// docker asks (Docker Hub under its index URL), its answer is used for
// helperTTL, and then it is asked again, so a rotated token is picked up
// without a restart.
func TestCredentialHelper(t *testing.T) {
	secret, runs := testupstream.InstallCredentialHelper(t, "bwtest", "robot")
	write := func(s string) {
		if err := os.WriteFile(secret, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("token-1")
	for host, server := range map[string]string{"docker.io": "https://index.docker.io/v1/", "ghcr.io": "ghcr.io", "127.0.0.1:5000": "127.0.0.1:5000"} {
		a, err := For(host, Credentials{Helper: "bwtest"})
		if err != nil {
			t.Fatal(err)
		}
		h := a.(*helperAuth)
		now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		h.now = func() time.Time { return now }
		cfg, err := h.Authorization()
		if err != nil || cfg.Username != "robot" || cfg.Password != "token-1" {
			t.Fatalf("%s: %+v %v", host, cfg, err)
		}
		b, _ := os.ReadFile(runs)
		if lines := strings.Fields(string(b)); lines[len(lines)-1] != server {
			t.Errorf("%s: the helper was asked about %q, want %q", host, lines[len(lines)-1], server)
		}
		write("token-2")
		now = now.Add(helperTTL / 2)
		if cfg, _ := h.Authorization(); cfg.Password != "token-1" {
			t.Errorf("%s: asked again within the TTL: %q", host, cfg.Password)
		}
		now = now.Add(helperTTL)
		if cfg, _ := h.Authorization(); cfg.Password != "token-2" {
			t.Errorf("%s: a rotated token was not picked up after the TTL: %q", host, cfg.Password)
		}
		write("token-1")
	}
}

// TestCredentialHelperFails: a helper that is missing or fails is an
// error naming it, never anonymous access.
func TestCredentialHelperFails(t *testing.T) {
	_, _ = testupstream.InstallCredentialHelper(t, "bwtest", "robot") // its secret file does not exist: cat fails, but the JSON is still printed
	a, err := For("ghcr.io", Credentials{Helper: "missing-helper"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorization(); err == nil || !strings.Contains(err.Error(), "docker-credential-missing-helper") {
		t.Errorf("missing helper: %v", err)
	}
}

// TestIdentityToken: a helper answering with <token> as the user gives an
// identity token, as docker's helpers do for refresh tokens.
func TestIdentityToken(t *testing.T) {
	secret, _ := testupstream.InstallCredentialHelper(t, "bwtoken", "<token>")
	if err := os.WriteFile(secret, []byte("refresh-me"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := For("ghcr.io", Credentials{Helper: "bwtoken"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil || cfg.IdentityToken != "refresh-me" || cfg.Username != "" {
		t.Errorf("%+v %v", cfg, err)
	}
}
