package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestMirrorLogin: warm and check --mirror reach a Breakwater with client
// authentication on as --user (password from a file or the environment)
// or as docker login stored it, and say why when they cannot.
func TestMirrorLogin(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(10_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/app:v1", img)
	up.PushImage(t, "acme/private:v1", img)
	addr, _ := serveWithAuth(t, up, false)
	mirror := "http://" + addr

	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	bad := filepath.Join(dir, "bad")
	empty := filepath.Join(dir, "empty")
	for f, pw := range map[string]string{good: "alice-pw\n", bad: "nope", empty: "\n"} {
		if err := os.WriteFile(f, []byte(pw), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// What docker login 127.0.0.1:PORT writes.
	dockerDir := filepath.Join(dir, "docker")
	if err := os.MkdirAll(dockerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))
	if err := os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(`{"auths":{"`+addr+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	noDocker := t.TempDir()

	cases := []struct {
		name      string
		args      []string
		env       string // $BREAKWATER_PASSWORD
		dockerCfg string
		code      int
		out       string // in stdout, or stderr for usage errors
	}{
		{"warm, nobody", []string{"warm", "--mirror", mirror, "library/app:v1"}, "", noDocker, 1, "401"},
		{"warm, --password-file", []string{"warm", "--mirror", mirror, "--user", "alice", "--password-file", good, "library/app:v1"}, "", noDocker, 0, "library/app:v1"},
		{"warm, $BREAKWATER_PASSWORD", []string{"warm", "--mirror", mirror, "--user", "alice", "library/app:v1"}, "alice-pw", noDocker, 0, "library/app:v1"},
		{"warm, docker login", []string{"warm", "--mirror", mirror, "library/app:v1"}, "", dockerDir, 0, "library/app:v1"},
		{"warm, a wrong password", []string{"warm", "--mirror", mirror, "--user", "alice", "--password-file", bad, "library/app:v1"}, "", noDocker, 1, "401"},
		{"warm, a repository alice may not pull", []string{"warm", "--mirror", mirror, "--user", "alice", "--password-file", good, "acme/private:v1"}, "", noDocker, 1, "403"},
		{"warm, --password-file without --user", []string{"warm", "--mirror", mirror, "--password-file", good, "library/app:v1"}, "", noDocker, 2, "--password-file needs --user"},
		{"warm, --user without a password", []string{"warm", "--mirror", mirror, "--user", "alice", "library/app:v1"}, "", noDocker, 2, "give its password with --password-file or $BREAKWATER_PASSWORD"},
		{"warm, an empty password file", []string{"warm", "--mirror", mirror, "--user", "alice", "--password-file", empty, "library/app:v1"}, "", noDocker, 2, "is empty"},
		{"check, nobody", []string{"check", "--mirror", mirror, "library/app:v1"}, "", noDocker, 1, "denied"},
		{"check, --user", []string{"check", "--mirror", mirror, "--user", "alice", "--password-file", good, "library/app:v1"}, "", noDocker, 0, "exists"},
		{"check, docker login", []string{"check", "--mirror", mirror, "library/app:v1"}, "", dockerDir, 0, "exists"},
		{"check, a repository alice may not pull", []string{"check", "--mirror", mirror, "--user", "alice", "--password-file", good, "acme/private:v1"}, "", noDocker, 1, "denied"},
		{"check, --user without --mirror", []string{"check", "--user", "alice", "--password-file", good, "library/app:v1"}, "", noDocker, 3, "--user and --password-file apply to --mirror"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(passwordEnv, tc.env)
			t.Setenv("DOCKER_CONFIG", tc.dockerCfg)
			var stdout, stderr bytes.Buffer
			code := run(tc.args, nil, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tc.code || !strings.Contains(out, tc.out) {
				t.Fatalf("exit %d, want %d with %q in:\n%s", code, tc.code, tc.out, out)
			}
		})
	}
}
