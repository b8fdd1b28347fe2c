#!/usr/bin/env bash
# Prints the path of docker-registry, installing Debian's docker-registry
# package (distribution 2.8) with apt-get when it is missing (which needs
# root, as CI runs). Used by internal/testdistribution, which runs it on
# loopback with htpasswd authentication for the tests that need the
# registry Docker Hub's behaviour was modelled on, not only the in-process
# distribution v3 of internal/testupstream:
#   registry="$(scripts/docker-registry.sh)" && "$registry" serve config.yml
# DOCKER_REGISTRY overrides the binary.
#
# The version is Debian's (2.8.2 in bookworm), as test/e2e/run.sh installs
# it. apt-get update runs only when there are no package lists or the
# install fails. The package's own service is not used: the tests start
# their own registries on free ports.
set -euo pipefail

if [ -n "${DOCKER_REGISTRY:-}" ]; then
	if [ -x "$DOCKER_REGISTRY" ]; then
		printf '%s\n' "$DOCKER_REGISTRY"
		exit 0
	fi
	echo "docker-registry.sh: DOCKER_REGISTRY=$DOCKER_REGISTRY is not an executable" >&2
	exit 1
fi

if path="$(command -v docker-registry)"; then
	printf '%s\n' "$path"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "docker-registry.sh: docker-registry is missing and installing it with apt-get needs root" >&2
	exit 1
fi

echo "docker-registry.sh: installing Debian's docker-registry with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l
if ! ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; then
	apt-get update >&2
fi
if ! apt-get install -y docker-registry >&2; then
	apt-get update >&2
	apt-get install -y docker-registry >&2
fi
if ! path="$(command -v docker-registry)"; then
	echo "docker-registry.sh: apt-get installed docker-registry but it is not on PATH ($PATH)" >&2
	exit 1
fi
printf '%s\n' "$path"
