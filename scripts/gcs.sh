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

FAKE_GCS_SERVER_VERSION="${FAKE_GCS_SERVER_VERSION:-v1.56.1}"

if [ -n "${FAKE_GCS_SERVER:-}" ]; then
	if [ -x "$FAKE_GCS_SERVER" ]; then
		printf '%s\n' "$FAKE_GCS_SERVER"
		exit 0
	fi
	echo "gcs.sh: FAKE_GCS_SERVER=$FAKE_GCS_SERVER is not an executable" >&2
	exit 1
fi

gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
	gobin="$(go env GOPATH | cut -d: -f1)/bin"
fi
if [ -x "$gobin/fake-gcs-server" ]; then
	printf '%s\n' "$gobin/fake-gcs-server"
	exit 0
fi

echo "gcs.sh: installing fake-gcs-server $FAKE_GCS_SERVER_VERSION into $gobin with go install" >&2
# Build outside the project so its go.mod is neither read nor changed.
cd "$(mktemp -d)"
GOBIN="$gobin" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
	"github.com/fsouza/fake-gcs-server@$FAKE_GCS_SERVER_VERSION" >&2
if [ ! -x "$gobin/fake-gcs-server" ]; then
	echo "gcs.sh: go install finished but $gobin/fake-gcs-server is missing" >&2
	exit 1
fi
printf '%s\n' "$gobin/fake-gcs-server"
