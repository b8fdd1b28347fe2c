// Command s3bucket creates a bucket on an S3-compatible server, for the
// e2e test's fleet phase, which has neither mc nor the aws CLI:
//
//	s3bucket --endpoint http://127.0.0.1:P --access-key A --secret-key S --bucket B [--region us-east-1]
//
// It talks plain HTTP with path-style addressing (a loopback address has no
// bucket subdomains), as internal/tests3 does, and tries in short tries (5 s
// each) until a minute is up: a server that says it is ready has been seen
// to leave the first CreateBucket unanswered on a loaded machine. A bucket
// already owned by these credentials counts as created (an earlier try may
// have gone through). It prints "created bucket B" and exits 0, or prints
// the last error and exits 1; 2 for a usage error.
//
// internal/tests3 does the same for the Go tests, but it imports "testing"
// (its Start takes a testing.TB), so this command has its own few lines.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

func main() {
	endpoint := flag.String("endpoint", "", "the server's base URL, http://127.0.0.1:PORT")
	accessKey := flag.String("access-key", "", "access key")
	secretKey := flag.String("secret-key", "", "secret key")
	bucket := flag.String("bucket", "", "the bucket to create")
	region := flag.String("region", "us-east-1", "region (MinIO's default)")
	wait := flag.Duration("timeout", time.Minute, "how long to keep trying")
	flag.Parse()
	if *endpoint == "" || *accessKey == "" || *secretKey == "" || *bucket == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: s3bucket --endpoint URL --access-key A --secret-key S --bucket B [--region R] [--timeout D]")
		os.Exit(2)
	}
	if err := create(*endpoint, *region, *accessKey, *secretKey, *bucket, *wait); err != nil {
		fmt.Fprintln(os.Stderr, "s3bucket:", err)
		os.Exit(1)
	}
	fmt.Println("created bucket", *bucket)
}

func create(endpoint, region, accessKey, secretKey, bucket string, wait time.Duration) error {
	sess, err := session.NewSession(aws.NewConfig().
		WithCredentials(credentials.NewStaticCredentials(accessKey, secretKey, "")).
		WithEndpoint(endpoint).
		WithRegion(region).
		WithS3ForcePathStyle(true).
		WithDisableSSL(true).
		WithMaxRetries(0)) // the loop below retries, each try bounded
	if err != nil {
		return fmt.Errorf("S3 session: %w", err)
	}
	client := s3.New(sess)
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := client.CreateBucketWithContext(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		cancel()
		if err == nil {
			return nil
		}
		var aerr awserr.Error
		if errors.As(err, &aerr) && aerr.Code() == s3.ErrCodeBucketAlreadyOwnedByYou {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create bucket %s on %s: %w", bucket, endpoint, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
