package proxy

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

// TestAcceptSets: a remembered Accept header answers what parsing it
// answers, appending to its types cannot change what the next request
// gets, and the number remembered is bounded.
func TestAcceptSets(t *testing.T) {
	var a acceptSets
	for _, tc := range []struct {
		name string
		vals []string
	}{
		{"none", nil},
		{"containerd", []string{"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"}},
		{"curl", []string{"*/*"}},
		{"two headers", []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Accept": tc.vals}
			want := parseAccept(h)
			for i := range 3 {
				got := a.of(h)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("request %d: %+v, want %+v", i, got, want)
				}
				_ = append(got.types, "application/x-scribble") // must not reach the next caller
			}
		})
	}
	for i := range maxAcceptSets * 2 {
		a.of(http.Header{"Accept": {fmt.Sprintf("application/x-%d", i)}})
	}
	if n := a.n.Load(); n > maxAcceptSets {
		t.Errorf("%d Accept headers remembered, bound %d", n, maxAcceptSets)
	}
	h := http.Header{"Accept": {"application/x-new-after-the-bound"}}
	if got := a.of(h); !reflect.DeepEqual(got, parseAccept(h)) {
		t.Errorf("past the bound: %+v", got)
	}
}
