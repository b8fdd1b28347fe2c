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
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"

use_override MINIO

# A MinIO already installed (in GOPATH/bin or on PATH) is used as it is:
# the tests use only the S3 API, which every recent MinIO serves alike.
for candidate in "$(go_bin_dir)/minio" "$(command -v minio 2>/dev/null || true)"; do
	if [ -n "$candidate" ] && [ -x "$candidate" ] &&
		"$candidate" --version 2>/dev/null | grep -q '^minio version '; then
		printf '%s\n' "$candidate"
		exit 0
	fi
done

echo "s3.sh: installing MinIO $MINIO_VERSION with go install (4 to 5 minutes the first time)" >&2
go_install_tool minio "github.com/minio/minio@$MINIO_VERSION"
