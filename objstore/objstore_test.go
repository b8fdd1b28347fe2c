package objstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/internal/testazurite"
	"github.com/breakwater-registry/breakwater/internal/testgcs"
	"github.com/breakwater-registry/breakwater/internal/tests3"
	"github.com/breakwater-registry/breakwater/objstore"
)

// backend is a Store on one of distribution's real drivers, with a second,
// independent driver on the same storage to look at what the Store left
// there.
type backend struct {
	kind  string // the driver's name
	store *objstore.Store
	raw   storagedriver.StorageDriver
	// params are the driver's parameters, for a test to open it again
	// with some changed.
	params map[string]any
	// root is the filesystem driver's root directory, under base, a
	// directory of its own in which nothing else is written; "" for the
	// others.
	root, base string
	// srv is the S3 server, nil for the others.
	srv *tests3.Server
}

// backends runs f against a bucket of a real MinIO through the s3 driver,
// a bucket of a GCS emulator (fake-gcs-server) through the gcs driver, a
// container of Azure's emulator (Azurite) through the azure driver, and a
// temporary directory through the filesystem driver. Each has a store of
// its own.
func backends(t *testing.T, f func(t *testing.T, b *backend)) {
	t.Run("s3", func(t *testing.T) {
		srv := tests3.Start(t)
		params := srv.DriverParameters()
		// S3's smallest part, so that a 6 MiB upload is in two.
		params["chunksize"] = 5 << 20
		b := open(t, "s3", params)
		b.srv = srv
		f(t, b)
	})
	t.Run("gcs", func(t *testing.T) {
		// The driver's default chunksize (16 MiB) is kept: each blob here
		// is sent in one request. A blob of more than one chunk takes the
		// driver's resumable upload, which addresses www.googleapis.com
		// itself, past the emulator, and is not tested here.
		f(t, open(t, "gcs", testgcs.Start(t).DriverParameters("/bw")))
	})
	t.Run("azure", func(t *testing.T) {
		f(t, open(t, "azure", testazurite.Start(t).DriverParameters("/bw")))
	})
	t.Run("filesystem", func(t *testing.T) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		b := open(t, "filesystem", map[string]any{"rootdirectory": root})
		b.root, b.base = root, base
		f(t, b)
	})
}

func open(t *testing.T, name string, params map[string]any) *backend {
	t.Helper()
	ctx := context.Background()
	store, err := objstore.Open(ctx, name, params)
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	raw, err := factory.Create(ctx, name, params)
	if err != nil {
		t.Fatalf("factory.Create(%s): %v", name, err)
	}
	return &backend{kind: name, store: store, raw: raw, params: params}
}

// objects lists every object under from, as the driver sees them; none
// when from does not exist.
func (b *backend) objects(t *testing.T, from string) []string {
	t.Helper()
	var paths []string
	err := b.raw.Walk(context.Background(), from, func(fi storagedriver.FileInfo) error {
		if !fi.IsDir() {
			paths = append(paths, fi.Path())
		}
		return nil
	})
	var nf storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &nf) {
		t.Fatalf("walk %s: %v", from, err)
	}
	sort.Strings(paths)
	return paths
}

// files lists the regular files under the filesystem driver's base
// directory, relative to it: what the driver wrote, in its root or not.
func (b *backend) files(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(b.base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(b.base, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func content(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p, digest.FromBytes(p)
}

func readAll(t *testing.T, s *objstore.Store, dgst digest.Digest, offset int64) []byte {
	t.Helper()
	rc, err := s.Reader(context.Background(), dgst, offset)
	if err != nil {
		t.Fatalf("Reader(%s, %d): %v", dgst, offset, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Reader(%s, %d): read: %v", dgst, offset, err)
	}
	return got
}

// TestBlob: a blob put is there whole, readable from any offset, by a
// presigned URL when the driver makes one, and gone once deleted; a link
// says yes for its own repository of its own upstream only.
func TestBlob(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := b.store
		blob, dgst := content(t, 300_000)

		if _, err := s.StatBlob(ctx, dgst); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("StatBlob before PutBlob: %v, want ErrNotFound", err)
		}
		if _, err := s.Reader(ctx, dgst, 0); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Reader before PutBlob: %v, want ErrNotFound", err)
		}
		if err := s.PutBlob(ctx, dgst, bytes.NewReader(blob)); err != nil {
			t.Fatalf("PutBlob: %v", err)
		}
		size, err := s.StatBlob(ctx, dgst)
		if err != nil || size != int64(len(blob)) {
			t.Fatalf("StatBlob: %d, %v; want %d", size, err, len(blob))
		}
		h := dgst.Encoded()
		if got, want := b.objects(t, "/"), []string{"/blobs/sha256/" + h[:2] + "/" + h}; !equal(got, want) {
			t.Errorf("objects after PutBlob: %q, want %q (nothing left under /uploads)", got, want)
		}

		for _, off := range []int64{0, 1, int64(len(blob)) / 2, int64(len(blob)) - 1} {
			if got := readAll(t, s, dgst, off); !bytes.Equal(got, blob[off:]) {
				t.Errorf("Reader at %d: %d bytes, not the blob's last %d", off, len(got), len(blob)-int(off))
			}
		}

		t.Run("links", func(t *testing.T) {
			other, _ := content(t, 10)
			otherDgst := digest.FromBytes(other)
			for _, l := range []struct{ upstream, repo string }{
				{"docker.io", "library/app"},
				{"127.0.0.1:5000", "team/app"},
				{"registry.example.com:5000", "a/b/c.d_e-f"},
				{"localhost", "a__b/c---d/0"}, // all the distribution grammar allows
			} {
				if ok, err := s.Linked(ctx, l.upstream, l.repo, dgst); err != nil || ok {
					t.Fatalf("Linked(%s, %s) before Link: %v, %v; want false", l.upstream, l.repo, ok, err)
				}
				if err := s.Link(ctx, l.upstream, l.repo, dgst); err != nil {
					t.Fatalf("Link(%s, %s): %v", l.upstream, l.repo, err)
				}
				if ok, err := s.Linked(ctx, l.upstream, l.repo, dgst); err != nil || !ok {
					t.Fatalf("Linked(%s, %s) after Link: %v, %v; want true", l.upstream, l.repo, ok, err)
				}
				// Again is no error.
				if err := s.Link(ctx, l.upstream, l.repo, dgst); err != nil {
					t.Fatalf("Link(%s, %s) again: %v", l.upstream, l.repo, err)
				}
				if ok, err := s.Linked(ctx, l.upstream, l.repo, otherDgst); err != nil || ok {
					t.Errorf("Linked(%s, %s) for another blob: %v, %v; want false", l.upstream, l.repo, ok, err)
				}
			}
			for _, l := range []struct{ upstream, repo, why string }{
				{"docker.io", "library/other", "another repository"},
				{"docker.io", "library", "the repository's parent"},
				{"docker.io", "library/app/sub", "a repository under it"},
				{"ghcr.io", "library/app", "another upstream"},
				{"127.0.0.1:5001", "team/app", "another port"},
				{"127.0.0.1", "team/app", "no port"},
			} {
				if ok, err := s.Linked(ctx, l.upstream, l.repo, dgst); err != nil || ok {
					t.Errorf("Linked(%s, %s), %s: %v, %v; want false", l.upstream, l.repo, l.why, ok, err)
				}
			}
		})

		t.Run("url", func(t *testing.T) {
			get := httptest.NewRequest(http.MethodGet, "/v2/library/app/blobs/"+dgst.String(), nil)
			u, err := s.URL(get, dgst)
			if err != nil {
				t.Fatalf("URL: %v", err)
			}
			h := dgst.Encoded()
			key := "bw/blobs/sha256/" + h[:2] + "/" + h + "?"
			switch b.kind {
			case "filesystem":
				// distribution's filesystem driver makes no URLs: its
				// RedirectURL returns "", nil, which the StorageDriver
				// interface documents as "the request may not be
				// redirected".
				if u != "" {
					t.Errorf("filesystem URL: %q, want none", u)
				}
				return
			case "gcs":
				// Signed with the service account's key, which only GCS
				// checks: the emulator serves any URL, so only its shape
				// is tested.
				if !strings.Contains(u, "/"+b.params["bucket"].(string)+"/"+key) || !strings.Contains(u, "&Signature=") || !strings.Contains(u, "GoogleAccessId=") {
					t.Errorf("gcs URL: %q, want a signed URL of the blob's object", u)
				}
				return
			case "azure":
				// A SAS for HTTPS only (spr=https): Azurite here speaks
				// HTTP, so only its shape is tested.
				if !strings.HasPrefix(u, b.params["serviceurl"].(string)+"/"+b.params["container"].(string)+"/"+key) || !strings.Contains(u, "sig=") || !strings.Contains(u, "sp=r&") {
					t.Errorf("azure URL: %q, want a read-only SAS of the blob", u)
				}
				return
			}
			if !strings.HasPrefix(u, b.srv.Endpoint+"/") || !strings.Contains(u, "X-Amz-Signature=") {
				t.Fatalf("URL: %q, want a presigned URL on %s", u, b.srv.Endpoint)
			}
			getURL := u
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, blob) {
				t.Fatalf("GET presigned URL: %s, %d bytes (%v); want 200 and the blob", resp.Status, len(got), err)
			}

			head := httptest.NewRequest(http.MethodHead, "/v2/library/app/blobs/"+dgst.String(), nil)
			u, err = s.URL(head, dgst)
			if err != nil || u == "" {
				t.Fatalf("URL for HEAD: %q, %v", u, err)
			}
			resp, err = http.Head(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(blob)) {
				t.Errorf("HEAD presigned URL: %s, length %d; want 200, %d", resp.Status, resp.ContentLength, len(blob))
			}
			// The method is signed: a URL for GET does not answer HEAD,
			// which is why URL presigns for the request's method.
			resp, err = http.Head(getURL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("HEAD of the URL presigned for GET: %s, want a refusal", resp.Status)
			}
		})

		if err := s.DeleteBlob(ctx, dgst); err != nil {
			t.Fatalf("DeleteBlob: %v", err)
		}
		if _, err := s.StatBlob(ctx, dgst); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("StatBlob after DeleteBlob: %v, want ErrNotFound", err)
		}
		if _, err := s.Reader(ctx, dgst, 0); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Reader after DeleteBlob: %v, want ErrNotFound", err)
		}
		if err := s.DeleteBlob(ctx, dgst); err != nil {
			t.Errorf("DeleteBlob of a missing blob: %v", err)
		}
		if _, missing := content(t, 1); s.DeleteBlob(ctx, missing) != nil {
			t.Errorf("DeleteBlob of a blob never put: %v", s.DeleteBlob(ctx, missing))
		}
	})
}

// TestRefusals: a digest that is not one, and a repository or upstream
// name that would put a link outside its repository's place under /repos
// (or share one with another repository), are refused before the driver
// is asked; nothing is written anywhere.
func TestRefusals(t *testing.T) {
	_, good := content(t, 1)
	badDigests := []digest.Digest{
		"sha256:zz",
		"sha256:" + digest.Digest(strings.Repeat("A", 64)),
		"sha256:" + digest.Digest(strings.Repeat("0", 63)),
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha256:../../../../etc/passwd",
		"sha256",
		"",
		digest.Digest(good.Encoded()),
	}
	badNames := []struct{ upstream, repo string }{
		{"docker.io", "../x"},
		{"docker.io", "../../../../../../escaped"},
		{"docker.io", "a/../../b"},
		{"docker.io", "a/../../../../../../../escaped"},
		{"docker.io", "a/.."},
		{"docker.io", ".."},
		{"docker.io", "."},
		{"docker.io", "./a"},
		{"docker.io", "a/./b"},
		{"docker.io", "a//b"},
		{"docker.io", "/a"},
		{"docker.io", "a/"},
		{"docker.io", ""},
		{"docker.io", "a b"},
		{"docker.io", "a:b"},
		{"docker.io", "a\\..\\..\\b"},
		{"docker.io", "a\x00b"},
		{"docker.io", "a\n"},
		{"docker.io", "a%2F..%2Fb"},
		{"docker.io", "ä"},
		{"docker.io", "a/*"},
		{"..", "x"},
		{"../..", "x"},
		{"../../../../../..", "escaped"},
		{"", "x"},
		{"docker.io/", "x"},
		{"/docker.io", "x"},
		{"a b", "x"},
		// Not escapes, but names that would share a link with another
		// repository's, or with one of its blobs'.
		{"docker.io/library", "app"},       // docker.io's library/app
		{"host_5000", "app"},               // host:5000's app
		{"docker.io", "app/_links/sha256"}, // under app's links
	}

	backends(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := b.store
		for _, d := range badDigests {
			if err := s.Link(ctx, "docker.io", "library/app", d); err == nil {
				t.Errorf("Link(%q): no error", d)
			}
			if ok, err := s.Linked(ctx, "docker.io", "library/app", d); err == nil || ok {
				t.Errorf("Linked(%q): %v, %v; want an error", d, ok, err)
			}
			if err := s.PutBlob(ctx, d, strings.NewReader("x")); err == nil {
				t.Errorf("PutBlob(%q): no error", d)
			}
			if _, err := s.StatBlob(ctx, d); err == nil || errors.Is(err, objstore.ErrNotFound) {
				t.Errorf("StatBlob(%q): %v, want an error other than ErrNotFound", d, err)
			}
			if err := s.DeleteBlob(ctx, d); err == nil {
				t.Errorf("DeleteBlob(%q): no error", d)
			}
			if _, err := s.URL(httptest.NewRequest(http.MethodGet, "/", nil), d); err == nil {
				t.Errorf("URL(%q): no error", d)
			}
		}
		for _, n := range badNames {
			if err := s.Link(ctx, n.upstream, n.repo, good); err == nil {
				t.Errorf("Link(%q, %q): no error", n.upstream, n.repo)
			}
			if ok, err := s.Linked(ctx, n.upstream, n.repo, good); err == nil || ok {
				t.Errorf("Linked(%q, %q): %v, %v; want an error", n.upstream, n.repo, ok, err)
			}
		}
		if got := b.objects(t, "/"); len(got) != 0 {
			t.Errorf("objects after refusals: %q, want none", got)
		}
		if b.root != "" {
			if got := b.files(t); len(got) != 0 {
				t.Errorf("files in and around the root directory after refusals: %q, want none", got)
			}
		}
	})
}

// TestLinksAreTheirRepositorysOnly: a link written for one repository
// never makes another linked, whatever the names: a driver's Stat of a
// path under which another link lies answers as for a directory, not
// "not found".
func TestLinksAreTheirRepositorysOnly(t *testing.T) {
	_, dgst := content(t, 1)
	_, other := content(t, 2)
	backends(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := b.store
		for _, c := range []struct {
			link, ask struct{ upstream, repo string }
			dgst      digest.Digest
		}{
			// A repository whose name continues another's link path.
			{link: pair("docker.io", "app/_links/sha256/"+dgst.Encoded()+"/x"), ask: pair("docker.io", "app"), dgst: other},
			// An upstream with a slash, the upstream and a repository.
			{link: pair("docker.io/library", "app"), ask: pair("docker.io", "library/app"), dgst: dgst},
			// An underscore, which a port's colon becomes.
			{link: pair("host_5000", "app"), ask: pair("host:5000", "app"), dgst: dgst},
		} {
			_ = s.Link(ctx, c.link.upstream, c.link.repo, c.dgst) // refused or not
			if ok, err := s.Linked(ctx, c.ask.upstream, c.ask.repo, dgst); ok {
				t.Errorf("after Link(%q, %q, %s), Linked(%q, %q, %s): %v, %v; want false",
					c.link.upstream, c.link.repo, c.dgst.Encoded()[:8], c.ask.upstream, c.ask.repo, dgst.Encoded()[:8], ok, err)
			}
		}
	})
}

func pair(upstream, repo string) struct{ upstream, repo string } {
	return struct{ upstream, repo string }{upstream, repo}
}

// failingReader yields n bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	if len(p) > r.n {
		p = p[:r.n]
	}
	if _, err := rand.Read(p); err != nil {
		return 0, err
	}
	r.n -= len(p)
	return len(p), nil
}

// TestPutBlobFails: an upload whose source fails part way leaves nothing:
// no blob at its path, no object under /uploads, and on S3 no multipart
// upload left open (which S3 would keep, and bill, until a lifecycle rule
// aborted it).
func TestPutBlobFails(t *testing.T) {
	errSource := errors.New("the upstream went away")
	backends(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := b.store
		for _, n := range []int{0, 100_000, 6 << 20} {
			_, dgst := content(t, n+1)
			err := s.PutBlob(ctx, dgst, &failingReader{n: n, err: errSource})
			if !errors.Is(err, errSource) {
				t.Fatalf("PutBlob of a source failing after %d bytes: %v, want its error", n, err)
			}
			if _, err := s.StatBlob(ctx, dgst); !errors.Is(err, objstore.ErrNotFound) {
				t.Errorf("StatBlob after a failed PutBlob (%d bytes): %v, want ErrNotFound", n, err)
			}
			if got := b.objects(t, "/"); len(got) != 0 {
				t.Errorf("objects after a failed PutBlob (%d bytes): %q, want none", n, got)
			}
			if b.root != "" {
				if got := b.files(t); len(got) != 0 {
					t.Errorf("files after a failed PutBlob (%d bytes): %q, want none", n, got)
				}
			}
			if b.srv != nil {
				if got := multipartUploads(t, b.srv); len(got) != 0 {
					t.Errorf("multipart uploads open after a failed PutBlob (%d bytes): %q", n, got)
				}
			}
		}
	})
}

// multipartUploads lists the keys of the multipart uploads under way in
// the server's bucket.
func multipartUploads(t *testing.T, srv *tests3.Server) []string {
	t.Helper()
	sess, err := session.NewSession(aws.NewConfig().
		WithCredentials(credentials.NewStaticCredentials(srv.AccessKey, srv.SecretKey, "")).
		WithEndpoint(srv.Endpoint).
		WithRegion(srv.Region).
		WithS3ForcePathStyle(true).
		WithDisableSSL(true))
	if err != nil {
		t.Fatal(err)
	}
	out, err := s3.New(sess).ListMultipartUploads(&s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.StringValue(u.Key))
	}
	return keys
}

// TestCheck: a store that answers passes, empty or not; a bucket or
// container that does not exist, or a wrong key, is found.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	// What each store is opened with instead of its own parameters. The
	// GCS emulator checks no credentials, so only its bucket is.
	bad := map[string][]struct {
		why, key string
		value    any
	}{
		"s3": {
			{"a bucket that does not exist", "bucket", "no-such-bucket"},
			{"a wrong secret key", "secretkey", "wrong"},
			{"a wrong access key", "accesskey", "nobody"},
		},
		"gcs": {
			{"a bucket that does not exist", "bucket", "no-such-bucket"},
		},
		"azure": {
			{"a container that does not exist", "container", "no-such-container"},
			{"a wrong account key", "accountkey", "d3Jvbmc="},
		},
	}
	backends(t, func(t *testing.T, b *backend) {
		if err := b.store.Check(ctx); err != nil {
			t.Errorf("Check of an empty store: %v", err)
		}
		blob, dgst := content(t, 10)
		if err := b.store.PutBlob(ctx, dgst, bytes.NewReader(blob)); err != nil {
			t.Fatal(err)
		}
		if err := b.store.Check(ctx); err != nil {
			t.Errorf("Check of a store with a blob: %v", err)
		}
		for _, c := range bad[b.kind] {
			params := maps.Clone(b.params)
			params[c.key] = c.value
			s, err := objstore.Open(ctx, b.kind, params)
			if err != nil {
				continue // found even sooner
			}
			if err := s.Check(ctx); err == nil {
				t.Errorf("Check with %s: no error", c.why)
			}
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestKeysFromTheEnvironment: without accesskey and secretkey the s3
// driver takes the keys from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
// which is how the chart's sharedStorage.existingSecret gives them.
func TestKeysFromTheEnvironment(t *testing.T) {
	srv := tests3.Start(t)
	ctx := context.Background()
	// Nothing of the developer's: no profile, no shared files.
	for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	params := srv.DriverParameters()
	delete(params, "accesskey")
	delete(params, "secretkey")
	for _, c := range []struct {
		id, secret string
		ok         bool
	}{
		{srv.AccessKey, srv.SecretKey, true},
		{srv.AccessKey, "wrong", false},
	} {
		t.Setenv("AWS_ACCESS_KEY_ID", c.id)
		t.Setenv("AWS_SECRET_ACCESS_KEY", c.secret)
		s, err := objstore.Open(ctx, "s3", params)
		if err != nil {
			t.Fatal(err)
		}
		blob, dgst := content(t, 1000)
		err = s.PutBlob(ctx, dgst, bytes.NewReader(blob))
		if (err == nil) != c.ok || (s.Check(ctx) == nil) != c.ok {
			t.Errorf("secret key %q from the environment: PutBlob %v, Check %v; want success %v", c.secret, err, s.Check(ctx), c.ok)
		}
	}
}

// TestWalkBlobs: the walk finds every blob with its size and a time of
// writing, and nothing that is not a blob: an empty store is no error,
// uploads under way and repository records are not blobs, and neither is
// a file under blobs/ whose name is no digest of its directory.
func TestWalkBlobs(t *testing.T) {
	backends(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		walk := func() map[digest.Digest]int64 {
			t.Helper()
			got := map[digest.Digest]int64{}
			err := b.store.WalkBlobs(ctx, func(d digest.Digest, size int64, written time.Time) error {
				if written.IsZero() || time.Since(written) > time.Hour {
					t.Errorf("%s written at %v", d, written)
				}
				got[d] = size
				return nil
			})
			if err != nil {
				t.Fatalf("WalkBlobs: %v", err)
			}
			return got
		}
		if got := walk(); len(got) != 0 {
			t.Fatalf("an empty store: %v", got)
		}
		want := map[digest.Digest]int64{}
		for _, content := range []string{"one", "two blobs", strings.Repeat("x", 70000)} {
			d := digest.FromString(content)
			if err := b.store.PutBlob(ctx, d, strings.NewReader(content)); err != nil {
				t.Fatal(err)
			}
			want[d] = int64(len(content))
			if err := b.store.Link(ctx, "docker.io", "library/app", d); err != nil {
				t.Fatal(err)
			}
		}
		stray := "/blobs/sha256/ab/" + strings.Repeat("cd", 32)
		if err := b.raw.PutContent(ctx, stray, []byte("not where its digest goes")); err != nil {
			t.Fatal(err)
		}
		if err := b.raw.PutContent(ctx, "/uploads/partial", []byte("half")); err != nil {
			t.Fatal(err)
		}
		if got := walk(); !reflect.DeepEqual(got, want) {
			t.Errorf("walk: %v, want %v", got, want)
		}
	})
}
