// Command image builds Breakwater's container image for every platform
// without a Docker daemon, writes it as an OCI image layout, and pushes it
// when asked. make image runs it:
//
//	make image                                   # dist/image
//	make image IMAGE_OUT=/tmp/img IMAGE_PUSH=registry.example/breakwater:0.1.0
//	go run ./build/image --help
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/breakwater-registry/breakwater/internal/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	out, push, repository, platforms string
	version, revision, source        string
	caFile, configFile, pkg          string
	tags                             string
	created                          time.Time
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var created string
	fs.StringVar(&o.out, "out", "dist/image", "`directory` for the OCI image layout; replaced if it holds one, refused if it holds anything else")
	fs.StringVar(&o.push, "push", "", "also push the image index to `REF` (credentials from ~/.docker/config.json)")
	fs.StringVar(&o.repository, "repository", "ghcr.io/breakwater-registry/breakwater", "the `name` the layout calls the image, tagged with the version")
	fs.StringVar(&o.platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated `list` of platforms")
	fs.StringVar(&o.version, "version", "", "the `version` stamped into the binary and the image (default: the VERSION file)")
	fs.StringVar(&o.revision, "revision", "", "the `commit` stamped into the binary and the image (default: git's HEAD)")
	fs.StringVar(&o.source, "source", "https://github.com/breakwater-registry/breakwater", "the repository's `URL`, for the image's labels")
	fs.StringVar(&created, "created", "", "the image's timestamp, in Unix `seconds` (default: SOURCE_DATE_EPOCH, else HEAD's commit time)")
	fs.StringVar(&o.caFile, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "PEM `file` of the CA certificates to install (Debian: ca-certificates)")
	fs.StringVar(&o.configFile, "config", "config.yaml", "the default configuration `file` to install")
	fs.StringVar(&o.pkg, "package", "./cmd/breakwater", "the Go `package` to build")
	fs.StringVar(&o.tags, "tags", "", "comma-separated Go build `tags`, e.g. breakwater_nogcs,breakwater_noazure to leave those storage drivers out (default: none, every driver)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./build/image [flags]\n\nBuilds Breakwater's image for each platform (static binary, CA certificates,\nuid %d) as an OCI image layout, without a Docker daemon.\n\nFlags:\n", imagebuild.UID)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "image: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	var err error
	if o.created, err = createdAt(created); err != nil {
		fmt.Fprintf(stderr, "image: --created: %v\n", err)
		return 2
	}
	ref, err := build(ctx, o, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s written to %s\n", ref, o.out)
	return 0
}

// build does the work; it returns the reference the layout names.
func build(ctx context.Context, o options, stdout io.Writer) (string, error) {
	// Everything that can be refused is, before minutes of compiling.
	if err := imagebuild.CheckOutDir(o.out); err != nil {
		return "", err
	}
	platforms, err := imagebuild.ParsePlatforms(o.platforms)
	if err != nil {
		return "", fmt.Errorf("--platforms: %w", err)
	}
	if !buildTags.MatchString(o.tags) {
		return "", fmt.Errorf("--tags %q: want comma-separated build tags (letters, digits, _ and .)", o.tags)
	}
	var pushRef name.Reference
	if o.push != "" {
		if pushRef, err = name.ParseReference(o.push); err != nil {
			return "", fmt.Errorf("--push: %w", err)
		}
	}
	if o.version == "" {
		b, err := os.ReadFile("VERSION")
		if err != nil {
			return "", fmt.Errorf("--version not given and %w", err)
		}
		o.version = strings.TrimSpace(string(b))
	}
	ref, err := name.NewTag(o.repository + ":" + o.version)
	if err != nil {
		return "", fmt.Errorf("--repository and --version: %w", err)
	}
	if o.revision == "" {
		o.revision = gitRevision(ctx)
	}
	ca, err := os.ReadFile(o.caFile)
	if err != nil {
		return "", fmt.Errorf("--ca-certs: %w (on Debian: apt-get install ca-certificates)", err)
	}
	cfg, err := os.ReadFile(o.configFile)
	if err != nil {
		return "", fmt.Errorf("--config: %w", err)
	}

	tmp, err := os.MkdirTemp("", "breakwater-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	var built []imagebuild.Platform
	for _, p := range platforms {
		fmt.Fprintf(stdout, "building %s %s for %s\n", o.pkg, o.version, p.String())
		bin, err := goBuild(ctx, o, p, tmp)
		if err != nil {
			return "", err
		}
		built = append(built, imagebuild.Platform{Platform: p, Binary: bin})
	}
	idx, err := imagebuild.Index(imagebuild.Spec{
		Version: o.version, Revision: o.revision, Source: o.source,
		Created: o.created, CACerts: ca, Config: cfg,
	}, built)
	if err != nil {
		return "", err
	}
	if err := imagebuild.WriteLayout(o.out, idx, ref.Name(), ref.TagStr()); err != nil {
		return "", err
	}
	if pushRef != nil {
		if err := remote.WriteIndex(pushRef, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return "", fmt.Errorf("push %s: %w", pushRef, err)
		}
		d, _ := idx.Digest()
		fmt.Fprintf(stdout, "pushed %s@%s\n", pushRef, d)
	}
	return ref.Name(), nil
}

// buildTags is what --tags takes: none, or build tags separated by commas.
var buildTags = regexp.MustCompile(`^([A-Za-z0-9_.]+(,[A-Za-z0-9_.]+)*)?$`)

// goBuild compiles a static binary for p, stamped with the version and
// revision, reproducibly: no paths, no VCS stamp of its own.
func goBuild(ctx context.Context, o options, p v1.Platform, dir string) ([]byte, error) {
	out := filepath.Join(dir, "breakwater-"+strings.ReplaceAll(p.String(), "/", "-"))
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.revision=%s", o.version, o.revision)
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out}
	if o.tags != "" {
		args = append(args, "-tags", o.tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, o.pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && p.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build for %s: %w\n%s", p.String(), err, b)
	}
	return os.ReadFile(out)
}

// createdAt is the image's timestamp: given, SOURCE_DATE_EPOCH (the
// reproducible-builds convention), or HEAD's commit time, so that a
// rebuild of the same commit makes the same digests.
func createdAt(flagValue string) (time.Time, error) {
	s := flagValue
	if s == "" {
		s = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if s == "" {
		out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
		if err != nil {
			return time.Unix(0, 0).UTC(), nil
		}
		s = strings.TrimSpace(string(out))
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("%q is not a count of seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// gitRevision is HEAD's short commit, with -dirty for uncommitted changes;
// "" outside a checkout.
func gitRevision(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(out))
	if exec.CommandContext(ctx, "git", "diff", "--quiet", "HEAD").Run() != nil {
		rev += "-dirty"
	}
	return rev
}
