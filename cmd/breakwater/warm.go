package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/breakwater-registry/breakwater/upstream"
	"github.com/breakwater-registry/breakwater/warm"
)

const warmUsage = `usage: breakwater warm [--mirror URL] [--user USER [--password-file FILE]] [--file LIST] [--platform os/arch[/variant]]... [--concurrency N] [--timeout DURATION] [--json] IMAGE...

Pulls the images into a running Breakwater's cache.
Exit status: 0 every image warmed; 1 some image failed; 2 bad usage.`

// runWarm pulls images into a running Breakwater's cache through its pull
// API. Exit status: 0 every image warmed; 1 some image failed; 2 bad usage.
func runWarm(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("warm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mirror := fs.String("mirror", "http://127.0.0.1:5000", "the running Breakwater to warm")
	var files, platforms repeated
	fs.Var(&files, "file", "read image references from this file, one per line; # comments and blank lines are ignored (repeatable)")
	fs.Var(&platforms, "platform", "warm only this platform of multi-platform images, os/arch[/variant] (repeatable; default: all)")
	concurrency := fs.Int("concurrency", warm.DefaultConcurrency, "blobs of one image fetched in parallel")
	timeout := fs.Duration("timeout", 0, "time allowed for each image (0: no limit)")
	asJSON := fs.Bool("json", false, "print one JSON object per image and a summary object")
	var login mirrorLogin
	login.register(fs)
	fs.Usage = func() { printHelp(stderr, fs, warmUsage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, warmUsage)
		return 0
	}

	images, err := warmParseArgs(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	client, err := upstream.New(warm.MirrorConfig(*mirror))
	if err != nil {
		fmt.Fprintf(stderr, "warm: --mirror %q: want http(s)://host[:port]\n", *mirror)
		return 2
	}
	var plats []v1.Platform
	for _, s := range platforms {
		p, err := warm.ParsePlatform(s)
		if err != nil {
			fmt.Fprintf(stderr, "warm: --platform: %v\n", err)
			return 2
		}
		plats = append(plats, p)
	}
	if *concurrency < 1 {
		fmt.Fprintf(stderr, "warm: --concurrency %d: want at least 1\n", *concurrency)
		return 2
	}
	if *timeout < 0 {
		fmt.Fprintf(stderr, "warm: --timeout %s: want 0 or more\n", *timeout)
		return 2
	}
	for _, f := range files {
		list, err := warmReadList(f)
		if err != nil {
			fmt.Fprintf(stderr, "warm: --file: %v\n", err)
			return 2
		}
		images = append(images, list...)
	}
	if len(images) == 0 {
		fmt.Fprintln(stderr, "warm: no image given")
		fs.Usage()
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if ctx, err = login.context(ctx, *mirror); err != nil {
		fmt.Fprintf(stderr, "warm: %v\n", err)
		return 2
	}

	p := newWarmPrinter(stdout, warmIsTerminal(stdout) && !*asJSON, *asJSON)
	o := warm.Options{Mirror: client, Platforms: plats, Concurrency: *concurrency, Progress: p.event}
	start := time.Now()
	var results []warm.Result
	for _, img := range images {
		if ctx.Err() != nil {
			break
		}
		ictx, cancel := ctx, context.CancelFunc(func() {})
		if *timeout > 0 {
			ictx, cancel = context.WithTimeout(ctx, *timeout)
		}
		results = append(results, warm.Image(ictx, img, o))
		cancel()
	}
	p.summary(results, len(images), time.Since(start))
	for _, r := range results {
		if r.Err != nil {
			return 1
		}
	}
	if len(results) < len(images) {
		return 1 // interrupted
	}
	return 0
}

// warmParseArgs parses flags given before, between and after the
// images, as "breakwater warm alpine --platform linux/amd64" is meant; "--"
// ends the flags.
func warmParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// warmReadList reads image references, one per line; everything from a #
// on is a comment, and blank lines are skipped.
func warmReadList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// warmIsTerminal reports whether w is a terminal (a character device).
func warmIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// warmPrinter shows warming as it happens: a progress bar redrawn in place
// on a terminal, plain lines otherwise, or JSON objects.
type warmPrinter struct {
	w        io.Writer
	tty      bool
	json     bool
	lastDraw time.Time
	drawn    bool
}

func newWarmPrinter(w io.Writer, tty, asJSON bool) *warmPrinter {
	return &warmPrinter{w: w, tty: tty, json: asJSON}
}

// event is warm.Options.Progress; warm calls it from one goroutine at a
// time.
func (p *warmPrinter) event(ev warm.Event) {
	switch ev.Kind {
	case warm.ImageStarted:
		if p.json {
			return
		}
		if p.tty {
			p.draw(ev, true)
			return
		}
		fmt.Fprintf(p.w, "warming %s\n", ev.Image)
	case warm.ImagePlanned, warm.BlobProgress, warm.BlobDone:
		if p.tty {
			p.draw(ev, ev.Kind == warm.ImagePlanned)
		}
	case warm.ImageDone:
		r := ev.Result
		if p.json {
			b, _ := json.Marshal(r)
			fmt.Fprintln(p.w, string(b))
			return
		}
		if p.tty && p.drawn {
			fmt.Fprint(p.w, "\r\x1b[K")
			p.drawn = false
		}
		if r.Err != nil {
			fmt.Fprintf(p.w, "FAILED %s: %v\n", r.Image, r.Err)
			return
		}
		fmt.Fprintf(p.w, "done %s %s %d blobs %s in %s\n", r.Image, r.Digest, r.Blobs, warmBytes(r.Bytes), warmSeconds(r.Duration))
	}
}

// draw redraws the progress line, at most ten times a second unless forced.
func (p *warmPrinter) draw(ev warm.Event, force bool) {
	now := time.Now()
	if !force && now.Sub(p.lastDraw) < 100*time.Millisecond {
		return
	}
	p.lastDraw, p.drawn = now, true
	if ev.Kind == warm.ImageStarted {
		fmt.Fprintf(p.w, "\r\x1b[K%s  resolving…", ev.Image)
		return
	}
	const width = 24
	filled := 0
	if ev.BytesTotal > 0 {
		filled = int(float64(width) * float64(min(ev.BytesDone, ev.BytesTotal)) / float64(ev.BytesTotal))
	} else if ev.BlobsTotal > 0 {
		filled = width * ev.BlobsDone / ev.BlobsTotal
	}
	bar := strings.Repeat("#", filled) + strings.Repeat("-", width-filled)
	fmt.Fprintf(p.w, "\r\x1b[K%s [%s] %s / %s  %d/%d blobs", ev.Image, bar,
		warmBytes(ev.BytesDone), warmBytes(ev.BytesTotal), ev.BlobsDone, ev.BlobsTotal)
}

// summary prints the closing line (or JSON object).
func (p *warmPrinter) summary(results []warm.Result, asked int, took time.Duration) {
	var ok, failed int
	var bytes int64
	for _, r := range results {
		if r.Err != nil {
			failed++
		} else {
			ok++
		}
		bytes += r.Bytes
	}
	skipped := asked - len(results)
	rate := 0.0
	if took > 0 {
		rate = float64(bytes) / 1e6 / took.Seconds()
	}
	if p.json {
		b, _ := json.Marshal(map[string]any{"summary": map[string]any{
			"ok": ok, "failed": failed, "skipped": skipped, "bytes": bytes, "seconds": took.Seconds(), "mbPerSecond": rate,
		}})
		fmt.Fprintln(p.w, string(b))
		return
	}
	line := fmt.Sprintf("warmed %d ok, %d failed", ok, failed)
	if skipped > 0 {
		line += fmt.Sprintf(", %d not tried (interrupted)", skipped)
	}
	fmt.Fprintf(p.w, "%s: %s in %s (%.1f MB/s)\n", line, warmBytes(bytes), warmSeconds(took), rate)
}

func warmBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

func warmSeconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
