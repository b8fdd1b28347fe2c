package tests3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	s3 "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"

	"github.com/breakwater-registry/breakwater/internal/tests3"
)

// TestDriver drives the server through distribution's s3-aws storage
// driver, the way fleet mode will: small objects, ranged reads, metadata,
// deletes, a multipart upload and a presigned URL.
func TestDriver(t *testing.T) {
	srv := tests3.Start(t)
	ctx := context.Background()
	d, err := s3.FromParameters(ctx, srv.DriverParameters())
	if err != nil {
		t.Fatalf("s3.FromParameters: %v", err)
	}

	const path = "/docker/registry/v2/blobs/small"
	content := []byte("fleet mode stores blobs in a shared bucket")
	if err := d.PutContent(ctx, path, content); err != nil {
		t.Fatalf("PutContent: %v", err)
	}
	got, err := d.GetContent(ctx, path)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("GetContent = %q, %v; want %q", got, err, content)
	}

	r, err := d.Reader(ctx, path, 6)
	if err != nil {
		t.Fatalf("Reader at offset 6: %v", err)
	}
	got, err = io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, content[6:]) {
		t.Fatalf("Reader at offset 6 read %q, %v; want %q", got, err, content[6:])
	}

	fi, err := d.Stat(ctx, path)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if fi.Size() != int64(len(content)) || fi.IsDir() {
		t.Errorf("Stat: size %d, dir %v; want %d, false", fi.Size(), fi.IsDir(), len(content))
	}
	if fi, err := d.Stat(ctx, "/docker/registry/v2/blobs"); err != nil || !fi.IsDir() {
		t.Errorf("Stat of the parent prefix: %v, %v; want a directory", fi, err)
	}

	if err := d.Delete(ctx, path); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := d.GetContent(ctx, path); !errors.As(err, new(storagedriver.PathNotFoundError)) {
		t.Errorf("GetContent after Delete: %v; want PathNotFoundError", err)
	}
}

// TestMultipartWriter writes past the driver's 10 MiB chunk size, so the
// upload takes two parts, in pieces that do not line up with either.
func TestMultipartWriter(t *testing.T) {
	srv := tests3.Start(t)
	ctx := context.Background()
	d, err := s3.FromParameters(ctx, srv.DriverParameters())
	if err != nil {
		t.Fatalf("s3.FromParameters: %v", err)
	}

	const path = "/docker/registry/v2/blobs/large"
	content := make([]byte, 11<<20+17)
	rand.Read(content)
	w, err := d.Writer(ctx, path, false)
	if err != nil {
		t.Fatalf("Writer: %v", err)
	}
	for rest := content; len(rest) > 0; {
		n := min(len(rest), 3<<20+1)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		rest = rest[n:]
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	// Before Commit, Size counts only the parts uploaded so far (10 MiB
	// here), not what is still buffered: a caller must not take it for
	// what it wrote.
	if w.Size() != int64(len(content)) {
		t.Errorf("Size after Commit = %d; want %d", w.Size(), len(content))
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	if fi, err := d.Stat(ctx, path); err != nil || fi.Size() != int64(len(content)) {
		t.Fatalf("Stat after Commit: %v, %v; want size %d", fi, err, len(content))
	}
	r, err := d.Reader(ctx, path, 0)
	if err != nil {
		t.Fatalf("Reader: %v", err)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if got, want := h.Sum(nil), sha256.Sum256(content); !bytes.Equal(got, want[:]) {
		t.Errorf("read back sha256:%x; wrote sha256:%x", got, want)
	}
}

// TestRedirectURL: a presigned URL is fetched by a plain HTTP client, with
// no credentials of its own, as a client redirected to the bucket would.
func TestRedirectURL(t *testing.T) {
	srv := tests3.Start(t)
	ctx := context.Background()
	d, err := s3.FromParameters(ctx, srv.DriverParameters())
	if err != nil {
		t.Fatalf("s3.FromParameters: %v", err)
	}
	const path = "/docker/registry/v2/blobs/redirected"
	content := []byte("served by the bucket, not by Breakwater")
	if err := d.PutContent(ctx, path, content); err != nil {
		t.Fatalf("PutContent: %v", err)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://breakwater.test/v2/app/blobs/sha256:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := d.RedirectURL(req, path)
	if err != nil || u == "" {
		t.Fatalf("RedirectURL = %q, %v", u, err)
	}
	res, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET presigned URL: %v", err)
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read presigned URL: %v", err)
	}
	if res.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
		t.Errorf("GET presigned URL: %s %q; want 200 %q", res.Status, got, content)
	}
}
