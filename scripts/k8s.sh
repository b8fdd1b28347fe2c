#!/usr/bin/env bash
# Prints the directory holding kube-apiserver, kubelet and kubectl at the
# Kubernetes version test/k8s/go.mod pins, building them when they are
# missing; installs Debian's etcd-server and containerd with apt-get when
# etcd, containerd or ctr is missing (which needs root, as CI runs). Used by
# the e2e test's k8s phase (test/e2e/k8s.sh):
#   bin="$(scripts/k8s.sh)" && "$bin/kube-apiserver" --version
# K8S_BIN_DIR overrides the directory (it must hold the three binaries at
# that version); K8S_CACHE_DIR where they are built, by default
#   ${XDG_CACHE_HOME:-$HOME/.cache}/breakwater/k8s-<version>/
# which survives between runs: a later run finds the binaries and takes a
# second.
#
# Kubernetes is built from source in its own module (test/k8s), never in
# Breakwater's: k8s.io/kubernetes replaces its 31 staging modules with
# ./staging/..., so test/k8s/go.mod has those replace lines with the
# published versions, and `go install k8s.io/kubernetes/cmd/...@v` cannot
# work. Without the -X flags below the binaries would call themselves
# v0.0.0-master. The first build takes about 6 minutes on 2 CPUs with cold
# module and build caches (measured: 372 s for kube-apiserver and kubelet,
# 536 MB of modules, 2.6 GB of build cache, 1.8 GB peak RSS) plus about
# 35 s for kubectl.
#
# The version stays at 1.34: the kubelet runs on a cgroup v1 host only with
# failCgroupV1: false, which later releases drop, and they need containerd 2
# where Debian 12 has 1.6.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD=$ROOT/test/k8s
VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$MOD/go.mod")
if [ -z "$VERSION" ]; then
	echo "k8s.sh: no 'require k8s.io/kubernetes vX.Y.Z' line in $MOD/go.mod" >&2
	exit 1
fi
BINS="kube-apiserver kubelet kubectl"

# have DIR: DIR holds the three binaries, each saying it is $VERSION.
have() {
	local d=$1
	[ -x "$d/kube-apiserver" ] && [ -x "$d/kubelet" ] && [ -x "$d/kubectl" ] || return 1
	[ "$("$d/kube-apiserver" --version 2>/dev/null)" = "Kubernetes $VERSION" ] || return 1
	[ "$("$d/kubelet" --version 2>/dev/null)" = "Kubernetes $VERSION" ] || return 1
	# Not piped into grep -q: under pipefail, grep's early exit makes
	# kubectl's later writes die of SIGPIPE, and the check fail at random.
	local v
	v=$("$d/kubectl" version --client 2>/dev/null) || return 1
	grep -qx "Client Version: $VERSION" <<<"$v"
}

# ---- etcd and containerd, from Debian ---------------------------------------

missing=""
for b in etcd containerd ctr runc; do command -v "$b" >/dev/null 2>&1 || missing+=" $b"; done
if [ -n "$missing" ]; then
	echo "k8s.sh: missing:$missing" >&2
	apt_get_install etcd-server containerd
	for b in etcd containerd ctr runc; do
		if ! command -v "$b" >/dev/null 2>&1; then
			echo "k8s.sh: apt-get installed etcd-server and containerd but $b is not on PATH ($PATH)" >&2
			exit 1
		fi
	done
fi

# ---- the Kubernetes binaries --------------------------------------------------

if [ -n "${K8S_BIN_DIR:-}" ]; then
	if have "$K8S_BIN_DIR"; then
		printf '%s\n' "$K8S_BIN_DIR"
		exit 0
	fi
	echo "k8s.sh: K8S_BIN_DIR=$K8S_BIN_DIR does not hold $BINS at $VERSION" >&2
	exit 1
fi

DIR=${K8S_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/breakwater/k8s-$VERSION}
if have "$DIR"; then
	printf '%s\n' "$DIR"
	exit 0
fi

minor=${VERSION#v}
major=${minor%%.*}
minor=${minor#*.}
minor=${minor%%.*}
LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	LD+=" -X $p.gitVersion=$VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
done
echo "k8s.sh: building $BINS $VERSION into $DIR (about 6 minutes the first time)" >&2
mkdir -p "$DIR"
# Built next to the cache and moved in whole, so that a build cut short
# leaves no binary that looks finished.
tmp=$(mktemp -d "$DIR.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
pkgs=()
for b in $BINS; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
(cd "$MOD" && go build -trimpath -ldflags "$LD" -o "$tmp/" "${pkgs[@]}") >&2
for b in $BINS; do mv -f "$tmp/$b" "$DIR/$b"; done
if ! have "$DIR"; then
	echo "k8s.sh: built, but $DIR does not hold $BINS at $VERSION:" >&2
	for b in kube-apiserver kubelet; do "$DIR/$b" --version >&2 || true; done
	"$DIR/kubectl" version --client >&2 || true
	exit 1
fi
echo "k8s.sh: built $BINS $VERSION in $(($(date +%s) - t0))s" >&2
printf '%s\n' "$DIR"
