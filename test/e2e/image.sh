# shellcheck shell=bash
# The image phase of test/e2e/run.sh, sourced by it after the auth phase (it
# uses run.sh's clients, helpers and variables). See test/e2e/README.md,
# "The image phase".
#
# Breakwater's container image, used the way an operator uses it:
#
#   make image                 an OCI layout for linux/amd64 and linux/arm64,
#                              without a Docker daemon
#   skopeo inspect oci:...     the layout is an index of both platforms
#   ctr images import          into the e2e's containerd
#   ctr run ... version        the version the build stamped
#   ctr run -d ... serve       Breakwater from the image, in the host's
#                              network, its configuration bind-mounted at
#                              /etc/breakwater, running as uid 65532
#   ctr images pull            library/e2e:v1 through the containerised
#                              Breakwater, every blob through it
#   ctr task kill -s SIGTERM   it drains and exits 0
#
# ctr run replaces the image's entrypoint with the command it is given, so
# the binary's path is named; Kubernetes and docker keep the entrypoint.

IMG_OUT=$TMP/image
IMG_VERSION=$(cat "$ROOT/VERSION")
IMG_REF=ghcr.io/breakwater-registry/breakwater:$IMG_VERSION
IMG_BIN=/usr/local/bin/breakwater
BWI_PORT=$(free_port)
BWI=127.0.0.1:$BWI_PORT
BWI_LOG=$LOGS/mirror-image.log
HOSTSI=$TMP/certs.d-image
IMG_CONF=$TMP/image-conf

echo "== image: make image, then Breakwater from it under containerd on $BWI"
IMG_T0=$(date +%s)

img_build() {
	local out=$OUT/make-image rc index
	run_client "$out" 600 make -C "$ROOT" image IMAGE_OUT="$IMG_OUT"
	rc=$?
	if [ $rc != 0 ]; then
		cmd_fail "image: make image" "$out" $rc
		return 1
	fi
	pass "image: make image wrote $IMG_OUT ($(du -sh "$IMG_OUT" | awk '{print $1}'))"
	run_client "$OUT/image-inspect" 60 "${SKOPEO[@]}" inspect --raw "oci:$IMG_OUT:$IMG_VERSION"
	rc=$?
	if [ $rc != 0 ]; then
		cmd_fail "image: skopeo inspect --raw oci:$IMG_OUT:$IMG_VERSION" "$OUT/image-inspect" $rc
		return 1
	fi
	index=$(tail -n 1 "$OUT/image-inspect")
	if grep -q '"application/vnd.oci.image.index.v1+json"' <<<"$index" &&
		grep -q '"architecture":"amd64"' <<<"$index" && grep -q '"architecture":"arm64"' <<<"$index"; then
		pass "image: the layout is an OCI index for linux/amd64 and linux/arm64 (skopeo inspect oci:)"
	else
		fail "image: an OCI index for linux/amd64 and linux/arm64" "skopeo inspect --raw printed: $index"
	fi
	if ! tar -C "$IMG_OUT" -cf "$TMP/image.tar" . 2>"$OUT/image-tar"; then
		fail "image: tar the layout" "$(cat "$OUT/image-tar")"
		return 1
	fi
	run_client "$OUT/ctr-import" 120 "${CTR[@]}" images import "$TMP/image.tar"
	rc=$?
	if [ $rc != 0 ]; then
		cmd_fail "image: ctr images import" "$OUT/ctr-import" $rc
		return 1
	fi
	if ctr_ images ls -q 2>/dev/null | grep -qx "$IMG_REF"; then
		pass "image: ctr images import named it $IMG_REF"
	else
		fail "image: ctr images import" "no image $IMG_REF; ctr images ls -q: $(ctr_ images ls -q | tr '\n' ' ')"
		return 1
	fi
}

img_version() {
	local out=$OUT/ctr-run-version rc got
	E2E_CTR_TASKS+=(bw-e2e-version)
	run_client "$out" 60 "${CTR[@]}" run --rm "$IMG_REF" bw-e2e-version "$IMG_BIN" version
	rc=$?
	got=$(tail -n 1 "$out")
	if [ $rc = 0 ] && [[ $got == "breakwater $IMG_VERSION (revision "* ]]; then
		pass "image: ctr run ... breakwater version says $got"
	else
		fail "image: ctr run ... breakwater version" "status $rc, printed '$got', want 'breakwater $IMG_VERSION (revision ...)'"
	fi
}

img_serve() {
	local out=$OUT/ctr-run-serve rc pid uid
	mkdir -p "$IMG_CONF"
	# The image's own default (the bundled config.yaml) but for the
	# address and the upstream; the cache's relative dir lands in the
	# image's working directory, /var/lib/breakwater.
	cat >"$IMG_CONF/config.yaml" <<EOF
listen: "$BWI"
cache:
  dir: ./data
upstreams:
  docker.io:
    url: http://$UP
EOF
	chmod 644 "$IMG_CONF/config.yaml"
	E2E_CTR_TASKS+=(bw-e2e-serve)
	run_client "$out" 60 "${CTR[@]}" run -d --net-host --log-uri "file://$BWI_LOG" \
		--mount "type=bind,src=$IMG_CONF,dst=/etc/breakwater,options=rbind:ro" "$IMG_REF" bw-e2e-serve
	rc=$?
	if [ $rc != 0 ]; then
		cmd_fail "image: ctr run -d $IMG_REF (serve)" "$out" $rc
		return 1
	fi
	if wait_for 30 http_ok "http://$BWI/healthz"; then
		pass "image: serve from the image is healthy on $BWI"
	else
		fail "image: serve from the image" "GET http://$BWI/healthz not 200 within 30s; its log:"
		tail_of "$BWI_LOG" 15
		return 1
	fi
	pid=$(ctr_ task ls 2>/dev/null | awk '$1 == "bw-e2e-serve" { print $2 }')
	uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
	expect_eq "image: serve runs as the image's user" 65532 "$uid" "uid"
}

img_pull() {
	local mark out=$OUT/ctr-pull-image rc d
	if ! "$TMP/breakwater" containerd-config --mirror "http://$BWI" --dir "$HOSTSI" >"$OUT/containerd-config-image" 2>&1; then
		cmd_fail "image: breakwater containerd-config --mirror http://$BWI" "$OUT/containerd-config-image" 1
		return 1
	fi
	# Nothing in the content store: every blob must come through.
	empty_containerd "image"
	mark=$(log_mark "$BWI_LOG")
	run_client "$out" "$PULL_SECS" "${CTR[@]}" images pull --hosts-dir "$HOSTSI" "$E2E_REF"
	rc=$?
	if [ $rc = 0 ]; then
		pass "image: ctr images pull $E2E_REF through Breakwater from the image"
	else
		cmd_fail "image: ctr images pull $E2E_REF through Breakwater from the image" "$out" $rc
		return 1
	fi
	d=$(ctr_ images ls "name==$E2E_REF" 2>/dev/null | awk 'NR > 1 { print $3 }')
	expect_eq "image: pulled digest is upstream's" "$D_E2E" "$d" "digest"
	if [ "$(http_lines "$BWI_LOG" "$mark" | grep -Ec "$BLOB_GET_200")" -ge 4 ]; then
		pass "image: config and 3 layers came through the containerised Breakwater"
	else
		fail "image: every blob through the containerised Breakwater" "its log since the pull:"
		http_lines "$BWI_LOG" "$mark" | tail -n 15 | sed 's/^/    | /'
	fi
}

img_stop() {
	local i state
	ctr_ task kill -s SIGTERM bw-e2e-serve >"$OUT/ctr-kill" 2>&1
	for ((i = 0; i < 40; i++)); do
		state=$(ctr_ task ls 2>/dev/null | awk '$1 == "bw-e2e-serve" { print $3 }')
		[ "$state" = STOPPED ] && break
		sleep 0.25
	done
	# The shim copies the task's output to the log after the task is
	# STOPPED: its last line may come a moment later, and a shim that the
	# delete below ends first may never copy it (seen twice, the second
	# time with the wait after the delete). So wait while the shim lives.
	for ((i = 0; i < 40; i++)); do
		grep -q '"msg":"stopped"' "$BWI_LOG" && break
		sleep 0.25
	done
	# ctr task delete says a non-zero exit status in a warning.
	ctr_ task delete bw-e2e-serve >"$OUT/ctr-delete" 2>&1
	if [ "$state" = STOPPED ] && ! grep -q "non-zero exit code" "$OUT/ctr-delete" && grep -q '"msg":"stopped"' "$BWI_LOG"; then
		pass "image: SIGTERM drained and stopped it with exit status 0"
	else
		fail "image: SIGTERM stops it with exit status 0" "task $state; ctr task delete: $(cat "$OUT/ctr-delete"); its log:"
		tail_of "$BWI_LOG" 5
	fi
}

if [ -z "$CTRD_UP" ]; then
	fail "image: containerd" "containerd is not running"
elif img_build; then
	img_version
	if img_serve; then
		img_pull
		img_stop
	fi
fi
remove_ctr_tasks
note "image phase: $(($(date +%s) - IMG_T0))s"
