package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secretUpdate lays out password as the kubelet updates a Secret volume: a
// new timestamped directory, then the ..data symlink swapped to it in one
// rename; the file itself is a symlink through ..data.
func secretUpdate(t *testing.T, dir, password string, n int) {
	t.Helper()
	ts := filepath.Join(dir, "..2026_12_02_00_00_0"+string(rune('0'+n)))
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "password"), []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "password")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink("..data/password", link); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPasswordFileRotation: a password file rotated the way a Kubernetes
// Secret is, or rewritten in place, is used from the next authorization
// on; a file gone or emptied leaves the last good password in use.
func TestPasswordFileRotation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "password")
	secretUpdate(t, dir, "first\n", 1)
	a, err := For("docker.io", Credentials{Username: "me", PasswordFile: file})
	if err != nil {
		t.Fatal(err)
	}
	password := func() string {
		t.Helper()
		cfg, err := a.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != "me" {
			t.Fatalf("username %q", cfg.Username)
		}
		return cfg.Password
	}
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"as read at start", func() {}, "first"},
		{"the Secret rotated", func() { secretUpdate(t, dir, "second\n", 2) }, "second"},
		{"unchanged", func() {}, "second"},
		{"the file rewritten in place", func() {
			target := filepath.Join(dir, "..data", "password")
			if err := os.WriteFile(target, []byte("third-and-longer"), 0o600); err != nil {
				t.Fatal(err)
			}
			// A rewrite in the same second with the same size would
			// go unseen; a real rotation changes the token.
			_ = os.Chtimes(target, time.Now(), time.Now().Add(time.Second))
		}, "third-and-longer"},
		{"emptied half way through an update", func() { secretUpdate(t, dir, "", 3) }, "third-and-longer"},
		{"gone", func() { os.Remove(file) }, "third-and-longer"},
		{"back", func() { secretUpdate(t, dir, "fourth", 4) }, "fourth"},
	}
	for _, s := range steps {
		s.change()
		if got := password(); got != s.want {
			t.Fatalf("%s: password %q, want %q", s.name, got, s.want)
		}
	}
}

func TestPasswordFileRefused(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    Credentials
		want string
	}{
		{"missing", Credentials{Username: "me", PasswordFile: filepath.Join(dir, "none")}, "password_file"},
		{"empty", Credentials{Username: "me", PasswordFile: empty}, "is empty"},
		{"no password", Credentials{Username: "me"}, "username without a password"},
	}
	for _, tc := range cases {
		if _, err := For("docker.io", tc.c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
