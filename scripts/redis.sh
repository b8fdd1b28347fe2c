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

if [ -n "${REDIS_SERVER:-}" ]; then
	if [ -x "$REDIS_SERVER" ]; then
		printf '%s\n' "$REDIS_SERVER"
		exit 0
	fi
	echo "redis.sh: REDIS_SERVER=$REDIS_SERVER is not an executable" >&2
	exit 1
fi

if path="$(command -v redis-server)"; then
	printf '%s\n' "$path"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "redis.sh: redis-server is missing and installing it with apt-get needs root" >&2
	exit 1
fi

echo "redis.sh: installing Debian's redis-server with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l
if ! ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; then
	apt-get update >&2
fi
if ! apt-get install -y redis-server >&2; then
	apt-get update >&2
	apt-get install -y redis-server >&2
fi
if ! path="$(command -v redis-server)"; then
	echo "redis.sh: apt-get installed redis-server but it is not on PATH ($PATH)" >&2
	exit 1
fi
printf '%s\n' "$path"
