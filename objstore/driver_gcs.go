//go:build !breakwater_nogcs

package objstore

import (
	"errors"

	gcstorage "cloud.google.com/go/storage"
	// Google Cloud Storage, built in by default so that a fleet on GCP
	// needs no build of its own. Its SDK (with gRPC's and OpenTelemetry's
	// Google parts) is the largest in the binary: about 21 MiB more
	// resident at start. -tags breakwater_nogcs leaves it out.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/gcs"
)

// gcsNotFound reports whether a gcs driver's error is GCS's "no such
// object".
func gcsNotFound(err error) bool { return errors.Is(err, gcstorage.ErrObjectNotExist) }

const gcsLeftOutBy = ""
