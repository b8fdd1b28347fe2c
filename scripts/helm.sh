#!/usr/bin/env bash
# Prints the path of a helm binary, installing it with `go install` into
# $(go env GOPATH)/bin when none is found. Used by charts/chart_test.go and CI:
#   helm="$(scripts/helm.sh)" && "$helm" lint --strict charts/breakwater
# HELM overrides the binary; HELM_VERSION the version installed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

HELM_VERSION="${HELM_VERSION:-v3.22.0}"

use_override HELM

# A helm 3 already installed (on PATH or in GOPATH/bin) is used as it is.
for candidate in "$(go_bin_dir)/helm" "$(command -v helm 2>/dev/null || true)"; do
	if [ -n "$candidate" ] && [ -x "$candidate" ] &&
		"$candidate" version --short 2>/dev/null | grep -q '^v3\.'; then
		printf '%s\n' "$candidate"
		exit 0
	fi
done

echo "helm.sh: installing helm $HELM_VERSION with go install (takes a minute or two)" >&2
# The variables helm's own release build sets: without them a go-installed
# helm reports version "v3.22" and assumes Kubernetes 1.20 for
# .Capabilities.KubeVersion, kubeVersion constraints and deprecation lint.
# KUBE_MINOR is the Kubernetes minor of the k8s.io modules helm $HELM_VERSION
# is built with (k8s.io/* v0.37 = Kubernetes 1.37).
KUBE_MINOR="${HELM_KUBE_MINOR:-37}"
ldflags="-s -w"
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags="$ldflags -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$KUBE_MINOR"
done
go_install_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$ldflags"
