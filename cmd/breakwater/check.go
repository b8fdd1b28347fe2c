package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/breakwater-registry/breakwater/imagecheck"
	"github.com/breakwater-registry/breakwater/upstream"
	"github.com/breakwater-registry/breakwater/warm"
)

// runCheck resolves images before pods need them (seed 003's "validate
// images up front"): through the configured upstreams, or through a running
// Breakwater with --mirror. Exit status: 0 every image exists; 1 some image
// is missing, forbidden or not a valid reference (fatal: a pod would never
// start); 2 otherwise some registry could not be asked (transient);
// 3 bad usage.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file whose upstreams and credentials to use (default: built-in defaults)")
	mirror := fs.String("mirror", "", "ask a running Breakwater at this URL instead of the upstreams, e.g. http://127.0.0.1:5000")
	var upstreams repeated
	fs.Var(&upstreams, "upstream", "HOST=URL: reach registry HOST at URL (repeatable; overrides the file)")
	timeout := fs.Duration("timeout", 30*time.Second, "time allowed for each image")
	asJSON := fs.Bool("json", false, "print one JSON object per image")
	var login mirrorLogin
	login.register(fs)
	const usage = `usage: breakwater check [--config FILE | --mirror URL [--user USER [--password-file FILE]]] [--json] IMAGE...

Resolves each image before pods need it.
Exit status: 0 every image exists; 1 some image is missing, forbidden or invalid (fatal);
2 otherwise some registry could not be asked (transient); 3 bad usage (2 is taken).`
	fs.Usage = func() { printHelp(stderr, fs, usage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, usage)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 3
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "check: no image given")
		fs.Usage()
		return 3
	}
	cfg, err := loadConfig(*configPath, "", "", "", upstreams)
	if err != nil {
		fmt.Fprintf(stderr, "breakwater: %v\n", err)
		return 3
	}
	hosts := make([]string, 0, len(cfg.Upstreams))
	for h := range cfg.Upstreams {
		hosts = append(hosts, h)
	}
	ck := imagecheck.Direct(hosts, func(host string) (*upstream.Client, error) {
		uc, err := upstreamConfig(&cfg, host)
		if err != nil {
			return nil, err
		}
		uc.UserAgent = checkUserAgent
		return upstream.New(uc)
	})
	base := context.Background()
	if *mirror == "" && (login.user != "" || login.passwordFile != "") {
		fmt.Fprintln(stderr, "check: --user and --password-file apply to --mirror only; an upstream's credentials come from --config")
		return 3
	}
	if *mirror != "" {
		if base, err = login.context(base, *mirror); err != nil {
			fmt.Fprintf(stderr, "check: %v\n", err)
			return 3
		}
		mc := warm.MirrorConfig(*mirror)
		mc.UserAgent = checkUserAgent
		self, err := upstream.New(mc)
		if err != nil {
			fmt.Fprintf(stderr, "check: --mirror %q: want http(s)://host[:port]\n", *mirror)
			return 3
		}
		ck = imagecheck.ThroughMirror(self, hosts, false)
	}

	worst := 0
	for _, image := range fs.Args() {
		ctx, cancel := context.WithTimeout(base, *timeout)
		res := ck.Check(ctx, image, warm.ManifestTypes())
		cancel()
		if res.Detail == imagecheck.TimedOut {
			res.Detail += " (--timeout)"
		}
		if *asJSON {
			b, _ := json.Marshal(res)
			fmt.Fprintln(stdout, string(b))
		} else {
			line := fmt.Sprintf("%-11s %s", res.Verdict, res.Image)
			if res.Digest != "" {
				line += " " + res.Digest
			}
			if res.Detail != "" {
				line += "  " + res.Detail
			}
			fmt.Fprintln(stdout, line)
		}
		switch {
		case res.Verdict.Fatal():
			worst = 1
		case res.Verdict == imagecheck.Unavailable:
			if worst == 0 {
				worst = 2
			}
		}
	}
	return worst
}

// checkUserAgent is the User-Agent of check's requests.
const checkUserAgent = "breakwater-check"
