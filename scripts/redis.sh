#!/usr/bin/env bash
# Prints the path of redis-server, installing Debian's redis-server package
# with apt-get when it is missing (which needs root, as CI runs). Used by
# internal/testredis, which runs it on loopback for the tests of fleet
# coordination:
#   redis="$(scripts/redis.sh)" && "$redis" --port 6390 --bind 127.0.0.1
# REDIS_SERVER overrides the binary.
#
# The version is Debian's (7.0 in bookworm): apt installs the archive's
# current one, and pinning it would break when a security update replaces
# it. The tests need nothing newer than Redis 6. apt-get update runs only
# when there are no package lists or the install fails. Installing takes a
# few seconds. On a machine without a policy-rc.d that forbids it, the
# package also starts Debian's own redis-server service on 127.0.0.1:6379;
# the tests do not use it, they start their own on free ports.
#
# The path printed is not resolved: Debian's redis-server is a symlink to
# redis-check-rdb, one binary that acts by the name it is run as.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/tool.sh"

use_override REDIS_SERVER
apt_install_tool redis-server redis-server
