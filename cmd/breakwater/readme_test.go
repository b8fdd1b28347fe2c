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
