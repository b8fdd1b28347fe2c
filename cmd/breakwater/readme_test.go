package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/classify"
)

// repoRoot is the repository, from this package's directory.
const repoRoot = "../.."

// readme is the repository's README.md.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestREADMEConfigError: the README's example of a refused configuration
// is what serve prints for it, to the letter.
func TestREADMEConfigError(t *testing.T) {
	text := readme(t)
	const cmd = "$ breakwater serve --config cfg.yaml\n"
	i := strings.Index(text, cmd)
	if i < 0 {
		t.Fatalf("README.md has no %q example", strings.TrimSpace(cmd))
	}
	rest := text[i+len(cmd):]
	want := rest[:strings.IndexByte(rest, '\n')+1]

	dir := t.TempDir()
	// The example's file: the misspelt key on line 2.
	if err := os.WriteFile(filepath.Join(dir, "cfg.yaml"), []byte("cache:\n  tag_tll: 5m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	var stderr bytes.Buffer
	if code := run([]string{"serve", "--config", "cfg.yaml"}, nil, &bytes.Buffer{}, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if stderr.String() != want {
		t.Errorf("serve printed\n%s\nthe README says\n%s", stderr.String(), want)
	}
}

// TestREADMEVersion: the README's and docs/image.md's examples of
// `breakwater version` have the shape it prints.
func TestREADMEVersion(t *testing.T) {
	image, err := os.ReadFile(filepath.Join(repoRoot, "docs", "image.md"))
	if err != nil {
		t.Fatal(err)
	}
	example := regexp.MustCompile(`breakwater \d+\.\d+\.\d+ \(revision [0-9a-f]{12}, go[0-9.]+\)`)
	for name, text := range map[string]string{"README.md": readme(t), "docs/image.md": string(image)} {
		if !example.MatchString(text) {
			t.Errorf("%s has no example of breakwater version's output", name)
		}
	}
	version, revision = "0.1.0", "15ebe59b4c2a"
	defer func() { version, revision = "", "" }()
	var stdout bytes.Buffer
	if code := run([]string{"version"}, nil, &stdout, &bytes.Buffer{}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := strings.TrimSpace(stdout.String())
	if !example.MatchString(got) || !strings.HasSuffix(got, runtime.Version()+")") {
		t.Errorf("breakwater version printed %q, not the documented shape", got)
	}
}

// TestREADMECraftedPhrase: the format the README gives as exact for the
// crafted 503's reason phrase is the one Breakwater writes, its example
// is one, and its table of causes names every cause the classifier knows.
func TestREADMECraftedPhrase(t *testing.T) {
	text := readme(t)
	const intro, end = "The format is exactly\n\n```\n", "Guaranteed substrings"
	i, j := strings.Index(text, intro), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q block followed by %q", strings.TrimSpace(intro), end)
	}
	section := text[i+len(intro) : j]
	documented := section[:strings.IndexByte(section, '\n')]
	written := strings.Replace(classify.TransientMessage("<upstream>", "<cause>", 7*time.Second), "retry after 7s", "retry after <N>s", 1)
	if documented != written {
		t.Errorf("the README's format\n  %s\nBreakwater writes\n  %s", documented, written)
	}
	example := "HTTP/1.1 503 " + classify.TransientMessage("docker.io", classify.CauseTooManyRequests, 12*time.Second)
	if !strings.Contains(text[:i], example+"\n") {
		t.Errorf("the README's example before the format is not %q", example)
	}
	for _, cause := range []string{
		classify.CauseTooManyRequests, classify.CauseInternalServerError, classify.CauseBadGateway,
		classify.CauseServiceUnavailable, classify.CauseGatewayTimeout, classify.CauseRequestTimeout,
		classify.CauseConnectionRefused, classify.CauseConnectionReset, classify.CauseTimeout,
		classify.CauseNoSuchHost, classify.CauseCircuitOpen,
	} {
		if !strings.Contains(section, "`"+cause) {
			t.Errorf("the README's table of causes lacks %q", cause)
		}
	}
}

// fencedAfter returns the body of the first fenced code block that follows
// marker in text.
func fencedAfter(t *testing.T, text, marker string) string {
	t.Helper()
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("README.md has no %q", marker)
	}
	rest := text[i:]
	open := strings.Index(rest, "```")
	if open < 0 {
		t.Fatalf("no code block after %q", marker)
	}
	rest = rest[open:]
	rest = rest[strings.IndexByte(rest, '\n')+1:]
	end := strings.Index(rest, "```")
	if end < 0 {
		t.Fatalf("the code block after %q does not end", marker)
	}
	return rest[:end]
}

// withoutComments drops the lines that are TOML comments, keeping the
// rest as it is.
func withoutComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestREADMENodeConfig: the README's daemon.json is what docker-config
// prints, to the letter, and its hosts.toml and registries.conf examples
// are what containerd-config and registries-conf print, but for their
// comments and the upstreams left out.
func TestREADMENodeConfig(t *testing.T) {
	text := readme(t)
	const mirror = "http://breakwater.internal:5000"
	for _, tc := range []struct {
		name   string
		marker string // what the README's example follows
		args   []string
		exact  bool // else: the example, comments dropped, is part of the output
	}{
		{"docker-config", "/etc/docker/daemon.json` merges this in", []string{"docker-config", "--mirror", mirror}, true},
		{"containerd-config", "### containerd (`hosts.toml`)", []string{"containerd-config", "--mirror", mirror}, false},
		{"registries-conf", "`breakwater registries-conf --mirror " + mirror + "` writes", []string{"registries-conf", "--mirror", mirror}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			example := fencedAfter(t, text, tc.marker)
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, nil, &stdout, &stderr); code != 0 {
				t.Fatalf("%v: exit %d: %s", tc.args, code, stderr.String())
			}
			got := stdout.String()
			if tc.exact {
				if got != example {
					t.Errorf("breakwater %s prints\n%s\nthe README says\n%s", strings.Join(tc.args, " "), got, example)
				}
				return
			}
			if !strings.Contains(withoutComments(got), withoutComments(example)) {
				t.Errorf("the README's example\n%s\nis not in what breakwater %s prints\n%s", example, strings.Join(tc.args, " "), got)
			}
		})
	}
}
