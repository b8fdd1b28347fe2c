//go:build !breakwater_noazure

package objstore

// Azure Blob Storage, built in by default so that a fleet on Azure needs
// no build of its own; -tags breakwater_noazure leaves it out.
import _ "github.com/distribution/distribution/v3/registry/storage/driver/azure"

const azureLeftOutBy = ""
