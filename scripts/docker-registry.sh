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
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

use_override DOCKER_REGISTRY
apt_install_tool docker-registry docker-registry
