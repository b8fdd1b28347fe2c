// Command faultproxy is the e2e test's stand-in for an upstream outage: the
// fault proxy of internal/faultproxy (an HTTP reverse proxy on a loopback
// port in front of the real upstream registry, whose behaviour is switched
// at run time) as a process with a control port.
//
//	faultproxy --listen 127.0.0.1:P --control 127.0.0.1:C \
//	    --upstream http://127.0.0.1:UP --log FILE [--mode pass]
//
// Modes:
//
//	pass    forward every request to the upstream
//	429     answer every request 429 Too Many Requests, Retry-After: 1,
//	        OCI error body TOOMANYREQUESTS
//	503     answer every request 503 Service Unavailable, OCI error body
//	        UNAVAILABLE (no Retry-After)
//	404     answer manifest requests 404 MANIFEST_UNKNOWN, forward the rest
//	refuse  close the listener and every open connection, so connections
//	        are refused; any other mode listens again on the same address
//	hang    accept every request and answer nothing until the client gives
//	        up or the mode changes (then the new mode answers it)
//
// Control (answers once the mode is in effect, e.g. the listener is closed
// or accepting again):
//
//	curl -fsS -X POST 'http://127.0.0.1:C/mode?set=429'   -> "mode 429"
//	curl -fsS http://127.0.0.1:C/mode                     -> "mode 429"
//	curl -fsS http://127.0.0.1:C/stats                    -> {"mode":"429","since":"...","requests":{"404":0,"429":7,...}}
//
// with these parameters besides set (see faultproxy.ParseSetting):
//
//	retry_after=N | date:N   429, 503: Retry-After: N, or an HTTP date N s ahead
//	for=DURATION             hold the mode that long, then return to pass
//	ratelimit_remaining=N    pass, 429: RateLimit-Limit: 100;w=21600 and
//	                         RateLimit-Remaining: N;w=21600
//
// Every request it handles is one JSON line in the log file, in the shape of
// Breakwater's request log so that test/e2e/lib.sh's http_lines reads it:
//
//	{"time":"...","msg":"request","method":"HEAD","path":"/v2/library/x/manifests/v1","query":"","mode":"429","status":429}
//
// Mode changes are logged as {"time":"...","msg":"mode","mode":"refuse","listen":"..."}
// (plus the parameters set, and "from" and "after" when a for= ran out).
// Standard library only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/breakwater-registry/breakwater/internal/faultproxy"
)

func main() {
	os.Exit(run())
}

func run() int {
	listen := flag.String("listen", "127.0.0.1:0", "address the proxy listens on (a fixed port: it is reopened after refuse)")
	control := flag.String("control", "", "address of the control endpoint (required)")
	upstream := flag.String("upstream", "", "upstream registry base URL, e.g. http://127.0.0.1:5000 (required)")
	logPath := flag.String("log", "", "request log file (default: stderr)")
	mode := flag.String("mode", "pass", "initial mode: pass, 429, 503, 404, refuse or hang")
	flag.Parse()
	if *control == "" || *upstream == "" {
		fmt.Fprintln(os.Stderr, "faultproxy: --control and --upstream are required")
		return 2
	}
	if up, err := url.Parse(*upstream); err != nil || up.Scheme == "" || up.Host == "" {
		fmt.Fprintf(os.Stderr, "faultproxy: --upstream %q: want a URL such as http://127.0.0.1:5000\n", *upstream)
		return 2
	}
	initial := faultproxy.Setting{Mode: faultproxy.Mode(*mode)}
	if err := initial.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "faultproxy: --mode: %v\n", err)
		return 2
	}

	logW := io.Writer(os.Stderr)
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "faultproxy: %v\n", err)
			return 1
		}
		defer f.Close()
		logW = f
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := faultproxy.Start(ctx, faultproxy.Config{
		Upstream: *upstream,
		Addr:     *listen,
		Initial:  initial,
		Logger:   slog.New(newLineHandler(logW, os.Stderr)),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultproxy: %v\n", err)
		return 1
	}
	defer p.Close()

	ctl := &http.Server{Addr: *control, Handler: p.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- ctl.ListenAndServe() }()
	select {
	case <-ctx.Done():
		_ = ctl.Close()
		return 0
	case err := <-ctlErr:
		if errors.Is(err, http.ErrServerClosed) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "faultproxy: control: %v\n", err)
		return 1
	}
}
