//go:build breakwater_nogcs && breakwater_noazure

package objstore

import (
	"context"
	"testing"
)

// TestCloudDriversLeftOut, in a build with both tags (make unit runs it):
// a configured gcs or azure store is refused with the tag that left its
// driver out, not distribution's "not registered"; the others open.
func TestCloudDriversLeftOut(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ name, tag string }{
		{"gcs", "breakwater_nogcs"},
		{"azure", "breakwater_noazure"},
	} {
		_, err := Open(ctx, c.name, map[string]any{"bucket": "b"})
		want := "object store " + c.name + ": not in this build of Breakwater (built with -tags " + c.tag + ")"
		if err == nil || err.Error() != want {
			t.Errorf("Open(%s): %v, want %q", c.name, err, want)
		}
	}
	if _, err := Open(ctx, "filesystem", map[string]any{"rootdirectory": t.TempDir()}); err != nil {
		t.Errorf("Open(filesystem): %v", err)
	}
}
