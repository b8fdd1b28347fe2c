// Package tlsserver is the TLS configuration of Breakwater's listener:
// HTTP/1.1 only, TLS 1.2 or later, optionally mutual TLS, with the
// certificate, its key and the client CAs read again when their files
// change, as cert-manager rotates them in a Kubernetes Secret volume.
//
// HTTP/1.1 only, because the crafted 503 that tells a pod why its pull
// failed travels in the status line's reason phrase, and HTTP/2 has none
// (proxy.writeWithReason). The configuration therefore offers "http/1.1"
// alone in ALPN, never "h2": a client offering both gets HTTP/1.1, one
// offering only h2 is refused in the handshake.
package tlsserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often Watch reads the files. The kubelet updates a
// Secret volume within about a minute of the Secret changing, and
// cert-manager renews a third of a certificate's life before it expires, so
// 10 s is prompt enough and reading three small files that often costs
// nothing.
const DefaultInterval = 10 * time.Second

// Files names the PEM files, as the configuration's tls block does.
type Files struct {
	CertFile     string // the certificate chain, leaf first
	KeyFile      string // its private key
	ClientCAFile string // optional: CAs every client certificate must chain to
}

// Reloader holds the TLS configuration in force and replaces it when the
// files change. Its methods are safe for concurrent use.
type Reloader struct {
	files Files
	log   *slog.Logger

	current atomic.Pointer[state]

	mu      sync.Mutex        // one reload at a time
	lastBad [sha256.Size]byte // contents that did not load, logged already
	readErr string            // the read error logged already
}

// state is one loaded set of files.
type state struct {
	sum    [sha256.Size]byte // of the files' contents, in order
	config *tls.Config       // what a handshake uses
	leaf   *x509.Certificate
}

// New loads the files and returns a Reloader serving them. An error names
// the file (by its configuration key and path) and what is wrong with it.
func New(files Files, log *slog.Logger) (*Reloader, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file are both required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{files: files, log: log}
	contents, sum, err := r.read()
	if err != nil {
		return nil, err
	}
	s, err := r.parse(contents, sum)
	if err != nil {
		return nil, err
	}
	r.current.Store(s)
	return r, nil
}

// TLSConfig is the configuration to serve with, e.g. tls.NewListener's.
// Each handshake takes the files loaded last (GetConfigForClient), so a
// rotation reaches new connections without a restart; connections already
// open keep the certificate they were made with.
//
// net/http's ServeTLS adds "h2" to a server's NextProtos unless the
// server's TLSNextProto is a non-nil map; the configuration a handshake
// actually uses is the one GetConfigForClient returns, which offers
// "http/1.1" only whatever was added here.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current.Load().config, nil
		},
	}
}

// Mutual reports whether clients must present a certificate.
func (r *Reloader) Mutual() bool { return r.files.ClientCAFile != "" }

// Leaf is the certificate served now.
func (r *Reloader) Leaf() *x509.Certificate { return r.current.Load().leaf }

// Watch reads the files every interval until ctx ends and swaps in what
// they hold when it changed. Reading them, rather than watching for
// events, follows the kubelet's symlink swap (..data pointing at a new
// directory) as well as a file rewritten in place or copied with its old
// mtime. A new set that does not load is logged once, and the old
// configuration stays in force until the files change again.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Reload()
		}
	}
}

// Reload reads the files once and swaps in what they hold when it changed
// and loads; it reports whether it swapped. Watch calls it every interval.
func (r *Reloader) Reload() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current.Load()
	contents, sum, err := r.read()
	if err != nil {
		// A file gone is not a new certificate: keep serving, look again
		// next time, and say so once rather than every interval.
		if err.Error() != r.readErr {
			r.readErr = err.Error()
			r.log.Error("tls: cannot read the certificate files; keeping the certificate in use",
				"err", err, "serving_serial", serial(old.leaf), "serving_not_after", old.leaf.NotAfter)
		}
		return false
	}
	r.readErr = ""
	if sum == old.sum || sum == r.lastBad {
		return false
	}
	s, err := r.parse(contents, sum)
	if err != nil {
		r.lastBad = sum
		r.log.Error("tls: the changed certificate files do not load; keeping the certificate in use",
			"err", err, "serving_serial", serial(old.leaf), "serving_not_after", old.leaf.NotAfter)
		return false
	}
	r.current.Store(s)
	r.lastBad = [sha256.Size]byte{}
	r.log.Info("tls: certificate files reloaded", certAttrs(s.leaf)...)
	return true
}

// LogAttrs describes the files and the certificate in force, for the
// start-up log line.
func (r *Reloader) LogAttrs() []any {
	attrs := []any{"cert_file", r.files.CertFile, "key_file", r.files.KeyFile}
	if r.Mutual() {
		attrs = append(attrs, "client_ca_file", r.files.ClientCAFile)
	}
	return append(attrs, certAttrs(r.Leaf())...)
}

func certAttrs(c *x509.Certificate) []any {
	return []any{"subject", c.Subject.String(), "dns_names", c.DNSNames, "ip_addresses", c.IPAddresses,
		"serial", serial(c), "not_after", c.NotAfter}
}

func serial(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// contents is one read of the files.
type contents struct {
	cert, key, ca []byte
}

func (r *Reloader) read() (contents, [sha256.Size]byte, error) {
	var c contents
	var err error
	if c.cert, err = os.ReadFile(r.files.CertFile); err != nil {
		return c, [sha256.Size]byte{}, fmt.Errorf("tls.cert_file: %w", err)
	}
	if c.key, err = os.ReadFile(r.files.KeyFile); err != nil {
		return c, [sha256.Size]byte{}, fmt.Errorf("tls.key_file: %w", err)
	}
	if r.files.ClientCAFile != "" {
		if c.ca, err = os.ReadFile(r.files.ClientCAFile); err != nil {
			return c, [sha256.Size]byte{}, fmt.Errorf("tls.client_ca_file: %w", err)
		}
	}
	h := sha256.New()
	for _, b := range [][]byte{c.cert, c.key, c.ca} {
		// Length-prefixed, so that bytes moving from one file to the
		// next change the sum.
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return c, sum, nil
}

func (r *Reloader) parse(c contents, sum [sha256.Size]byte) (*state, error) {
	cert, err := tls.X509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file %s with tls.key_file %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
		Certificates: []tls.Certificate{cert},
	}
	if r.files.ClientCAFile != "" {
		pool, err := certPool(c.ca)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file %s: %w", r.files.ClientCAFile, err)
		}
		// A resumed session is checked against these CAs again
		// (crypto/tls verifies its chains anew), so dropping a CA from
		// the file also ends the sessions it admitted.
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = pool
	}
	return &state{sum: sum, config: cfg, leaf: cert.Leaf}, nil
}

// certPool parses every certificate in a PEM bundle, refusing one that
// does not parse (x509.CertPool.AppendCertsFromPEM would skip it quietly)
// and a bundle with none.
func certPool(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := bytes.TrimSpace(b); len(rest) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return pool, nil
}
