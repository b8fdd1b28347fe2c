package proxy_test

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// TestCredentialsStayWithTheirUpstream runs the bearer-token handshake the
// way Docker Hub does it (401 with a realm, Basic credentials exchanged for
// a token, the token on every request) and checks that the credentials
// reach only that upstream's token endpoint: not another upstream, and not
// the storage a blob GET is redirected to.
func TestCredentialsStayWithTheirUpstream(t *testing.T) {
	const user, pass, token = "robot", "s3cret", "tok-123"
	wantBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))

	var mu sync.Mutex
	var tokenAuth []string // Authorization seen by the token endpoint
	var leaked []string    // Authorization seen anywhere it must not be
	var cdnHits int
	record := func(list *[]string, v string) {
		mu.Lock()
		*list = append(*list, v)
		mu.Unlock()
	}

	hub := testupstream.Start(t)
	other := testupstream.Start(t)
	img := randomImage(t, 32<<10, 1, types.DockerManifestSchema2)
	hub.PushImage(t, "library/private:v1", img)
	other.PushImage(t, "org/app:v1", img)
	dgst := digestOf(t, layersOf(t, img)[0])

	// Blob storage on another host, as Docker Hub redirects to a CDN.
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cdnHits++
		mu.Unlock()
		if a := r.Header.Get("Authorization"); a != "" {
			record(&leaked, "cdn: "+a)
		}
		hub.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(cdn.Close)

	hub.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			record(&tokenAuth, r.Header.Get("Authorization"))
			if r.Header.Get("Authorization") != wantBasic {
				w.WriteHeader(http.StatusUnauthorized)
				return true
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"token":"` + token + `"}`))
			return true
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+hub.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+dgst) {
			http.Redirect(w, r, cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return true
		}
		return false
	})
	other.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if a := r.Header.Get("Authorization"); a != "" {
			record(&leaked, "other upstream: "+a)
		}
		return false
	})

	m := newMirror(t, hub.URL, mirrorOpts{
		auth:  authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}),
		extra: map[string]string{"ghcr.io": other.URL},
	})
	pullAll(t, m, "library/private:v1")
	if resp, body := m.get("/v2/ghcr.io/org/app/manifests/v1"); resp.StatusCode != 200 {
		t.Fatalf("other upstream: %d %s", resp.StatusCode, body)
	}
	if resp, body := m.get("/v2/ghcr.io/org/app/blobs/" + dgst); resp.StatusCode != 200 {
		t.Fatalf("other upstream blob: %d %s", resp.StatusCode, body)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(tokenAuth) == 0 {
		t.Fatal("the token endpoint was never asked: no bearer handshake happened")
	}
	for _, a := range tokenAuth {
		if a != wantBasic {
			t.Errorf("token endpoint got %q, want the configured credentials", a)
		}
	}
	if len(leaked) != 0 {
		t.Errorf("credentials or tokens went where they do not belong: %v", leaked)
	}
	if cdnHits != 1 {
		t.Errorf("blob storage served %d requests, want the one redirected GET", cdnHits)
	}
}
