package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/breakwater-registry/breakwater/config"
)

const dockerConfigUsage = `usage: breakwater docker-config --mirror URL [--file FILE]

Prints a dockerd daemon.json that sends Docker Hub pulls to Breakwater at URL
(registry-mirrors) and, for a plain-HTTP mirror, lists it under
insecure-registries. With --file, merges that into FILE — its other keys and
mirrors are kept, Breakwater first — and writes it back (FILE is usually
/etc/docker/daemon.json; restart dockerd to apply). dockerd mirrors Docker Hub
only: pull other registries as URL-HOST/<registry>/<repository>.
Exit status: 0 done; 1 FILE could not be read or written; 2 bad usage.
`

// runDockerConfig writes or merges the daemon.json that points dockerd at a
// Breakwater mirror.
func runDockerConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("docker-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mirror := fs.String("mirror", "", "Breakwater's URL as dockerd on the nodes reaches it, http(s)://host[:port] (required)")
	file := fs.String("file", "", "merge into this daemon.json and write it back, e.g. /etc/docker/daemon.json")
	fs.Usage = func() { printHelp(stderr, fs, dockerConfigUsage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, dockerConfigUsage)
		return 0
	}
	mirrorURL, ok := parseNodeConfigArgs(fs, args, mirror, stderr)
	if !ok {
		return 2
	}
	var existing []byte
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "docker-config: %v\n", err)
			return 1
		}
		existing = b
	}
	merged, err := dockerDaemonJSON(existing, mirrorURL)
	if err != nil {
		fmt.Fprintf(stderr, "docker-config: %s: %v\n", *file, err)
		return 1
	}
	if *file == "" {
		_, _ = stdout.Write(merged)
		return 0
	}
	if err := writeFileAtomic(*file, merged); err != nil {
		fmt.Fprintf(stderr, "docker-config: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s\n", *file)
	return 0
}

// dockerDaemonJSON merges the mirror into a daemon.json (empty: a new
// one): the mirror first among registry-mirrors, once; a plain-HTTP mirror
// among insecure-registries; every other key as it was.
func dockerDaemonJSON(existing []byte, mirror string) ([]byte, error) {
	doc := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(existing)) > 0 {
		if err := json.Unmarshal(existing, &doc); err != nil {
			return nil, fmt.Errorf("not a JSON object: %w", err)
		}
	}
	list := func(key string) ([]string, error) {
		var v []string
		if raw, ok := doc[key]; ok {
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("%s: want a list of strings: %w", key, err)
			}
		}
		return v, nil
	}
	set := func(key string, v []string) {
		raw, _ := json.Marshal(v)
		doc[key] = raw
	}
	mirrors, err := list("registry-mirrors")
	if err != nil {
		return nil, err
	}
	set("registry-mirrors", prependOnce(mirrors, mirror, func(a, b string) bool {
		return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
	}))
	if strings.HasPrefix(mirror, "http://") {
		insecure, err := list("insecure-registries")
		if err != nil {
			return nil, err
		}
		host := strings.TrimPrefix(mirror, "http://")
		set("insecure-registries", prependOnce(insecure, host, func(a, b string) bool { return a == b }))
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// prependOnce puts v first in list, dropping any other copy of it.
func prependOnce(list []string, v string, same func(a, b string) bool) []string {
	out := []string{v}
	for _, e := range list {
		if !same(e, v) {
			out = append(out, e)
		}
	}
	return out
}

const registriesConfUsage = `usage: breakwater registries-conf --mirror URL [--config FILE] [--file FILE]

Prints a containers-registries.conf drop-in (podman, CRI-O, skopeo, buildah)
that sends each upstream of the configuration to Breakwater at URL, as
URL-HOST/<registry>: the registry is named in the path, which is how
Breakwater routes requests that carry no ns parameter. With --file, writes it
there (usually /etc/containers/registries.conf.d/50-breakwater.conf).
Exit status: 0 done; 1 FILE could not be written; 2 bad usage or configuration.
`

// runRegistriesConf writes the registries.conf drop-in that points podman
// and CRI-O at a Breakwater mirror.
func runRegistriesConf(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("registries-conf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mirror := fs.String("mirror", "", "Breakwater's URL as the nodes reach it, http(s)://host[:port] (required)")
	configPath := fs.String("config", "", "configuration file whose upstreams to write mirrors for (default: built-in defaults)")
	file := fs.String("file", "", "write the drop-in here instead of printing it")
	fs.Usage = func() { printHelp(stderr, fs, registriesConfUsage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, registriesConfUsage)
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
	content := registriesConf(cfg, mirrorURL)
	if *file == "" {
		fmt.Fprint(stdout, content)
		return 0
	}
	if err := writeFileAtomic(*file, []byte(content)); err != nil {
		fmt.Fprintf(stderr, "registries-conf: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s\n", *file)
	return 0
}

// registriesConf is one [[registry]] per upstream, sorted by host, each
// with Breakwater as its mirror and the registry's own host as where
// containers/image goes when the mirror fails.
func registriesConf(cfg config.Config, mirror string) string {
	hosts := make([]string, 0, len(cfg.Upstreams))
	for h := range cfg.Upstreams {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	u, _ := url.Parse(mirror) // parseMirrorURL accepted it
	var b strings.Builder
	fmt.Fprintf(&b, "# containers-registries.conf drop-in: pull through the Breakwater mirror at %s.\n", mirror)
	b.WriteString("# Mirrors are tried first; when one fails, the registry's own location is.\n")
	for _, h := range hosts {
		server, _ := url.Parse(registryServer(h, cfg.Upstreams[h].URL))
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\n", h, server.Host)
		if server.Scheme == "http" {
			b.WriteString("insecure = true\n")
		}
		fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %q\n", u.Host+"/"+h)
		if u.Scheme == "http" {
			b.WriteString("# Plain HTTP.\ninsecure = true\n")
		}
	}
	return b.String()
}

// parseNodeConfigArgs parses a node configuration command's flags and its
// required --mirror, reporting on stderr what is wrong.
func parseNodeConfigArgs(fs *flag.FlagSet, args []string, mirror *string, stderr io.Writer) (string, bool) {
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments: %s\n", fs.Name(), strings.Join(fs.Args(), " "))
		fs.Usage()
		return "", false
	}
	if *mirror == "" {
		fmt.Fprintf(stderr, "%s: --mirror is required, e.g. --mirror http://10.96.0.50:5000\n", fs.Name())
		fs.Usage()
		return "", false
	}
	m, err := parseMirrorURL(*mirror)
	if err != nil {
		fmt.Fprintf(stderr, "%s: --mirror %q: %v\n", fs.Name(), *mirror, err)
		return "", false
	}
	return m, true
}
