package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestUsage: every command answers --help (and -h) on stdout with exit 0,
// and bad usage with its documented status on stderr: 2, except check and
// classify, whose 2 already means "transient" and which use 3.
func TestUsage(t *testing.T) {
	cases := []struct {
		cmd     string
		badExit int
	}{
		{"serve", 2}, {"warm", 2}, {"containerd-config", 2}, {"docker-config", 2}, {"registries-conf", 2}, {"version", 2},
		{"check", 3}, {"classify", 3}, {"watch", 2},
	}
	for _, tc := range cases {
		for _, help := range []string{"--help", "-h"} {
			var out, errOut bytes.Buffer
			if code := run([]string{tc.cmd, help}, strings.NewReader(""), &out, &errOut); code != 0 {
				t.Errorf("%s %s: exit %d, want 0 (stderr %q)", tc.cmd, help, code, errOut.String())
			}
			if !strings.Contains(out.String(), "breakwater "+tc.cmd) || errOut.Len() != 0 ||
				(tc.cmd != "version" && !strings.Contains(out.String(), "Exit status")) {
				t.Errorf("%s %s: stdout %q, stderr %q; want the usage on stdout", tc.cmd, help, out.String(), errOut.String())
			}
		}
		var out, errOut bytes.Buffer
		if code := run([]string{tc.cmd, "--no-such-flag"}, strings.NewReader(""), &out, &errOut); code != tc.badExit {
			t.Errorf("%s --no-such-flag: exit %d, want %d", tc.cmd, code, tc.badExit)
		}
		if errOut.Len() == 0 {
			t.Errorf("%s --no-such-flag: nothing on stderr", tc.cmd)
		}
	}
	for _, args := range [][]string{nil, {"no-such-command"}} {
		var out, errOut bytes.Buffer
		if code := run(args, strings.NewReader(""), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "Usage:") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and the usage", args, code, errOut.String())
		}
	}
}
