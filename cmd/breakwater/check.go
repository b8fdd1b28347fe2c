package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/upstream"
	"github.com/breakwater-registry/breakwater/warm"
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
	ck := &checker{cfg: cfg, clients: map[string]*upstream.Client{}}
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
		if ck.mirror, err = upstream.New(mc); err != nil {
			fmt.Fprintf(stderr, "check: --mirror %q: want http(s)://host[:port]\n", *mirror)
			return 3
		}
	}

	worst := 0
	for _, image := range fs.Args() {
		ctx, cancel := context.WithTimeout(base, *timeout)
		res := ck.check(ctx, image)
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

// checkUserAgent is the User-Agent of check's requests.
const checkUserAgent = "breakwater-check"

// checker resolves images, keeping one client per registry asked so that
// the images of a registry share its handshakes, breaker and rate limit.
type checker struct {
	cfg config.Config
	// mirror, when set, is the client towards the running Breakwater
	// every image is asked through; it tries once, since the mirror
	// retries its upstream itself.
	mirror  *upstream.Client
	clients map[string]*upstream.Client
}

// check resolves one image reference to its manifest with a HEAD.
func (c *checker) check(ctx context.Context, image string) checkResult {
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
	if _, configured := c.cfg.Upstreams[host]; !configured {
		res.Verdict, res.Detail = checkDenied, fmt.Sprintf("registry %s is not an upstream of this configuration", host)
		return res
	}
	client, repo := c.mirror, ref.Context().RepositoryStr()
	if client != nil {
		// Host-in-path routing reaches any of the mirror's upstreams.
		repo = host + "/" + repo
	} else if client, err = c.upstream(host); err != nil {
		res.Verdict, res.Detail = checkDenied, err.Error()
		return res
	}
	resp, err := client.HeadManifest(ctx, repo, ref.Identifier(), warm.ManifestTypes())
	if err != nil {
		res.Verdict, res.Detail = judgeCheckError(err)
		return res
	}
	resp.Body.Close()
	res.Verdict, res.MediaType = checkExists, resp.Header.Get("Content-Type")
	res.Digest = resp.Header.Get("Docker-Content-Digest")
	if d, ok := ref.(name.Digest); ok && res.Digest == "" {
		res.Digest = d.DigestStr()
	}
	return res
}

// upstream returns the client towards the configured upstream host, with
// its credentials and its resilience settings, as serve asks it.
func (c *checker) upstream(host string) (*upstream.Client, error) {
	if cl, ok := c.clients[host]; ok {
		return cl, nil
	}
	uc, err := upstreamConfig(&c.cfg, host)
	if err != nil {
		return nil, err
	}
	uc.UserAgent = checkUserAgent
	cl, err := upstream.New(uc)
	if err != nil {
		return nil, err
	}
	c.clients[host] = cl
	return cl, nil
}

// judgeCheckError sorts a failed HEAD into fatal and transient. The detail
// is the client's error, which names the cause as the registry (or the
// mirror, in its reason phrase) gave it.
func judgeCheckError(err error) (verdict, detail string) {
	e, ok := upstream.AsError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return checkUnavailable, "no answer within the time allowed for the image (--timeout)"
		}
		return checkUnavailable, err.Error()
	}
	switch {
	case e.Status == http.StatusNotFound:
		return checkMissing, e.Error()
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return checkDenied, e.Error()
	case e.Transient:
		return checkUnavailable, e.Error()
	}
	return checkInvalid, e.Error()
}
