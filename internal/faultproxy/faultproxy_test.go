package faultproxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/faultproxy"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

type fixture struct {
	up    *testupstream.Upstream
	p     *faultproxy.Proxy
	ctl   string // control API base URL
	log   string // the proxy's log file
	image string // a manifest path the upstream has
	blob  string // a blob path the upstream has
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	up := testupstream.Start(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/app:v1", img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "faultproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	f := &fixture{up: up, log: logFile.Name(), image: "/v2/library/app/manifests/v1", blob: "/v2/library/app/blobs/" + ld.String()}
	f.p, err = faultproxy.Start(context.Background(), faultproxy.Config{
		Upstream: up.URL,
		Addr:     "127.0.0.1:0",
		Logger:   slog.New(slog.NewJSONHandler(logFile, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.p.Close() })
	ctl := httptest.NewServer(f.p.ControlHandler())
	t.Cleanup(ctl.Close)
	f.ctl = ctl.URL
	return f
}

func (f *fixture) logText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// control sends POST /mode?QUERY and returns the status and the answer.
func (f *fixture) control(t *testing.T, query string) (int, string) {
	t.Helper()
	resp, err := http.Post(f.ctl+"/mode?"+query, "", nil)
	if err != nil {
		t.Fatalf("POST /mode?%s: %v", query, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// set switches with the control API and fails the test unless it answers
// "mode MODE".
func (f *fixture) set(t *testing.T, query string) {
	t.Helper()
	code, body := f.control(t, query)
	q, _ := url.ParseQuery(query)
	if want := "mode " + q.Get("set"); code != http.StatusOK || body != want {
		t.Fatalf("POST /mode?%s: %d %q, want 200 %q", query, code, body, want)
	}
}

func (f *fixture) modeNow(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(f.ctl + "/mode")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// noKeepAlive is a client whose every request dials: a switch to refuse
// must show on the next request.
var noKeepAlive = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 10 * time.Second}

func (f *fixture) do(t *testing.T, c *http.Client, method, path string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(method, f.p.URL()+path, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// TestModesAnswer: what each mode, with and without parameters, answers,
// and whether the request reached the upstream.
func TestModesAnswer(t *testing.T) {
	f := newFixture(t)
	const absent = "<absent>"
	cases := []struct {
		name    string
		query   string
		method  string
		blob    bool // request the blob rather than the manifest
		status  int
		code    string            // the OCI error code of the fault proxy's answer
		forward bool              // the request must reach the upstream
		headers map[string]string // absent: must not be sent
		// retryAfterDate: Retry-After is an HTTP date this far ahead.
		retryAfterDate time.Duration
	}{
		{name: "pass", query: "set=pass", method: http.MethodGet, status: 200, forward: true,
			headers: map[string]string{"Retry-After": absent, "RateLimit-Limit": absent, "RateLimit-Remaining": absent}},
		{name: "pass with rate-limit headers", query: "set=pass&ratelimit_remaining=42", method: http.MethodGet, status: 200, forward: true,
			headers: map[string]string{"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "42;w=21600"}},
		{name: "429", query: "set=429", method: http.MethodGet, status: 429, code: "TOOMANYREQUESTS",
			headers: map[string]string{"Retry-After": "1", "RateLimit-Remaining": absent}},
		{name: "429 HEAD has no body", query: "set=429", method: http.MethodHead, status: 429, code: "TOOMANYREQUESTS",
			headers: map[string]string{"Retry-After": "1"}},
		{name: "429 retry_after and rate limit", query: "set=429&retry_after=15&ratelimit_remaining=0", method: http.MethodGet, status: 429, code: "TOOMANYREQUESTS",
			headers: map[string]string{"Retry-After": "15", "RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "0;w=21600"}},
		{name: "429 retry_after date", query: "set=429&retry_after=date:20", method: http.MethodGet, status: 429, code: "TOOMANYREQUESTS",
			retryAfterDate: 20 * time.Second},
		{name: "503", query: "set=503", method: http.MethodGet, status: 503, code: "UNAVAILABLE",
			headers: map[string]string{"Retry-After": absent}},
		{name: "503 on a blob too", query: "set=503", method: http.MethodGet, blob: true, status: 503, code: "UNAVAILABLE"},
		{name: "503 retry_after", query: "set=503&retry_after=7", method: http.MethodGet, status: 503, code: "UNAVAILABLE",
			headers: map[string]string{"Retry-After": "7"}},
		{name: "503 retry_after date", query: "set=503&retry_after=date:30", method: http.MethodGet, status: 503, code: "UNAVAILABLE",
			retryAfterDate: 30 * time.Second},
		{name: "404 manifest", query: "set=404", method: http.MethodGet, status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "404 passes blobs", query: "set=404", method: http.MethodGet, blob: true, status: 200, forward: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.set(t, tc.query)
			path := f.image
			if tc.blob {
				path = f.blob
			}
			before := f.up.Count(tc.method, path)
			resp, body, err := f.do(t, noKeepAlive, tc.method, path)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: %s, want %d", tc.method, path, resp.Status, tc.status)
			}
			forwarded := f.up.Count(tc.method, path) - before
			if want := map[bool]int{true: 1, false: 0}[tc.forward]; forwarded != want {
				t.Errorf("the upstream saw the request %d times, want %d", forwarded, want)
			}
			if tc.method == http.MethodGet && !tc.forward {
				var e struct {
					Errors []struct{ Code string } `json:"errors"`
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tc.code {
					t.Errorf("body %q: want one OCI error %s", body, tc.code)
				}
			}
			if tc.method == http.MethodHead && len(body) != 0 {
				t.Errorf("HEAD answered with a body of %d bytes", len(body))
			}
			for k, want := range tc.headers {
				got, ok := resp.Header.Get(k), len(resp.Header.Values(k)) > 0
				switch {
				case want == absent && ok:
					t.Errorf("%s: %q, want none", k, got)
				case want != absent && got != want:
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			if tc.retryAfterDate > 0 {
				ra := resp.Header.Get("Retry-After")
				at, err := http.ParseTime(ra)
				if err != nil {
					t.Fatalf("Retry-After %q is not an HTTP date: %v", ra, err)
				}
				// An HTTP date has whole seconds.
				if ahead := time.Until(at); ahead < tc.retryAfterDate-2*time.Second || ahead > tc.retryAfterDate+time.Second {
					t.Errorf("Retry-After %q is %s ahead, want about %s", ra, ahead.Round(time.Second), tc.retryAfterDate)
				}
			}
		})
	}
}

// TestControlRejects: a setting the proxy cannot carry out, or a parameter
// that would do nothing, is refused with 400 and changes nothing.
func TestControlRejects(t *testing.T) {
	f := newFixture(t)
	f.set(t, "set=404")
	for _, q := range []string{
		"set=bogus",
		"set=",
		"retry_after=3",
		"set=503&retry-after=3",
		"set=503&retry_after=soon",
		"set=503&retry_after=-1",
		"set=503&retry_after=date:x",
		"set=pass&retry_after=3",
		"set=404&retry_after=3",
		"set=pass&for=1s",
		"set=503&for=0s",
		"set=503&for=-1s",
		"set=503&for=ten",
		"set=503&ratelimit_remaining=5",
		"set=refuse&ratelimit_remaining=5",
		"set=429&ratelimit_remaining=-1",
		"set=429&ratelimit_remaining=x",
		"set=429&set=503",
		"set=hang&retry_after=3",
		"set=hang&ratelimit_remaining=5",
	} {
		if code, body := f.control(t, q); code != http.StatusBadRequest {
			t.Errorf("POST /mode?%s: %d %q, want 400", q, code, body)
		}
	}
	if got := f.modeNow(t); got != "mode 404" {
		t.Errorf("after the rejected calls: %q, want mode 404", got)
	}
}

// TestModeInTheBody: the first form of the API, the mode as the body.
func TestModeInTheBody(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Post(f.ctl+"/mode", "text/plain", strings.NewReader("503\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "mode 503\n" {
		t.Fatalf("POST /mode with body 503: %d %q", resp.StatusCode, b)
	}
	if r, _, err := f.do(t, noKeepAlive, http.MethodGet, "/v2/"); err != nil || r.StatusCode != 503 {
		t.Fatalf("GET /v2/ in 503: %v %v", r, err)
	}
}

// TestForReturnsToPass: a mode with for= holds that long, not less, then
// the proxy passes again by itself and logs the change; a switch before
// then cancels the return.
func TestForReturnsToPass(t *testing.T) {
	const hold = 300 * time.Millisecond
	for _, mode := range []string{"503", "429", "refuse"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t)
			addr := f.p.Addr()
			t0 := time.Now()
			f.set(t, "set="+mode+"&for="+hold.String())
			r, _, err := f.do(t, noKeepAlive, http.MethodGet, "/v2/")
			switch {
			case mode == "refuse" && !errors.Is(err, syscall.ECONNREFUSED):
				t.Fatalf("right after the switch: %v, want connection refused", err)
			case mode != "refuse" && (err != nil || r.Status[:3] != mode):
				t.Fatalf("right after the switch: %v %v, want %s", r, err, mode)
			}
			for f.modeNow(t) != "mode pass" {
				if time.Since(t0) > hold+5*time.Second {
					t.Fatalf("still %q %s after the switch", f.modeNow(t), time.Since(t0))
				}
				time.Sleep(5 * time.Millisecond)
			}
			if took := time.Since(t0); took < hold {
				t.Errorf("back to pass after %s, want at least %s", took, hold)
			}
			if r, _, err := f.do(t, noKeepAlive, http.MethodGet, "/v2/"); err != nil || r.StatusCode != 200 {
				t.Fatalf("after the return to pass: %v %v, want 200", r, err)
			}
			if f.p.Addr() != addr {
				t.Errorf("listening on %s after the return, was %s", f.p.Addr(), addr)
			}
			if want := `"msg":"mode","mode":"pass","listen":"` + addr + `","from":"` + mode + `","after":"300ms"}`; !strings.Contains(f.logText(t), want) {
				t.Errorf("log has no line with %s:\n%s", want, f.logText(t))
			}
		})
	}
	t.Run("a switch cancels the return", func(t *testing.T) {
		f := newFixture(t)
		f.set(t, "set=503&for=100ms")
		f.set(t, "set=429")
		time.Sleep(400 * time.Millisecond)
		if got := f.modeNow(t); got != "mode 429" {
			t.Errorf("400 ms after 503 for 100 ms was replaced by 429: %q", got)
		}
	})
}

// TestRefuseThenListenAgain: refuse closes the listener and the kept-alive
// connections; any other mode listens again on the same address.
func TestRefuseThenListenAgain(t *testing.T) {
	f := newFixture(t)
	keepAlive := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	if r, _, err := f.do(t, keepAlive, http.MethodGet, "/v2/"); err != nil || r.StatusCode != 200 {
		t.Fatalf("pass: %v %v", r, err)
	}
	addr := f.p.Addr()
	f.set(t, "set=refuse")
	if _, _, err := f.do(t, noKeepAlive, http.MethodGet, "/v2/"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a new connection: %v, want connection refused", err)
	}
	// The kept-alive connection was closed, so this request dials too.
	if r, _, err := f.do(t, keepAlive, http.MethodGet, "/v2/"); err == nil {
		t.Errorf("the kept-alive client got %s while refusing", r.Status)
	}
	f.set(t, "set=pass")
	if f.p.Addr() != addr {
		t.Errorf("listening on %s, was %s", f.p.Addr(), addr)
	}
	if r, _, err := f.do(t, keepAlive, http.MethodGet, f.image); err != nil || r.StatusCode != 200 {
		t.Fatalf("pass again: %v %v", r, err)
	}
}

// TestHang: hang holds a request unanswered, the connection open, until the
// client gives up (logged with status 0) or the mode changes, when the new
// mode answers it; a hang with for= answers by itself once it runs out.
func TestHang(t *testing.T) {
	cases := []struct {
		name   string
		query  string        // the hang
		then   string        // the switch while the request is held ("": none)
		after  time.Duration // how long the request is held before the switch
		client time.Duration // the client's timeout
		status int           // the answer, 0: none (the client timed out)
		reach  bool          // the request must reach the upstream
	}{
		{name: "client gives up", query: "set=hang", after: 0, client: 300 * time.Millisecond, status: 0},
		{name: "switch to pass", query: "set=hang", then: "set=pass", after: 300 * time.Millisecond, client: 10 * time.Second, status: 200, reach: true},
		{name: "switch to 503", query: "set=hang", then: "set=503", after: 300 * time.Millisecond, client: 10 * time.Second, status: 503},
		{name: "for runs out", query: "set=hang&for=300ms", client: 10 * time.Second, status: 200, reach: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.set(t, tc.query)
			c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: tc.client}
			type result struct {
				resp *http.Response
				err  error
				took time.Duration
			}
			done := make(chan result, 1)
			before := f.up.Count(http.MethodGet, f.image)
			t0 := time.Now()
			go func() {
				resp, _, err := f.do(t, c, http.MethodGet, f.image)
				done <- result{resp, err, time.Since(t0)}
			}()
			if tc.then != "" {
				select {
				case r := <-done:
					t.Fatalf("answered before the switch, after %s: %v %v", r.took, r.resp, r.err)
				case <-time.After(tc.after):
				}
				f.set(t, tc.then)
			}
			r := <-done
			switch {
			case tc.status == 0 && r.err == nil:
				t.Fatalf("answered %s after %s, want no answer", r.resp.Status, r.took)
			case tc.status == 0:
				if r.took < tc.client {
					t.Errorf("the client gave up after %s, before its timeout %s", r.took, tc.client)
				}
			case r.err != nil:
				t.Fatalf("after %s: %v, want %d", r.took, r.err, tc.status)
			case r.resp.StatusCode != tc.status:
				t.Fatalf("answered %s, want %d", r.resp.Status, tc.status)
			case r.took < 300*time.Millisecond:
				t.Errorf("answered after %s, held less than 300ms", r.took)
			}
			if got := f.up.Count(http.MethodGet, f.image) - before; got != map[bool]int{true: 1}[tc.reach] {
				t.Errorf("the upstream saw the request %d times, want %v", got, tc.reach)
			}
			if tc.status == 0 {
				// the handler logs once it sees the client gone
				want := `"mode":"hang","status":0}`
				for t1 := time.Now(); !strings.Contains(f.logText(t), want); time.Sleep(10 * time.Millisecond) {
					if time.Since(t1) > 5*time.Second {
						t.Fatalf("log has no line with %s:\n%s", want, f.logText(t))
					}
				}
			}
		})
	}
}

// TestStatsCounts: /stats counts the requests handled in each mode.
func TestStatsCounts(t *testing.T) {
	f := newFixture(t)
	steps := []struct {
		query string
		n     int
	}{{"set=pass", 3}, {"set=503", 2}, {"set=404", 4}, {"set=refuse", 2}, {"set=429", 1}}
	// a request held in hang until its client gives up
	impatient := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 100 * time.Millisecond}
	for _, st := range steps {
		f.set(t, st.query)
		for range st.n {
			_, _, _ = f.do(t, noKeepAlive, http.MethodGet, f.image)
		}
	}
	f.set(t, "set=hang")
	if _, _, err := f.do(t, impatient, http.MethodGet, f.image); err == nil {
		t.Fatal("hang: the request was answered")
	}
	// the handler logs once it sees the client gone: not answered in 429
	for t1 := time.Now(); !strings.Contains(f.logText(t), `"mode":"hang","status":0}`); time.Sleep(10 * time.Millisecond) {
		if time.Since(t1) > 5*time.Second {
			t.Fatalf("the held request was not logged as unanswered:\n%s", f.logText(t))
		}
	}
	f.set(t, "set=429")
	resp, err := http.Get(f.ctl + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Mode     string           `json:"mode"`
		Since    time.Time        `json:"since"`
		Requests map[string]int64 `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"pass": 3, "503": 2, "404": 4, "refuse": 0, "429": 1, "hang": 1}
	if st.Mode != "429" || len(st.Requests) != len(want) {
		t.Errorf("stats %+v, want mode 429 and counts %v", st, want)
	}
	for m, n := range want {
		if st.Requests[m] != n {
			t.Errorf("requests[%s] = %d, want %d", m, st.Requests[m], n)
		}
	}
	if age := time.Since(st.Since); age < 0 || age > 5*time.Second {
		t.Errorf("since %s: %s ago", st.Since, age)
	}
}

// TestSettingStringParses: a Setting's String is control API syntax that
// parses back to the same setting.
func TestSettingStringParses(t *testing.T) {
	for _, q := range []string{
		"set=pass",
		"set=pass&ratelimit_remaining=3",
		"set=429&retry_after=15&for=2s&ratelimit_remaining=0",
		"set=503&retry_after=date:30&for=1.5s",
		"set=refuse&for=250ms",
		"set=hang&for=30s",
	} {
		v, _ := url.ParseQuery(q)
		s, err := faultproxy.ParseSetting(v)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if s.String() != q {
			t.Errorf("ParseSetting(%s).String() = %s", q, s.String())
		}
	}
}
