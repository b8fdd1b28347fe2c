#!/usr/bin/env bash
# Runs every k6 script of loadtest/k6 briefly against a local setup, so that
# the scripts cannot rot:
#
#   bash loadtest/k6/run.sh
#
# It installs k6 with `go install go.k6.io/k6@v1.8.1` when it is neither on
# PATH nor in $(go env GOPATH)/bin (about a minute), builds Breakwater, a
# distribution v3 registry (loadtest/registry) and the seeder
# (loadtest/seed), starts the registry as Breakwater's docker.io upstream and
# Breakwater on free loopback ports, pushes small incompressible images, and
# runs:
#
#   pull-storm         16 VUs pull a cold 4-layer image twice each
#   pull-storm-index   4 VUs pull a cold index (linux/amd64 picked), with ?ns=docker.io
#   manifest-hammer    8 VUs HEAD/GET a manifest by tag and digest for 3 s
#   outage             the upstream is stopped; cached images (by tag, after their
#                      tag_ttl ran out: stale-if-error) must pull completely,
#                      uncached ones must get 503 with Retry-After
#
# It prints PASS or FAIL per script (with the tail of k6's output and
# Breakwater's log on failure), then "N passed, M failed" alone on the last
# line, and exits non-zero when anything failed. Every process it starts is
# stopped on exit. All traffic stays on 127.0.0.1; k6's usage report is off.
#
# Environment: K6 (k6 binary to use), KEEP=1 (keep the work directory).

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
K6_VERSION=v1.8.1
start_time=$(date +%s)

work=$(mktemp -d /tmp/breakwater-k6.XXXXXX)
pids=()

cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ "${KEEP:-}" == 1 ]]; then
		echo "work directory kept: $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
	echo "run.sh: $*" >&2
	echo "0 passed, 1 failed"
	exit 1
}

# No proxies and no telemetry export: everything stays on loopback.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
export NO_PROXY='*' no_proxy='*'
export K6_NO_USAGE_REPORT=true
export OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none

# --- k6 ---------------------------------------------------------------------
gobin=$(go env GOPATH)/bin
K6=${K6:-}
if [[ -z "$K6" ]]; then
	if command -v k6 >/dev/null 2>&1; then
		K6=$(command -v k6)
	else
		K6=$gobin/k6
	fi
fi
if [[ ! -x "$K6" ]]; then
	echo "installing k6 $K6_VERSION into $gobin (about a minute)"
	(cd "$root" && GOFLAGS= go install "go.k6.io/k6@$K6_VERSION") || die "go install go.k6.io/k6@$K6_VERSION failed"
	K6=$gobin/k6
	start_time=$(date +%s) # the install does not count towards the run time
fi
echo "k6: $("$K6" version 2>/dev/null | head -1)"

# --- build ------------------------------------------------------------------
(cd "$root" &&
	go build -o "$work/breakwater" ./cmd/breakwater &&
	go build -o "$work/registry" ./loadtest/registry &&
	go build -o "$work/seed" ./loadtest/seed) || die "build failed"

# free_port prints a loopback port nothing listens on (bounded tries).
free_port() {
	local i p
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# wait_http URL PID: wait up to 15 s for URL to answer 200 while PID lives.
wait_http() {
	local url=$1 pid=$2 i
	for ((i = 0; i < 150; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			return 1
		fi
		if [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url") == 200 ]]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# --- upstream registry ------------------------------------------------------
start_upstream() {
	local i
	for ((i = 0; i < 3; i++)); do
		up_port=$(free_port) || return 1
		mkdir -p "$work/upstream"
		cat >"$work/upstream.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: json
storage:
  filesystem:
    rootdirectory: $work/upstream
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$up_port
  secret: breakwater-k6-run
EOF
		"$work/registry" serve "$work/upstream.yml" >>"$work/upstream.access.log" 2>>"$work/upstream.log" &
		up_pid=$!
		pids+=("$up_pid")
		if wait_http "http://127.0.0.1:$up_port/v2/" "$up_pid"; then
			return 0
		fi
		kill "$up_pid" 2>/dev/null
		wait "$up_pid" 2>/dev/null
	done
	return 1
}
start_upstream || die "the upstream registry did not start; see $work/upstream.log"
echo "upstream: distribution v3 at 127.0.0.1:$up_port (pid $up_pid)"

# --- Breakwater -------------------------------------------------------------
# tag_ttl 2s: by the time the outage script runs, every cached tag has
# expired, so its pulls go through revalidation and stale-if-error.
# A 3 s request deadline (the default is 20 s) keeps the outage script's
# dozens of uncached requests to a stopped upstream from taking minutes;
# what they must get, the crafted 503, is the same.
TAG_TTL=2s
printf 'resilience:\n  retry:\n    deadline: 3s\n' >"$work/breakwater.yaml"
start_breakwater() {
	local i
	for ((i = 0; i < 3; i++)); do
		bw_port=$(free_port) || return 1
		"$work/breakwater" serve --config "$work/breakwater.yaml" --listen "127.0.0.1:$bw_port" --cache-dir "$work/cache" \
			--upstream "docker.io=http://127.0.0.1:$up_port" --tag-ttl "$TAG_TTL" 2>>"$work/breakwater.log" &
		bw_pid=$!
		pids+=("$bw_pid")
		if wait_http "http://127.0.0.1:$bw_port/healthz" "$bw_pid"; then
			return 0
		fi
		kill "$bw_pid" 2>/dev/null
		wait "$bw_pid" 2>/dev/null
	done
	return 1
}
start_breakwater || die "Breakwater did not start; see $work/breakwater.log"
BASE_URL=http://127.0.0.1:$bw_port
echo "breakwater: $BASE_URL (pid $bw_pid, tag_ttl $TAG_TTL)"

# --- images -----------------------------------------------------------------
"$work/seed" -registry "127.0.0.1:$up_port" \
	-image library/storm:v1=4x2MiB \
	-image library/hammer:v1=2x64KiB \
	-image library/uncached:v1=2x64KiB \
	-index library/multi:v1=2x1MiB,3000 >"$work/seeded.txt" 2>"$work/seed.log" ||
	die "seeding failed: $(cat "$work/seed.log")"
ref_of() { awk -v r="$1" 'index($1, r "@") == 1 {print $1}' "$work/seeded.txt"; }
multi_digest=$(ref_of library/multi:v1)
multi_digest=${multi_digest#*@}
[[ -n "$multi_digest" ]] || die "seeder printed no digest for library/multi:v1"
echo "seeded: $(awk '{print $1}' "$work/seeded.txt" | tr '\n' ' ')"

# --- scripts ----------------------------------------------------------------
passed=0
failed=0
results=()

# run NAME SCRIPT [-e K=V]...: run one k6 script, record PASS or FAIL.
run() {
	local name=$1 script=$2 t0 rc
	shift 2
	t0=$(date +%s)
	"$K6" run --no-usage-report --no-color -e "BASE_URL=$BASE_URL" "$@" "$here/$script" >"$work/$name.log" 2>&1
	rc=$?
	if [[ $rc -eq 0 ]] && kill -0 "$bw_pid" 2>/dev/null; then
		results+=("PASS $name ($(($(date +%s) - t0))s)")
		passed=$((passed + 1))
	else
		results+=("FAIL $name (k6 exit $rc)")
		failed=$((failed + 1))
		echo "--- $name failed (k6 exit $rc); last lines of its output:"
		tail -n 60 "$work/$name.log"
		echo "--- last warnings and errors in Breakwater's log:"
		grep -v '"level":"INFO"' "$work/breakwater.log" | tail -n 15 | cut -c1-400
	fi
	echo "== ${results[-1]}"
}

run pull-storm pull-storm.js -e IMAGE=library/storm:v1 -e VUS=16 -e ITERATIONS=2 -e TTFB_P99_MS=5000 -e PULL_P99_MS=30000
run pull-storm-index pull-storm.js -e IMAGE=library/multi:v1 -e NS=docker.io -e VUS=4 -e ITERATIONS=2
run manifest-hammer manifest-hammer.js -e IMAGE=library/hammer:v1 -e VUS=8 -e DURATION=3s -e P99_MS=1000

# The outage: stop the upstream, let every tag record pass its tag_ttl.
kill "$up_pid" 2>/dev/null
wait "$up_pid" 2>/dev/null
sleep 2.5
if curl -s -o /dev/null -m 2 "http://127.0.0.1:$up_port/v2/"; then
	die "the upstream still answers after it was stopped"
fi
run outage outage.js \
	-e "CACHED=library/storm:v1,library/multi:v1,library/multi@$multi_digest" \
	-e "UNCACHED=library/uncached:v1,library/storm:never-pulled" \
	-e VUS=4 -e ITERATIONS=3

echo
for r in "${results[@]}"; do
	echo "$r"
done
echo "k6 run.sh: $(($(date +%s) - start_time))s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
