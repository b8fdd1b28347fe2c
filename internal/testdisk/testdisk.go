// Package testdisk gives tests real filesystems that fill up or turn
// read-only: a small tmpfs, remountable. Unlike chmod, a read-only mount
// stops root too, and CI runs the tests as root.
package testdisk

import (
	"os"
	"os/exec"
	"testing"
)

// Tmpfs mounts a tmpfs of size (e.g. "4m") on a new temporary directory and
// unmounts it when the test ends. Mounting needs root; elsewhere the test
// is skipped.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return dir
}

// Remount changes a Tmpfs's mode: "ro" or "rw".
func Remount(t testing.TB, dir, mode string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s: %v: %s", mode, err, out)
	}
}
