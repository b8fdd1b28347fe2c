#!/usr/bin/env bash
# Prints the path of an S3-compatible server (MinIO), installing it with
# `go install` into $(go env GOPATH)/bin when none is found. Used by
# internal/tests3, which runs it on loopback for the tests of the S3 storage:
#   minio="$(scripts/s3.sh)" && "$minio" server --address 127.0.0.1:9000 DIR
# MINIO overrides the binary; MINIO_VERSION the version installed.
#
# MinIO is built from source, never linked into Breakwater (it is AGPL and a
# separate process). MinIO's RELEASE.* tags are not semantic versions and the
# module proxy does not serve them, so the pin is a pseudo-version: the last
# commit of github.com/minio/minio, which builds with Go 1.26.8 as it is (no
# other toolchain). The first install takes 4 to 5 minutes on 2 CPUs with
# cold module and build caches (measured: 4m06s and 4m35s, mostly compiling;
# the binary is 112 MB); later runs find it and take 0.3 s.
set -euo pipefail

MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"

if [ -n "${MINIO:-}" ]; then
	if [ -x "$MINIO" ]; then
		printf '%s\n' "$MINIO"
		exit 0
	fi
	echo "s3.sh: MINIO=$MINIO is not an executable" >&2
	exit 1
fi

gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
	gobin="$(go env GOPATH | cut -d: -f1)/bin"
fi

# A MinIO already installed (in GOPATH/bin or on PATH) is used as it is:
# the tests use only the S3 API, which every recent MinIO serves alike.
for candidate in "$gobin/minio" "$(command -v minio 2>/dev/null || true)"; do
	if [ -n "$candidate" ] && [ -x "$candidate" ] &&
		"$candidate" --version 2>/dev/null | grep -q '^minio version '; then
		printf '%s\n' "$candidate"
		exit 0
	fi
done

echo "s3.sh: installing MinIO $MINIO_VERSION into $gobin with go install (4 to 5 minutes the first time)" >&2
# Build outside the project so its go.mod is neither read nor changed.
cd "$(mktemp -d)"
GOBIN="$gobin" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
	"github.com/minio/minio@$MINIO_VERSION" >&2
if [ ! -x "$gobin/minio" ]; then
	echo "s3.sh: go install finished but $gobin/minio is missing" >&2
	exit 1
fi
printf '%s\n' "$gobin/minio"
