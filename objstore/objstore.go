// Package objstore is the object store the replicas of a fleet share, behind
// one of distribution's storage drivers (s3, gcs, azure; filesystem for
// tests). It holds only what a replica has verified: blobs by digest,
// and which repository each blob was confirmed for, so that a replica that
// never saw a blob can serve it — for that repository only — without asking
// the upstream.
//
// Layout under the driver's root:
//
//	/blobs/<alg>/<hex[:2]>/<hex>                   verified content
//	/uploads/<random>                              an upload under way
//	/repos/<upstream>/<name>/_links/<alg>/<hex>    blob confirmed for the repository
//	/repos/<upstream>/<name>/_manifests/<alg>/<hex> manifest record (JSON)
//	/repos/<upstream>/<name>/_tags/<tag>/<variant>  tag record (JSON)
//
// A blob appears at its path only complete: it is written to uploads/ and
// moved, and a driver's move is atomic (a rename, or S3's or GCS's copy).
// Azure's copy is asynchronous and the driver waits for it to finish;
// whether another reader can see the object before then is untested here.
package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/opencontainers/go-digest"

	// The drivers Open may name: s3, which the configuration takes, and
	// filesystem, for tests and a store on a shared volume. gcs and azure
	// are in driver_gcs.go and driver_azure.go, built in unless a build
	// leaves them out (docs/fleet.md).
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// ErrNotFound reports that the store holds no such blob or link.
var ErrNotFound = errors.New("not in the object store")

// Store is content-addressed storage in one object store.
type Store struct {
	driver storagedriver.StorageDriver
}

// Open creates the driver name ("s3", "gcs", "azure", "filesystem") with
// distribution's parameters for it.
func Open(ctx context.Context, name string, params map[string]any) (*Store, error) {
	if err := Built(name); err != nil {
		return nil, fmt.Errorf("object store %s: %w", name, err)
	}
	d, err := factory.Create(ctx, name, params)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", name, err)
	}
	return &Store{driver: d}, nil
}

// Name is the driver's name, for logs.
func (s *Store) Name() string { return s.driver.Name() }

// Check asks the store something cheap, so that a wrong bucket or key is
// found at start rather than at the first pull.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.driver.Stat(ctx, "/blobs")
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("object store %s: %w", s.driver.Name(), err)
	}
	return nil
}

func blobPath(dgst digest.Digest) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("blob %q: %w", dgst, err)
	}
	h := dgst.Encoded()
	return fmt.Sprintf("/blobs/%s/%s/%s", dgst.Algorithm(), h[:2], h), nil
}

// repoPath is a path under a repository's directory: one name, one place.
// An upstream with a slash or an underscore would share another's records
// (docker.io/library's app is docker.io's library/app; host_5000 is
// host:5000, whose colon a driver's path does not allow and becomes an
// underscore), and a component that does not start with a letter or a
// digit could be "..", or "_links", which puts it under another
// repository's records: a driver's Stat of such a path finds a directory,
// and answers as for a record.
func repoPath(upstream, repo string, parts ...string) (string, error) {
	bad := fmt.Errorf("repository %s/%s: not a name the object store can hold", upstream, repo)
	if upstream == "" || strings.ContainsAny(upstream, "/_") {
		return "", bad
	}
	for _, c := range strings.Split(upstream+"/"+repo, "/") {
		if c == "" || !('a' <= c[0] && c[0] <= 'z' || 'A' <= c[0] && c[0] <= 'Z' || '0' <= c[0] && c[0] <= '9') {
			return "", bad
		}
	}
	for _, c := range parts {
		if c == "" || c == "." || c == ".." {
			return "", bad
		}
	}
	p := "/repos/" + strings.ReplaceAll(upstream, ":", "_") + "/" + repo + "/" + strings.Join(parts, "/")
	if !storagedriver.PathRegexp.MatchString(p) {
		return "", bad
	}
	return p, nil
}

// linkPath is where the store says repo of upstream may serve dgst.
func linkPath(upstream, repo string, dgst digest.Digest) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("blob %q: %w", dgst, err)
	}
	return repoPath(upstream, repo, "_links", dgst.Algorithm().String(), dgst.Encoded())
}

// StatBlob returns the blob's size, or ErrNotFound.
func (s *Store) StatBlob(ctx context.Context, dgst digest.Digest) (int64, error) {
	p, err := blobPath(dgst)
	if err != nil {
		return 0, err
	}
	fi, err := s.driver.Stat(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("stat %s: %w", dgst, err)
	}
	return fi.Size(), nil
}

// Reader reads the blob from offset on.
func (s *Store) Reader(ctx context.Context, dgst digest.Digest, offset int64) (io.ReadCloser, error) {
	p, err := blobPath(dgst)
	if err != nil {
		return nil, err
	}
	rc, err := s.driver.Reader(ctx, p, offset)
	if err != nil {
		if isNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("read %s: %w", dgst, err)
	}
	return rc, nil
}

// PutBlob uploads content the caller has verified to be dgst. It goes to
// uploads/ first and is moved into place whole.
func (s *Store) PutBlob(ctx context.Context, dgst digest.Digest, content io.Reader) error {
	p, err := blobPath(dgst)
	if err != nil {
		return err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	tmp := "/uploads/" + hex.EncodeToString(b[:])
	w, err := s.driver.Writer(ctx, tmp, false)
	if err != nil {
		return fmt.Errorf("upload %s: %w", dgst, err)
	}
	if _, err := io.Copy(w, content); err != nil {
		_ = w.Cancel(ctx)
		w.Close()
		return fmt.Errorf("upload %s: %w", dgst, err)
	}
	if err := w.Commit(ctx); err != nil {
		_ = w.Cancel(ctx)
		w.Close()
		return fmt.Errorf("upload %s: commit: %w", dgst, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("upload %s: %w", dgst, err)
	}
	if err := s.driver.Move(ctx, tmp, p); err != nil {
		_ = s.driver.Delete(ctx, tmp)
		return fmt.Errorf("upload %s: move into place: %w", dgst, err)
	}
	return nil
}

// DeleteBlob removes a blob found corrupt, so that the next fetch goes to
// the upstream, or evicted.
func (s *Store) DeleteBlob(ctx context.Context, dgst digest.Digest) error {
	p, err := blobPath(dgst)
	if err != nil {
		return err
	}
	if err := s.driver.Delete(ctx, p); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", dgst, err)
	}
	return nil
}

// WalkBlobs calls fn with every blob in the store, its size and the time it
// was written, in no particular order, until fn returns an error.
func (s *Store) WalkBlobs(ctx context.Context, fn func(dgst digest.Digest, size int64, written time.Time) error) error {
	err := s.driver.Walk(ctx, "/blobs", func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		// /blobs/<alg>/<hex[:2]>/<hex>
		parts := strings.Split(strings.TrimPrefix(fi.Path(), "/"), "/")
		if len(parts) != 4 {
			return nil
		}
		dgst := digest.NewDigestFromEncoded(digest.Algorithm(parts[1]), parts[3])
		if dgst.Validate() != nil || !strings.HasPrefix(parts[3], parts[2]) {
			return nil // not one of ours
		}
		return fn(dgst, fi.Size(), fi.ModTime())
	})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("walk the blobs: %w", err)
	}
	return nil
}

// Link records that the upstream said yes to repo for dgst.
func (s *Store) Link(ctx context.Context, upstream, repo string, dgst digest.Digest) error {
	p, err := linkPath(upstream, repo, dgst)
	if err != nil {
		return err
	}
	if err := s.driver.PutContent(ctx, p, []byte(dgst.String())); err != nil {
		return fmt.Errorf("link %s to %s/%s: %w", dgst, upstream, repo, err)
	}
	return nil
}

// Linked reports whether the upstream said yes to repo for dgst, to this
// replica or another.
func (s *Store) Linked(ctx context.Context, upstream, repo string, dgst digest.Digest) (bool, error) {
	p, err := linkPath(upstream, repo, dgst)
	if err != nil {
		return false, err
	}
	if _, err := s.driver.Stat(ctx, p); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("link %s to %s/%s: %w", dgst, upstream, repo, err)
	}
	return true, nil
}

// Record kinds: a repository's manifest records (by digest, "<alg>/<hex>")
// and tag records (by "<tag>/<variant>"), small JSON its callers define.
const (
	Manifests = "_manifests"
	Tags      = "_tags"
)

// PutRecord writes a record of repo: kind is Manifests or Tags, key its
// name under it.
func (s *Store) PutRecord(ctx context.Context, upstream, repo, kind, key string, b []byte) error {
	p, err := recordPath(upstream, repo, kind, key)
	if err != nil {
		return err
	}
	if err := s.driver.PutContent(ctx, p, b); err != nil {
		return fmt.Errorf("record %s of %s/%s: %w", key, upstream, repo, err)
	}
	return nil
}

// GetRecord reads a record PutRecord wrote, or ErrNotFound.
func (s *Store) GetRecord(ctx context.Context, upstream, repo, kind, key string) ([]byte, error) {
	p, err := recordPath(upstream, repo, kind, key)
	if err != nil {
		return nil, err
	}
	b, err := s.driver.GetContent(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("record %s of %s/%s: %w", key, upstream, repo, err)
	}
	return b, nil
}

func recordPath(upstream, repo, kind, key string) (string, error) {
	if kind != Manifests && kind != Tags {
		return "", fmt.Errorf("record kind %q", kind)
	}
	return repoPath(upstream, repo, append([]string{kind}, strings.Split(key, "/")...)...)
}

// URL is a presigned URL of the blob for r's method, or "" when the driver
// cannot make one (the filesystem driver).
func (s *Store) URL(r *http.Request, dgst digest.Digest) (string, error) {
	p, err := blobPath(dgst)
	if err != nil {
		return "", err
	}
	u, err := s.driver.RedirectURL(r, p)
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", dgst, err)
	}
	return u, nil
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return true
	}
	// The gcs driver turns a missing object into PathNotFoundError by
	// comparing with ==, and GCS's library now wraps the sentinel, so a
	// Delete of a missing object comes back as the library's error, in
	// distribution's Error, which has no Unwrap.
	var de storagedriver.Error
	return errors.As(err, &de) && gcsNotFound(de.Detail)
}

// Built says, for a driver the configuration takes, that this build left
// it out and with which tag; nil when it is in (or not such a driver).
func Built(name string) error {
	tag := ""
	switch name {
	case "gcs":
		tag = gcsLeftOutBy
	case "azure":
		tag = azureLeftOutBy
	}
	if tag != "" {
		return fmt.Errorf("not in this build of Breakwater (built with -tags %s)", tag)
	}
	return nil
}
