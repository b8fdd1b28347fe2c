package tlsserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/testcerts"
)

// secretVolume lays files out as the kubelet does a Secret volume, and
// updates them the way it does: the files are written into a new
// timestamped directory, and the ..data symlink is swapped to it in one
// rename; each name is a symlink through ..data.
type secretVolume struct {
	dir string
	n   int
}

func newSecretVolume(t *testing.T, files map[string][]byte) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: t.TempDir()}
	v.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) update(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.n++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", v.n, v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func (v *secretVolume) files(mutual bool) Files {
	f := Files{CertFile: filepath.Join(v.dir, "tls.crt"), KeyFile: filepath.Join(v.dir, "tls.key")}
	if mutual {
		f.ClientCAFile = filepath.Join(v.dir, "ca.crt")
	}
	return f
}

// logBuffer collects log lines written from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serve answers over TLS with r's configuration, as Breakwater's server is
// set up: no h2 in TLSNextProto. The handler says the protocol it saw.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			fmt.Fprint(w, req.Proto)
		}),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		// The refused handshakes are the point of some tests.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = hs.Serve(tls.NewListener(ln, r.TLSConfig())) }()
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// get asks addr over a new connection, offering h2 and http/1.1 as
// containerd's and Go's clients do, trusting roots and presenting cert
// when there is one.
func get(addr string, roots *x509.CertPool, cert *tls.Certificate) (*http.Response, string, error) {
	cfg := &tls.Config{RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}}
	if cert != nil {
		// Always sent: Go's client would withhold a certificate whose
		// issuer the server's request does not name, and the server's
		// verification of a foreign one would go untested.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	c := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true},
	}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	resp, _, err := get(addr, roots, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fixture is a Reloader serving a server certificate of ca (serial 1,
// cert1 and key1) from a Secret volume, logging into logs.
type fixture struct {
	ca          *testcerts.CA
	cert1, key1 []byte
	vol         *secretVolume
	r           *Reloader
	logs        *logBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{ca: testcerts.NewCA(t, "ca"), logs: &logBuffer{}}
	f.cert1, f.key1 = f.ca.Server(t, 1)
	f.vol = newSecretVolume(t, map[string][]byte{"tls.crt": f.cert1, "tls.key": f.key1})
	var err error
	if f.r, err = New(f.vol.files(false), slog.New(slog.NewJSONHandler(f.logs, nil))); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestOnlyHTTP11(t *testing.T) {
	f := newFixture(t)
	ca, addr := f.ca, serve(t, f.r)

	resp, body, err := get(addr, ca.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.TLS.NegotiatedProtocol != "http/1.1" || resp.Proto != "HTTP/1.1" || body != "HTTP/1.1" {
		t.Errorf("a client offering h2 and http/1.1 got ALPN %q, response %s, request %s; want http/1.1 throughout",
			resp.TLS.NegotiatedProtocol, resp.Proto, body)
	}
	if resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x", resp.TLS.Version)
	}

	// A client that speaks only h2 is refused, not served HTTP/2.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2"}})
	if err == nil {
		proto := conn.ConnectionState().NegotiatedProtocol
		conn.Close()
		t.Errorf("an h2-only client connected (ALPN %q)", proto)
	}

	// Below TLS 1.2 is refused.
	conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Error("a TLS 1.1 client connected")
	}
}

// net/http's ServeTLS puts h2 into the server's NextProtos when the server
// has no TLSNextProto map; the handshake still offers http/1.1 alone,
// because GetConfigForClient's configuration is the one used. So the
// guarantee does not hang on how the server is set up.
func TestNoH2EvenWhenNetHTTPAddsIt(t *testing.T) {
	f := newFixture(t)
	ca, r := f.ca, f.r
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{TLSConfig: r.TLSConfig(), ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { fmt.Fprint(w, req.Proto) })}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	defer hs.Close()
	resp, body, err := get(ln.Addr().String(), ca.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.TLS.NegotiatedProtocol != "http/1.1" || body != "HTTP/1.1" {
		t.Errorf("ALPN %q, request %s: want http/1.1", resp.TLS.NegotiatedProtocol, body)
	}
}

func TestRotation(t *testing.T) {
	f := newFixture(t)
	ca, c1, k1, v, r, logs := f.ca, f.cert1, f.key1, f.vol, f.r, f.logs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Watch(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	addr := serve(t, r)
	pool := ca.Pool()

	if got := servedSerial(t, addr, pool); got != 1 {
		t.Fatalf("serving serial %d, want 1", got)
	}
	// The same bytes again (the kubelet rewrites on any change of the
	// Secret) are not a reload.
	v.update(t, map[string][]byte{"tls.crt": c1, "tls.key": k1})
	time.Sleep(100 * time.Millisecond)
	if strings.Contains(logs.String(), "reloaded") {
		t.Errorf("unchanged files reloaded:\n%s", logs.String())
	}

	c2, k2 := ca.Server(t, 2)
	v.update(t, map[string][]byte{"tls.crt": c2, "tls.key": k2})
	eventually(t, "the new certificate is served", func() bool { return servedSerial(t, addr, pool) == 2 })
	if !strings.Contains(logs.String(), `"msg":"tls: certificate files reloaded"`) || !strings.Contains(logs.String(), `"serial":"2"`) {
		t.Errorf("no reload line naming serial 2:\n%s", logs.String())
	}

	// A file rewritten in place (no symlink swap) with the same size is
	// seen too.
	c3, k3 := ca.Server(t, 3)
	if err := os.WriteFile(filepath.Join(v.dir, "tls.key"), k3, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, "tls.crt"), c3, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the certificate written in place is served", func() bool { return servedSerial(t, addr, pool) == 3 })
}

func TestBadNewFilesKeepTheOld(t *testing.T) {
	f := newFixture(t)
	ca, k1, v, r, logs := f.ca, f.key1, f.vol, f.r, f.logs
	addr := serve(t, r)
	pool := ca.Pool()

	c2, k2 := ca.Server(t, 2)
	for _, bad := range []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"truncated certificate", c2[:len(c2)/2], k2, "failed to find any PEM data in certificate input"},
		{"key of another certificate", c2, k1, "private key does not match public key"},
		{"not PEM at all", []byte("hello"), []byte("world"), "failed to find any PEM data"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			before := strings.Count(logs.String(), "do not load")
			v.update(t, map[string][]byte{"tls.crt": bad.cert, "tls.key": bad.key})
			if r.Reload() {
				t.Fatal("bad files swapped in")
			}
			if got := servedSerial(t, addr, pool); got != 1 {
				t.Errorf("serving serial %d after bad files, want the old 1", got)
			}
			l := logs.String()
			if strings.Count(l, "do not load") != before+1 || !strings.Contains(l, `"level":"ERROR"`) ||
				!strings.Contains(l, bad.want) || !strings.Contains(l, v.files(false).CertFile) {
				t.Errorf("want one error line naming the file and %q:\n%s", bad.want, l)
			}
			// Logged once, not at every look.
			r.Reload()
			if n := strings.Count(logs.String(), "do not load"); n != before+1 {
				t.Errorf("the same bad files logged %d times", n-before)
			}
		})
	}

	// Files gone: the old certificate stays, said once.
	if err := os.Remove(filepath.Join(v.dir, "tls.key")); err != nil {
		t.Fatal(err)
	}
	r.Reload()
	r.Reload()
	if n := strings.Count(logs.String(), "cannot read"); n != 1 || !strings.Contains(logs.String(), "no such file") {
		t.Errorf("a missing key file logged %d times, want once with the cause:\n%s", n, logs.String())
	}
	if got := servedSerial(t, addr, pool); got != 1 {
		t.Errorf("serving serial %d with the key gone, want the old 1", got)
	}

	// Good files again: swapped in.
	if err := os.Symlink(filepath.Join("..data", "tls.key"), filepath.Join(v.dir, "tls.key")); err != nil {
		t.Fatal(err)
	}
	v.update(t, map[string][]byte{"tls.crt": c2, "tls.key": k2})
	if !r.Reload() {
		t.Fatalf("good files after bad ones not swapped in:\n%s", logs.String())
	}
	if got := servedSerial(t, addr, pool); got != 2 {
		t.Errorf("serving serial %d, want 2", got)
	}
}

func TestMutualTLS(t *testing.T) {
	serverCA, clientCA, otherCA := testcerts.NewCA(t, "server-ca"), testcerts.NewCA(t, "client-ca"), testcerts.NewCA(t, "other-ca")
	c, k := serverCA.Server(t, 1)
	v := newSecretVolume(t, map[string][]byte{"tls.crt": c, "tls.key": k, "ca.crt": clientCA.PEM})
	r, err := New(v.files(true), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Mutual() {
		t.Fatal("Mutual() false with a client CA")
	}
	addr := serve(t, r)
	pool := serverCA.Pool()
	good, foreign := clientCA.Client(t, 10), otherCA.Client(t, 11)

	if _, _, err := get(addr, pool, nil); err == nil {
		t.Error("a client without a certificate was served")
	}
	if _, _, err := get(addr, pool, &foreign); err == nil {
		t.Error("a client with a certificate of another CA was served")
	}
	if _, body, err := get(addr, pool, &good); err != nil || body != "HTTP/1.1" {
		t.Errorf("a client with a certificate of the client CA: %q, %v", body, err)
	}

	// The client CA rotates with the rest: the other CA's clients are in,
	// the first one's out.
	v.update(t, map[string][]byte{"tls.crt": c, "tls.key": k, "ca.crt": otherCA.PEM})
	if !r.Reload() {
		t.Fatal("a new client CA was not swapped in")
	}
	if _, _, err := get(addr, pool, &foreign); err != nil {
		t.Errorf("after the CA rotation, a client of the new CA: %v", err)
	}
	if _, _, err := get(addr, pool, &good); err == nil {
		t.Error("after the CA rotation, a client of the old CA was still served")
	}
}

// New refuses what cannot be served, naming the file and the cause.
func TestNewRefuses(t *testing.T) {
	ca := testcerts.NewCA(t, "ca")
	c, k := ca.Server(t, 1)
	_, otherKey := ca.Server(t, 2)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, other := write("tls.crt", c), write("tls.key", k), write("other.key", otherKey)
	caFile, junk := write("ca.crt", ca.PEM), write("junk.pem", []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"))
	keyOnly := write("key-only.pem", k)
	missing := filepath.Join(dir, "missing.crt")

	if _, err := New(Files{CertFile: cert, KeyFile: key, ClientCAFile: caFile}, nil); err != nil {
		t.Fatalf("good files: %v", err)
	}
	for _, tc := range []struct {
		name  string
		files Files
		want  []string
	}{
		{"missing cert", Files{CertFile: missing, KeyFile: key}, []string{"tls.cert_file", missing, "no such file"}},
		{"missing key", Files{CertFile: cert, KeyFile: missing}, []string{"tls.key_file", missing, "no such file"}},
		{"missing CA", Files{CertFile: cert, KeyFile: key, ClientCAFile: missing}, []string{"tls.client_ca_file", missing, "no such file"}},
		{"key mismatch", Files{CertFile: cert, KeyFile: other}, []string{"tls.cert_file " + cert, "tls.key_file " + other, "private key does not match"}},
		{"key as cert", Files{CertFile: key, KeyFile: key}, []string{"tls.cert_file " + key, "PEM"}},
		{"CA does not parse", Files{CertFile: cert, KeyFile: key, ClientCAFile: junk}, []string{"tls.client_ca_file " + junk, "certificate 1"}},
		{"CA has no certificate", Files{CertFile: cert, KeyFile: key, ClientCAFile: keyOnly}, []string{"tls.client_ca_file " + keyOnly, "no PEM certificate"}},
		{"no key file", Files{CertFile: cert}, []string{"cert_file and key_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.files, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			var pe *os.PathError
			if strings.Contains(tc.name, "missing") && !errors.As(err, &pe) {
				t.Errorf("error %q does not wrap the *os.PathError", err)
			}
		})
	}
}
