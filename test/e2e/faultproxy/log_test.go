package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/faultproxy"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogLines: the log file holds the lines test/e2e's scripts parse,
// key for key and byte for byte as before the fault proxy became a
// library (time first, no level, & escaped as \u0026), and nothing else:
// a proxy error goes to stderr.
func TestLogLines(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	var logW, errW lockedBuffer
	p, err := faultproxy.Start(context.Background(), faultproxy.Config{
		Upstream: upstream.URL, Addr: "127.0.0.1:0", Logger: slog.New(newLineHandler(&logW, &errW)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	get := func(path string) {
		t.Helper()
		resp, err := client.Get(p.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	get("/v2/library/x/manifests/v1?ns=docker.io&n=%3C1%3E")
	if err := p.Set(context.Background(), faultproxy.Setting{Mode: faultproxy.TooManyRequests}); err != nil {
		t.Fatal(err)
	}
	get("/v2/")
	upstream.Close()
	if err := p.Set(context.Background(), faultproxy.Setting{Mode: faultproxy.Pass}); err != nil {
		t.Fatal(err)
	}
	get("/v2/") // the upstream is gone: 502

	const ts = `\{"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",`
	addr := regexp.QuoteMeta(p.Addr())
	want := []string{
		ts + `"msg":"mode","mode":"pass","listen":"` + addr + `"\}`,
		ts + `"msg":"request","method":"GET","path":"/v2/library/x/manifests/v1","query":"ns=docker.io\\u0026n=%3C1%3E","mode":"pass","status":200\}`,
		ts + `"msg":"mode","mode":"429","listen":"` + addr + `"\}`,
		ts + `"msg":"request","method":"GET","path":"/v2/","query":"","mode":"429","status":429\}`,
		ts + `"msg":"mode","mode":"pass","listen":"` + addr + `"\}`,
		ts + `"msg":"request","method":"GET","path":"/v2/","query":"","mode":"pass","status":502\}`,
	}
	lines := strings.Split(strings.TrimSuffix(logW.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d log lines, want %d:\n%s", len(lines), len(want), logW.String())
	}
	for i, re := range want {
		if !regexp.MustCompile("^" + re + "$").MatchString(lines[i]) {
			t.Errorf("line %d:\n  %s\nwant\n  %s", i+1, lines[i], re)
		}
	}
	if e := errW.String(); !strings.HasPrefix(e, "faultproxy: ") || !strings.Contains(e, "proxy error") || strings.Count(e, "\n") != 1 {
		t.Errorf("stderr: %q, want one faultproxy: ... proxy error line", e)
	}
}
