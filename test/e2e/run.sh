#!/usr/bin/env bash
# End-to-end test of Breakwater with the real clients: containerd (ctr),
# dockerd, podman and skopeo pull a seeded image from a real upstream registry
# (distribution 2.8) through Breakwater. See test/e2e/README.md.
#
#   bash test/e2e/run.sh
#
# Environment:
#   E2E_MIRROR=registry   develop against a distribution pull-through cache
#                         instead of Breakwater (default: breakwater)
#   E2E_TIME_LIMIT=1500   seconds the whole run may take
#   E2E_KEEP=1            keep the temp dir (logs, stores) after the run
#   E2E_BREAKWATER_ARGS   extra arguments for `breakwater serve` (round 1 and 2)
#   E2E_OUTAGE=0          skip the outage phase (outage.sh)
#   E2E_TLS=0             skip the TLS phase (tls.sh)
#   E2E_AUTH=0            skip the auth phase (auth.sh)
#   E2E_IMAGE=0           skip the image phase (image.sh)
#   E2E_FLEET=0           skip the fleet phase (fleet.sh)
#   E2E_K8S=0             skip the k8s phase (k8s.sh)
#   E2E_ONLY=outage|tls|auth|image|fleet|k8s
#                         set up, then that phase only: not the pull rounds
#                         1 and 2 nor the other phases (default: everything)
set -uo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MIRROR_KIND=${E2E_MIRROR:-breakwater}
# Warm, the run takes about 3 minutes. The limit leaves room for a cold
# k8s phase: scripts/k8s.sh builds kube-apiserver, kubelet and kubectl once
# per machine, about 6 minutes on 2 CPUs plus the module downloads, within
# the run (as the fleet phase's MinIO build may be).
TIME_LIMIT=${E2E_TIME_LIMIT:-1500}
PULL_SECS=90

case ${E2E_ONLY:-} in
"" | outage | tls | auth | image | fleet | k8s) ;;
*)
	echo "test/e2e/run.sh: E2E_ONLY must be empty (everything), outage, tls, auth, image, fleet or k8s, not '$E2E_ONLY'" >&2
	echo "0 passed, 1 failed"
	exit 1
	;;
esac
if [ -n "${E2E_ONLY:-}" ] && v=E2E_${E2E_ONLY^^} && [ "${!v:-1}" = 0 ]; then
	echo "test/e2e/run.sh: E2E_ONLY=$E2E_ONLY with E2E_${E2E_ONLY^^}=0 leaves nothing to run" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
# run_phase NAME: whether the phase NAME (outage, tls, auth, image, fleet, k8s) runs.
run_phase() {
	local off
	off=E2E_${1^^}
	[ "${!off:-1}" != 0 ] && { [ -z "${E2E_ONLY:-}" ] || [ "$E2E_ONLY" = "$1" ]; }
}

if [ "$(id -u)" != 0 ]; then
	echo "test/e2e/run.sh: must run as root (it starts containerd and dockerd)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

TMP=$(mktemp -d /tmp/bw-e2e.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$TMP/pids" "$TMP/out" "$TMP/logs"
OUT=$TMP/out
LOGS=$TMP/logs
# shellcheck source=lib.sh
. "$HERE/lib.sh"

T0=$(date +%s)
E2E_CUR=""
E2E_DONE=""

# ---- cleanup --------------------------------------------------------------

print_logs() {
	echo "---- logs (last lines) ----"
	local f
	for f in mirror upstream containerd dockerd mirror-outage mirror-breaker mirror-defaults mirror-recovery \
		faultproxy faultproxy-breaker faultproxy-defaults faultproxy-recovery \
		mirror-tls mirror-tls-503 mirror-mtls faultproxy-tls mirror-auth mirror-image \
		minio mirror-fleet-1 mirror-fleet-2 mirror-fleet-3 mirror-fleet-3-restarted \
		mirror-k8s faultproxy-k8s-429 faultproxy-k8s-503 faultproxy-k8s-refused faultproxy-k8s-timeout \
		k8s-etcd k8s-apiserver k8s-node k8s-containerd k8s-kubelet; do
		[ -f "$LOGS/$f.log" ] || continue
		echo "== $f log ($LOGS/$f.log)"
		# without the start-up chatter of containerd and dockerd
		grep -v -e 'loading plugin' -e 'skip plugin' -e 'module=grpc' "$LOGS/$f.log" >"$LOGS/$f.tail"
		tail_of "$LOGS/$f.tail" 30
	done
}

cleanup() {
	local rc=$? n m
	trap - EXIT TERM INT
	if [ -n "$E2E_CUR" ]; then
		kill -TERM -- "-$E2E_CUR" 2>/dev/null
		kill -TERM "$E2E_CUR" 2>/dev/null
	fi
	[ "$E2E_FAILED" -gt 0 ] && print_logs
	# what the phases registered (the k8s phase's node), newest first
	for ((n = ${#E2E_AT_EXIT[@]} - 1; n >= 0; n--)); do
		"${E2E_AT_EXIT[n]}"
	done
	# containers first (their shims outlive containerd), then dockerd (it
	# uses containerd), then the rest, newest first.
	remove_ctr_tasks
	stop_bg dockerd 15
	for ((n = ${#E2E_BG_NAMES[@]} - 1; n >= 0; n--)); do
		stop_bg "${E2E_BG_NAMES[n]}" 10
	done
	# files a phase had to put outside the temp dir (dockerd's certs.d)
	for m in "${E2E_RM_AFTER[@]}"; do rm -rf -- "$m"; done
	# mounts a daemon may have left under the temp dir, deepest first
	awk -v t="$TMP" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null; done
	if [ -n "${E2E_KEEP:-}" ]; then
		echo "kept $TMP"
	else
		rm -rf "$TMP" 2>/dev/null || { sleep 1; rm -rf "$TMP"; }
	fi
	[ -n "$E2E_DONE" ] || {
		[ "$E2E_FAILED" -gt 0 ] || [ "$rc" = 0 ] || fail "run" "stopped early (status $rc)"
	}
	echo "e2e: $(($(date +%s) - T0))s, mirror=$MIRROR_KIND"
	if [ "$E2E_SKIPPED" -gt 0 ]; then
		echo "$E2E_PASSED passed, $E2E_FAILED failed, $E2E_SKIPPED skipped"
	else
		echo "$E2E_PASSED passed, $E2E_FAILED failed"
	fi
	if [ "$E2E_FAILED" -gt 0 ] || [ "$E2E_PASSED" = 0 ]; then exit 1; fi
	exit 0
}
on_signal() {
	fail "run" "time limit of ${TIME_LIMIT}s reached or interrupted ($1)"
	exit 1
}
trap cleanup EXIT
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

# Watchdog: the whole run is bounded in time.
start_bg watchdog /dev/null bash -c "sleep $TIME_LIMIT; kill -TERM $$"

# run_client OUT SECONDS CMD...: run CMD under `timeout`, stdout and stderr
# to OUT, the command line to OUT.cmd; returns CMD's status (124 on timeout).
# CMD runs in the background and the shell waits for it, so that the
# watchdog's TERM is handled at once (a shell runs traps while in `wait`, not
# while a foreground child runs).
run_client() {
	local out=$1 secs=$2 rc
	shift 2
	printf '+ %s\n' "$*" >"$out.cmd"
	timeout -k 5 "$secs" "$@" </dev/null >"$out" 2>&1 &
	E2E_CUR=$!
	wait "$E2E_CUR"
	rc=$?
	E2E_CUR=""
	return $rc
}

# cmd_fail NAME OUT: FAIL with the command and the tail of its output.
cmd_fail() {
	local rc=$3
	fail "$1" "exit $rc: $(cat "$2.cmd" 2>/dev/null)"
	tail_of "$2" 12
}

# ---- 1. install the clients ----------------------------------------------

echo "== e2e: temp dir $TMP, mirror=$MIRROR_KIND"
BINS="containerd ctr dockerd podman skopeo docker-registry runc"
missing=""
for b in $BINS; do command -v "$b" >/dev/null 2>&1 || missing+=" $b"; done
if [ -n "$missing" ]; then
	note "installing clients (missing:$missing)"
	PKGS=(containerd docker.io podman skopeo docker-registry)
	export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l
	if ! ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; then
		run_client "$OUT/apt-update" 180 apt-get update
	fi
	if ! run_client "$OUT/apt-install" 300 apt-get install -y "${PKGS[@]}"; then
		run_client "$OUT/apt-update" 180 apt-get update
		run_client "$OUT/apt-install" 300 apt-get install -y "${PKGS[@]}"
	fi
	missing=""
	for b in $BINS; do command -v "$b" >/dev/null 2>&1 || missing+=" $b"; done
	if [ -n "$missing" ]; then
		fail "install" "still missing:$missing"
		tail_of "$OUT/apt-install" 20
		exit 1
	fi
fi
pass "install: containerd, dockerd, podman, skopeo, docker-registry present"
# Prefer the docker CLI of the docker.io package (same version as dockerd).
DOCKER_BIN=docker
[ -x /usr/bin/docker ] && DOCKER_BIN=/usr/bin/docker
command -v "$DOCKER_BIN" >/dev/null 2>&1 || DOCKER_BIN=""

UP_PORT=$(free_port)
BW_PORT=$(free_port)
UP=127.0.0.1:$UP_PORT
BW=127.0.0.1:$BW_PORT
note "upstream $UP, mirror $BW"

# ---- 2. upstream registry --------------------------------------------------

cat >"$TMP/upstream.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/upstream-data
  delete:
    enabled: true
http:
  addr: $UP
EOF
start_bg upstream "$LOGS/upstream.log" docker-registry serve "$TMP/upstream.yml"
if wait_for 20 http_ok "http://$UP/v2/"; then
	pass "upstream: distribution $(docker-registry --version 2>/dev/null | awk '{print $3}') answers on $UP"
else
	fail "upstream: start" "GET http://$UP/v2/ not 200 within 20s"
	exit 1
fi

# ---- 3. seed it ------------------------------------------------------------

cd "$ROOT" || exit 1
if run_client "$OUT/seed" 240 go run ./test/e2e/seed --registry "$UP"; then
	SEED=$(grep -E '^e2e=sha256:' "$OUT/seed" | tail -n 1)
	D_E2E=$(echo "$SEED" | tr ' ' '\n' | sed -n 's/^e2e=//p')
	D_DOCKER=$(echo "$SEED" | tr ' ' '\n' | sed -n 's/^e2e-docker=//p')
	D_OUTAGE=$(echo "$SEED" | tr ' ' '\n' | sed -n 's/^e2e-outage=//p')
else
	cmd_fail "seed" "$OUT/seed" $?
	exit 1
fi
if [ -z "$D_E2E" ] || [ -z "$D_DOCKER" ]; then
	fail "seed" "no digests in output"
	tail_of "$OUT/seed"
	exit 1
fi
got=$(curl -sI -m 5 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
	"http://$UP/v2/library/e2e/manifests/v1" | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }')
expect_eq "seed: upstream serves library/e2e:v1 ($D_E2E)" "$D_E2E" "$got" "upstream digest"
note "e2e-docker:v1 is $D_DOCKER, e2e-outage:v1 is ${D_OUTAGE:-?}"

# ---- 4. the mirror: Breakwater (or the stand-in) ---------------------------

MIRROR_LOG=$LOGS/mirror.log
# Built whatever the mirror: its node configuration commands write the
# clients' configuration below, as an operator would have them written.
if run_client "$OUT/bw-build" 300 go build -o "$TMP/breakwater" ./cmd/breakwater; then
	pass "breakwater: go build ./cmd/breakwater"
else
	cmd_fail "breakwater: go build ./cmd/breakwater" "$OUT/bw-build" $?
	exit 1
fi
case $MIRROR_KIND in
breakwater)
	# shellcheck disable=SC2086
	start_bg mirror "$MIRROR_LOG" "$TMP/breakwater" serve --listen "$BW" \
		--cache-dir "$TMP/cache" --upstream "docker.io=http://$UP" ${E2E_BREAKWATER_ARGS:-}
	HEALTH=http://$BW/healthz
	;;
registry)
	cat >"$TMP/mirror.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/cache
http:
  addr: $BW
proxy:
  remoteurl: http://$UP
EOF
	start_bg mirror "$MIRROR_LOG" docker-registry serve "$TMP/mirror.yml"
	HEALTH=http://$BW/v2/
	;;
*)
	fail "mirror" "E2E_MIRROR must be breakwater or registry, not '$MIRROR_KIND'"
	exit 1
	;;
esac
if wait_for 30 http_ok "$HEALTH"; then
	pass "mirror: $MIRROR_KIND healthy (GET $HEALTH = 200)"
else
	fail "mirror: start" "GET $HEALTH not 200 within 30s (last: $(http_code "$HEALTH"))$(bg_alive mirror || echo '; the process exited')"
	exit 1
fi

# ---- 5. the client daemons -------------------------------------------------

CTRD=$TMP/containerd
CTRD_SOCK=$CTRD/containerd.sock
mkdir -p "$CTRD"
cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
EOF
# hosts.toml as `breakwater containerd-config` writes it for the built-in
# upstreams: docker.io's server is registry-1.docker.io, which does not
# resolve here, so a pull that succeeds came through the mirror.
HOSTS_DIR=$TMP/certs.d
if "$TMP/breakwater" containerd-config --mirror "http://$BW" --dir "$HOSTS_DIR" >"$OUT/containerd-config" 2>&1 &&
	grep -q "^\[host.\"http://$BW\"\]" "$HOSTS_DIR/docker.io/hosts.toml"; then
	pass "breakwater containerd-config: wrote $HOSTS_DIR/docker.io/hosts.toml"
else
	cmd_fail "breakwater containerd-config --dir" "$OUT/containerd-config" 1
fi
CTR=(ctr -a "$CTRD_SOCK" -n e2e)
# every client command runs under `timeout`; run_client takes the arrays.
ctr_() { timeout -k 5 60 "${CTR[@]}" "$@"; }

start_bg containerd "$LOGS/containerd.log" containerd --config "$CTRD/config.toml"
CTRD_UP=""
if wait_for 30 timeout 5 ctr -a "$CTRD_SOCK" version; then
	CTRD_UP=1
	pass "containerd: $(containerd --version | awk '{print $3}') started"
else
	fail "containerd: start" "ctr version failed for 30s"
fi

DK=$TMP/docker
DOCKER_SOCK=$DK/docker.sock
mkdir -p "$DK/cli"
# The daemon's own settings; `breakwater docker-config` merges the mirror in.
cat >"$DK/daemon.json" <<EOF
{
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "bridge": "none",
  "storage-driver": "vfs",
  "data-root": "$DK/data",
  "exec-root": "$DK/exec",
  "pidfile": "$DK/docker.pid",
  "hosts": ["unix://$DOCKER_SOCK"],
  "containerd": "$CTRD_SOCK",
  "deprecated-key-path": "$DK/key.json"
}
EOF
if "$TMP/breakwater" docker-config --mirror "http://$BW" --file "$DK/daemon.json" >"$OUT/docker-config" 2>&1 &&
	grep -q '"storage-driver": "vfs"' "$DK/daemon.json" && grep -q "\"http://$BW\"" "$DK/daemon.json"; then
	pass "breakwater docker-config: merged the mirror into $DK/daemon.json, its other keys kept"
else
	cmd_fail "breakwater docker-config --file" "$OUT/docker-config" 1
fi
DOCKER=(env "DOCKER_CONFIG=$DK/cli" "$DOCKER_BIN" -H "unix://$DOCKER_SOCK")
docker_() { timeout -k 5 60 "${DOCKER[@]}" "$@"; }
DOCKER_UP=""
if [ -z "$CTRD_UP" ]; then
	fail "dockerd: start" "containerd is not running"
elif [ -z "$DOCKER_BIN" ]; then
	fail "dockerd: start" "no docker CLI"
else
	start_bg dockerd "$LOGS/dockerd.log" dockerd --config-file "$DK/daemon.json"
	if wait_for 45 timeout 5 "${DOCKER[@]}" version; then
		DOCKER_UP=1
		pass "dockerd: $(docker_ version -f '{{.Server.Version}}' 2>/dev/null) started"
	else
		fail "dockerd: start" "docker version failed for 45s$(bg_alive dockerd || echo '; dockerd exited')"
	fi
fi

PM=$TMP/podman
mkdir -p "$PM/tmp" "$PM/libpod-tmp"
# registries.conf as `breakwater registries-conf` writes it (the mirror
# named with the registry in the path), for podman and skopeo. The
# stand-in mirror knows no registry in the path: it gets the bare mirror.
echo 'unqualified-search-registries = []' >"$PM/registries.conf"
if [ "$MIRROR_KIND" = registry ]; then
	cat >>"$PM/registries.conf" <<EOF

[[registry]]
prefix = "docker.io"
location = "registry-1.docker.io"

[[registry.mirror]]
location = "$BW"
insecure = true
EOF
elif "$TMP/breakwater" registries-conf --mirror "http://$BW" >>"$PM/registries.conf" 2>"$OUT/registries-conf" &&
	grep -q "^location = \"$BW/docker.io\"" "$PM/registries.conf"; then
	pass "breakwater registries-conf: wrote $PM/registries.conf"
else
	cmd_fail "breakwater registries-conf" "$OUT/registries-conf" 1
fi
cat >"$PM/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$PM/root"
runroot = "$PM/runroot"
EOF
cat >"$PM/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$TMP/policy.json" <<'EOF'
{"default": [{"type": "insecureAcceptAnything"}]}
EOF
PODMAN=(env "CONTAINERS_REGISTRIES_CONF=$PM/registries.conf" "CONTAINERS_STORAGE_CONF=$PM/storage.conf"
	"CONTAINERS_CONF=$PM/containers.conf" "TMPDIR=$PM/tmp"
	podman --root "$PM/root" --runroot "$PM/runroot" --storage-driver vfs
	--cgroup-manager cgroupfs --events-backend file --tmpdir "$PM/libpod-tmp")
SKOPEO=(env "CONTAINERS_REGISTRIES_CONF=$PM/registries.conf" "TMPDIR=$PM/tmp"
	skopeo --policy "$TMP/policy.json")
podman_() { timeout -k 5 60 "${PODMAN[@]}" "$@"; }

# ---- 6. pulls --------------------------------------------------------------

# mirror_saw NAME MARK ERE WHAT: PASS when the mirror's log, from MARK on, has
# a request line ("METHOD URI STATUS") matching ERE.
mirror_saw() {
	local name=$1 mark=$2 re=$3 what=$4
	if http_lines "$MIRROR_LOG" "$mark" | grep -Eq -- "$re"; then
		pass "$name"
	else
		fail "$name" "no request in the mirror's log matched $what; it logged since the pull:"
		http_lines "$MIRROR_LOG" "$mark" | tail -n 15 | sed 's/^/    | /'
	fi
}

# upstream_quiet NAME BEFORE: PASS when the upstream's blob GET count is
# BEFORE; SKIP when the pull before it failed (nothing to compare).
PULL_OK=""
upstream_quiet() {
	local now
	if [ -z "$PULL_OK" ]; then
		skip "$1" "the pull failed"
		return
	fi
	now=$(upstream_blob_gets "$LOGS/upstream.log")
	if [ "$now" = "$2" ]; then
		pass "$1"
	else
		fail "$1" "upstream blob GETs went from $2 to $now"
		upstream_blob_get_counts "$LOGS/upstream.log" | sed 's/^/    | /'
	fi
}

E2E_REF=docker.io/library/e2e:v1
BLOB_GET_200='^GET /v2/library/e2e/blobs/sha256:[0-9a-f]{64}[^ ]* 20[06]$'
MANIFEST_200='^(GET|HEAD) /v2/library/e2e/manifests/[^ ]+ 200$'
# podman and skopeo through registries.conf name the registry in the path.
BLOB_GET_200_ANY='^GET /v2/(docker\.io/)?library/e2e/blobs/sha256:[0-9a-f]{64}[^ ]* 20[06]$'
MANIFEST_200_ANY='^(GET|HEAD) /v2/(docker\.io/)?library/e2e/manifests/[^ ]+ 200$'

# pull_containerd ROUND
pull_containerd() {
	local n="containerd[$1]" mark out=$OUT/ctr-pull-$1 rc d row
	if [ -z "$CTRD_UP" ]; then
		fail "$n: pull $E2E_REF" "containerd is not running"
		PULL_OK=""
		return
	fi
	mark=$(log_mark "$MIRROR_LOG")
	run_client "$out" $PULL_SECS "${CTR[@]}" images pull --hosts-dir "$HOSTS_DIR" "$E2E_REF"
	rc=$?
	PULL_OK=""
	[ $rc = 0 ] && PULL_OK=1
	if [ $rc = 0 ]; then pass "$n: ctr images pull --hosts-dir $E2E_REF"; else cmd_fail "$n: ctr images pull --hosts-dir $E2E_REF" "$out" $rc; fi
	d=$(ctr_ images ls "name==$E2E_REF" 2>/dev/null | awk 'NR > 1 { print $3 }')
	expect_eq "$n: image digest is upstream's" "$D_E2E" "$d" "digest"
	row=$(ctr_ images check "name==$E2E_REF" 2>/dev/null | awk 'NR > 1')
	if echo "$row" | grep -q ' complete (4/4) ' && [ "$(echo "$row" | awk '{ print $NF }')" = true ]; then
		pass "$n: content complete (4/4) and unpacked"
	else
		fail "$n: content complete (4/4) and unpacked" "ctr images check: ${row:-<no row>}"
	fi
	mirror_saw "$n: manifest via mirror with ?ns=docker.io" "$mark" \
		'^(GET|HEAD) /v2/library/e2e/manifests/[^ ?]+\?([^ ]*&)?ns=docker\.io(&[^ ]*)? 200$' "a manifest request with ns=docker.io answered 200"
	mirror_saw "$n: blobs via mirror with ?ns=docker.io" "$mark" \
		'^GET /v2/library/e2e/blobs/sha256:[0-9a-f]{64}\?([^ ]*&)?ns=docker\.io(&[^ ]*)? 200$' "a blob GET with ns=docker.io answered 200"
}

# empty_containerd NAME: remove every image of the e2e namespace and all
# content, so that the next pull fetches every blob again.
empty_containerd() {
	local d left
	[ -n "$CTRD_UP" ] || return 0
	for d in $(ctr_ images ls -q 2>/dev/null); do ctr_ images rm --sync "$d" >>"$OUT/o-ctr-rm" 2>&1; done
	for d in $(ctr_ content ls -q 2>/dev/null); do ctr_ content rm "$d" >/dev/null 2>&1; done
	left=$(ctr_ content ls -q 2>/dev/null | wc -l)
	if [ "$left" = 0 ]; then
		pass "$1: containerd store emptied"
	else
		fail "$1: containerd store emptied" "$left blobs left in the content store"
	fi
}

# empty_docker NAME: remove every image of dockerd's store.
empty_docker() {
	local ids
	[ -n "$DOCKER_UP" ] || return 0
	ids=$(docker_ images -q 2>/dev/null | sort -u)
	# shellcheck disable=SC2086
	[ -z "$ids" ] || docker_ rmi -f $ids >"$OUT/o-docker-rmi" 2>&1
	if [ -z "$(docker_ images -q 2>/dev/null)" ]; then
		pass "$1: docker store emptied"
	else
		fail "$1: docker store emptied" "images left: $(docker_ images --format '{{.Repository}}:{{.Tag}}' | tr '\n' ' ')"
	fi
}

# pull_docker_mirror ROUND: docker pull docker.io/... through registry-mirrors
pull_docker_mirror() {
	local n="dockerd[$1]" mark out=$OUT/docker-pull-$1 rc ds nl
	if [ -z "$DOCKER_UP" ]; then
		fail "$n: pull $E2E_REF via registry-mirrors" "dockerd is not running"
		PULL_OK=""
		return
	fi
	mark=$(log_mark "$MIRROR_LOG")
	run_client "$out" $PULL_SECS "${DOCKER[@]}" pull "$E2E_REF"
	rc=$?
	PULL_OK=""
	[ $rc = 0 ] && PULL_OK=1
	if [ $rc = 0 ]; then pass "$n: docker pull $E2E_REF (registry-mirrors)"; else cmd_fail "$n: docker pull $E2E_REF (registry-mirrors)" "$out" $rc; fi
	# dockerd falls back to Docker Hub when the mirror fails: the mirror's log
	# is what proves the pull went through it.
	mirror_saw "$n: manifest via mirror (no fallback)" "$mark" "$MANIFEST_200" "a manifest request for library/e2e answered 200"
	mirror_saw "$n: blobs via mirror" "$mark" "$BLOB_GET_200" "a blob GET for library/e2e answered 200"
	ds=$(docker_ image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$E2E_REF" 2>/dev/null)
	if echo "$ds" | grep -qx "\(docker.io/library/\)\?e2e@$D_E2E"; then
		pass "$n: RepoDigests has e2e@$D_E2E"
	else
		fail "$n: RepoDigests has e2e@upstream digest" "RepoDigests: ${ds//$'\n'/ }"
	fi
	nl=$(docker_ image inspect -f '{{len .RootFS.Layers}}' "$E2E_REF" 2>/dev/null)
	expect_eq "$n: 3 layers unpacked" 3 "$nl" "RootFS.Layers"
}

# pull_docker_direct ROUND: docker pull 127.0.0.1:PORT/library/e2e-docker:v1
pull_docker_direct() {
	local n="dockerd-direct[$1]" ref="$BW/library/e2e-docker:v1" mark out=$OUT/docker-direct-$1 rc ds
	if [ -z "$DOCKER_UP" ]; then
		fail "$n: pull $ref" "dockerd is not running"
		PULL_OK=""
		return
	fi
	mark=$(log_mark "$MIRROR_LOG")
	run_client "$out" $PULL_SECS "${DOCKER[@]}" pull "$ref"
	rc=$?
	PULL_OK=""
	[ $rc = 0 ] && PULL_OK=1
	if [ $rc = 0 ]; then pass "$n: docker pull $ref (schema 2)"; else cmd_fail "$n: docker pull $ref (schema 2)" "$out" $rc; fi
	ds=$(docker_ image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" 2>/dev/null)
	if echo "$ds" | grep -qx "$BW/library/e2e-docker@$D_DOCKER"; then
		pass "$n: RepoDigests has $D_DOCKER"
	else
		fail "$n: RepoDigests has the upstream digest" "want $BW/library/e2e-docker@$D_DOCKER, RepoDigests: ${ds//$'\n'/ }"
	fi
	mirror_saw "$n: blobs via mirror" "$mark" '^GET /v2/library/e2e-docker/blobs/sha256:[0-9a-f]{64} 200$' "a blob GET for library/e2e-docker answered 200"
}

pull_podman() {
	local n="podman[$1]" mark out=$OUT/podman-pull-$1 rc d nl
	mark=$(log_mark "$MIRROR_LOG")
	run_client "$out" $PULL_SECS "${PODMAN[@]}" pull "$E2E_REF"
	rc=$?
	PULL_OK=""
	[ $rc = 0 ] && PULL_OK=1
	if [ $rc = 0 ]; then pass "$n: podman pull $E2E_REF (registries.conf mirror)"; else cmd_fail "$n: podman pull $E2E_REF (registries.conf mirror)" "$out" $rc; fi
	d=$(podman_ image inspect --format '{{.Digest}}' "$E2E_REF" 2>/dev/null)
	expect_eq "$n: image digest is upstream's" "$D_E2E" "$d" "digest"
	nl=$(podman_ image inspect --format '{{len .RootFS.Layers}}' "$E2E_REF" 2>/dev/null)
	expect_eq "$n: 3 layers unpacked" 3 "$nl" "RootFS.Layers"
	mirror_saw "$n: manifest via mirror" "$mark" "$MANIFEST_200_ANY" "a manifest request for library/e2e answered 200"
	mirror_saw "$n: blobs via mirror" "$mark" "$BLOB_GET_200_ANY" "a blob GET for library/e2e answered 200"
}

clear_podman() {
	podman_ rmi -a -f >"$OUT/podman-rmi" 2>&1
	if [ -z "$(podman_ images -q 2>/dev/null)" ]; then
		pass "podman: store emptied (podman rmi)"
	else
		fail "podman: store emptied" "images left: $(podman_ images -q | tr '\n' ' ')"
	fi
}

pull_skopeo() {
	local n="skopeo[$1]" src="docker://$BW/library/e2e:v1" dir=$TMP/skopeo-$1 mark out=$OUT/skopeo-$1 rc d
	mark=$(log_mark "$MIRROR_LOG")
	run_client "$out" $PULL_SECS "${SKOPEO[@]}" copy --src-tls-verify=false "$src" "dir:$dir"
	rc=$?
	PULL_OK=""
	[ $rc = 0 ] && PULL_OK=1
	if [ $rc = 0 ]; then pass "$n: skopeo copy $src dir:"; else cmd_fail "$n: skopeo copy $src dir:" "$out" $rc; fi
	d=sha256:$(sha256sum "$dir/manifest.json" 2>/dev/null | awk '{ print $1 }')
	expect_eq "$n: sha256 of the copied manifest is upstream's" "$D_E2E" "$d" "digest"
	if [ "$(find "$dir" -maxdepth 1 -type f ! -name manifest.json ! -name version | wc -l)" = 4 ]; then
		pass "$n: config and 3 layers copied"
	else
		fail "$n: config and 3 layers copied" "files: $(find "$dir" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)"
	fi
	mirror_saw "$n: blobs via mirror" "$mark" "$BLOB_GET_200" "a blob GET for library/e2e answered 200"
	run_client "$out.inspect" 60 "${SKOPEO[@]}" inspect --tls-verify=false --no-tags --format '{{.Digest}}' "$src"
	rc=$?
	if [ $rc = 0 ]; then
		expect_eq "$n: skopeo inspect digest is upstream's" "$D_E2E" "$(tail -n 1 "$out.inspect")" "digest"
	else
		cmd_fail "$n: skopeo inspect --no-tags" "$out.inspect" $rc
	fi
}

if [ -n "${E2E_ONLY:-}" ]; then
	echo "== rounds 1 and 2 skipped (E2E_ONLY=$E2E_ONLY)"
else
echo "== round 1: first pull with each client"
pull_containerd 1
pull_docker_mirror 1
pull_docker_direct 1
pull_podman 1
pull_skopeo 1

# Every blob of both images went through the mirror at least once by now;
# each should have been fetched from upstream exactly once.
counts=$(upstream_blob_get_counts "$LOGS/upstream.log")
distinct=$(echo "$counts" | awk 'NF == 2 { n++ } END { print n + 0 }')
maxc=$(echo "$counts" | awk 'NF == 2 && $1 > m { m = $1 } END { print m + 0 }')
expect_eq "upstream: all 8 blobs (2 images x config + 3 layers) fetched" 8 "$distinct" "distinct blob digests GET from upstream"
if [ "$maxc" -le 1 ]; then
	pass "upstream: no blob fetched twice across 5 pulls by 4 clients"
elif [ "$MIRROR_KIND" = registry ]; then
	skip "upstream: no blob fetched twice" "the stand-in (distribution's proxy) GETs every blob twice: one to serve, one to store"
else
	fail "upstream: no blob fetched twice" "a blob was GET $maxc times from upstream:"
	# shellcheck disable=SC2001 # prefixes every line
	echo "$counts" | sed 's/^/    | /'
fi

note "upstream manifest requests so far: $(http_lines "$LOGS/upstream.log" | awk '($1 == "GET" || $1 == "HEAD") && $2 ~ /\/manifests\// && $3 < 400 { print $1 }' | sort | uniq -c | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }') (one HEAD is the seed check's)"

echo "== round 2: empty each client's store and pull again; nothing may come from upstream"
BASE=$(upstream_blob_gets "$LOGS/upstream.log")
note "upstream blob GETs so far: $BASE"
empty_containerd "containerd[2]"
pull_containerd 2
upstream_quiet "containerd[2]: nothing fetched from upstream" "$BASE"
empty_docker "dockerd[2]"
pull_docker_mirror 2
upstream_quiet "dockerd[2]: nothing fetched from upstream" "$BASE"
pull_docker_direct 2
upstream_quiet "dockerd-direct[2]: nothing fetched from upstream" "$BASE"
clear_podman
pull_podman 2
upstream_quiet "podman[2]: nothing fetched from upstream" "$BASE"
pull_skopeo 2
upstream_quiet "skopeo[2]: nothing fetched from upstream" "$BASE"

bad=$(http_lines "$MIRROR_LOG" | awk '$3 >= 500')
if [ -z "$bad" ]; then
	pass "mirror: answered no 5xx"
else
	fail "mirror: answered no 5xx" "$(echo "$bad" | wc -l) requests:"
	echo "$bad" | head -n 10 | sed 's/^/    | /'
fi
fi # E2E_ONLY

# ---- 7. the outage phase ---------------------------------------------------

if run_phase outage; then
	# shellcheck source=outage.sh
	. "$HERE/outage.sh"
fi

# ---- 8. the TLS phase ------------------------------------------------------

if run_phase tls; then
	# shellcheck source=tls.sh
	. "$HERE/tls.sh"
fi

# ---- 9. the auth phase -----------------------------------------------------

if run_phase auth; then
	# shellcheck source=auth.sh
	. "$HERE/auth.sh"
fi

# ---- 10. the image phase ---------------------------------------------------

if run_phase image; then
	# shellcheck source=image.sh
	. "$HERE/image.sh"
fi

# ---- 11. the fleet phase ---------------------------------------------------

if run_phase fleet; then
	# shellcheck source=fleet.sh
	. "$HERE/fleet.sh"
fi

# ---- 12. the k8s phase -----------------------------------------------------

if run_phase k8s; then
	# shellcheck source=k8s.sh
	. "$HERE/k8s.sh"
fi

E2E_DONE=1
