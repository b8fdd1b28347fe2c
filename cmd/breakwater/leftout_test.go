//go:build breakwater_nogcs && breakwater_noazure

package main

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestServeRefusesALeftOutDriver, in a build with both tags (make unit
// runs it): serve with a storage block naming a driver the build left
// out stops at once as on a bad configuration, exit status 2, and says
// which tag left it out.
func TestServeRefusesALeftOutDriver(t *testing.T) {
	for _, c := range []struct{ kind, block, tag string }{
		{"gcs", "  gcs:\n    bucket: b\n", "breakwater_nogcs"},
		{"azure", "  azure:\n    accountname: a\n    accountkey: YQ==\n    container: c\n    credentials:\n      type: shared_key\n", "breakwater_noazure"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			file := writeConfig(t, "listen: 127.0.0.1:0\ncache:\n  dir: "+filepath.Join(t.TempDir(), "cache")+"\nstorage:\n"+c.block)
			var stdout, stderr bytes.Buffer
			code := runServe([]string{"--config", file}, &stdout, &stderr)
			want := "breakwater: storage." + c.kind + ": not in this build of Breakwater (built with -tags " + c.tag + ")\n"
			if code != 2 || stderr.String() != want {
				t.Errorf("exit %d, stderr %q; want 2, %q", code, stderr.String(), want)
			}
		})
	}
}
