package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/breakwater-registry/breakwater/config"
)

const containerdConfigUsage = `usage: breakwater containerd-config --mirror URL [--config FILE] [--dir DIR]

Prints a containerd hosts.toml for each upstream of the configuration, each
sending that registry's pulls to Breakwater at URL. With --dir, writes
DIR/<host>/hosts.toml instead (DIR is usually /etc/containerd/certs.d).
Exit status: 0 done; 1 a file could not be written; 2 bad usage or configuration.
`

// runContainerdConfig writes the containerd hosts.toml files that point each
// configured upstream at a Breakwater mirror. Exit status: 0 done; 1 a file
// could not be written; 2 bad usage or configuration.
func runContainerdConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("containerd-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mirror := fs.String("mirror", "", "Breakwater's URL as containerd on the nodes reaches it, http(s)://host[:port] (required)")
	configPath := fs.String("config", "", "configuration file whose upstreams to write files for (default: built-in defaults)")
	dir := fs.String("dir", "", "write DIR/<host>/hosts.toml instead of printing, e.g. /etc/containerd/certs.d")
	fs.Usage = func() { printHelp(stderr, fs, containerdConfigUsage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, containerdConfigUsage)
		return 0
	}
	mirrorURL, ok := parseNodeConfigArgs(fs, args, mirror, stderr)
	if !ok {
		return 2
	}
	cfg, err := loadConfig(*configPath, "", "", "", nil)
	if err != nil {
		fmt.Fprintf(stderr, "breakwater: %v\n", err)
		return 2
	}

	files := containerdHostsFiles(cfg, mirrorURL)
	if *dir == "" {
		fmt.Fprintf(stdout, "# containerd hosts.toml files for the Breakwater mirror at %s.\n", mirrorURL)
		fmt.Fprintln(stdout, "# Put each at /etc/containerd/certs.d/<host>/hosts.toml (or run with")
		fmt.Fprintln(stdout, "# --dir /etc/containerd/certs.d) and set config_path = \"/etc/containerd/certs.d\"")
		fmt.Fprintln(stdout, "# under [plugins.\"io.containerd.grpc.v1.cri\".registry] in containerd's config.toml.")
		for _, f := range files {
			fmt.Fprintf(stdout, "\n# file: %s\n%s", f.path, f.content)
		}
		return 0
	}
	for _, f := range files {
		path := filepath.Join(*dir, filepath.FromSlash(f.path))
		if err := writeFileAtomic(path, []byte(f.content)); err != nil {
			fmt.Fprintf(stderr, "containerd-config: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s\n", path)
	}
	return 0
}

// parseMirrorURL accepts http(s)://host[:port] with nothing else, and returns
// it without a trailing slash, as containerd's [host."..."] key wants it.
func parseMirrorURL(raw string) (string, error) {
	errScheme := errors.New("want an http:// or https:// URL, e.g. http://10.96.0.50:5000")
	if !strings.Contains(raw, "://") {
		return "", errScheme
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("not a URL: %v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errScheme
	case u.Opaque != "" || u.Hostname() == "":
		return "", errors.New("no host, want http(s)://host[:port]")
	case u.User != nil:
		return "", errors.New("credentials do not belong in the mirror URL")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", errors.New("want http(s)://host[:port] with no path, query or fragment (containerd adds /v2/... itself)")
	}
	return u.Scheme + "://" + u.Host, nil
}

type hostsFile struct {
	path    string // <host>/hosts.toml, slash-separated
	content string
}

// containerdHostsFiles returns one hosts.toml per upstream, sorted by host.
func containerdHostsFiles(cfg config.Config, mirror string) []hostsFile {
	hosts := make([]string, 0, len(cfg.Upstreams))
	for h := range cfg.Upstreams {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	files := make([]hostsFile, 0, len(hosts))
	for _, h := range hosts {
		files = append(files, hostsFile{
			path:    h + "/hosts.toml",
			content: hostsTOML(h, registryServer(h, cfg.Upstreams[h].URL), mirror),
		})
	}
	return files
}

// registryServer is the registry's own URL as containerd knows the host
// (hosts.toml's server, where containerd goes when the mirror fails):
// Docker Hub's API host for docker.io; for a host whose upstream URL is that
// same host, that URL (so a plain-HTTP registry stays http); otherwise
// https://<host>.
func registryServer(host, upstreamURL string) string {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "https://registry-1.docker.io"
	}
	if u, err := url.Parse(upstreamURL); err == nil && strings.EqualFold(u.Host, host) && (u.Scheme == "http" || u.Scheme == "https") {
		return u.Scheme + "://" + u.Host
	}
	return "https://" + host
}

func hostsTOML(host, server, mirror string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# containerd pulls %s images through Breakwater. containerd appends\n", host)
	fmt.Fprintf(&b, "# ?ns=%s to every request it sends to the mirror, and Breakwater routes\n", host)
	fmt.Fprintf(&b, "# the request to its upstream %q by that parameter.\n", host)
	b.WriteString("# The [host] table is required: containerd 1.6 ignores a file with only\n")
	b.WriteString("# server = and goes straight to the registry. When the mirror fails,\n")
	b.WriteString("# containerd falls back to server; on nodes without egress, set server to\n")
	b.WriteString("# the mirror URL as well, so a missing image reads \"not found\".\n")
	fmt.Fprintf(&b, "server = %q\n\n", server)
	fmt.Fprintf(&b, "[host.%q]\n", mirror)
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if strings.HasPrefix(mirror, "http://") {
		b.WriteString("  # Plain HTTP: containerd speaks HTTP to this host because the URL says\n")
		b.WriteString("  # http://. skip_verify and ca are TLS settings and do not apply.\n")
	} else {
		b.WriteString("  # TLS: containerd verifies the mirror's certificate. For a private CA add\n")
		fmt.Fprintf(&b, "  # ca = \"/etc/containerd/certs.d/%s/ca.crt\"; skip_verify = true turns\n", host)
		b.WriteString("  # verification off (testing only).\n")
	}
	return b.String()
}

// writeFileAtomic writes path through a temporary file and a rename, so
// containerd, dockerd or podman never reads half a file.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return nil
}
