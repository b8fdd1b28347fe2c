//go:build tools

// Package tools pins the Kubernetes binaries the e2e test's k8s phase runs
// (test/e2e/k8s.sh): kube-apiserver, kubelet and kubectl at the version in
// go.mod. scripts/k8s.sh builds them from this module, which is its own so
// that Breakwater's go.mod does not take on k8s.io/kubernetes. The replace
// block is upstream's: k8s.io/kubernetes requires its staging modules at
// v0.0.0 and replaces them with ./staging/..., which a module depending on
// it must redo with the published versions.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
