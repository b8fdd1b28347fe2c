package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/breakwater-registry/breakwater/auth"
	"github.com/breakwater-registry/breakwater/config"
)

// Verdicts of breakwater check, in the words it prints.
const (
	checkExists      = "exists"
	checkMissing     = "missing"
	checkDenied      = "denied"
	checkInvalid     = "invalid"
	checkUnavailable = "unavailable"
)

type checkResult struct {
	Image     string `json:"image"`
	Verdict   string `json:"verdict"`
	Digest    string `json:"digest,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

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
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: breakwater check [--config FILE | --mirror URL] [--json] IMAGE...")
		fs.PrintDefaults()
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
	var mirrorURL *url.URL
	if *mirror != "" {
		mirrorURL, err = url.Parse(*mirror)
		if err != nil || (mirrorURL.Scheme != "http" && mirrorURL.Scheme != "https") || mirrorURL.Host == "" {
			fmt.Fprintf(stderr, "check: --mirror %q: want http(s)://host[:port]\n", *mirror)
			return 3
		}
	}

	worst := 0
	for _, image := range fs.Args() {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		res := checkImage(ctx, cfg, mirrorURL, image)
		cancel()
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
		switch res.Verdict {
		case checkMissing, checkDenied, checkInvalid:
			worst = 1
		case checkUnavailable:
			if worst == 0 {
				worst = 2
			}
		}
	}
	return worst
}

// checkImage resolves one image reference to its manifest with a HEAD.
func checkImage(ctx context.Context, cfg config.Config, mirror *url.URL, image string) checkResult {
	res := checkResult{Image: image}
	ref, err := name.ParseReference(image)
	if err != nil {
		res.Verdict, res.Detail = checkInvalid, err.Error()
		return res
	}
	res.Image = ref.Name()
	host := ref.Context().RegistryStr()
	if host == name.DefaultRegistry { // go-containerregistry's name for Docker Hub
		host = "docker.io"
	}
	upName := host
	up, configured := cfg.Upstreams[upName]
	if !configured {
		res.Verdict, res.Detail = checkDenied, fmt.Sprintf("registry %s is not an upstream of this configuration", host)
		return res
	}

	var target *url.URL
	repo := ref.Context().RepositoryStr()
	keychainAuth := authn.Anonymous
	if mirror != nil {
		// Host-in-path routing reaches any configured upstream.
		target = mirror
		repo = host + "/" + repo
	} else {
		target, err = url.Parse(up.URL)
		if err != nil {
			res.Verdict, res.Detail = checkInvalid, err.Error()
			return res
		}
		keychainAuth, err = auth.For(upName, auth.Credentials{
			Username: up.Username, Password: up.Password, PasswordFile: up.PasswordFile, DockerConfig: up.DockerConfig,
		})
		if err != nil {
			res.Verdict, res.Detail = checkDenied, err.Error()
			return res
		}
	}
	var opts []name.Option
	if target.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	where := target.Host + "/" + repo
	var resolved name.Reference
	switch r := ref.(type) {
	case name.Digest:
		resolved, err = name.NewDigest(where+"@"+r.DigestStr(), opts...)
	default:
		resolved, err = name.NewTag(where+":"+ref.Identifier(), opts...)
	}
	if err != nil {
		res.Verdict, res.Detail = checkInvalid, err.Error()
		return res
	}
	desc, err := remote.Head(resolved, remote.WithContext(ctx), remote.WithAuth(keychainAuth),
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 3}))
	if err != nil {
		res.Verdict, res.Detail = judgeCheckError(err)
		return res
	}
	res.Verdict, res.Digest, res.MediaType = checkExists, desc.Digest.String(), string(desc.MediaType)
	return res
}

// judgeCheckError sorts a failed HEAD into fatal and transient.
func judgeCheckError(err error) (verdict, detail string) {
	var te *transport.Error
	if errors.As(err, &te) {
		detail = strings.TrimSpace(te.Error())
		switch {
		case te.StatusCode == http.StatusNotFound:
			return checkMissing, detail
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return checkDenied, detail
		case te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout || te.StatusCode >= 500:
			return checkUnavailable, detail
		}
		return checkInvalid, detail
	}
	return checkUnavailable, err.Error()
}
