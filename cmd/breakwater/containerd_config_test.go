package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// A configuration with a Docker Hub upstream, a plain-HTTP registry reached
// at its own address, and a registry reached through another address.
const containerdTestConfig = `default_upstream: docker.io
upstreams:
  docker.io:
    url: https://registry-1.docker.io
  registry.local:5001:
    url: http://registry.local:5001
  ghcr.io:
    url: http://127.0.0.1:5002
`

const wantDockerHubHTTP = `# containerd pulls docker.io images through Breakwater. containerd appends
# ?ns=docker.io to every request it sends to the mirror, and Breakwater routes
# the request to its upstream "docker.io" by that parameter.
# The [host] table is required: containerd 1.6 ignores a file with only
# server = and goes straight to the registry. When the mirror fails,
# containerd falls back to server; on nodes without egress, set server to
# the mirror URL as well, so a missing image reads "not found".
server = "https://registry-1.docker.io"

[host."http://10.96.0.50:5000"]
  capabilities = ["pull", "resolve"]
  # Plain HTTP: containerd speaks HTTP to this host because the URL says
  # http://. skip_verify and ca are TLS settings and do not apply.
`

// splitHostsFiles cuts printed output at its "# file: " lines.
func splitHostsFiles(t *testing.T, out string) map[string]string {
	t.Helper()
	files := map[string]string{}
	parts := strings.Split(out, "\n# file: ")
	if !strings.HasPrefix(parts[0], "# containerd hosts.toml files for the Breakwater mirror at ") {
		t.Errorf("output does not start with its header:\n%s", out)
	}
	for _, p := range parts[1:] {
		name, content, _ := strings.Cut(p, "\n")
		files[name] = content
	}
	return files
}

func TestContainerdConfigPrints(t *testing.T) {
	cfgPath := writeConfig(t, containerdTestConfig)
	for _, tc := range []struct {
		name   string
		args   []string
		server map[string]string // file -> server =
		mirror string
		want   map[string]string // file -> exact content, where checked
		extra  []string          // substrings every file has
	}{
		{
			name: "defaults, http mirror",
			args: []string{"--mirror", "http://10.96.0.50:5000"},
			server: map[string]string{
				"docker.io/hosts.toml":       "https://registry-1.docker.io",
				"ghcr.io/hosts.toml":         "https://ghcr.io",
				"quay.io/hosts.toml":         "https://quay.io",
				"registry.k8s.io/hosts.toml": "https://registry.k8s.io",
			},
			mirror: "http://10.96.0.50:5000",
			want:   map[string]string{"docker.io/hosts.toml": wantDockerHubHTTP},
		},
		{
			name: "config file, https mirror with trailing slash",
			args: []string{"--config", cfgPath, "--mirror", "https://breakwater.internal/"},
			server: map[string]string{
				"docker.io/hosts.toml":           "https://registry-1.docker.io",
				"ghcr.io/hosts.toml":             "https://ghcr.io", // reached elsewhere: containerd still knows it as https://ghcr.io
				"registry.local:5001/hosts.toml": "http://registry.local:5001",
			},
			mirror: "https://breakwater.internal",
			extra:  []string{"# TLS: containerd verifies the mirror's certificate", "skip_verify = true"},
		},
		{
			name:   "upper-case scheme, port",
			args:   []string{"--config", cfgPath, "--mirror=HTTP://127.0.0.1:30500"},
			server: map[string]string{"docker.io/hosts.toml": "https://registry-1.docker.io", "ghcr.io/hosts.toml": "https://ghcr.io", "registry.local:5001/hosts.toml": "http://registry.local:5001"},
			mirror: "http://127.0.0.1:30500",
			extra:  []string{"# Plain HTTP"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"containerd-config"}, tc.args...), nil, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr: %s", code, stderr.String())
			}
			if stderr.Len() != 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
			files := splitHostsFiles(t, stdout.String())
			if got, want := sortedKeys(files), sortedKeys(tc.server); !reflect.DeepEqual(got, want) {
				t.Fatalf("files %v, want %v\n%s", got, want, stdout.String())
			}
			for name, content := range files {
				host := strings.TrimSuffix(name, "/hosts.toml")
				for _, w := range append([]string{
					"server = \"" + tc.server[name] + "\"\n",
					"\n[host.\"" + tc.mirror + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
					"?ns=" + host + " to every request",
					"The [host] table is required",
				}, tc.extra...) {
					if !strings.Contains(content, w) {
						t.Errorf("%s lacks %q:\n%s", name, w, content)
					}
				}
				// server comes before the [host] table, and only once.
				if strings.Count(content, "\nserver = ") != 1 || strings.Index(content, "\nserver = ") > strings.Index(content, "\n[host.") {
					t.Errorf("%s: want exactly one server = before [host]:\n%s", name, content)
				}
				if want, ok := tc.want[name]; ok && content != want+"\n" && content != want {
					t.Errorf("%s:\n%s\nwant:\n%s", name, content, want)
				}
			}
		})
	}
}

func TestContainerdConfigWritesDir(t *testing.T) {
	cfgPath := writeConfig(t, containerdTestConfig)
	dir := filepath.Join(t.TempDir(), "certs.d")
	// A stale file is replaced whole.
	if err := os.MkdirAll(filepath.Join(dir, "docker.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker.io", "hosts.toml"), []byte(strings.Repeat("old\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}

	var printed, stdout, stderr bytes.Buffer
	if code := run([]string{"containerd-config", "--config", cfgPath, "--mirror", "http://10.96.0.50:5000"}, nil, &printed, &stderr); code != 0 {
		t.Fatalf("print: exit %d: %s", code, stderr.String())
	}
	if code := run([]string{"containerd-config", "--config", cfgPath, "--mirror", "http://10.96.0.50:5000", "--dir", dir}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("--dir: exit %d: %s", code, stderr.String())
	}
	want := splitHostsFiles(t, printed.String())
	var wrote []string
	for name, content := range want {
		path := filepath.Join(dir, filepath.FromSlash(name))
		wrote = append(wrote, "wrote "+path)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// The printed form separates files with a blank line.
		if string(got) != strings.TrimSuffix(content, "\n")+"\n" && string(got) != content {
			t.Errorf("%s written:\n%s\nprinted:\n%s", name, got, content)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", name, fi.Mode().Perm())
		}
	}
	if got, ok := want["docker.io/hosts.toml"]; !ok || got != wantDockerHubHTTP+"\n" && got != wantDockerHubHTTP {
		t.Errorf("docker.io/hosts.toml:\n%s\nwant:\n%s", got, wantDockerHubHTTP)
	}
	sort.Strings(wrote)
	if got := strings.Split(strings.TrimSpace(stdout.String()), "\n"); !reflect.DeepEqual(got, wrote) {
		t.Errorf("stdout %q, want %q", got, wrote)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "docker.io"))
	if len(entries) != 1 {
		t.Errorf("docker.io/ holds %d entries, want only hosts.toml (no temporary files left)", len(entries))
	}
}

func TestContainerdConfigErrors(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	badConfig := writeConfig(t, "upstreams:\n  docker.io:\n    url: ftp://x\n")
	for _, tc := range []struct {
		name     string
		args     []string
		wantExit int
		stderr   string
	}{
		{"no mirror", nil, 2, "--mirror is required"},
		{"empty mirror", []string{"--mirror", ""}, 2, "--mirror is required"},
		{"no scheme", []string{"--mirror", "10.96.0.50:5000"}, 2, "want an http:// or https:// URL"},
		{"bad scheme", []string{"--mirror", "ftp://10.96.0.50:5000"}, 2, "want an http:// or https:// URL"},
		{"no host", []string{"--mirror", "http://:5000"}, 2, "no host"},
		{"empty host", []string{"--mirror", "http://"}, 2, "no host"},
		{"path", []string{"--mirror", "http://10.96.0.50:5000/v2"}, 2, "no path, query or fragment"},
		{"query", []string{"--mirror", "http://10.96.0.50:5000?ns=docker.io"}, 2, "no path, query or fragment"},
		{"fragment", []string{"--mirror", "http://10.96.0.50:5000#x"}, 2, "no path, query or fragment"},
		{"credentials", []string{"--mirror", "http://u:p@10.96.0.50:5000"}, 2, "credentials"},
		{"not a URL", []string{"--mirror", "http://[::1"}, 2, "not a URL"},
		{"extra argument", []string{"--mirror", "http://10.96.0.50:5000", "docker.io"}, 2, "unexpected arguments: docker.io"},
		{"unknown flag", []string{"--mirrors", "http://10.96.0.50:5000"}, 2, "flag provided but not defined"},
		{"missing config", []string{"--mirror", "http://10.96.0.50:5000", "--config", filepath.Join(t.TempDir(), "nope.yaml")}, 2, "no such file"},
		{"invalid config", []string{"--mirror", "http://10.96.0.50:5000", "--config", badConfig}, 2, "upstreams.docker.io.url"},
		{"dir is a file", []string{"--mirror", "http://10.96.0.50:5000", "--dir", blocker}, 1, "containerd-config: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"containerd-config"}, tc.args...), nil, &stdout, &stderr)
			if code != tc.wantExit {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.wantExit, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderr)
			}
			if tc.wantExit != 0 && strings.Contains(stdout.String(), "[host.") {
				t.Errorf("printed hosts.toml despite the error:\n%s", stdout.String())
			}
		})
	}
}

func TestRegistryServer(t *testing.T) {
	for _, tc := range []struct{ host, url, want string }{
		{"docker.io", "https://registry-1.docker.io", "https://registry-1.docker.io"},
		{"docker.io", "http://127.0.0.1:5001", "https://registry-1.docker.io"},
		{"index.docker.io", "https://index.docker.io", "https://registry-1.docker.io"},
		{"ghcr.io", "https://ghcr.io", "https://ghcr.io"},
		{"ghcr.io", "http://127.0.0.1:5002", "https://ghcr.io"},
		{"registry.local:5001", "http://registry.local:5001", "http://registry.local:5001"},
		{"Registry.Local:5001", "http://registry.local:5001/", "http://registry.local:5001"},
		{"registry.example.com:5000", "https://registry.example.com:5000", "https://registry.example.com:5000"},
	} {
		if got := registryServer(tc.host, tc.url); got != tc.want {
			t.Errorf("registryServer(%q, %q) = %q, want %q", tc.host, tc.url, got, tc.want)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
