// Command pause is the k8s phase's container process (test/e2e/k8s.sh),
// both the pod sandbox's (containerd's sandbox_image) and every test pod's:
// it waits for SIGTERM or SIGINT and exits 0. There is no network here to
// fetch registry.k8s.io/pause, so the phase builds this statically
// (CGO_ENABLED=0) and pushes it to the e2e's upstream registry as a
// one-file image with go run ./test/e2e/seed --binary.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
	os.Exit(0)
}
