package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// rawHeaderLine is what the fuzzer's header lines are kept to: a name and
// a printable value, as a server could send them.
var rawHeaderLine = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,40}: [ -~]{0,200}$`)

// fuzzAnswer is one answer the fuzzed upstream gives, byte for byte.
type fuzzAnswer struct {
	head string
	body []byte
}

// FuzzUpstreamAnswer plays arbitrary upstream answers — any status, any
// headers (Content-Length, Content-Range, Retry-After, Docker-Content-
// Digest, ratelimit…), any body — to manifest and blob requests through a
// real Breakwater, and checks what its client gets: always an HTTP answer
// (no panic, no empty reply), never an internal error, a status within
// 100-599, and a 200 only with content that hashes to the digest it is
// served under, then and when asked again from the cache; and that the
// cache holds nothing else.
//
//	go test -run '^$' -fuzz '^FuzzUpstreamAnswer$' -fuzztime 30s ./proxy/
func FuzzUpstreamAnswer(f *testing.F) {
	f.Add(200, "Content-Type: application/vnd.docker.distribution.manifest.v2+json", []byte(`{"schemaVersion":2}`), false)
	f.Add(200, "Content-Length: 5", []byte("hello"), true)
	f.Add(206, "Content-Range: bytes 0-4/5\nContent-Length: 5", []byte("hello"), true)
	f.Add(99, "", []byte(nil), false)
	f.Add(999, "Content-Length: 0", []byte(nil), true)
	f.Add(204, "", []byte(nil), false)
	f.Add(304, "", []byte(nil), true)
	f.Add(429, "Retry-After: 99999999999", []byte(`{"errors":[{"code":"TOOMANYREQUESTS"}]}`), false)
	f.Add(503, "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT", []byte(nil), true)
	f.Add(200, "Content-Length: 1099511627776", []byte("short"), true)
	// Nothing to hold back: an empty body must be verified before it is
	// served as complete.
	f.Add(200, "Content-Length: 0", []byte("0"), true)
	f.Add(200, "", []byte(nil), true)
	f.Add(200, "", []byte(nil), false)
	f.Add(200, "Docker-Content-Digest: sha256:0000\nContent-Type: application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1}`), false)
	f.Add(200, "RateLimit-Remaining: 0;w=99999999999999", []byte(`{}`), false)
	f.Add(404, "Content-Type: application/json", []byte(`{"errors":[{"code":"\u0000\r\nX: y","message":"`+strings.Repeat("a", 70000)+`"}]}`), false)

	// One registry for every input, and a Breakwater of its own for each:
	// an answer must not leave the next one a rate limit or an open
	// circuit to meet instead of the upstream.
	var answer atomic.Pointer[fuzzAnswer]
	var n atomic.Int64
	up := testupstream.Start(f)
	p := fastPolicy()
	p.Retry.Attempts = 1
	p.Retry.Deadline = time.Second
	p.Retry.AttemptTimeout = 500 * time.Millisecond
	up.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		a := answer.Load()
		if a == nil || r.URL.Path == "/v2/" {
			return false
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return false
		}
		defer conn.Close()
		_, _ = rw.WriteString(a.head)
		if r.Method != http.MethodHead {
			_, _ = rw.Write(a.body)
		}
		_ = rw.Flush()
		return true
	})
	f.Fuzz(func(t *testing.T, status int, headers string, body []byte, blob bool) {
		var head strings.Builder
		fmt.Fprintf(&head, "HTTP/1.1 %03d Fuzzed\r\n", status)
		for i, line := range strings.Split(headers, "\n") {
			if i < 20 && rawHeaderLine.MatchString(line) {
				head.WriteString(line + "\r\n")
			}
		}
		head.WriteString("Connection: close\r\n\r\n")
		answer.Store(&fuzzAnswer{head: head.String(), body: body})
		m := newMirror(t, up.URL, mirrorOpts{policy: p})

		// A fresh name each time: nothing cached answers for the upstream.
		i := n.Add(1)
		sum := sha256.Sum256(body)
		dgst := "sha256:" + hex.EncodeToString(sum[:])
		path := fmt.Sprintf("/v2/library/f%d/manifests/v1", i)
		if blob {
			path = fmt.Sprintf("/v2/library/f%d/blobs/%s", i, dgst)
		}
		req, _ := http.NewRequest(http.MethodGet, m.srv.URL+path, nil)
		client := &http.Client{Timeout: 20 * time.Second}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("no answer to %s: %v", path, err)
		}
		got, readErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		// One try of a second, a stalled body given up twice at half a
		// second: anything much longer holds a client past its deadline.
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("%s took %v: %s", path, took, resp.Status)
		}
		// Asked again once the upstream no longer has the name (it answers
		// 404 now), a 200 can only come from the cache, and must verify as
		// the first must.
		answer.Store(nil)
		again, againBody := m.get(path)
		if again.StatusCode == http.StatusOK {
			want := dgst
			if !blob {
				want = again.Header.Get("Docker-Content-Digest")
			}
			if s := sha256.Sum256(againBody); "sha256:"+hex.EncodeToString(s[:]) != want {
				t.Fatalf("asked again, 200 for %s with content that is not %s", path, want)
			}
		}
		// Nothing the answer started may outlive the server for long.
		closing := time.Now()
		m.close()
		if took := time.Since(closing); took > 5*time.Second {
			t.Fatalf("closing the server after %s took %v", path, took)
		}
		// Whatever the answer was, the cache holds only content named by
		// its own digest.
		assertCacheVerified(t, m.dir)
		switch {
		case resp.StatusCode < 100 || resp.StatusCode > 599:
			t.Fatalf("status %d", resp.StatusCode)
		case resp.StatusCode == http.StatusInternalServerError:
			t.Fatalf("internal error for %s: %s", path, got)
		case resp.StatusCode == http.StatusOK && readErr == nil:
			want := dgst
			if !blob {
				want = resp.Header.Get("Docker-Content-Digest")
			}
			s := sha256.Sum256(got)
			if h := "sha256:" + hex.EncodeToString(s[:]); h != want {
				t.Fatalf("200 for %s with content %s, served as %s", path, h, want)
			}
			if !blob && !isManifest(got) {
				t.Fatalf("200 for %s with %q, which is no manifest", path, got)
			}
		case resp.StatusCode >= 500 && !bytes.Contains(got, []byte("upstream")) && resp.Request.Method != http.MethodHead:
			t.Fatalf("%d without naming the upstream: %s", resp.StatusCode, got)
		}
	})
}

// isManifest: a JSON object of schemaVersion 2, or OCI 1.1-rc's artifact
// manifest, which had none.
func isManifest(b []byte) bool {
	var probe struct {
		SchemaVersion *int   `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	if len(bytes.TrimSpace(b)) == 0 || bytes.TrimSpace(b)[0] != '{' || json.Unmarshal(b, &probe) != nil {
		return false
	}
	return probe.MediaType == "application/vnd.oci.artifact.manifest.v1+json" || (probe.SchemaVersion != nil && *probe.SchemaVersion == 2)
}
