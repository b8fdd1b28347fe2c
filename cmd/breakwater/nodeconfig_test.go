package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerConfig: the mirror goes first among registry-mirrors, once; a
// plain-HTTP one is an insecure registry; every other key of an existing
// daemon.json stays.
func TestDockerConfig(t *testing.T) {
	cases := []struct {
		name, existing, mirror string
		wantMirrors            []string
		wantInsecure           []string
		keep                   map[string]any
	}{
		{"new file", "", "http://10.0.0.5:5000", []string{"http://10.0.0.5:5000"}, []string{"10.0.0.5:5000"}, nil},
		{"https mirror", "", "https://bw.internal", []string{"https://bw.internal"}, nil, nil},
		{"merge", `{"data-root":"/var/lib/docker","registry-mirrors":["https://mirror.gcr.io"],"insecure-registries":["10.1.1.1:5000"],"log-level":"warn"}`,
			"http://10.0.0.5:5000", []string{"http://10.0.0.5:5000", "https://mirror.gcr.io"}, []string{"10.0.0.5:5000", "10.1.1.1:5000"},
			map[string]any{"data-root": "/var/lib/docker", "log-level": "warn"}},
		{"already there, last, with a slash", `{"registry-mirrors":["https://mirror.gcr.io","http://10.0.0.5:5000/"],"insecure-registries":["10.0.0.5:5000"]}`,
			"http://10.0.0.5:5000", []string{"http://10.0.0.5:5000", "https://mirror.gcr.io"}, []string{"10.0.0.5:5000"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := dockerDaemonJSON([]byte(tc.existing), tc.mirror)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if m := strings.Join(toStrings(got["registry-mirrors"]), " "); m != strings.Join(tc.wantMirrors, " ") {
				t.Errorf("registry-mirrors %q, want %q", m, tc.wantMirrors)
			}
			if in := strings.Join(toStrings(got["insecure-registries"]), " "); in != strings.Join(tc.wantInsecure, " ") {
				t.Errorf("insecure-registries %q, want %q", in, tc.wantInsecure)
			}
			for k, v := range tc.keep {
				if got[k] != v {
					t.Errorf("%s: %v, want it kept as %v", k, got[k], v)
				}
			}
		})
	}
	for _, bad := range []string{`[1,2]`, `{"registry-mirrors":"http://x"}`, `not json`} {
		if _, err := dockerDaemonJSON([]byte(bad), "http://10.0.0.5:5000"); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// TestDockerConfigFile: --file merges in place; a file that is not a JSON
// object is refused with exit 1 and left alone.
func TestDockerConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(file, []byte(`{"data-root":"/srv/docker"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"docker-config", "--mirror", "http://10.0.0.5:5000", "--file", file}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, _ := os.ReadFile(file)
	if !bytes.Contains(b, []byte(`"data-root": "/srv/docker"`)) || !bytes.Contains(b, []byte(`"http://10.0.0.5:5000"`)) {
		t.Errorf("merged file:\n%s", b)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{oops"), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run([]string{"docker-config", "--mirror", "http://10.0.0.5:5000", "--file", bad}, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), bad) {
		t.Errorf("bad file: exit %d, stderr %q", code, stderr.String())
	}
	if b, _ := os.ReadFile(bad); string(b) != "{oops" {
		t.Errorf("the bad file was changed: %q", b)
	}
	for _, args := range [][]string{{}, {"--mirror", "10.0.0.5:5000"}, {"--mirror", "http://x/path"}} {
		stderr.Reset()
		if code := run(append([]string{"docker-config"}, args...), nil, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}

// TestRegistriesConf: every upstream gets a [[registry]] with Breakwater
// as its mirror, named by the registry in the path; plain-HTTP mirrors
// and registries are insecure.
func TestRegistriesConf(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	body := "upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n  registry.internal:5000:\n    url: http://registry.internal:5000\n"
	if err := os.WriteFile(cfgFile, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"registries-conf", "--mirror", "http://10.0.0.5:5000", "--config", cfgFile}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got := stdout.String()
	for _, want := range []string{
		"[[registry]]\nprefix = \"docker.io\"\nlocation = \"registry-1.docker.io\"\n\n[[registry.mirror]]\nlocation = \"10.0.0.5:5000/docker.io\"\n# Plain HTTP.\ninsecure = true\n",
		"[[registry]]\nprefix = \"registry.internal:5000\"\nlocation = \"registry.internal:5000\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"10.0.0.5:5000/registry.internal:5000\"\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks\n%s\ngot:\n%s", want, got)
		}
	}
	stdout.Reset()
	if code := run([]string{"registries-conf", "--mirror", "https://bw.internal"}, nil, &stdout, &stderr); code != 0 || strings.Contains(stdout.String(), "Plain HTTP") {
		t.Errorf("https mirror: exit %d\n%s", code, stdout.String())
	}
}
