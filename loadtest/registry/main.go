// Command registry is the CNCF distribution v3 registry (the same code as
// github.com/distribution/distribution/v3/cmd/registry) built with only the
// filesystem and in-memory storage drivers, so that it needs no module beyond
// those Breakwater already requires. The load tests and the benchmark use it
// as the upstream registry and, with `proxy: remoteurl:`, as the
// distribution-proxy baseline:
//
//	go build -o registry ./loadtest/registry && ./registry serve config.yml
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/proxy"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

func main() {
	// RootCmd exits the process with a non-zero status itself when a
	// command fails.
	_ = registry.RootCmd.Execute()
}
