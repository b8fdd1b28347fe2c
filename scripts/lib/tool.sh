# Sourced by the scripts that print the path of a tool the tests run,
# installing it when it is missing. Every message goes to stderr and names
# the script; only the path goes to stdout. Callers set -euo pipefail.

self="$(basename "$0")"

# use_override VAR: when $VAR is set, print it and exit if it is an
# executable, fail if it is not.
use_override() {
	local var=$1
	[ -n "${!var:-}" ] || return 0
	if [ -x "${!var}" ]; then
		printf '%s\n' "${!var}"
		exit 0
	fi
	echo "$self: $var=${!var} is not an executable" >&2
	exit 1
}

# go_bin_dir prints where go install puts binaries.
go_bin_dir() {
	local gobin
	gobin="$(go env GOBIN)"
	if [ -z "$gobin" ]; then
		gobin="$(go env GOPATH | cut -d: -f1)/bin"
	fi
	printf '%s\n' "$gobin"
}

# go_install_tool BIN MODULE@VERSION [LDFLAGS]: go install MODULE@VERSION
# into go_bin_dir, outside the project so that its go.mod is neither read
# nor changed, then print the path of BIN and exit.
go_install_tool() {
	local bin=$1 pkg=$2 ldflags=${3:--s -w} gobin
	gobin="$(go_bin_dir)"
	(cd "$(mktemp -d)" && GOBIN="$gobin" GOFLAGS=-mod=mod go install -trimpath -ldflags "$ldflags" "$pkg" >&2)
	if [ ! -x "$gobin/$bin" ]; then
		echo "$self: go install finished but $gobin/$bin is missing" >&2
		exit 1
	fi
	printf '%s\n' "$gobin/$bin"
	exit 0
}

# apt_get_install PACKAGE...: install Debian's PACKAGEs with apt-get, as
# root. apt-get update runs only when there are no package lists or the
# install fails.
apt_get_install() {
	if [ "$(id -u)" != 0 ]; then
		echo "$self: installing $* with apt-get needs root" >&2
		exit 1
	fi
	echo "$self: installing Debian's $* with apt-get" >&2
	export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l
	if ! ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; then
		apt-get update >&2
	fi
	if ! apt-get install -y "$@" >&2; then
		apt-get update >&2
		apt-get install -y "$@" >&2
	fi
}

# apt_install_tool CMD PACKAGE: print the path of CMD, installing PACKAGE
# when CMD is not on PATH, and exit.
apt_install_tool() {
	local cmd=$1 pkg=$2 path
	if path="$(command -v "$cmd")"; then
		printf '%s\n' "$path"
		exit 0
	fi
	apt_get_install "$pkg"
	if ! path="$(command -v "$cmd")"; then
		echo "$self: apt-get installed $pkg but $cmd is not on PATH ($PATH)" >&2
		exit 1
	fi
	printf '%s\n' "$path"
	exit 0
}
