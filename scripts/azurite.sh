#!/usr/bin/env bash
# Prints the path of Azurite's blob service (azurite-blob, Microsoft's Azure
# Storage emulator), installing the npm package into a cache directory
# when it is missing, with Debian's nodejs and npm when those are missing
# too (apt-get: needs root, as CI runs). Used by internal/testazurite,
# which runs it on loopback for the tests of the azure storage driver:
#   azurite="$(scripts/azurite.sh)" && "$azurite" --blobHost 127.0.0.1 --blobPort 10000 --location DIR
# AZURITE_BLOB overrides the binary; AZURITE_VERSION the version installed;
# AZURITE_PREFIX the directory it is installed in (default: under
# ${XDG_CACHE_HOME:-$HOME/.cache}/breakwater). The first install takes
# under a minute (measured: 16 to 37 s); later runs find it. 3.35.0 is the
# last release whose package asks for no newer Node.js than the machine's
# (20; Debian's is 18): 3.36 asks for 21, 3.37 for 22.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"

use_override AZURITE_BLOB

prefix="${AZURITE_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/breakwater/azurite-$AZURITE_VERSION}"
bin="$prefix/node_modules/.bin/azurite-blob"
if [ -x "$bin" ]; then
	printf '%s\n' "$bin"
	exit 0
fi

# Debian's npm brings its nodejs.
(apt_install_tool npm npm) >/dev/null

echo "azurite.sh: installing azurite $AZURITE_VERSION into $prefix with npm" >&2
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2
if [ ! -x "$bin" ]; then
	echo "azurite.sh: npm install finished but $bin is missing" >&2
	exit 1
fi
printf '%s\n' "$bin"
