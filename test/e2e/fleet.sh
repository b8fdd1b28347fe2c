# shellcheck shell=bash
# The fleet phase of test/e2e/run.sh, sourced by it after the image phase
# (it uses run.sh's clients, helpers and variables). See test/e2e/README.md,
# "The fleet phase".
#
# Breakwater replicas sharing one object store (docs/fleet.md), the store a
# real MinIO on loopback (scripts/s3.sh provides the binary):
#
#   s3bucket                   go run ./test/e2e/s3bucket creates the bucket
#   fleet-1, fleet-2           two replicas, each its own cache dir, port and
#                              log, the same storage.s3 block, docker.io the
#                              upstream registry
#   breakwater warm fleet-1    library/e2e:v1 into fleet-1, which writes it to
#                              the store in the background; the phase waits
#                              until MinIO's data dir holds every object
#   ctr images pull fleet-2    containerd, its store emptied, pulls through
#                              fleet-2: the upstream sees no request at all
#                              for library/e2e, every blob came from the store
#   ctr images pull fleet-3    a third replica, empty cache, whose docker.io
#                              is a dead port: it serves library/e2e:v1 by tag
#                              and by digest from the store alone

S3_PORT=$(free_port)
S3=127.0.0.1:$S3_PORT
S3_DIR=$TMP/minio
S3_DATA=$S3_DIR/data
S3_LOG=$LOGS/minio.log
S3_BUCKET=breakwater-e2e
S3_KEY=breakwater
S3_SECRET=e2e-secret-$RANDOM$RANDOM # MinIO refuses a password under 8 characters
FL_DIR=$TMP/fleet
FL_REPO=docker.io/library/e2e # the repository's directory in the store: repos/<upstream>/<name>
FL1=127.0.0.1:$(free_port)
FL2=127.0.0.1:$(free_port)
FL3=127.0.0.1:$(free_port)
FL_DEAD=127.0.0.1:$(free_port) # fleet-3's docker.io: nothing listens there
FL_WAIT=60                     # seconds the uploads after warm may take

echo "== fleet: MinIO on $S3, replicas fleet-1 $FL1 and fleet-2 $FL2 sharing bucket $S3_BUCKET; fleet-3 $FL3 with a dead upstream"
FLEET_T0=$(date +%s)
mkdir -p "$FL_DIR" "$S3_DATA"

# ---- MinIO and the bucket ------------------------------------------------------

fl_minio() {
	local bin v env_clean=()
	if ! bin=$(bash "$ROOT/scripts/s3.sh" 2>"$OUT/s3.sh.err"); then
		fail "fleet: scripts/s3.sh provides MinIO" "$(tail -n 3 "$OUT/s3.sh.err")"
		return 1
	fi
	# as internal/tests3: none of a developer's MINIO_* settings, HOME for
	# $HOME/.minio (certificates), no web console, no update check.
	for v in $(compgen -e); do
		case $v in MINIO_*) env_clean+=(-u "$v") ;; esac
	done
	start_bg minio "$S3_LOG" env "${env_clean[@]}" HOME="$S3_DIR" MINIO_ROOT_USER="$S3_KEY" \
		MINIO_ROOT_PASSWORD="$S3_SECRET" MINIO_BROWSER=off MINIO_UPDATE=off \
		"$bin" server --quiet --address "$S3" "$S3_DATA"
	if wait_for 60 http_ok "http://$S3/minio/health/ready"; then
		pass "fleet: MinIO $("$bin" --version 2>/dev/null | awk 'NR == 1 { print $3 }') ready on $S3"
	else
		fail "fleet: MinIO ready" "GET /minio/health/ready not 200 within 60s$(bg_alive minio || echo '; it exited')"
		tail_of "$S3_LOG" 10
		return 1
	fi
	run_client "$OUT/s3bucket" 180 go run ./test/e2e/s3bucket --endpoint "http://$S3" \
		--access-key "$S3_KEY" --secret-key "$S3_SECRET" --bucket "$S3_BUCKET"
	v=$?
	if [ $v = 0 ] && [ -d "$S3_DATA/$S3_BUCKET" ]; then
		pass "fleet: go run ./test/e2e/s3bucket created bucket $S3_BUCKET"
	else
		cmd_fail "fleet: go run ./test/e2e/s3bucket" "$OUT/s3bucket" $v
		return 1
	fi
}

# fl_config NAME ADDR UPSTREAM_URL [secretkey_file]: a replica's configuration,
# the storage block as docs/fleet.md has it, written to $FL_DIR/NAME.yaml.
fl_config() {
	local name=$1 addr=$2 up=$3 key_line="secretkey: $S3_SECRET"
	if [ "${4:-}" = secretkey_file ]; then
		printf '%s\n' "$S3_SECRET" >"$FL_DIR/s3-secret"
		key_line="secretkey_file: $FL_DIR/s3-secret"
	fi
	cat >"$FL_DIR/$name.yaml" <<EOF
listen: "$addr"
cache:
  dir: $FL_DIR/cache-$name
  tag_ttl: 5m
storage:
  s3:
    bucket: $S3_BUCKET
    region: us-east-1
    regionendpoint: http://$S3
    accesskey: $S3_KEY
    $key_line
    secure: false
    forcepathstyle: true
upstreams:
  docker.io:
    url: $up
log:
  level: info
  format: json
EOF
}

# fl_start NAME ADDR [AS]: start the replica NAME (its configuration
# $FL_DIR/NAME.yaml) as the process mirror-AS (default NAME), logging to
# $LOGS/mirror-AS.log; healthy within 30 s.
fl_start() {
	local name=$1 addr=$2 as=mirror-${3:-$1}
	start_bg "$as" "$LOGS/$as.log" "$TMP/breakwater" serve --config "$FL_DIR/$name.yaml"
	if wait_for 30 http_ok "http://$addr/healthz"; then
		pass "fleet: $as healthy on $addr (storage.s3 bucket $S3_BUCKET)"
	else
		fail "fleet: $as start" "GET /healthz not 200 within 30s$(bg_alive "$as" || echo '; the process exited')"
		tail_of "$LOGS/$as.log" 10
		return 1
	fi
}

# ---- the store's contents ----------------------------------------------------

# fl_has KEY: the bucket holds the object KEY. MinIO's single-drive layout
# keeps each object as a directory named after its key under DATA/BUCKET/,
# with its metadata (and a small object's bytes) in xl.meta; MinIO writes
# it elsewhere and renames it in place once the object is complete.
fl_has() { [ -f "$S3_DATA/$S3_BUCKET/$1/xl.meta" ]; }

# fl_missing: the objects the store still lacks for library/e2e:v1 as warm
# fetched it, one a line (nothing once the uploads are done): the manifest
# and the 4 blobs, a link for each blob, the manifest's record, a tag record.
fl_missing() {
	local d h
	for d in "$D_E2E" "${FL_BLOBS[@]}"; do
		h=${d#sha256:}
		fl_has "blobs/sha256/${h:0:2}/$h" || echo "blobs/sha256/${h:0:2}/$h"
	done
	for d in "${FL_BLOBS[@]}"; do
		h=${d#sha256:}
		fl_has "repos/$FL_REPO/_links/sha256/$h" || echo "repos/$FL_REPO/_links/sha256/$h"
	done
	h=${D_E2E#sha256:}
	fl_has "repos/$FL_REPO/_manifests/sha256/$h" || echo "repos/$FL_REPO/_manifests/sha256/$h"
	compgen -G "$S3_DATA/$S3_BUCKET/repos/$FL_REPO/_tags/v1/*/xl.meta" >/dev/null || echo "repos/$FL_REPO/_tags/v1/*"
}
fl_complete() { [ -z "$(fl_missing)" ]; }

# fl_upstream_e2e MARK: the upstream's requests for library/e2e from line
# MARK of its log on ("METHOD URI STATUS").
fl_upstream_e2e() { http_lines "$LOGS/upstream.log" "$1" | awk '$2 ~ /^\/v2\/library\/e2e\//'; }

# fl_pull NAME HOSTS_DIR REF LOG: empty containerd's store, pull REF through
# the replica whose hosts.toml is in HOSTS_DIR; checks the digest and that
# the replica's log (LOG, from before the pull) has a 200 GET of each of the
# 4 blobs. Returns the pull's status.
fl_pull() {
	local n=$1 hosts=$2 ref=$3 log=$4 out mark rc d got
	out=$OUT/fleet-pull-$(printf '%s' "$n" | tr -c 'a-z0-9-' '-')
	empty_containerd "$n"
	mark=$(log_mark "$log")
	run_client "$out" "$PULL_SECS" "${CTR[@]}" images pull --hosts-dir "$hosts" "$ref"
	rc=$?
	if [ $rc = 0 ]; then
		pass "$n: ctr images pull $ref"
	else
		cmd_fail "$n: ctr images pull $ref" "$out" $rc
		return $rc
	fi
	d=$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }')
	expect_eq "$n: image digest is upstream's" "$D_E2E" "$d" "digest"
	got=$(http_lines "$log" "$mark" | grep -E "$BLOB_GET_200" | awk '{ d = $2; sub(/.*\/blobs\//, "", d); sub(/\?.*/, "", d); print d }' | sort -u)
	if [ "$got" = "$(printf '%s\n' "${FL_BLOBS[@]}" | sort -u)" ]; then
		pass "$n: config and 3 layers answered 200 by the replica"
	else
		fail "$n: config and 3 layers answered 200 by the replica" "its log since the pull:"
		http_lines "$log" "$mark" | tail -n 15 | sed 's/^/    | /'
	fi
	return 0
}

# fl_metric ADDR NAME OUT: the sum of the metric NAME's series at ADDR
# (Prometheus' text format; the exporter adds otel_scope_* labels), empty
# when it has none; the whole page to OUT.
fl_metric() {
	curl -s -m 5 "http://$1/metrics" >"$3"
	awk -v m="$2" '$1 == m || index($1, m "{") == 1 { n += $NF; f = 1 } END { if (f) printf "%d\n", n }' "$3"
}

# ---- the phase -------------------------------------------------------------------

fl_run() {
	local out rc hosts2=$TMP/certs.d-fleet-2 hosts3=$TMP/certs.d-fleet-3 i missing up_mark up_lines
	local up_blobs0 up_blobs1 bytes

	fl_minio || return 1
	fl_config fleet-1 "$FL1" "http://$UP"
	fl_config fleet-2 "$FL2" "http://$UP"
	fl_start fleet-1 "$FL1" || return 1
	fl_start fleet-2 "$FL2" || return 1

	# 1. warm through fleet-1
	out=$OUT/fleet-warm
	run_client "$out" "$PULL_SECS" "$TMP/breakwater" warm --mirror "http://$FL1" library/e2e:v1
	rc=$?
	if [ $rc = 0 ]; then
		pass "fleet-1: breakwater warm --mirror http://$FL1 library/e2e:v1"
	else
		cmd_fail "fleet-1: breakwater warm --mirror http://$FL1 library/e2e:v1" "$out" $rc
		return 1
	fi
	# the blobs: the manifest's config and layers, as fleet-1 has it cached
	# (by digest: no upstream request)
	curl -s -m 5 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$FL1/v2/library/e2e/manifests/$D_E2E" >"$FL_DIR/manifest.json"
	mapfile -t FL_BLOBS < <(grep -oE 'sha256:[0-9a-f]{64}' "$FL_DIR/manifest.json" | sort -u)
	# the sizes of the config and the layers, the manifest's only "size"s
	FL_BYTES=$(grep -oE '"size": *[0-9]+' "$FL_DIR/manifest.json" | awk -F: '{ n += $2 } END { print n + 0 }')
	if [ "${#FL_BLOBS[@]}" != 4 ]; then
		fail "fleet-1: the manifest names a config and 3 layers" "found ${#FL_BLOBS[@]} digests in it"
		return 1
	fi

	# 2. the uploads run after warm's answers: wait for every object
	for ((i = 0; i < FL_WAIT * 5; i++)); do
		fl_complete && break
		sleep 0.2
	done
	missing=$(fl_missing)
	if [ -z "$missing" ]; then
		pass "fleet-1: the store holds the manifest, 4 blobs, their links, the manifest and tag records ($(awk -v t="$i" 'BEGIN { printf "%.1f", t / 5 }') s after warm)"
	else
		fail "fleet-1: the store holds what warm fetched" "after ${FL_WAIT}s still missing in $S3_DATA/$S3_BUCKET:"
		# shellcheck disable=SC2001 # prefixes every line
		sed "s/^/    | /" <<<"$missing"
		return 1
	fi

	# 3. pull through fleet-2: nothing from the upstream
	if ! "$TMP/breakwater" containerd-config --mirror "http://$FL2" --dir "$hosts2" >"$OUT/containerd-config-fleet-2" 2>&1; then
		cmd_fail "fleet-2: breakwater containerd-config --mirror http://$FL2" "$OUT/containerd-config-fleet-2" 1
		return 1
	fi
	up_mark=$(log_mark "$LOGS/upstream.log")
	up_blobs0=$(upstream_blob_gets "$LOGS/upstream.log")
	note "upstream before fleet-2's pull: $up_blobs0 blob GETs, $(http_lines "$LOGS/upstream.log" | awk '($1 == "GET" || $1 == "HEAD") && $2 ~ /^\/v2\/library\/e2e\/manifests\//' | wc -l) manifest GETs and HEADs for library/e2e"
	if fl_pull "fleet-2" "$hosts2" "$E2E_REF" "$LOGS/mirror-fleet-2.log"; then
		up_lines=$(fl_upstream_e2e "$up_mark")
		up_blobs1=$(upstream_blob_gets "$LOGS/upstream.log")
		if [ -z "$up_lines" ] && [ "$up_blobs1" = "$up_blobs0" ]; then
			pass "fleet-2: the upstream saw no request for library/e2e (no blob GET, no manifest GET or HEAD)"
		else
			fail "fleet-2: the upstream saw no request for library/e2e" "blob GETs $up_blobs0 -> $up_blobs1; its requests for library/e2e during the pull:"
			echo "$up_lines" | head -n 15 | sed 's/^/    | /'
		fi
		bytes=$(fl_metric "$FL2" breakwater_shared_fetched_bytes_total "$OUT/fleet-2-metrics")
		expect_eq "fleet-2: read the 4 blobs' $FL_BYTES bytes from the store (breakwater_shared_fetched_bytes_total)" \
			"$FL_BYTES" "$bytes" "bytes"
		[ "$bytes" = "$FL_BYTES" ] || grep '^breakwater_shared' "$OUT/fleet-2-metrics" | sed 's/^/    | /'
	else
		skip "fleet-2: the upstream saw no request for library/e2e" "the pull failed"
		skip "fleet-2: read the 4 blobs from the store" "the pull failed"
	fi

	# 4. fleet-3: an empty cache, and its upstream a port nothing listens on;
	# by tag, then restarted with its cache emptied again, by digest.
	fl_config fleet-3 "$FL3" "http://$FL_DEAD" secretkey_file
	fl_start fleet-3 "$FL3" || return 1
	if ! "$TMP/breakwater" containerd-config --mirror "http://$FL3" --dir "$hosts3" >"$OUT/containerd-config-fleet-3" 2>&1; then
		cmd_fail "fleet-3: breakwater containerd-config --mirror http://$FL3" "$OUT/containerd-config-fleet-3" 1
		return 1
	fi
	fl_pull "fleet-3[tag]" "$hosts3" "$E2E_REF" "$LOGS/mirror-fleet-3.log"
	# the upstream it was given is dead indeed (curl: 7, could not connect)
	curl -s -o /dev/null -m 3 "http://$FL_DEAD/v2/"
	expect_eq "fleet-3: its upstream http://$FL_DEAD refuses connections" 7 $? "curl's exit status"
	stop_bg mirror-fleet-3 10
	rm -rf "$FL_DIR/cache-fleet-3"
	fl_start fleet-3 "$FL3" fleet-3-restarted || return 1
	fl_pull "fleet-3[digest]" "$hosts3" "docker.io/library/e2e@$D_E2E" "$LOGS/mirror-fleet-3-restarted.log"

	# 5. nor later: nothing a replica did in the background asked either
	up_lines=$(fl_upstream_e2e "$up_mark")
	if [ -z "$up_lines" ]; then
		pass "fleet: the upstream saw no request for library/e2e from fleet-2's pull to the phase's end"
	else
		fail "fleet: the upstream saw no request for library/e2e from fleet-2's pull to the phase's end" "it saw:"
		echo "$up_lines" | head -n 15 | sed 's/^/    | /'
	fi
}

# fl_clean: no replica that ran answered a 5xx or logged a shared store
# failure (level WARN, "msg":"shared store", an "op"; the INFO line at
# start names the driver).
fl_clean() {
	local n bad errs
	for n in fleet-1 fleet-2 fleet-3 fleet-3-restarted; do
		[ -f "$LOGS/mirror-$n.log" ] || continue
		bad=$(http_lines "$LOGS/mirror-$n.log" | awk '$3 >= 500')
		errs=$(grep '"level":"WARN"' "$LOGS/mirror-$n.log" | grep -c '"msg":"shared store"')
		if [ -z "$bad" ] && [ "$errs" = 0 ]; then
			pass "$n: answered no 5xx, no shared store failure logged"
		else
			fail "$n: answered no 5xx, no shared store failure logged" "$(printf '%s' "$bad" | grep -c .) 5xx answers, $errs shared store failures:"
			{
				printf '%s\n' "$bad" | head -n 5
				grep '"level":"WARN"' "$LOGS/mirror-$n.log" | grep '"msg":"shared store"' | head -n 5 | cut -c1-300
			} | grep . | sed 's/^/    | /'
		fi
	done
}

if [ -z "$CTRD_UP" ]; then
	fail "fleet: containerd" "containerd is not running"
else
	fl_run
	fl_clean
fi
for n in mirror-fleet-3-restarted mirror-fleet-3 mirror-fleet-2 mirror-fleet-1 minio; do stop_bg "$n" 10; done
note "fleet phase: $(($(date +%s) - FLEET_T0))s"
