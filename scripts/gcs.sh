#!/usr/bin/env bash
# Prints the path of a Google Cloud Storage emulator (fake-gcs-server),
# installing it with `go install` into $(go env GOPATH)/bin when none is
# found. Used by internal/testgcs, which runs it on loopback for the tests
# of the gcs storage driver:
#   gcs="$(scripts/gcs.sh)" && "$gcs" -scheme http -host 127.0.0.1 -port 4443
# FAKE_GCS_SERVER overrides the binary; FAKE_GCS_SERVER_VERSION the version
# installed. The first install takes under a minute on 2 CPUs (measured:
# 44 s with a warm module cache); later runs find it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

FAKE_GCS_SERVER_VERSION="${FAKE_GCS_SERVER_VERSION:-v1.56.1}"

use_override FAKE_GCS_SERVER
if [ -x "$(go_bin_dir)/fake-gcs-server" ]; then
	printf '%s\n' "$(go_bin_dir)/fake-gcs-server"
	exit 0
fi
echo "gcs.sh: installing fake-gcs-server $FAKE_GCS_SERVER_VERSION with go install" >&2
go_install_tool fake-gcs-server "github.com/fsouza/fake-gcs-server@$FAKE_GCS_SERVER_VERSION"
