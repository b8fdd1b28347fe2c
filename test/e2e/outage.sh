# shellcheck shell=bash
# The outage phase of test/e2e/run.sh, sourced by it after the pull rounds
# (it uses run.sh's clients, helpers and variables). See test/e2e/README.md,
# "The outage phase".
#
# Four more Breakwater instances, each with its own port, cache and log, and
# each in front of its own fault proxy (test/e2e/faultproxy) in front of the
# upstream registry, so that what reaches a fault proxy was sent by one
# Breakwater only:
#
#   mirror-outage    --tag-ttl 0s (every tag request asks the upstream), a
#                    2 s retry deadline, a breaker that never opens. With
#                    the fault proxy passing, containerd, dockerd and skopeo
#                    pull library/e2e:v1 through it; then, for each of 429,
#                    503 and refused connections, pulls of
#                    library/e2e-outage:v1 (nothing cached) must fail with
#                    Breakwater's crafted text, which `breakwater classify`
#                    must rate transient, and pulls of library/e2e:v1
#                    (cached) must succeed from the cache (cache=stale);
#                    with manifests answered 404 a missing image must fail
#                    as not found and be rated fatal.
#   mirror-breaker   its circuit opens after 2 failed requests and stays
#                    open for the rest of the run: `circuit open after 503
#                    Service Unavailable`, and nothing reaches its proxy.
#   mirror-defaults  the built-in resilience settings: a 1.5 s burst of 503
#                    while ctr, skopeo, docker and podman each pull an image
#                    nothing has cached; every pull must succeed.
#   mirror-recovery  opens after 2 failed requests, probes after 1 s (up to
#                    4 s): once the upstream is back the next ctr pull must
#                    succeed within the open time; then a 429 with
#                    Retry-After: 15 must be obeyed (answered at once, the
#                    seconds counting down, nothing sent upstream) while a
#                    cached tag is still served.

OUTAGE_SECS=30 # timeout of a pull that is expected to fail (they take about 2 s)
OUTAGE_REF=docker.io/library/e2e-outage:v1
MISSING_REF=docker.io/library/e2e-missing:v1
OUTAGE_ERRORS=$OUT/outage-errors.txt
: >"$OUTAGE_ERRORS"
# shellcheck disable=SC2034 # expect_failed (lib.sh) reads it
E2E_ERRORS=$OUTAGE_ERRORS # where expect_failed records

# mirror-recovery's breaker, for the recovery check's bound
RECOVERY_OPEN_MAX=4
# how long a request Breakwater answers "at once" may take (ms); a request
# held for the deadline takes 2000 or more
AT_ONCE_MS=1000

FP_PORT=$(free_port)
FPC_PORT=$(free_port)
FPB_PORT=$(free_port)
FPBC_PORT=$(free_port)
FPD_PORT=$(free_port)
FPDC_PORT=$(free_port)
FPR_PORT=$(free_port)
FPRC_PORT=$(free_port)
BW2_PORT=$(free_port)
BW3_PORT=$(free_port)
BWD_PORT=$(free_port)
BWR_PORT=$(free_port)
FP=127.0.0.1:$FP_PORT
FPC=127.0.0.1:$FPC_PORT
FPB=127.0.0.1:$FPB_PORT
FPBC=127.0.0.1:$FPBC_PORT
FPD=127.0.0.1:$FPD_PORT
FPDC=127.0.0.1:$FPDC_PORT
FPR=127.0.0.1:$FPR_PORT
FPRC=127.0.0.1:$FPRC_PORT
BW2=127.0.0.1:$BW2_PORT
BW3=127.0.0.1:$BW3_PORT
BWD=127.0.0.1:$BWD_PORT
BWR=127.0.0.1:$BWR_PORT
FP_LOG=$LOGS/faultproxy.log
FPB_LOG=$LOGS/faultproxy-breaker.log
FPD_LOG=$LOGS/faultproxy-defaults.log
FPR_LOG=$LOGS/faultproxy-recovery.log
BW2_LOG=$LOGS/mirror-outage.log
BW3_LOG=$LOGS/mirror-breaker.log
BWD_LOG=$LOGS/mirror-defaults.log
BWR_LOG=$LOGS/mirror-recovery.log

# ---- helpers ---------------------------------------------------------------


# fp_set CONTROL SETTING: switch a fault proxy (SETTING in the control API's
# syntax, e.g. set=503&for=1.5s); it answers once the setting is in effect.
fp_set() {
	local ctl=$1 setting=$2 want got
	want="mode ${setting#set=}"
	want=${want%%&*}
	got=$(curl -sS -m 10 -X POST "http://$ctl/mode?$setting" 2>&1)
	if [ "$got" = "$want" ]; then
		note "fault proxy $ctl: $setting"
		return 0
	fi
	fail "fault proxy $ctl: $setting" "${got:-no answer}"
	return 1
}

# fp_mode MODE: switch mirror-outage's fault proxy.
fp_mode() { fp_set "$FPC" "set=$1"; }

# fp_stat CONTROL MODE: the requests a fault proxy has handled in MODE (its
# /stats), empty when it does not answer.
fp_stat() {
	curl -sS -m 5 "http://$1/stats" 2>/dev/null | grep -o "\"$2\":[0-9]*" | cut -d: -f2
}

# fp_count FROM MODE [LOG]: requests a fault proxy logged in MODE from line
# FROM (default: mirror-outage's).
fp_count() {
	tail -n "+$1" "${3:-$FP_LOG}" 2>/dev/null | grep '"msg":"request"' | grep -c "\"mode\":\"$2\""
}

# fp_answered FROM STATUS LOG: "METHOD PATH" of each request the fault proxy
# answered STATUS, from line FROM.
fp_answered() {
	http_lines "$3" "$1" | awk -v s="$2" '$3 == s { print $1, $2 }'
}

# bw_lines LOG [FROM]: Breakwater's request lines as "METHOD URI STATUS CACHE".
bw_lines() {
	tail -n "+${2:-1}" "$1" 2>/dev/null | grep '"msg":"request"' |
		sed -E 's/.*"method":"([^"]*)","path":"([^"]*)","query":"([^"]*)","status":([0-9]+).*/\1 \2?\3 \4 &/' |
		awk '{ c = "-"; if (match($0, /"cache":"[^"]*"/)) c = substr($0, RSTART + 9, RLENGTH - 10); sub(/\?$/, "", $2); print $1, $2, $3, c }'
}

# bw_errors LOG FROM: Breakwater's requests answered 5xx from line FROM, as
# "METHOD URI STATUS DURATION_MS".
bw_errors() {
	tail -n "+$2" "$1" 2>/dev/null | grep '"msg":"request"' | grep -E '"status":5[0-9][0-9]' |
		sed -E 's/.*"method":"([^"]*)","path":"([^"]*)","query":"([^"]*)","status":([0-9]+).*"duration_ms":([0-9.]+).*/\1 \2?\3 \4 \5/' |
		sed -E 's/\? / /'
}

# o_ctr_pull NAME HOSTSDIR REF DIGEST: ctr images pull --hosts-dir HOSTSDIR
# REF must succeed with DIGEST and the content complete (4/4). Returns the
# pull's status; O_SECS is how long it took, O_END when it ended (ns).
O_SECS=""
O_END=""
o_ctr_pull() {
	local n=$1 hosts=$2 ref=$3 want=$4 out rc d row t0
	if [ -z "$CTRD_UP" ]; then
		fail "$n containerd: pull" "containerd is not running"
		return 1
	fi
	out=$OUT/o-ctr-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	t0=$(now_ns)
	run_client "$out" "$PULL_SECS" "${CTR[@]}" images pull --hosts-dir "$hosts" "$ref"
	rc=$?
	O_END=$(now_ns)
	O_SECS=$(secs_since "$t0")
	if [ $rc = 0 ]; then pass "$n containerd: ctr images pull --hosts-dir $ref"; else cmd_fail "$n containerd: ctr images pull --hosts-dir $ref" "$out" $rc; fi
	d=$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }')
	row=$(ctr_ images check "name==$ref" 2>/dev/null | awk 'NR > 1')
	if [ "$d" = "$want" ] && echo "$row" | grep -q ' complete (4/4) '; then
		pass "$n containerd: digest is upstream's, content complete (4/4)"
	else
		fail "$n containerd: digest is upstream's, content complete (4/4)" "digest '${d:-<none>}' (want $want), check: ${row:-<no row>}"
	fi
	return $rc
}

# o_docker_pull NAME REF DIGEST: docker pull REF (127.0.0.1:PORT/library/X:v1)
# must succeed with DIGEST in RepoDigests.
o_docker_pull() {
	local n=$1 ref=$2 want=$3 out rc ds t0
	if [ -z "$DOCKER_UP" ]; then
		fail "$n dockerd: pull" "dockerd is not running"
		return 1
	fi
	out=$OUT/o-docker-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	t0=$(now_ns)
	run_client "$out" "$PULL_SECS" "${DOCKER[@]}" pull "$ref"
	rc=$?
	O_SECS=$(secs_since "$t0")
	if [ $rc = 0 ]; then pass "$n dockerd: docker pull $ref"; else cmd_fail "$n dockerd: docker pull $ref" "$out" $rc; fi
	ds=$(docker_ image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" 2>/dev/null)
	if echo "$ds" | grep -qx "${ref%:*}@$want"; then
		pass "$n dockerd: RepoDigests has the upstream digest"
	else
		fail "$n dockerd: RepoDigests has the upstream digest" "want ${ref%:*}@$want, RepoDigests: ${ds//$'\n'/ }"
	fi
	return $rc
}

# o_skopeo_copy NAME SRC DIGEST: skopeo copy SRC (docker://...) dir:... must
# succeed, the manifest's sha256 DIGEST, config and 3 layers written.
o_skopeo_copy() {
	local n=$1 src=$2 want=$3 out dir rc d t0
	out=$OUT/o-skopeo-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	dir=$TMP/o-skopeo-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	rm -rf "$dir"
	t0=$(now_ns)
	run_client "$out" "$PULL_SECS" "${SKOPEO[@]}" copy --src-tls-verify=false "$src" "dir:$dir"
	rc=$?
	O_SECS=$(secs_since "$t0")
	if [ $rc = 0 ]; then pass "$n skopeo: skopeo copy $src dir:"; else cmd_fail "$n skopeo: skopeo copy $src dir:" "$out" $rc; fi
	d=sha256:$(sha256sum "$dir/manifest.json" 2>/dev/null | awk '{ print $1 }')
	if [ "$d" = "$want" ] && [ "$(find "$dir" -maxdepth 1 -type f ! -name manifest.json ! -name version 2>/dev/null | wc -l)" = 4 ]; then
		pass "$n skopeo: manifest is upstream's, config and 3 layers copied"
	else
		fail "$n skopeo: manifest is upstream's, config and 3 layers copied" "manifest $d (want $want), files: $(find "$dir" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null)"
	fi
	return $rc
}

# o_podman_pull NAME REF DIGEST: podman pull REF through PODMAN_D (a
# registries.conf whose docker.io mirror is mirror-defaults) must succeed
# with DIGEST and 3 layers.
o_podman_pull() {
	local n=$1 ref=$2 want=$3 out rc d nl t0
	out=$OUT/o-podman-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	t0=$(now_ns)
	run_client "$out" "$PULL_SECS" "${PODMAN_D[@]}" pull "$ref"
	rc=$?
	O_SECS=$(secs_since "$t0")
	if [ $rc = 0 ]; then pass "$n podman: podman pull $ref (registries.conf mirror)"; else cmd_fail "$n podman: podman pull $ref (registries.conf mirror)" "$out" $rc; fi
	d=$(timeout -k 5 60 "${PODMAN_D[@]}" image inspect --format '{{.Digest}}' "$ref" 2>/dev/null)
	nl=$(timeout -k 5 60 "${PODMAN_D[@]}" image inspect --format '{{len .RootFS.Layers}}' "$ref" 2>/dev/null)
	if [ "$d" = "$want" ] && [ "$nl" = 3 ]; then
		pass "$n podman: digest is upstream's, 3 layers"
	else
		fail "$n podman: digest is upstream's, 3 layers" "digest '${d:-<none>}' (want $want), layers '${nl:-<none>}'"
	fi
	return $rc
}

# o_pull_ok NAME: containerd, dockerd and skopeo pull library/e2e:v1
# through mirror-outage and must get the upstream's image.
o_pull_ok() {
	local n=$1
	o_ctr_pull "$n" "$HOSTS2" "$E2E_REF" "$D_E2E"
	o_docker_pull "$n" "$BW2/library/e2e:v1" "$D_E2E"
	o_skopeo_copy "$n" "docker://$BW2/library/e2e:v1" "$D_E2E"
}

# o_fail_ctr NAME HOSTSDIR REF WANT_EXIT NEEDLE...: ctr images pull
# --hosts-dir HOSTSDIR REF (docker.io/library/X:v1) must fail, see
# expect_failed. O_SECS is how long it took.
o_fail_ctr() {
	local n=$1 hosts=$2 ref=$3 want=$4 out rc t0
	shift 4
	E_LINE=""
	if [ -z "$CTRD_UP" ]; then
		fail "$n containerd: pull" "containerd is not running"
		return
	fi
	out=$OUT/o-fail-ctr-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	t0=$(now_ns)
	run_client "$out" "$OUTAGE_SECS" "${CTR[@]}" images pull --hosts-dir "$hosts" "$ref"
	rc=$?
	O_SECS=$(secs_since "$t0")
	expect_failed "$n containerd: ctr images pull --hosts-dir $ref" ctr "$out" $rc "$want" "$@"
}

# o_fail_skopeo NAME MIRROR REF WANT_EXIT NEEDLE...: skopeo inspect of
# MIRROR/library/X:v1 must fail.
o_fail_skopeo() {
	local n=$1 src=docker://$2/${3#docker.io/} want=$4 out rc t0
	shift 4
	out=$OUT/o-fail-skopeo-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	t0=$(now_ns)
	run_client "$out" "$OUTAGE_SECS" "${SKOPEO[@]}" inspect --tls-verify=false --no-tags "$src"
	rc=$?
	O_SECS=$(secs_since "$t0")
	expect_failed "$n skopeo: skopeo inspect $src" skopeo "$out" $rc "$want" "$@"
}

# o_fail_docker NAME MIRROR REF WANT_EXIT NEEDLE...: docker pull
# MIRROR/library/X:v1 must fail (MIRROR as the registry itself: with
# registry-mirrors dockerd would fall back to Docker Hub and report its error).
o_fail_docker() {
	local n=$1 ref=$2/${3#docker.io/} want=$4 out rc t0
	shift 4
	E_LINE=""
	if [ -z "$DOCKER_UP" ]; then
		fail "$n dockerd: pull" "dockerd is not running"
		return
	fi
	out=$OUT/o-fail-docker-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	t0=$(now_ns)
	run_client "$out" "$OUTAGE_SECS" "${DOCKER[@]}" pull "$ref"
	rc=$?
	O_SECS=$(secs_since "$t0")
	expect_failed "$n dockerd: docker pull $ref" docker "$out" $rc "$want" "$@"
}

# o_raw NAME MIRROR CAUSE [REPO]: GET REPO:v1's manifest (default
# library/e2e-outage) from MIRROR with curl. The answer must be 503 with the
# crafted reason phrase naming CAUSE, a Retry-After header whose seconds the
# phrase repeats, and an OCI body whose code is UNAVAILABLE and whose message
# is the reason phrase. RAW_RA is the Retry-After, RAW_SECS curl's time.
RAW_RA=""
RAW_SECS=""
o_raw() {
	local n=$1 url=http://$2/v2/${4:-library/e2e-outage}/manifests/v1 cause=$3 f status reason ra code msg why=""
	f=$OUT/o-raw-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	RAW_SECS=$(curl -sS -m 30 -D "$f.h" -o "$f.b" -w '%{time_total}' "$url" 2>"$f.err")
	status=$(head -n 1 "$f.h" 2>/dev/null | tr -d '\r')
	reason=${status#HTTP/1.1 503 }
	ra=$(awk 'tolower($1) == "retry-after:" { print $2 }' "$f.h" 2>/dev/null | tr -d '\r')
	RAW_RA=$ra
	code=$(sed -n 's/.*"code":"\([^"]*\)".*/\1/p' "$f.b" 2>/dev/null)
	msg=$(sed -n 's/.*"message":"\([^"]*\)".*/\1/p' "$f.b" 2>/dev/null)
	printf '%s\t%s\n%s\tbody %s\n' "$n curl: GET $url" "$status" "$n curl: GET $url" "$(cat "$f.b" 2>/dev/null)" >>"$OUTAGE_ERRORS"
	note "status line: $status (${RAW_SECS}s)"
	case $status in
	"HTTP/1.1 503 Service Unavailable (breakwater-transient: upstream docker.io "*"$cause; retry after ${ra:-?}s)") ;;
	*) why="status line '$status' is not '503 Service Unavailable (breakwater-transient: upstream docker.io ...$cause; retry after ${ra:-<no Retry-After>}s)'" ;;
	esac
	[ "$code" = UNAVAILABLE ] || why+="${why:+; }body code '$code', want UNAVAILABLE"
	[ "$msg" = "$reason" ] || why+="${why:+; }body message '$msg' differs from the reason phrase"
	if [ -z "$why" ]; then
		pass "$n curl: 503, reason phrase = body message, names '$cause', Retry-After: $ra"
	else
		fail "$n curl: 503 with the crafted reason phrase, Retry-After and body" "$why$( [ -s "$f.err" ] && echo "; curl: $(cat "$f.err")")"
	fi
}

# o_pull_fail NAME MIRROR HOSTSDIR REF WANT_EXIT NEEDLE...: all three.
o_pull_fail() {
	local n=$1 mirror=$2 hosts=$3 ref=$4 want=$5
	shift 5
	o_fail_ctr "$n" "$hosts" "$ref" "$want" "$@"
	o_fail_skopeo "$n" "$mirror" "$ref" "$want" "$@"
	o_fail_docker "$n" "$mirror" "$ref" "$want" "$@"
}

# breaker_state MIRROR: the docker.io upstream's "breaker" in MIRROR's
# /_breakwater/v1/status (indented JSON, one key a line).
breaker_state() {
	curl -sS -m 5 "http://$1/_breakwater/v1/status" 2>/dev/null | awk '
		/"name": "docker.io"/ { u = 1 }
		u && /"breaker":/ { gsub(/[",]/, "", $2); print $2; exit }'
}

# ---- set up: fault proxies, the four Breakwater instances ---------------------

echo "== outage: Breakwater behind fault proxies; upstream 429, 503, refused, 404, a burst, a recovery, a long rate limit"
note "mirror-outage $BW2 (fault proxy $FP, control $FPC), mirror-breaker $BW3 ($FPB, $FPBC)"
note "mirror-defaults $BWD ($FPD, $FPDC), mirror-recovery $BWR ($FPR, $FPRC)"
OUTAGE_T0=$(date +%s)
if [ ! -x "$TMP/breakwater" ]; then
	run_client "$OUT/bw-build" 300 go build -o "$TMP/breakwater" ./cmd/breakwater ||
		{ cmd_fail "outage: go build ./cmd/breakwater" "$OUT/bw-build" $?; return 0; }
fi
if run_client "$OUT/fp-build" 120 go build -o "$TMP/faultproxy" ./test/e2e/faultproxy; then
	pass "outage: go build ./test/e2e/faultproxy"
else
	cmd_fail "outage: go build ./test/e2e/faultproxy" "$OUT/fp-build" $?
	return 0
fi

# Images no mirror has seen: one per client for the burst (a cached image
# would make the next client's pull trivial), one for the recovery.
BURST_CLIENTS="ctr skopeo docker podman"
if run_client "$OUT/seed-outage" 240 go run ./test/e2e/seed --registry "$UP" \
	--only library/e2e-burst-ctr,library/e2e-burst-skopeo,library/e2e-burst-docker,library/e2e-burst-podman,library/e2e-recover; then
	SEED2=$(grep -E '^e2e-burst-ctr=sha256:' "$OUT/seed-outage" | tail -n 1)
	pass "outage: seed pushed library/e2e-burst-{ctr,skopeo,docker,podman}:v1 and library/e2e-recover:v1"
else
	cmd_fail "outage: seed library/e2e-burst-*, library/e2e-recover" "$OUT/seed-outage" $?
	SEED2=""
fi
# seed_digest NAME: the digest the seed printed for NAME.
seed_digest() { echo "$SEED2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
D_RECOVER=$(seed_digest e2e-recover)

start_bg faultproxy "$LOGS/faultproxy.stderr" "$TMP/faultproxy" --listen "$FP" --control "$FPC" \
	--upstream "http://$UP" --log "$FP_LOG"
start_bg faultproxy-breaker "$LOGS/faultproxy-breaker.stderr" "$TMP/faultproxy" --listen "$FPB" --control "$FPBC" \
	--upstream "http://$UP" --log "$FPB_LOG"
start_bg faultproxy-defaults "$LOGS/faultproxy-defaults.stderr" "$TMP/faultproxy" --listen "$FPD" --control "$FPDC" \
	--upstream "http://$UP" --log "$FPD_LOG"
start_bg faultproxy-recovery "$LOGS/faultproxy-recovery.stderr" "$TMP/faultproxy" --listen "$FPR" --control "$FPRC" \
	--upstream "http://$UP" --log "$FPR_LOG"

# mirror-outage: a failing request ends after its 2 s deadline (retried
# fast until then); the breaker never opens, so each client sees the
# upstream's own cause. mirror-breaker: opens once 2 requests ended and all
# found the upstream down, and stays open for the rest of the run.
# mirror-recovery: the same opening, but probing after 1 s, doubling to
# 4 s. mirror-defaults has no config file: the built-in resilience.
cat >"$TMP/outage.yaml" <<EOF
cache:
  max_stale: 1h
$(fast_resilience "min_requests: 1000000")
log:
  level: info
  format: json
EOF
cat >"$TMP/breaker.yaml" <<EOF
cache:
  max_stale: 1h
$(fast_resilience "min_requests: 2" "failure_percent: 100" "open_min: 300s" "open_max: 300s")
log:
  level: info
  format: json
EOF
cat >"$TMP/recovery.yaml" <<EOF
cache:
  max_stale: 1h
$(fast_resilience "min_requests: 2" "failure_percent: 100" "open_min: 1s" "open_max: ${RECOVERY_OPEN_MAX}s")
log:
  level: info
  format: json
EOF
start_bg mirror-outage "$BW2_LOG" "$TMP/breakwater" serve --config "$TMP/outage.yaml" --listen "$BW2" \
	--cache-dir "$TMP/cache-outage" --tag-ttl 0s --upstream "docker.io=http://$FP"
start_bg mirror-breaker "$BW3_LOG" "$TMP/breakwater" serve --config "$TMP/breaker.yaml" --listen "$BW3" \
	--cache-dir "$TMP/cache-breaker" --tag-ttl 0s --upstream "docker.io=http://$FPB"
start_bg mirror-defaults "$BWD_LOG" "$TMP/breakwater" serve --listen "$BWD" \
	--cache-dir "$TMP/cache-defaults" --upstream "docker.io=http://$FPD"
start_bg mirror-recovery "$BWR_LOG" "$TMP/breakwater" serve --config "$TMP/recovery.yaml" --listen "$BWR" \
	--cache-dir "$TMP/cache-recovery" --tag-ttl 0s --upstream "docker.io=http://$FPR"

for p in faultproxy:$FP faultproxy-breaker:$FPB faultproxy-defaults:$FPD faultproxy-recovery:$FPR; do
	if wait_for 20 http_ok "http://${p#*:}/v2/"; then
		pass "${p%%:*}: passes GET /v2/ to the upstream"
	else
		fail "${p%%:*}: start" "GET http://${p#*:}/v2/ not 200 within 20s (last: $(http_code "http://${p#*:}/v2/"))"
		tail_of "$LOGS/${p%%:*}.stderr" 10
		return 0
	fi
done
for m in mirror-outage:$BW2 mirror-breaker:$BW3 mirror-defaults:$BWD mirror-recovery:$BWR; do
	if wait_for 30 http_ok "http://${m#*:}/healthz"; then
		pass "${m%%:*}: healthy"
	else
		fail "${m%%:*}: start" "GET http://${m#*:}/healthz not 200 within 30s$(bg_alive "${m%%:*}" || echo '; the process exited')"
		tail_of "$LOGS/${m%%:*}.log" 10
		return 0
	fi
done

# hosts.toml as in round 1, the mirror being each of the four.
# HOSTS2_DIRECT names mirror-outage as the server itself: containerd then has
# no docker.io to fall back to (see the 404 checks).
HOSTS2=$TMP/certs.d-outage
HOSTS3=$TMP/certs.d-breaker
HOSTSD=$TMP/certs.d-defaults
HOSTSR=$TMP/certs.d-recovery
HOSTS2_DIRECT=$TMP/certs.d-outage-direct
for h in "$HOSTS2:$BW2" "$HOSTS3:$BW3" "$HOSTSD:$BWD" "$HOSTSR:$BWR"; do
	mkdir -p "${h%%:*}/docker.io"
	cat >"${h%%:*}/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://${h#*:}"]
  capabilities = ["pull", "resolve"]
EOF
done
mkdir -p "$HOSTS2_DIRECT/docker.io"
cat >"$HOSTS2_DIRECT/docker.io/hosts.toml" <<EOF
server = "http://$BW2"

[host."http://$BW2"]
  capabilities = ["pull", "resolve"]
EOF
# podman with mirror-defaults as its docker.io mirror
sed -e "s/^location = \"$BW\"$/location = \"$BWD\"/" -e "s#^location = \"$BW/#location = \"$BWD/#" "$PM/registries.conf" >"$PM/registries-defaults.conf"
PODMAN_D=("${PODMAN[@]/#CONTAINERS_REGISTRIES_CONF=*/CONTAINERS_REGISTRIES_CONF=$PM/registries-defaults.conf}")

# ---- before the outage: pull library/e2e:v1 through mirror-outage -----------

echo "== outage[pass]: each client pulls $E2E_REF through mirror-outage, which caches it"
fp_mode pass
empty_containerd "outage[pass]"
empty_docker "outage[pass]"
fpm=$(log_mark "$FP_LOG")
o_pull_ok "outage[pass]"
if http_lines "$FP_LOG" "$fpm" | grep -Eq '^GET /v2/library/e2e/blobs/sha256:[0-9a-f]{64}[^ ]* 200$'; then
	pass "outage[pass]: mirror-outage fetched library/e2e through the fault proxy"
else
	fail "outage[pass]: mirror-outage fetched library/e2e through the fault proxy" "no blob GET answered 200 in $FP_LOG"
fi

# ---- the outage: 429, 503, refused -------------------------------------------

# outage_round MODE CAUSE
outage_round() {
	local mode=$1 cause=$2 n="outage[$1]" fpm bwm c stale
	echo "== $n: upstream $( [ "$mode" = refuse ] && echo "refuses connections" || echo "answers every request $mode")"
	fp_mode "$mode" || return
	fpm=$(log_mark "$FP_LOG")
	o_raw "$n uncached" "$BW2" "$cause"
	o_pull_fail "$n uncached" "$BW2" "$HOSTS2" "$OUTAGE_REF" 0 "breakwater-transient" "$cause"
	c=$(fp_count "$fpm" "$mode")
	if [ "$mode" = refuse ]; then
		expect_eq "$n: no request reached the fault proxy" 0 "$c" "requests logged"
	elif [ "$c" -gt 0 ]; then
		pass "$n: mirror-outage asked the upstream ($c requests answered $mode)"
	else
		fail "$n: mirror-outage asked the upstream" "the fault proxy logged no request in mode $mode"
	fi

	empty_containerd "$n"
	empty_docker "$n"
	bwm=$(log_mark "$BW2_LOG")
	o_pull_ok "$n cached"
	# Every client's tag request was served from the cache after the
	# upstream failed (tag TTL 0s: none is fresh).
	stale=$(bw_lines "$BW2_LOG" "$bwm" | awk '$2 ~ /^\/v2\/library\/e2e\/manifests\/v1(\?|$)/ && $3 == 200 && $4 == "stale"' | wc -l)
	if [ "$stale" -ge 3 ]; then
		pass "$n: mirror-outage served the tag stale ($stale requests, cache=stale)"
	else
		fail "$n: mirror-outage served the tag stale" "$stale tag requests answered 200 with cache=stale (want >= 3); tag requests:"
		bw_lines "$BW2_LOG" "$bwm" | grep '/manifests/v1' | sed 's/^/    | /'
	fi
	if tail -n "+$bwm" "$BW2_LOG" | grep '"msg":"upstream unavailable: serving cached tag"' | grep -q "breakwater-transient: upstream docker.io [^;]*$cause"; then
		pass "$n: mirror-outage logged why: $cause"
	else
		fail "$n: mirror-outage logged why" "no 'serving cached tag' line naming '$cause' in $BW2_LOG"
		tail -n "+$bwm" "$BW2_LOG" | grep -v '"msg":"request"' | tail -n 5 | cut -c1-400 | sed 's/^/    | /'
	fi
}

# CAUSE is the crafted text's cause in full: every client prints its own
# "503 Service Unavailable" before Breakwater's reason phrase, so a bare
# "503 Service Unavailable" would be found whatever the cause said.
outage_round 429 "answered 429 Too Many Requests"
outage_round 503 "answered 503 Service Unavailable"

# The breaker: mirror-breaker opens its circuit once two requests ended and
# both found the upstream down. Two requests for different images at once
# trip it (two for one manifest would be one upstream request); after that,
# each client gets `circuit open after 503 Service Unavailable` at once and
# nothing reaches the upstream.
echo "== outage[circuit]: mirror-breaker's circuit opens after 2 failed requests"
if fp_set "$FPBC" set=503; then
	curl -s -o /dev/null -m 20 -w '%{http_code}' "http://$BW3/v2/library/e2e-outage/manifests/v1" >"$OUT/o-trip-1" &
	trip1=$!
	curl -s -o /dev/null -m 20 -w '%{http_code}' "http://$BW3/v2/library/e2e-missing/manifests/v1" >"$OUT/o-trip-2" &
	trip2=$!
	wait "$trip1" "$trip2"
	expect_eq "outage[circuit]: two requests at once fail and trip the breaker (answered 503, 503)" "503 503" \
		"$(cat "$OUT/o-trip-1") $(cat "$OUT/o-trip-2")" "statuses"
	expect_eq "outage[circuit]: mirror-breaker's status says the circuit is open" open "$(breaker_state "$BW3")" "breaker"
	fpm=$(log_mark "$FPB_LOG")
	o_raw "outage[circuit]" "$BW3" "circuit open after 503 Service Unavailable"
	o_pull_fail "outage[circuit]" "$BW3" "$HOSTS3" "$OUTAGE_REF" 0 "breakwater-transient" "circuit open after 503 Service Unavailable"
	expect_eq "outage[circuit]: nothing reached the fault proxy while open" 0 "$(fp_count "$fpm" 503 "$FPB_LOG")" "requests logged"
fi

outage_round refuse "unreachable: connection refused"

# ---- a missing image: the upstream answers manifests 404 ----------------------

echo "== outage[404]: upstream answers manifests 404 MANIFEST_UNKNOWN; $MISSING_REF must fail as not found"
if fp_mode 404; then
	# containerd with the usual hosts.toml tries docker.io after the
	# mirror's 404 and reports docker.io's error (it tries the hosts in order);
	# here docker.io does not resolve, so what it prints says nothing about
	# Breakwater. Recorded, not judged:
	if [ -n "$CTRD_UP" ]; then
		out=$OUT/o-fail-ctr-404-fallback
		run_client "$out" "$OUTAGE_SECS" "${CTR[@]}" images pull --hosts-dir "$HOSTS2" "$MISSING_REF"
		rc=$?
		line=$(err_line ctr "$out")
		"$TMP/breakwater" classify --reason ErrImagePull --message "$line" >"$out.classify" 2>&1
		crc=$?
		printf '%s\t%s\n%s\tclassify exit %s: %s\n' "outage[404] containerd via mirror + docker.io fallback (exit $rc)" "$(raw_line ctr "$out")" \
			"outage[404] containerd via mirror + docker.io fallback" "$crc" "$(head -n 1 "$out.classify")" >>"$OUTAGE_ERRORS"
		note "containerd with docker.io as fallback (exit $rc, not judged) printed: $(raw_line ctr "$out")"
		note "classify: $(head -n 1 "$out.classify")"
	fi
	# ... so containerd's check uses a hosts.toml whose server is
	# mirror-outage itself: the 404 is then the only answer.
	o_fail_ctr "outage[404]" "$HOSTS2_DIRECT" "$MISSING_REF" 1 "not found"
	o_fail_skopeo "outage[404]" "$BW2" "$MISSING_REF" 1 "manifest unknown"
	o_fail_docker "outage[404]" "$BW2" "$MISSING_REF" 1 "manifest unknown"
fi
fp_mode pass >/dev/null

# ---- a burst the clients never notice ----------------------------------------

# mirror-defaults (built-in settings: 20 s deadline) while its upstream
# answers 503 for 1.5 s from the moment the pull first asks for the image:
# each client pulls an image nothing has cached. The pull must succeed,
# mirror-defaults must have answered the client no 5xx, and the fault proxy
# must have answered 503 while the pull was under way (only this pull makes
# mirror-defaults ask).
burst_pull() {
	local client=$1 repo=library/e2e-burst-$1 want n="outage[burst] $1" fpm bwm c paths bad secs watcher
	want=$(seed_digest "e2e-burst-$client")
	fpm=$(log_mark "$FPD_LOG")
	bwm=$(log_mark "$BWD_LOG")
	# A client takes a moment (podman seconds) to start: the upstream
	# answers 503 until the first request this pull makes mirror-defaults
	# send (its token handshake's /v2/) reaches the fault proxy, and for
	# 1.5 s after it, so the burst is the pull's.
	fp_set "$FPDC" "set=503" || return
	(
		for _ in $(seq 1 400); do
			tail -n "+$fpm" "$FPD_LOG" 2>/dev/null | grep -q '"msg":"request"' && break
			sleep 0.05
		done
		curl -sS -m 10 -X POST "http://$FPDC/mode?set=503&for=1.5s" >/dev/null 2>&1
	) &
	watcher=$!
	case $client in
	ctr) o_ctr_pull "outage[burst]" "$HOSTSD" "docker.io/$repo:v1" "$want" ;;
	skopeo) o_skopeo_copy "outage[burst]" "docker://$BWD/$repo:v1" "$want" ;;
	docker) o_docker_pull "outage[burst]" "$BWD/$repo:v1" "$want" ;;
	podman) o_podman_pull "outage[burst]" "docker.io/$repo:v1" "$want" ;;
	esac
	wait "$watcher"
	secs=$O_SECS
	c=$(fp_answered "$fpm" 503 "$FPD_LOG" | wc -l)
	paths=$(fp_answered "$fpm" 503 "$FPD_LOG" | sort | uniq -c | awk '{ printf "%s%s x %s %s", (NR > 1 ? ", " : ""), $1, $2, $3 }')
	if [ "$c" -gt 0 ]; then
		pass "$n: the fault proxy answered mirror-defaults 503 during the pull ($c requests: $paths)"
	else
		fail "$n: the fault proxy answered mirror-defaults 503 during the pull" "no request answered 503 in $FPD_LOG since the burst began: the burst was over before the pull asked"
	fi
	bad=$(bw_errors "$BWD_LOG" "$bwm")
	if [ -z "$bad" ]; then
		pass "$n: mirror-defaults answered the client no 5xx"
	else
		fail "$n: mirror-defaults answered the client no 5xx" "$(echo "$bad" | wc -l) requests:"
		echo "$bad" | head -n 10 | sed 's/^/    | /'
	fi
	printf '%s\tpulled in %ss; the fault proxy answered 503 to %s requests (%s); mirror-defaults answered %s requests 5xx\n' \
		"$n" "$secs" "$c" "$paths" "$(echo -n "$bad" | grep -c .)" >>"$OUTAGE_ERRORS"
	note "$client pull took ${secs}s across the burst"
}

echo "== outage[burst]: mirror-defaults' upstream answers 503 for 1.5 s as each client starts pulling an image nothing has cached"
for client in $BURST_CLIENTS; do
	burst_pull "$client"
done
fp_set "$FPDC" set=pass >/dev/null

# ---- a recovery the next pull sees at once -------------------------------------

echo "== outage[recovery]: mirror-recovery's circuit is open when the upstream comes back; the next pull must not wait for it"
RECOVERY_SECS=""
if fp_set "$FPRC" set=503; then
	curl -s -o /dev/null -m 20 -w '%{http_code}' "http://$BWR/v2/library/e2e-outage/manifests/v1" >"$OUT/o-rtrip-1" &
	trip1=$!
	curl -s -o /dev/null -m 20 -w '%{http_code}' "http://$BWR/v2/library/e2e-missing/manifests/v1" >"$OUT/o-rtrip-2" &
	trip2=$!
	wait "$trip1" "$trip2"
	expect_eq "outage[recovery]: two requests at once fail and trip the breaker (answered 503, 503)" "503 503" \
		"$(cat "$OUT/o-rtrip-1") $(cat "$OUT/o-rtrip-2")" "statuses"
	state=$(breaker_state "$BWR")
	expect_eq "outage[recovery]: mirror-recovery's status says the circuit is open" open "$state" "breaker"
	fpm=$(log_mark "$FPR_LOG")
	fp_set "$FPRC" set=pass
	t0=$(now_ns)
	o_ctr_pull "outage[recovery]" "$HOSTSR" docker.io/library/e2e-recover:v1 "$D_RECOVER"
	rc=$?
	RECOVERY_SECS=$(awk -v a="$t0" -v b="$O_END" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
	if [ $rc = 0 ] && awk -v s="$RECOVERY_SECS" -v m="$RECOVERY_OPEN_MAX" 'BEGIN { exit !(s <= m + 3) }'; then
		pass "outage[recovery]: the first pull after the upstream came back succeeded ${RECOVERY_SECS}s after the switch (open_max ${RECOVERY_OPEN_MAX}s + 3s allowed)"
	else
		fail "outage[recovery]: the first pull after the upstream came back succeeded within open_max + 3s" "exit $rc after ${RECOVERY_SECS}s"
	fi
	expect_eq "outage[recovery]: mirror-recovery's status says the circuit is closed" closed "$(breaker_state "$BWR")" "breaker"
	if grep '"msg":"circuit breaker"' "$BWR_LOG" | grep -q '"to":"closed"'; then
		pass "outage[recovery]: mirror-recovery logged the circuit closing"
	else
		fail "outage[recovery]: mirror-recovery logged the circuit closing" "no 'circuit breaker' line with \"to\":\"closed\" in $BWR_LOG"
	fi
	printf '%s\tstatus before the switch: breaker %s; ctr pull of docker.io/library/e2e-recover:v1 succeeded %ss after the fault proxy passed again (exit %s); the fault proxy then forwarded %s requests\n' \
		"outage[recovery]" "${state:-?}" "$RECOVERY_SECS" "$rc" "$(fp_count "$fpm" pass "$FPR_LOG")" >>"$OUTAGE_ERRORS"
	note "recovery: the pull took ${RECOVERY_SECS}s from the switch to pass"
fi

# ---- a 429 with a long Retry-After is obeyed -----------------------------------

# mirror-recovery again (circuit closed, e2e-recover:v1 cached, tag TTL 0s):
# the upstream answers 429 with Retry-After: 15, more than the 2 s deadline.
# The first request asks, gets the 429 and is answered at once; for the next
# 15 s nothing is sent upstream, every request for an uncached image is
# answered at once with the seconds left, and a cached tag is served stale.
echo "== outage[429-long]: mirror-recovery's upstream answers 429 with Retry-After: 15"
if fp_set "$FPRC" "set=429&retry_after=15"; then
	c0=$(fp_stat "$FPRC" 429)
	bwm=$(log_mark "$BWR_LOG")
	o_raw "outage[429-long] first" "$BWR" "answered 429 Too Many Requests"
	first=$RAW_RA
	case $first in
	14 | 15) pass "outage[429-long] first: Retry-After is the upstream's 15 s (less what passed): $first" ;;
	*) fail "outage[429-long] first: Retry-After is the upstream's 15 s" "Retry-After '${first:-<none>}', want 14 or 15" ;;
	esac
	if awk -v s="$RAW_SECS" -v m="$AT_ONCE_MS" 'BEGIN { exit !(s * 1000 < m) }'; then
		pass "outage[429-long] first: answered at once (${RAW_SECS}s)"
	else
		fail "outage[429-long] first: answered at once" "curl took ${RAW_SECS:-?}s (want under $((AT_ONCE_MS / 1000))s)"
	fi
	c1=$(fp_stat "$FPRC" 429)
	expect_eq "outage[429-long] first: it reached the upstream once" 1 "$((${c1:-0} - ${c0:-0}))" "requests the fault proxy answered 429"
	printf '%s\tcurl took %ss; the fault proxy answered %s requests 429\n' "outage[429-long] first" "$RAW_SECS" "$((${c1:-0} - ${c0:-0}))" >>"$OUTAGE_ERRORS"
	# a second later: fewer seconds left, nothing sent upstream
	sleep 1
	# retry_fewer NAME N: N (the seconds an answer gave) is below the first
	# answer's and above 0.
	retry_fewer() {
		if [ -n "$2" ] && [ -n "$first" ] && [ "$2" -lt "$first" ] && [ "$2" -gt 0 ]; then
			pass "$1: retry after ${2}s, fewer than the first answer's ${first}s"
		else
			fail "$1: retry after fewer seconds than the first answer's" "retry after '${2:-<none>}', first '${first:-<none>}'"
		fi
	}
	o_raw "outage[429-long] other image" "$BWR" "answered 429 Too Many Requests" library/e2e-docker
	retry_fewer "outage[429-long] other image curl" "$RAW_RA"
	for client in skopeo ctr docker; do
		case $client in
		skopeo) o_fail_skopeo "outage[429-long]" "$BWR" "$OUTAGE_REF" 0 "breakwater-transient" "429 Too Many Requests; retry after" ;;
		ctr) o_fail_ctr "outage[429-long]" "$HOSTSR" "$OUTAGE_REF" 0 "breakwater-transient" "429 Too Many Requests; retry after" ;;
		docker) o_fail_docker "outage[429-long]" "$BWR" "$OUTAGE_REF" 0 "breakwater-transient" "429 Too Many Requests; retry after" ;;
		esac
		[ -n "$E_LINE" ] || continue
		retry_fewer "outage[429-long] $client" "$(retry_secs "$E_LINE")"
		printf '%s\t%s failed after %ss\n' "outage[429-long] $client" "$client" "$O_SECS" >>"$OUTAGE_ERRORS"
	done
	# a cached tag is served, its blobs from the cache
	empty_containerd "outage[429-long]"
	bwm2=$(log_mark "$BWR_LOG")
	o_ctr_pull "outage[429-long] cached" "$HOSTSR" docker.io/library/e2e-recover:v1 "$D_RECOVER"
	stale=$(bw_lines "$BWR_LOG" "$bwm2" | awk '$2 ~ /^\/v2\/library\/e2e-recover\/manifests\/v1(\?|$)/ && $3 == 200 && $4 == "stale"' | wc -l)
	if [ "$stale" -ge 1 ]; then
		pass "outage[429-long] cached: mirror-recovery served the tag stale ($stale requests, cache=stale)"
	else
		fail "outage[429-long] cached: mirror-recovery served the tag stale" "no e2e-recover tag request answered 200 with cache=stale; its requests:"
		bw_lines "$BWR_LOG" "$bwm2" | sed 's/^/    | /'
	fi
	c2=$(fp_stat "$FPRC" 429)
	expect_eq "outage[429-long]: nothing more reached the upstream within its Retry-After" "${c1:-?}" "${c2:-?}" "requests the fault proxy answered 429"
	slow=$(bw_errors "$BWR_LOG" "$bwm" | awk -v m="$AT_ONCE_MS" '$4 >= m')
	if [ -z "$slow" ]; then
		pass "outage[429-long]: mirror-recovery answered every 503 at once (under ${AT_ONCE_MS} ms)"
	else
		fail "outage[429-long]: mirror-recovery answered every 503 at once (under ${AT_ONCE_MS} ms)" "$(echo "$slow" | wc -l) took longer:"
		echo "$slow" | head -n 10 | sed 's/^/    | /'
	fi
	fp_set "$FPRC" set=pass >/dev/null
fi

# ---- afterwards -------------------------------------------------------------

if http_lines "$LOGS/upstream.log" | grep -Eq '^(GET|HEAD) /v2/library/e2e-outage/manifests/[^ ]* 200$'; then
	fail "upstream: never served library/e2e-outage" "the upstream answered a manifest request for it with 200"
else
	pass "upstream: never served library/e2e-outage (every failure above was the outage's)"
fi
note "outage phase: $(($(date +%s) - OUTAGE_T0))s${E2E_KEEP:+; client errors in $OUTAGE_ERRORS}"
