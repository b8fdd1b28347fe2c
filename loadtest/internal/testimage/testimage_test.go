package testimage

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

// TestKeepContent: every blob of the image, config and layers, is kept,
// and each kept byte string hashes to the digest the manifest gives it.
func TestKeepContent(t *testing.T) {
	layers, err := Layers(4096, 8192)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image("amd64", layers)
	if err != nil {
		t.Fatal(err)
	}
	var p Pushed
	if err := KeepContent(&p, img); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{m.Config.Digest.String(): m.Config.Size}
	for _, l := range m.Layers {
		want[l.Digest.String()] = l.Size
	}
	if len(p.Content) != len(want) {
		t.Fatalf("kept %d blobs, want %d (config and %d layers)", len(p.Content), len(want), len(m.Layers))
	}
	for d, size := range want {
		b, ok := p.Content[d]
		switch {
		case !ok:
			t.Errorf("blob %s not kept", d)
		case int64(len(b)) != size:
			t.Errorf("blob %s: kept %d bytes, manifest says %d", d, len(b), size)
		case fmt.Sprintf("sha256:%x", sha256.Sum256(b)) != d:
			t.Errorf("blob %s: kept bytes hash to another digest", d)
		}
	}
}
