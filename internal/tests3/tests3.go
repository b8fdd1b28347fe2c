// Package tests3 runs a real S3-compatible server (MinIO) on loopback for
// tests, with a bucket made for them: the storage Breakwater replicas share
// in fleet mode is tested against a server that answers as S3 does, with
// its signatures, multipart uploads and presigned URLs, not against a mock
// that answers as we think S3 does.
//
// The server binary comes from scripts/s3.sh, which installs MinIO with go
// install when it is missing: the first run on a machine spends 4 to 5
// minutes building it, later ones about half a second starting each server.
// When the script or the server fails, the test fails rather than skips: CI
// relies on the script to provide the server.
package tests3

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"

	"github.com/breakwater-registry/breakwater/internal/testproc"
)

// Server is a running S3 server with one empty bucket.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:PORT.
	Endpoint  string
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
}

// DriverParameters returns the parameters of distribution's s3-aws storage
// driver for the server's bucket: plain HTTP, and path-style addressing
// because a loopback address has no bucket subdomains.
func (s *Server) DriverParameters() map[string]any {
	return map[string]any{
		"bucket":         s.Bucket,
		"region":         s.Region,
		"regionendpoint": s.Endpoint,
		"accesskey":      s.AccessKey,
		"secretkey":      s.SecretKey,
		"secure":         false,
		"forcepathstyle": true,
	}
}

// Start runs a server until the test ends, with its data in a temporary
// directory, and creates its bucket.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := testproc.Script("s3.sh")
	if err != nil {
		t.Fatalf("no S3 server (CI installs it with scripts/s3.sh): %v", err)
	}

	dir := t.TempDir()
	addr := testproc.FreeAddr(t)
	s := &Server{
		Endpoint:  "http://" + addr,
		Region:    "us-east-1", // MinIO's default; the driver needs one
		AccessKey: "breakwater",
		SecretKey: rand.Text(),
		Bucket:    "breakwater-test",
	}
	cmd := exec.Command(bin, "server", "--quiet",
		"--address", addr, filepath.Join(dir, "data"))
	cmd.Env = append(environWithout("MINIO_"),
		"HOME="+dir, // for $HOME/.minio, where MinIO looks for certificates
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", // no web console on a second port
		"MINIO_UPDATE=off",
	)
	p, err := testproc.Start(cmd, filepath.Join(dir, "minio.log"))
	if err != nil {
		t.Fatalf("MinIO: %v", err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(p.Kill)

	// MinIO's readiness endpoint answers 200 once it takes S3 requests.
	if err := p.WaitReady(60*time.Second, 50*time.Millisecond, testproc.HTTPStatus(s.Endpoint+"/minio/health/ready", http.StatusOK)); err != nil {
		t.Fatalf("MinIO on %s: %v\n%s", addr, err, p.Log())
	}
	if err := s.createBucket(); err != nil {
		t.Fatalf("MinIO on %s: %v\n%s", addr, err, p.Log())
	}
	return s
}

func (s *Server) createBucket() error {
	sess, err := session.NewSession(aws.NewConfig().
		WithCredentials(credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, "")).
		WithEndpoint(s.Endpoint).
		WithRegion(s.Region).
		WithS3ForcePathStyle(true).
		WithDisableSSL(true))
	if err != nil {
		return fmt.Errorf("S3 session: %w", err)
	}
	// Seen once: ready, and the first CreateBucket never answered (30 s)
	// on a loaded machine. Short tries, again until a minute is up.
	client := s3.New(sess)
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)})
		cancel()
		if err == nil {
			return nil
		}
		var aerr awserr.Error
		if errors.As(err, &aerr) && aerr.Code() == s3.ErrCodeBucketAlreadyOwnedByYou {
			return nil // an earlier try went through after all
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create bucket %s: %w", s.Bucket, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// environWithout returns the environment without the variables whose names
// start with prefix, so that a developer's settings do not reach the server.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}
