package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

// accept is the Accept set a runtime sends for a manifest.
const accept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

// newClient is the harness's HTTP client: keep-alive, no compression, no
// proxy, enough idle connections for every simulated node.
func newClient() *http.Client { return newClientRcvBuf(0) }

// newClientRcvBuf is newClient whose connections have a receive buffer of
// rcvbuf bytes (0: the kernel's autotuning).
func newClientRcvBuf(rcvbuf int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         stampDialer{rcvbuf: rcvbuf}.DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     16 << 10,
	}}
}

// verifyFailures counts every byte-level verification failure of the run:
// any of them fails the run.
var verifyFailures atomic.Int64

// statusError is an answer other than 200 OK: the recovery step counts
// what clients saw by its code.
type statusError struct {
	what   string // "GET repo/manifests/tag"
	code   int
	status string // "503 Service Unavailable"
}

func (e *statusError) Error() string { return e.what + ": " + e.status }

type verifyError struct{ msg string }

func (e *verifyError) Error() string { return e.msg }

func mismatch(format string, args ...any) error {
	verifyFailures.Add(1)
	return &verifyError{fmt.Sprintf(format, args...)}
}

// blobTiming is one blob GET as a client saw it.
type blobTiming struct {
	// TTFB is the time from sending the request to the first byte of the
	// body (not of the headers: a proxy that answers headers at once but
	// waits for the whole blob before the body still shows here), as the
	// harness's reading goroutine saw it.
	TTFB time.Duration
	// ArrivalTTFB is the same up to when the kernel received that byte
	// (see arrival.go): without the harness's own wait for a core.
	ArrivalTTFB time.Duration
	Total       time.Duration
	Bytes       int64
	Digest      string
	// Where the GET waited on the client's side, for the herd's breakdown
	// (breakdown.go): Sent is when the request was handed to the client
	// (wall clock), the origin of TTFB and of the offsets below; Conn when
	// the client had a connection, Wrote when the request was written to
	// it, Headers when the response's first byte was read; LocalPort the
	// connection's own port, the server's view of the client.
	Sent                 time.Time
	Conn, Wrote, Headers time.Duration
	// DialStart and Dialed bound the connect of a GET that dialed (zero
	// for one that took a kept-alive connection): what the kernel took,
	// and what the harness's goroutines took around it.
	DialStart, Dialed time.Duration
	LocalPort         int
	Path              string
}

// pullResult is one whole image pull.
type pullResult struct {
	Duration     time.Duration
	ManifestTTFB time.Duration
	Blobs        []blobTiming
	Bytes        int64 // blob bytes, verified
	// Replica is the index of the server the client pulled from, when a
	// crowd was spread over several (crowdAt).
	Replica int
}

// puller pulls images from one target.
type puller struct {
	client *http.Client
	base   string // http://127.0.0.1:PORT
	// parallel is how many blobs of one image are fetched at once
	// (containerd's default is 3).
	parallel int
	// pipelined hashes in a second goroutine while the next buffer is read,
	// so that a single stream is not limited by read-then-hash.
	pipelined bool
	timeout   time.Duration
	// content, when set, holds the bytes of the image's blobs by digest
	// (testimage.KeepContent); a blob found there is compared with them
	// as it is read instead of hashed, which frees the herds' cores for
	// the servers they measure.
	content map[string][]byte
}

// getManifest GETs repo's manifest by reference and checks that it is
// byte for byte the one pushed.
func (p *puller) getManifest(ctx context.Context, repo, ref string, want *testimage.Pushed) ([]byte, time.Duration, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", accept)
	t0 := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	ttfb := time.Since(t0)
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, &statusError{what: fmt.Sprintf("GET %s/manifests/%s", repo, ref), code: resp.StatusCode, status: resp.Status}
	}
	sum := sha256.Sum256(body)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if got != want.Digest {
		return nil, 0, mismatch("manifest %s:%s: body hashes to %s, pushed %s", repo, ref, got, want.Digest)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != want.Digest {
		return nil, 0, mismatch("manifest %s:%s: Docker-Content-Digest %s, pushed %s", repo, ref, h, want.Digest)
	}
	return body, ttfb, nil
}

// pull pulls want (pushed as repo:tag) the way a runtime does: manifest by
// tag, then config and layers, p.parallel at a time, every byte hashed.
func (p *puller) pull(ctx context.Context, want *testimage.Pushed) (pullResult, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var r pullResult
	t0 := time.Now()
	body, ttfb, err := p.getManifest(ctx, want.Repo, want.Tag, want)
	if err != nil {
		return r, err
	}
	r.ManifestTTFB = ttfb
	var m struct {
		Config testimage.Blob   `json:"config"`
		Layers []testimage.Blob `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return r, fmt.Errorf("manifest %s: %w", want.Repo, err)
	}
	blobs := append([]testimage.Blob{m.Config}, m.Layers...)
	r.Blobs = make([]blobTiming, len(blobs))
	par := max(p.parallel, 1)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	errs := make([]error, len(blobs))
	for i, b := range blobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			r.Blobs[i], errs[i] = p.getBlob(ctx, want.Repo, b)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return r, err
	}
	for _, b := range r.Blobs {
		r.Bytes += b.Bytes
	}
	r.Duration = time.Since(t0)
	return r, nil
}

// getBlob GETs one blob and verifies its size and sha256.
func (p *puller) getBlob(ctx context.Context, repo string, b testimage.Blob) (blobTiming, error) {
	t := blobTiming{Digest: b.Digest}
	var conn *stampConn
	var t0 time.Time
	t.Path = "/v2/" + repo + "/blobs/" + b.Digest
	// The transport calls WroteRequest on its writing goroutine, which
	// need not hand anything to this one before the response comes.
	var wrote, headers, dialStart, dialed atomic.Int64
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			t.Conn = time.Since(t0)
			conn, _ = info.Conn.(*stampConn)
			if a, ok := info.Conn.LocalAddr().(*net.TCPAddr); ok {
				t.LocalPort = a.Port
			}
		},
		// The dial runs on a goroutine of its own.
		ConnectStart:         func(string, string) { dialStart.Store(int64(time.Since(t0))) },
		ConnectDone:          func(string, string, error) { dialed.Store(int64(time.Since(t0))) },
		WroteRequest:         func(httptrace.WroteRequestInfo) { wrote.Store(int64(time.Since(t0))) },
		GotFirstResponseByte: func() { headers.Store(int64(time.Since(t0))) },
	}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, p.base+t.Path, nil)
	t0 = time.Now()
	t.Sent = t0
	resp, err := p.client.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	t.Wrote, t.Headers = time.Duration(wrote.Load()), time.Duration(headers.Load())
	t.DialStart, t.Dialed = time.Duration(dialStart.Load()), time.Duration(dialed.Load())
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return t, &statusError{what: fmt.Sprintf("GET %s/blobs/%s", repo, b.Digest), code: resp.StatusCode, status: resp.Status}
	}
	var check blobCheck = &hashCheck{h: sha256.New(), digest: b.Digest}
	if want, ok := p.content[b.Digest]; ok {
		check = &contentCheck{want: want}
	}
	var n int64
	onFirst := func() {
		t.TTFB = time.Since(t0)
		t.ArrivalTTFB = t.TTFB
		if conn != nil {
			if at, ok := conn.lastArrival(); ok && !at.Before(t0) && at.Sub(t0) < t.TTFB {
				t.ArrivalTTFB = at.Sub(t0)
			}
		}
	}
	if p.pipelined {
		n, err = readPipelined(resp.Body, check, onFirst)
	} else {
		n, err = readInto(resp.Body, check, onFirst)
	}
	if err != nil {
		return t, fmt.Errorf("GET %s/blobs/%s: after %d bytes: %w", repo, b.Digest, n, err)
	}
	t.Total, t.Bytes = time.Since(t0), n
	if n != b.Size {
		return t, mismatch("blob %s of %s: %d bytes, want %d", b.Digest, repo, n, b.Size)
	}
	if m := check.mismatch(); m != "" {
		return t, mismatch("blob %s of %s: %s", b.Digest, repo, m)
	}
	return t, nil
}

// blobCheck checks a blob's bytes as they are written to it; a length
// mismatch is the caller's to catch.
type blobCheck interface {
	io.Writer
	// mismatch says how what was written is not the blob, "" if it is.
	mismatch() string
}

// hashCheck hashes the bytes and compares the sum with the digest.
type hashCheck struct {
	h      hash.Hash
	digest string
}

func (c *hashCheck) Write(p []byte) (int, error) { return c.h.Write(p) }

func (c *hashCheck) mismatch() string {
	if got := "sha256:" + hex.EncodeToString(c.h.Sum(nil)); got != c.digest {
		return "content hashes to " + got
	}
	return ""
}

// contentCheck compares the bytes with the content they must be.
type contentCheck struct {
	want []byte
	off  int64
	bad  bool  // some chunk did not match
	at   int64 // where the first such chunk began
}

func (c *contentCheck) mismatch() string {
	if c.bad {
		return fmt.Sprintf("the %d bytes read from offset %d differ from the content pushed", c.off-c.at, c.at)
	}
	return ""
}

func (c *contentCheck) Write(p []byte) (int, error) {
	end := c.off + int64(len(p))
	if !c.bad && (end > int64(len(c.want)) || !bytes.Equal(p, c.want[c.off:end])) {
		c.bad, c.at = true, c.off
	}
	c.off = end
	return len(p), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// readInto reads r to the end into w, calling onFirst when the first
// bytes are in.
func readInto(r io.Reader, w io.Writer, onFirst func()) (n int64, err error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if n == 0 {
				onFirst()
			}
			n += int64(k)
			_, _ = w.Write(buf[:k])
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// readPipelined is readInto with w written in a second goroutine, four
// buffers in flight.
func readPipelined(r io.Reader, w io.Writer, onFirst func()) (n int64, err error) {
	const nbuf = 4
	free := make(chan *[]byte, nbuf)
	full := make(chan []byte, nbuf)
	for range nbuf {
		free <- bufPool.Get().(*[]byte)
	}
	done := make(chan struct{})
	go func() {
		for b := range full {
			_, _ = w.Write(b)
			bp := b[:cap(b)]
			free <- &bp
		}
		close(done)
	}()
	for {
		bp := <-free
		k, rerr := r.Read(*bp)
		if k > 0 {
			if n == 0 {
				onFirst()
			}
			n += int64(k)
			full <- (*bp)[:k]
		} else {
			free <- bp
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	close(full)
	<-done
	for range nbuf {
		bufPool.Put(<-free)
	}
	return n, err
}

// manifestProbe sends HEAD or GET for repo:tag and checks the answer against
// the pushed manifest; for GET the body is hashed.
func manifestProbe(ctx context.Context, c *http.Client, base, method string, want *testimage.Pushed) error {
	req, _ := http.NewRequestWithContext(ctx, method, base+"/v2/"+want.Repo+"/manifests/"+want.Tag, nil)
	req.Header.Set("Accept", accept)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("%s %s:%s: %s", method, want.Repo, want.Tag, resp.Status)
	}
	if d := resp.Header.Get("Docker-Content-Digest"); d != want.Digest {
		return mismatch("%s %s:%s: Docker-Content-Digest %q, pushed %s", method, want.Repo, want.Tag, d, want.Digest)
	}
	if method == http.MethodHead {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(resp.Body, 4<<20), *bp)
	if err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.Digest || n != int64(len(want.Manifest)) {
		return mismatch("GET %s:%s: body hashes to %s (%d bytes), pushed %s", want.Repo, want.Tag, got, n, want.Digest)
	}
	return nil
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// harnessCeiling pulls a blob of size bytes, verified exactly as in the
// scenarios, from an in-memory HTTP server inside the harness, and returns
// the best MB/s of three tries. The server shares the harness's CPU, so
// this is a lower bound on what the harness can take in: a single-stream
// figure well under it was not limited by the harness.
func harnessCeiling(size int64) (float64, error) {
	blob := make([]byte, size)
	_, _ = mrand.NewChaCha8([32]byte{3}).Read(blob)
	sum := sha256.Sum256(blob)
	b := testimage.Blob{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: size}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	p := &puller{client: newClient(), base: "http://" + ln.Addr().String(), parallel: 1, pipelined: true, timeout: time.Minute}
	best := 0.0
	for range 3 {
		t, err := p.getBlob(context.Background(), "ceiling", b)
		if err != nil {
			return 0, err
		}
		best = max(best, float64(t.Bytes)/t.Total.Seconds()/1e6)
	}
	return best, nil
}
