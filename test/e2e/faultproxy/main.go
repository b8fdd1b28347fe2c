// Command faultproxy is the e2e test's stand-in for an upstream outage: an
// HTTP reverse proxy on a loopback port in front of the real upstream
// registry, whose behaviour is switched at run time through a control port.
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
//
// Control (answers once the mode is in effect, e.g. the listener is closed
// or accepting again):
//
//	curl -fsS -X POST 'http://127.0.0.1:C/mode?set=429'   -> "mode 429"
//	curl -fsS http://127.0.0.1:C/mode                     -> "mode 429"
//
// Every request it handles is one JSON line in the log file, in the shape of
// Breakwater's request log so that test/e2e/lib.sh's http_lines reads it:
//
//	{"time":"...","msg":"request","method":"HEAD","path":"/v2/library/x/manifests/v1","query":"","mode":"429","status":429}
//
// Mode changes are logged as {"time":"...","msg":"mode","mode":"refuse"}.
// Standard library only.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var modes = map[string]bool{"pass": true, "429": true, "503": true, "404": true, "refuse": true}

// manifestPath is an OCI manifest route: /v2/<name>/manifests/<reference>.
var manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)

type proxy struct {
	addr  string
	proxy *httputil.ReverseProxy

	logMu sync.Mutex
	logW  *os.File

	mu   sync.Mutex // guards mode and srv; held across a switch
	mode string
	srv  *http.Server // nil while refusing
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address the proxy listens on (a fixed port: it is reopened after refuse)")
	control := flag.String("control", "", "address of the control endpoint (required)")
	upstream := flag.String("upstream", "", "upstream registry base URL, e.g. http://127.0.0.1:5000 (required)")
	logPath := flag.String("log", "", "request log file (default: stderr)")
	mode := flag.String("mode", "pass", "initial mode: pass, 429, 503, 404 or refuse")
	flag.Parse()
	if *control == "" || *upstream == "" {
		fmt.Fprintln(os.Stderr, "faultproxy: --control and --upstream are required")
		os.Exit(2)
	}
	if !modes[*mode] {
		fmt.Fprintf(os.Stderr, "faultproxy: unknown mode %q\n", *mode)
		os.Exit(2)
	}
	up, err := url.Parse(*upstream)
	if err != nil || up.Scheme == "" || up.Host == "" {
		fmt.Fprintf(os.Stderr, "faultproxy: --upstream %q: want a URL such as http://127.0.0.1:5000\n", *upstream)
		os.Exit(2)
	}

	p := &proxy{addr: *listen, logW: os.Stderr, mode: "refuse"}
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "faultproxy: %v\n", err)
			os.Exit(1)
		}
		p.logW = f
	}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(up)
			r.Out.Host = up.Host
		},
		FlushInterval: -1,
		ErrorLog:      log.New(os.Stderr, "faultproxy: ", log.LstdFlags),
	}
	if err := p.setMode(*mode); err != nil {
		fmt.Fprintf(os.Stderr, "faultproxy: %v\n", err)
		os.Exit(1)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/mode", p.handleControl)
	ctl := &http.Server{Addr: *control, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := ctl.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "faultproxy: control: %v\n", err)
			os.Exit(1)
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = ctl.Close()
	p.mu.Lock()
	if p.srv != nil {
		_ = p.srv.Close()
	}
	p.mu.Unlock()
}

// setMode switches to mode; it returns once the listener is closed (refuse)
// or accepting (any other mode).
func (p *proxy) setMode(mode string) error {
	if !modes[mode] {
		return fmt.Errorf("unknown mode %q (want pass, 429, 503, 404 or refuse)", mode)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case mode == "refuse" && p.srv != nil:
		// Close the listener and every connection, idle or busy, so that
		// a client cannot reuse a kept-alive connection either.
		_ = p.srv.Close()
		p.srv = nil
	case mode != "refuse" && p.srv == nil:
		var ln net.Listener
		var err error
		// The port was ours a moment ago; retry briefly in case the
		// kernel has not let go of it yet.
		for i := 0; i < 50; i++ {
			if ln, err = net.Listen("tcp", p.addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("listen %s: %w", p.addr, err)
		}
		p.addr = ln.Addr().String()
		srv := &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 30 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		p.srv = srv
	}
	p.mode = mode
	p.logLine(map[string]any{"msg": "mode", "mode": mode, "listen": p.addr})
	return nil
}

func (p *proxy) currentMode() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *proxy) handleControl(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost, http.MethodPut:
		m := r.URL.Query().Get("set")
		if m == "" {
			var b [64]byte
			n, _ := r.Body.Read(b[:])
			m = strings.TrimSpace(string(b[:n]))
		}
		if err := p.setMode(m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	default:
		http.Error(w, "GET or POST /mode?set=MODE", http.StatusMethodNotAllowed)
		return
	}
	fmt.Fprintf(w, "mode %s\n", p.currentMode())
}

// serve handles one request according to the current mode.
func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	mode := p.currentMode()
	rec := &recorder{ResponseWriter: w}
	switch {
	case mode == "429":
		rec.Header().Set("Retry-After", "1")
		ociError(rec, r, http.StatusTooManyRequests, "TOOMANYREQUESTS", "fault proxy: too many requests")
	case mode == "503":
		ociError(rec, r, http.StatusServiceUnavailable, "UNAVAILABLE", "fault proxy: service unavailable")
	case mode == "404" && manifestPath.MatchString(r.URL.Path):
		ociError(rec, r, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
	default:
		// pass, the rest of 404, and a request that raced a switch to
		// refuse on a connection about to be closed.
		p.proxy.ServeHTTP(rec, r)
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	p.logLine(map[string]any{
		"msg": "request", "method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
		"mode": mode, "status": status,
	})
}

func ociError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// logLine writes one JSON line: time first, then the fields in a fixed order
// (msg, method, path, query, mode, status, listen) for readable logs.
func (p *proxy) logLine(fields map[string]any) {
	var b strings.Builder
	b.WriteString(`{"time":`)
	t, _ := json.Marshal(time.Now().UTC().Format(time.RFC3339Nano))
	b.Write(t)
	for _, k := range []string{"msg", "method", "path", "query", "mode", "status", "listen"} {
		v, ok := fields[k]
		if !ok {
			continue
		}
		j, _ := json.Marshal(v)
		fmt.Fprintf(&b, ",%q:%s", k, j)
	}
	b.WriteString("}\n")
	p.logMu.Lock()
	defer p.logMu.Unlock()
	_, _ = p.logW.WriteString(b.String())
}

// recorder notes the status; Unwrap lets ReverseProxy flush through it.
type recorder struct {
	http.ResponseWriter
	status int
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
