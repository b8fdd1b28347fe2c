package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/storage"
	"github.com/breakwater-registry/breakwater/warm"
)

// startWarmMirror runs a Breakwater in front of a test registry holding
// library/app:v1, org/tools:v2 and library/multi:v1 (amd64 and arm64), and
// answering 503 for anything of library/down, and returns the Breakwater's
// URL and app:v1's digest.
func startWarmMirror(t *testing.T) (mirrorURL, appDigest string) {
	t.Helper()
	up := testupstream.Start(t)
	img := func(size, layers int64) v1.Image {
		i, err := random.Image(size, layers)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	d := up.PushImage(t, "library/app:v1", img(2048, 2))
	up.PushImage(t, "org/tools:v2", img(1024, 1))
	up.PushIndex(t, "library/multi:v1", mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: img(1024, 1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: img(1024, 1), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	))
	up.Play("", "/library/down/", testupstream.Status(http.StatusServiceUnavailable)).Forever()
	store, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{
		Store: store, DefaultUpstream: "docker.io", Logger: slog.New(slog.DiscardHandler),
		Upstreams: []proxy.UpstreamConfig{{Name: "docker.io", URL: up.URL, Policy: oneTry}},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL, d.String()
}

func TestWarmCommand(t *testing.T) {
	mirror, appDigest := startWarmMirror(t)
	fixture := filepath.Join("..", "..", "warm", "testdata", "images.txt")
	unreadable := filepath.Join(t.TempDir(), "nope.txt")
	emptyList := filepath.Join(t.TempDir(), "empty.txt")
	if err := os.WriteFile(emptyList, []byte("# nothing yet\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := []string{"--mirror", mirror}
	mirrorHost := strings.TrimPrefix(mirror, "http://")
	with := func(a ...string) []string { return append(append([]string{}, m...), a...) }

	summary := regexp.MustCompile(`(?m)^warmed (\d+) ok, (\d+) failed: [0-9.]+ (B|KiB|MiB) in [0-9.]+s \([0-9.]+ MB/s\)$`)
	cases := []struct {
		name       string
		args       []string
		wantExit   int
		wantOut    []string // substrings of stdout
		wantErr    []string // substrings of stderr
		okFailed   [2]string
		notWantOut []string
	}{
		// Usage errors.
		{name: "no images", args: m, wantExit: 2, wantErr: []string{"no image given", "usage: breakwater warm"}},
		{name: "empty list", args: with("--file", emptyList), wantExit: 2, wantErr: []string{"no image given"}},
		{name: "unreadable file", args: with("--file", unreadable, "app:v1"), wantExit: 2, wantErr: []string{"--file", "nope.txt"}},
		{name: "platform without arch", args: with("--platform", "linux", "app:v1"), wantExit: 2, wantErr: []string{`platform "linux"`}},
		{name: "platform too long", args: with("--platform", "linux/arm/v7/x", "app:v1"), wantExit: 2, wantErr: []string{"os/arch[/variant]"}},
		{name: "mirror not http", args: []string{"--mirror", "ftp://x", "app:v1"}, wantExit: 2, wantErr: []string{"--mirror"}},
		{name: "mirror no host", args: []string{"--mirror", "http://", "app:v1"}, wantExit: 2, wantErr: []string{"--mirror"}},
		{name: "mirror unparsable", args: []string{"--mirror", "http://[::1", "app:v1"}, wantExit: 2, wantErr: []string{"--mirror"}},
		{name: "concurrency zero", args: with("--concurrency", "0", "app:v1"), wantExit: 2, wantErr: []string{"--concurrency"}},
		{name: "unknown flag", args: with("--bogus", "app:v1"), wantExit: 2, wantErr: []string{"bogus"}},

		// Warming.
		{
			name: "one image", args: with("app:v1"), wantExit: 0,
			wantOut:  []string{"warming docker.io/library/app:v1\n", "done docker.io/library/app:v1 " + appDigest + " 3 blobs "},
			okFailed: [2]string{"1", "0"},
		},
		{
			name: "from file", args: with("--file", fixture), wantExit: 0,
			wantOut: []string{
				"warming docker.io/library/app:v1\n", "warming docker.io/org/tools:v2\n",
				"done docker.io/org/tools:v2 sha256:",
			},
			okFailed: [2]string{"3", "0"}, notWantOut: []string{"#", "FAILED"},
		},
		{
			name: "file and arguments", args: with("--file", fixture, "multi:v1"), wantExit: 0,
			wantOut:  []string{"done docker.io/library/multi:v1 sha256:", " 4 blobs "},
			okFailed: [2]string{"4", "0"},
		},
		{
			name: "flags after images", args: []string{"multi:v1", "--platform", "linux/arm64/v8", "--mirror", mirror}, wantExit: 0,
			wantOut:  []string{"done docker.io/library/multi:v1 sha256:", " 2 blobs "},
			okFailed: [2]string{"1", "0"},
		},
		{
			name: "double dash", args: with("--", "app:v1"), wantExit: 0,
			okFailed: [2]string{"1", "0"},
		},
		{
			name: "one fails", args: with("app:v1", "missing:v1", "org/tools:v2"), wantExit: 1,
			wantOut: []string{
				"done docker.io/library/app:v1 ",
				"FAILED docker.io/library/missing:v1: manifest v1: upstream " + mirrorHost +
					": GET /v2/docker.io/library/missing/manifests/v1: answered 404 Not Found: MANIFEST_UNKNOWN: ",
				"done docker.io/org/tools:v2 ",
			},
			okFailed: [2]string{"2", "1"},
		},
		{
			// What the mirror's status line says is all the user learns of
			// why.
			name: "upstream down", args: with("down:v1"), wantExit: 1,
			wantOut: []string{"FAILED docker.io/library/down:v1: manifest v1: upstream " + mirrorHost +
				": GET /v2/docker.io/library/down/manifests/v1: answered 503 Service Unavailable (breakwater-transient: upstream docker.io answered 503 Service Unavailable; retry after "},
			okFailed: [2]string{"0", "1"},
		},
		{
			name: "platform not there", args: with("--platform", "windows/amd64", "multi:v1"), wantExit: 1,
			wantOut:  []string{"FAILED docker.io/library/multi:v1: ", "no manifest for windows/amd64"},
			okFailed: [2]string{"0", "1"},
		},
		{
			name: "invalid reference", args: with("Not/A:Ref:x"), wantExit: 1,
			wantOut:  []string{"FAILED Not/A:Ref:x: invalid image reference"},
			okFailed: [2]string{"0", "1"},
		},
		{
			name: "mirror down", args: []string{"--mirror", "http://" + testupstream.FreeAddr(t), "app:v1"}, wantExit: 1,
			wantOut:  []string{"FAILED docker.io/library/app:v1: ", "connection refused"},
			okFailed: [2]string{"0", "1"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runWarm(c.args, &stdout, &stderr)
			out := stdout.String()
			if code != c.wantExit {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.wantExit, out, stderr.String())
			}
			for _, s := range c.wantOut {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range c.notWantOut {
				if strings.Contains(out, s) {
					t.Errorf("stdout has %q:\n%s", s, out)
				}
			}
			for _, s := range c.wantErr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
			if strings.ContainsAny(out, "\r\x1b") {
				t.Errorf("progress bar drawn on a non-terminal:\n%q", out)
			}
			if c.wantExit == 2 {
				if out != "" {
					t.Errorf("usage error printed to stdout:\n%s", out)
				}
				return
			}
			sm := summary.FindStringSubmatch(out)
			if sm == nil {
				t.Fatalf("no summary line in:\n%s", out)
			}
			if sm[1] != c.okFailed[0] || sm[2] != c.okFailed[1] {
				t.Errorf("summary %q, want %s ok, %s failed", sm[0], c.okFailed[0], c.okFailed[1])
			}
			if !strings.HasSuffix(out, sm[0]+"\n") {
				t.Errorf("summary is not the last line:\n%s", out)
			}
		})
	}
}

func TestWarmCommandJSON(t *testing.T) {
	mirror, appDigest := startWarmMirror(t)
	var stdout, stderr bytes.Buffer
	code := runWarm([]string{"--mirror", mirror, "--json", "app:v1", "missing:v1"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 2 image objects and a summary, got:\n%s", stdout.String())
	}
	type row struct {
		Image     string  `json:"image"`
		Digest    string  `json:"digest"`
		Manifests int     `json:"manifests"`
		Blobs     int     `json:"blobs"`
		Bytes     int64   `json:"bytes"`
		Seconds   float64 `json:"seconds"`
		Error     string  `json:"error"`
	}
	var rows [2]row
	for i := range rows {
		dec := json.NewDecoder(strings.NewReader(lines[i]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rows[i]); err != nil {
			t.Fatalf("line %d %q: %v", i, lines[i], err)
		}
	}
	if r := rows[0]; r.Image != "docker.io/library/app:v1" || r.Digest != appDigest || r.Manifests != 1 || r.Blobs != 3 || r.Bytes <= 0 || r.Error != "" {
		t.Errorf("app row = %+v", r)
	}
	if r := rows[1]; r.Image != "docker.io/library/missing:v1" || r.Digest != "" || !strings.Contains(r.Error, "MANIFEST_UNKNOWN") {
		t.Errorf("missing row = %+v", r)
	}
	var sum struct {
		Summary struct {
			OK, Failed, Skipped int
			Bytes               int64
			Seconds             float64
			MBPerSecond         float64 `json:"mbPerSecond"`
		} `json:"summary"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &sum); err != nil {
		t.Fatal(err)
	}
	if s := sum.Summary; s.OK != 1 || s.Failed != 1 || s.Bytes != rows[0].Bytes || s.Seconds <= 0 {
		t.Errorf("summary = %+v", s)
	}
}

// The terminal display redraws one line per image in place and leaves the
// same done lines behind.
func TestWarmPrinterTerminal(t *testing.T) {
	var out bytes.Buffer
	p := newWarmPrinter(&out, true, false)
	img := "docker.io/library/app:v1"
	p.event(warm.Event{Kind: warm.ImageStarted, Image: img})
	p.event(warm.Event{Kind: warm.ImagePlanned, Image: img, BlobsTotal: 2, BytesTotal: 3 << 20})
	p.lastDraw = time.Time{}
	p.event(warm.Event{Kind: warm.BlobDone, Image: img, BlobsDone: 1, BlobsTotal: 2, BytesDone: 1 << 20, BytesTotal: 3 << 20})
	res := &warm.Result{Image: img, Digest: "sha256:abc", Manifests: 1, Blobs: 2, Bytes: 3 << 20, Duration: 1500 * time.Millisecond}
	p.event(warm.Event{Kind: warm.ImageDone, Image: img, Result: res})
	got := out.String()
	for _, s := range []string{
		"\r\x1b[K" + img + "  resolving…",
		"\r\x1b[K" + img + " [------------------------] 0 B / 3.0 MiB  0/2 blobs",
		"\r\x1b[K" + img + " [########----------------] 1.0 MiB / 3.0 MiB  1/2 blobs",
		"\r\x1b[Kdone " + img + " sha256:abc 2 blobs 3.0 MiB in 1.5s\n",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("terminal output lacks %q:\n%q", s, got)
		}
	}
	if !warmIsTerminal(os.Stdout) && warmIsTerminal(&out) {
		t.Error("a buffer is not a terminal")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if warmIsTerminal(f) {
		t.Error("a regular file is not a terminal")
	}
}

func TestWarmBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 2202010: "2.1 MiB", 5 << 30: "5.0 GiB"} {
		if got := warmBytes(n); got != want {
			t.Errorf("warmBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
