package proxy_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"

	"github.com/breakwater-registry/breakwater/access"
	"github.com/breakwater-registry/breakwater/classify"
	"github.com/breakwater-registry/breakwater/internal/testlog"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
)

// Users of the access tests: alice may pull docker.io/library/ only, ops
// everything; registry.k8s.io is open to everyone when anonymous is set.
var testUsers = map[string]string{"alice": "alice-pw", "ops": "ops-pw"}

func newPolicy(t testing.TB, anonymous bool) *access.Policy {
	t.Helper()
	return newPolicyAt(t, anonymous, nil)
}

// newPolicyAt is newPolicy whose logins are timed by now (nil: the wall
// clock), for tests whose outcome depends on how much time passed.
func newPolicyAt(t testing.TB, anonymous bool, now func() time.Time) *access.Policy {
	t.Helper()
	var lines []string
	for u, p := range testUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	grants := []access.Grant{
		{Users: []string{"alice"}, Repositories: []string{"docker.io/library/"}},
		{Users: []string{"ops"}, Repositories: []string{"*"}},
	}
	if anonymous {
		grants = append(grants, access.Grant{Anonymous: true, Repositories: []string{"registry.k8s.io"}})
	}
	p, err := access.New(access.Config{Htpasswd: file, Realm: "test-realm", Access: grants, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func basicAuth(user string) http.Header {
	pass, ok := testUsers[user]
	if !ok {
		pass = "x"
	}
	return http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}
}

// requestLines returns the request log lines for path, decoded.
func requestLines(t *testing.T, logs *testlog.Buffer, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request" && m["path"] == path {
			out = append(out, m)
		}
	}
	return out
}

func wantChallenge(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusUnauthorized || resp.Request.Method != http.MethodHead && errorCode(body) != proxy.CodeUnauthorized {
		t.Errorf("%s: %d %s, want 401 UNAUTHORIZED", what, resp.StatusCode, body)
	}
	if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="test-realm"` {
		t.Errorf("%s: WWW-Authenticate %q, want the Basic challenge", what, got)
	}
}

func TestAccessChallenge(t *testing.T) {
	up := testupstream.Start(t)
	img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/app:v1", img)
	dgst := digestOf(t, layersOf(t, img)[0])
	logs := &testlog.Buffer{}
	m := newMirror(t, up.URL, mirrorOpts{access: newPolicy(t, false), log: logs})
	up.Reset()

	for i, path := range []string{
		"/v2/",
		"/v2/library/app/manifests/v1",
		"/v2/library/app/blobs/" + dgst,
		"/v2/library/app/tags/list",
		// Not even which registries are upstreams.
		"/v2/nowhere.example/x/manifests/v1",
		"/_breakwater/v1/status",
	} {
		resp, body := m.get(path)
		wantChallenge(t, "GET "+path+" without credentials", resp, body)
		if path != "/v2/" && strings.Contains(string(body), "docker.io") {
			t.Errorf("GET %s: the 401 names an upstream: %s", path, body)
		}
		// A name of its own each time: failed logins are limited per name.
		resp, body = m.do(http.MethodGet, path, basicAuth(fmt.Sprint("mallory", i)))
		wantChallenge(t, "GET "+path+" as an unknown user", resp, body)
		h := basicAuth("alice")
		h.Set("Authorization", h.Get("Authorization")+"x")
		resp, body = m.do(http.MethodGet, path, h)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with a broken header: %d %s, want 401", path, resp.StatusCode, body)
		}
	}
	resp, body := m.do(http.MethodHead, "/v2/library/app/manifests/v1", nil)
	wantChallenge(t, "HEAD manifest", resp, body)
	if n := len(up.Requests("", "")); n != 0 {
		t.Errorf("refused requests reached the upstream %d times: %+v", n, up.Requests("", ""))
	}

	// Probes stay open: kubelet does not log in.
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := m.get(path); resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s, want 200 without credentials", path, resp.StatusCode, body)
		}
	}
	if resp, body := m.do(http.MethodGet, "/v2/", basicAuth("alice")); resp.StatusCode != 200 {
		t.Errorf("GET /v2/ as alice: %d %s", resp.StatusCode, body)
	}
	if resp, body := m.do(http.MethodGet, "/_breakwater/v1/status", basicAuth("alice")); resp.StatusCode != 200 || !strings.Contains(string(body), `"upstreams"`) {
		t.Errorf("status as alice: %d %s", resp.StatusCode, body)
	}

	// The log says who failed and why, never with what password.
	for _, line := range requestLines(t, logs, "/v2/library/app/manifests/v1") {
		if line["status"] == float64(401) && line["user"] != nil {
			t.Errorf("a refused request is logged with a user: %v", line)
		}
	}
	if !strings.Contains(logs.String(), `user \"mallory0\" is not in`) {
		t.Errorf("the log does not say the user is unknown:\n%s", logs.String())
	}
	for _, secret := range []string{"alice-pw", basicAuth("alice").Get("Authorization")[6:]} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// A client retrying a wrong password is refused without the password being
// checked once it failed ten times in a row: still 401 (no retry fixes a
// wrong password, and a 429 would have classifiers wait), with a
// Retry-After. The clock stands still, so that "in a row" holds however
// slowly a loaded machine runs the eleven requests.
func TestAccessFailedLoginsLimited(t *testing.T) {
	up := testupstream.Start(t)
	frozen := time.Now()
	m := newMirror(t, up.URL, mirrorOpts{access: newPolicyAt(t, false, func() time.Time { return frozen })})
	var last *http.Response
	var body []byte
	for i := range 11 {
		last, body = m.do(http.MethodGet, "/v2/", basicAuth("mallory"))
		if i == 0 && last.Header.Get("Retry-After") != "" {
			t.Errorf("the first failure has a Retry-After: %v", last.Header)
		}
	}
	wantChallenge(t, "11th wrong login within a second", last, body)
	if last.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "too many failed logins") {
		t.Errorf("11th wrong login within a second: %v %s, want Retry-After: 1 and why", last.Header, body)
	}
	if resp, body := m.do(http.MethodGet, "/v2/", basicAuth("alice")); resp.StatusCode != 200 {
		t.Errorf("another user meanwhile: %d %s", resp.StatusCode, body)
	}
}

// alice may pull docker.io/library/ only: the rest is 403 DENIED, by tag,
// by digest, for blobs, tags and referrers, however the upstream is named,
// and nothing reaches the upstream.
func TestAccessDenied(t *testing.T) {
	up := testupstream.Start(t)
	lib := randomImage(t, 32<<10, 2, types.DockerManifestSchema2)
	other := randomImage(t, 32<<10, 1, types.OCIManifestSchema1)
	up.PushImage(t, "library/app:v1", lib)
	otherDigest := up.PushImage(t, "acme/app:v1", other)
	otherBlob := digestOf(t, layersOf(t, other)[0])
	logs := &testlog.Buffer{}
	m := newMirror(t, up.URL, mirrorOpts{access: newPolicy(t, false), log: logs, tagTTL: time.Minute})

	// The allowed pull works with a client that answers the challenge.
	alice := remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "alice-pw"}))
	pulled, err := remote.Image(m.ref("library/app:v1"), alice)
	if err != nil {
		t.Fatalf("alice pulls library/app: %v", err)
	}
	for _, l := range layersOf(t, pulled) {
		compressedBytes(t, l) // verified while read
	}
	if lines := requestLines(t, logs, "/v2/library/app/manifests/v1"); len(lines) == 0 || lines[len(lines)-1]["user"] != "alice" {
		t.Errorf("the request log line does not carry the user: %v", lines)
	}
	if strings.Contains(logs.String(), "alice-pw") {
		t.Error("the log contains alice's password")
	}

	up.Reset()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v2/acme/app/manifests/v1"},
		{"HEAD", "/v2/acme/app/manifests/v1"},
		{"GET", "/v2/acme/app/manifests/" + otherDigest.String()},
		{"GET", "/v2/acme/app/blobs/" + otherBlob},
		{"HEAD", "/v2/acme/app/blobs/" + otherBlob},
		{"GET", "/v2/acme/app/tags/list"},
		{"GET", "/v2/acme/app/referrers/" + otherDigest.String()},
		// containerd's ns= and the host in the path name the same upstream.
		{"GET", "/v2/acme/app/manifests/v1?ns=docker.io"},
		{"GET", "/v2/docker.io/acme/app/blobs/" + otherBlob},
		{"GET", "/v2/index.docker.io/acme/app/manifests/v1"},
		// A prefix of whole segments: library/ is not libraryx/.
		{"GET", "/v2/libraryx/app/manifests/v1"},
	} {
		resp, body := m.do(tc.method, tc.path, basicAuth("alice"))
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("%s %s as alice: %d (WWW-Authenticate %q) %s, want 403 without a challenge", tc.method, tc.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if tc.method == "GET" && (errorCode(body) != proxy.CodeDenied || !strings.Contains(string(body), `user \"alice\" may not pull docker.io/`)) {
			t.Errorf("%s %s: body %s, want DENIED naming the user and the repository", tc.method, tc.path, body)
		}
	}
	if reqs := up.Requests("", ""); len(reqs) != 0 {
		t.Errorf("denied requests reached the upstream: %+v", reqs)
	}
	// ops may pull it: the content was there all along.
	if resp, body := m.do(http.MethodGet, "/v2/acme/app/blobs/"+otherBlob, basicAuth("ops")); resp.StatusCode != 200 {
		t.Errorf("ops pulls acme/app's blob: %d %s", resp.StatusCode, body)
	}
}

// A denied user learns nothing from the answer, not even whether the
// content is cached: the answer for cached content is the one for content
// never seen, and neither touches the cache or the upstream.
func TestAccessDeniedLearnsNothing(t *testing.T) {
	up := testupstream.Start(t)
	img := randomImage(t, 32<<10, 1, types.DockerManifestSchema2)
	dgst := up.PushImage(t, "acme/app:v1", img)
	blob := digestOf(t, layersOf(t, img)[0])
	never := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	neverBlob := digestOf(t, layersOf(t, never)[0])
	neverDigest, err := never.Digest()
	if err != nil {
		t.Fatal(err)
	}

	// ops caches acme/app, then Breakwater restarts on the same cache:
	// every blob is unverified until its first open, which the integrity
	// counters show. No scrub, so that only a request opens one.
	dir := t.TempDir()
	noScrub := []storage.Option{storage.WithScrubRate(0)}
	first := newMirror(t, up.URL, mirrorOpts{dir: dir, access: newPolicy(t, false), tagTTL: time.Hour, storeOpts: noScrub})
	for _, p := range []string{"/v2/acme/app/manifests/v1", "/v2/acme/app/blobs/" + blob} {
		if resp, body := first.do(http.MethodGet, p, basicAuth("ops")); resp.StatusCode != 200 {
			t.Fatalf("ops GET %s: %d %s", p, resp.StatusCode, body)
		}
	}
	first.close()
	logs := &testlog.Buffer{}
	m := newMirror(t, up.URL, mirrorOpts{dir: dir, access: newPolicy(t, false), tagTTL: time.Hour, storeOpts: noScrub, log: logs})
	before := m.store.Integrity()
	if before.Unverified == 0 {
		t.Fatal("nothing unverified after the restart: the test cannot see a blob being opened")
	}
	up.Reset()

	answer := func(method, path string) string {
		resp, body := m.do(method, path, basicAuth("alice"))
		resp.Header.Del("Date")
		var b strings.Builder
		_ = resp.Header.Write(&b)
		return resp.Status + "\n" + b.String() + "\n" + string(body)
	}
	for _, method := range []string{"GET", "HEAD"} {
		for _, pair := range [][2]string{
			{"/v2/acme/app/manifests/v1", "/v2/acme/app/manifests/v2"},
			{"/v2/acme/app/manifests/" + dgst.String(), "/v2/acme/app/manifests/" + neverDigest.String()},
			{"/v2/acme/app/blobs/" + blob, "/v2/acme/app/blobs/" + neverBlob},
		} {
			cached, uncached := answer(method, pair[0]), answer(method, pair[1])
			if cached != uncached {
				t.Errorf("%s: cached and uncached content answered differently:\n%s\n---\n%s", method, cached, uncached)
			}
			if !strings.HasPrefix(cached, "403 ") {
				t.Errorf("%s %s: %s, want 403", method, pair[0], cached)
			}
			for _, p := range pair {
				for _, line := range requestLines(t, logs, p) {
					if c, ok := line["cache"]; ok {
						t.Errorf("%s %s: the cache was consulted (cache=%v)", method, p, c)
					}
				}
			}
		}
	}
	if reqs := up.Requests("", ""); len(reqs) != 0 {
		t.Errorf("denied requests reached the upstream: %+v", reqs)
	}
	if after := m.store.Integrity(); after != before {
		t.Errorf("integrity counters moved from %+v to %+v: a denied request opened a cached blob", before, after)
	}
	// The measure sees an open: ops reading the blob verifies it.
	if resp, body := m.do(http.MethodGet, "/v2/acme/app/blobs/"+blob, basicAuth("ops")); resp.StatusCode != 200 {
		t.Fatalf("ops: %d %s", resp.StatusCode, body)
	}
	if after := m.store.Integrity(); after.Verified != before.Verified+1 {
		t.Errorf("after ops read the blob: %+v (before %+v), want one more verified", after, before)
	}
	if reqs := up.Requests("", ""); len(reqs) != 0 {
		t.Errorf("ops' cached pull reached the upstream: %+v", reqs)
	}
}

// Anonymous entries let clients without credentials pull what they name,
// and only that; the version check still asks for credentials, so clients
// that have some send them.
func TestAccessAnonymous(t *testing.T) {
	up := testupstream.Start(t)
	k8s := testupstream.Start(t)
	img := randomImage(t, 1024, 1, types.DockerManifestSchema2)
	up.PushImage(t, "library/app:v1", img)
	k8s.PushImage(t, "pause:3.9", img)
	m := newMirror(t, up.URL, mirrorOpts{access: newPolicy(t, true), extra: map[string]string{"registry.k8s.io": k8s.URL}})

	if _, err := remote.Image(m.ref("registry.k8s.io/pause:3.9")); err != nil {
		t.Errorf("anonymous pull of registry.k8s.io/pause: %v", err)
	}
	if resp, body := m.get("/v2/pause/manifests/3.9?ns=registry.k8s.io"); resp.StatusCode != 200 {
		t.Errorf("anonymous, ns=registry.k8s.io: %d %s", resp.StatusCode, body)
	}
	resp, body := m.get("/v2/library/app/manifests/v1")
	wantChallenge(t, "anonymous docker.io/library/app", resp, body)
	resp, body = m.get("/v2/")
	wantChallenge(t, "anonymous /v2/", resp, body)
	// With anonymous entries a bad name is answered as usual.
	if resp, body := m.get("/v2/nowhere.example/x/manifests/v1"); resp.StatusCode != 404 || errorCode(body) != proxy.CodeNameUnknown {
		t.Errorf("anonymous, unknown upstream: %d %s", resp.StatusCode, body)
	}
	// A user gets the anonymous entries too.
	if resp, body := m.do(http.MethodGet, "/v2/registry.k8s.io/pause/manifests/3.9", basicAuth("alice")); resp.StatusCode != 200 {
		t.Errorf("alice, registry.k8s.io: %d %s", resp.StatusCode, body)
	}
}

// The warm API needs a user, and tells its handler what that user may pull.
func TestAccessWarmAPI(t *testing.T) {
	up := testupstream.Start(t)
	var mu sync.Mutex
	var checks []string
	warm := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		for _, img := range [][2]string{{"docker.io", "library/alpine"}, {"index.docker.io", "alpine"}, {"docker.io", "acme/app"}, {"nowhere.example", "x"}} {
			err := proxy.CheckPull(r.Context(), img[0], img[1])
			checks = append(checks, img[0]+"/"+img[1]+"="+errString(err))
		}
		w.WriteHeader(http.StatusNoContent)
	})
	m := newMirror(t, up.URL, mirrorOpts{access: newPolicy(t, true), warm: warm})

	resp, body := m.do(http.MethodPost, "/_breakwater/v1/warm", nil)
	wantChallenge(t, "warm without credentials", resp, body)
	if len(checks) != 0 {
		t.Fatal("the warm handler ran for an anonymous client")
	}
	if resp, body := m.do(http.MethodPost, "/_breakwater/v1/warm", basicAuth("alice")); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("warm as alice: %d %s", resp.StatusCode, body)
	}
	want := []string{
		"docker.io/library/alpine=",
		"index.docker.io/alpine=",
		`docker.io/acme/app=403 DENIED: requested access to the resource is denied: user "alice" may not pull docker.io/acme/app`,
		"nowhere.example/x=",
	}
	if strings.Join(checks, "\n") != strings.Join(want, "\n") {
		t.Errorf("CheckPull:\n%s\nwant:\n%s", strings.Join(checks, "\n"), strings.Join(want, "\n"))
	}
	// Without client authentication there is nothing to check.
	if err := proxy.CheckPull(t.Context(), "docker.io", "acme/app"); err != nil {
		t.Errorf("CheckPull outside a warm request: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A 401 or 403 says in its status line who refused, the upstream or this
// mirror, for GET and HEAD alike: containerd prints only the status line
// of a manifest HEAD. The line still reads "403 Forbidden" or "401
// Unauthorized" first, and the bundled classifier rates it fatal, not
// transient. Only this mirror's own 401 carries a challenge — the
// upstream's wants credentials no client can send here — and it alone
// keeps the plain "401 Unauthorized".
func TestRefusalNamesWhoRefused(t *testing.T) {
	up := testupstream.Start(t)
	up.PushImage(t, "acme/app:v1", randomImage(t, 32<<10, 1, types.OCIManifestSchema1))
	open := newMirror(t, up.URL, mirrorOpts{})
	listed := newMirror(t, up.URL, mirrorOpts{access: newPolicy(t, false)})
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		for path, status := range map[string]int{"/library/private/manifests/v1": http.StatusForbidden, "/library/secret/manifests/v1": http.StatusUnauthorized} {
			if strings.HasSuffix(r.URL.Path, path) {
				w.WriteHeader(status)
				return true
			}
		}
		return false
	})
	const (
		upstreamDenied  = "403 Forbidden (upstream docker.io denied access)"
		listDenied      = "403 Forbidden (this mirror's access list does not grant the pull)"
		upstreamUnauthz = "401 Unauthorized (upstream docker.io did not authorize this mirror's pull)"
		// This mirror's own 401 is a step of every login, not only a
		// refusal: it keeps the standard line and the connection, which a
		// crafted line would close.
		ownUnauthz = "401 Unauthorized"
	)
	cases := []struct {
		name, method, path string
		m                  *mirror
		auth               http.Header
		want, code         string
		challenge          bool
	}{
		{"upstream refuses, GET", http.MethodGet, "/v2/library/private/manifests/v1", open, nil, upstreamDenied, proxy.CodeDenied, false},
		{"upstream refuses, HEAD", http.MethodHead, "/v2/library/private/manifests/v1", open, nil, upstreamDenied, proxy.CodeDenied, false},
		{"access list refuses, GET", http.MethodGet, "/v2/acme/app/manifests/v1", listed, basicAuth("alice"), listDenied, proxy.CodeDenied, false},
		{"access list refuses, HEAD", http.MethodHead, "/v2/acme/app/manifests/v1", listed, basicAuth("alice"), listDenied, proxy.CodeDenied, false},
		{"upstream wants credentials, GET", http.MethodGet, "/v2/library/secret/manifests/v1", open, nil, upstreamUnauthz, proxy.CodeUnauthorized, false},
		{"upstream wants credentials, HEAD", http.MethodHead, "/v2/library/secret/manifests/v1", open, nil, upstreamUnauthz, proxy.CodeUnauthorized, false},
		{"no login, GET", http.MethodGet, "/v2/acme/app/manifests/v1", listed, nil, ownUnauthz, proxy.CodeUnauthorized, true},
		{"no login, HEAD", http.MethodHead, "/v2/acme/app/manifests/v1", listed, nil, ownUnauthz, proxy.CodeUnauthorized, true},
		{"unknown user, GET", http.MethodGet, "/v2/library/app/manifests/v1", listed, basicAuth("mallory"), ownUnauthz, proxy.CodeUnauthorized, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.m.do(tc.method, tc.path, tc.auth)
			if resp.Status != tc.want {
				t.Errorf("status line %q, want %q", resp.Status, tc.want)
			}
			if tc.method == http.MethodGet && errorCode(body) != tc.code {
				t.Errorf("body %s, want %s", body, tc.code)
			}
			if tc.challenge {
				wantChallenge(t, tc.name, resp, body)
			} else if got := resp.Header.Get("WWW-Authenticate"); got != "" {
				t.Errorf("WWW-Authenticate %q on a refusal no login here can change", got)
			}
			if tc.challenge && resp.Close {
				t.Error("the challenge closed the connection: every login would dial again")
			}
			line := `failed to resolve reference "docker.io/` + strings.TrimPrefix(strings.TrimSuffix(tc.path, "/manifests/v1"), "/v2/") +
				`:v1": pulling from host 127.0.0.1:5000 failed with status code [manifests v1]: ` + resp.Status
			if r := classify.Classify("ErrImagePull", line); r.Verdict != classify.Fatal {
				t.Errorf("classify rates %q %s (%s), want fatal", line, r.Verdict, r.Rule)
			}
		})
	}
}
