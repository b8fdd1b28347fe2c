# shellcheck shell=bash
# The auth phase of test/e2e/run.sh, sourced by it after the outage phase
# (it uses run.sh's clients, helpers and variables). See test/e2e/README.md,
# "The auth phase".
#
# One more Breakwater, mirror-auth, in front of the upstream registry with
# client authentication on: a bcrypt htpasswd file written by `htpasswd -B`
# (Debian's apache2-utils, installed when missing) with two users,
#
#   alice  may pull docker.io/library/ only
#   ops    may pull everything
#
# and anonymous clients docker.io/library/e2e-docker only. Each client logs
# in the way it does
# (ctr --user, docker login, podman login, skopeo --creds) and pulls
# library/e2e:v1; without credentials it must fail with an error classify
# rates fatal; as alice, acme/e2e-private:v1 (pushed by the seed for this
# phase) must fail with 403 by tag and by digest, rated fatal, without
# mirror-auth asking the upstream for it.

AUTH_SECS=30 # timeout of a pull that is expected to fail (they fail at once)
AUTH_ERRORS=$OUT/auth-errors.txt
: >"$AUTH_ERRORS"
# shellcheck disable=SC2034 # expect_failed (lib.sh) reads it
E2E_ERRORS=$AUTH_ERRORS # where expect_failed records
BWA_PORT=$(free_port)
BWA=127.0.0.1:$BWA_PORT
BWA_LOG=$LOGS/mirror-auth.log
AUTH_DIR=$TMP/auth
HOSTSA=$TMP/certs.d-auth
PRIVATE_REF=docker.io/acme/e2e-private:v1
# Passwords of this run only: the log check looks for them.
ALICE_PW=alice-$RANDOM$RANDOM
OPS_PW=ops-$RANDOM$RANDOM

echo "== auth: mirror-auth $BWA with an htpasswd file; alice may pull docker.io/library/ only, ops everything, anonymous nothing"
AUTH_T0=$(date +%s)
mkdir -p "$AUTH_DIR" "$HOSTSA/docker.io"

# ---- set up ------------------------------------------------------------------

auth_setup() {
	if [ ! -x "$TMP/breakwater" ]; then
		run_client "$OUT/bw-build" 300 go build -o "$TMP/breakwater" ./cmd/breakwater ||
			{ cmd_fail "auth: go build ./cmd/breakwater" "$OUT/bw-build" $?; return 1; }
	fi
	if ! command -v htpasswd >/dev/null 2>&1; then
		note "installing apache2-utils (htpasswd)"
		export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l
		if ! run_client "$OUT/apt-apache2-utils" 300 apt-get install -y apache2-utils; then
			run_client "$OUT/apt-update" 180 apt-get update
			run_client "$OUT/apt-apache2-utils" 300 apt-get install -y apache2-utils
		fi
	fi
	if ! command -v htpasswd >/dev/null 2>&1; then
		fail "auth: htpasswd present" "apt-get install -y apache2-utils did not provide it"
		tail_of "$OUT/apt-apache2-utils" 10
		return 1
	fi
	if htpasswd -B -b -c "$AUTH_DIR/htpasswd" alice "$ALICE_PW" >"$OUT/htpasswd" 2>&1 &&
		htpasswd -B -b "$AUTH_DIR/htpasswd" ops "$OPS_PW" >>"$OUT/htpasswd" 2>&1 &&
		htpasswd -m -b -c "$AUTH_DIR/htpasswd-md5" alice "$ALICE_PW" >>"$OUT/htpasswd" 2>&1; then
		pass "auth: htpasswd -B wrote alice and ops ($(cut -d: -f2 "$AUTH_DIR/htpasswd" | cut -c1-7 | sort -u | tr '\n' ' '| sed 's/ $//'))"
	else
		fail "auth: htpasswd -B" "$(cat "$OUT/htpasswd")"
		return 1
	fi
	if run_client "$OUT/seed-auth" 240 go run ./test/e2e/seed --registry "$UP" --only acme/e2e-private; then
		D_PRIVATE=$(tr ' ' '\n' <"$OUT/seed-auth" | sed -n 's/^e2e-private=//p' | tail -n 1)
		pass "auth: seed pushed acme/e2e-private:v1 ($D_PRIVATE)"
	else
		cmd_fail "auth: seed acme/e2e-private" "$OUT/seed-auth" $?
		return 1
	fi
	cat >"$AUTH_DIR/config.yaml" <<EOF
upstreams:
  docker.io:
    url: http://$UP
warm:
  api_enabled: true
auth:
  htpasswd: $AUTH_DIR/htpasswd
  realm: breakwater-e2e
  access:
    - users: [alice]
      repositories: ["docker.io/library/"]
    - users: [ops]
      repositories: ["*"]
    - anonymous: true
      repositories: ["docker.io/library/e2e-docker"]
log:
  level: info
  format: json
EOF
	sed "s|$AUTH_DIR/htpasswd|$AUTH_DIR/htpasswd-md5|" "$AUTH_DIR/config.yaml" >"$AUTH_DIR/config-md5.yaml"
	cat >"$HOSTSA/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$BWA"]
  capabilities = ["pull", "resolve"]
EOF
}

# auth_refuses_md5: an htpasswd file that is not bcrypt stops Breakwater at
# start (exit 2) with the file's path and line.
auth_refuses_md5() {
	local out=$OUT/auth-md5 rc want
	run_client "$out" 20 "$TMP/breakwater" serve --config "$AUTH_DIR/config-md5.yaml" --listen "127.0.0.1:$(free_port)" \
		--cache-dir "$TMP/cache-auth-md5"
	rc=$?
	want="auth.htpasswd: htpasswd $AUTH_DIR/htpasswd-md5: line 1: user \"alice\": an MD5 hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B"
	if [ $rc = 2 ] && grep -qF -- "$want" "$out"; then
		pass "auth: an MD5 htpasswd (htpasswd -m) is refused at start, exit 2, naming the file and line"
	else
		fail "auth: an MD5 htpasswd is refused at start" "exit $rc, want 2 and '$want'"
		tail_of "$out" 5
	fi
	printf '%s\texit %s: %s\n' "auth: breakwater serve with an MD5 htpasswd" "$rc" "$(head -n 1 "$out")" >>"$AUTH_ERRORS"
}

if auth_setup; then
	auth_refuses_md5
	start_bg mirror-auth "$BWA_LOG" "$TMP/breakwater" serve --config "$AUTH_DIR/config.yaml" --listen "$BWA" \
		--cache-dir "$TMP/cache-auth"
	if wait_for 30 http_ok "http://$BWA/healthz"; then
		pass "auth: mirror-auth healthy (GET /healthz = 200 without credentials)"
	else
		fail "auth: mirror-auth start" "GET /healthz not 200 within 30s$(bg_alive mirror-auth || echo '; the process exited')"
		tail_of "$BWA_LOG" 10
	fi
fi

# ---- helpers -------------------------------------------------------------------

# a_ok NAME OUT CMD...: CMD must succeed.
a_ok() {
	local n=$1 out=$2 rc
	shift 2
	run_client "$out" "$PULL_SECS" "$@"
	rc=$?
	if [ $rc = 0 ]; then pass "$n"; else cmd_fail "$n" "$out" $rc; fi
	return $rc
}

# a_fail NAME CLIENT WANT_EXIT NEEDLE... -- CMD...: CMD must fail (see
# expect_failed), with every NEEDLE in its error, rated WANT_EXIT by
# classify.
# DENIED_LINE is the status line of Breakwater's own 403: containerd's
# manifest HEAD prints nothing else, so it says who refused.
DENIED_LINE="403 Forbidden (this mirror's access list does not grant the pull)"

a_fail() {
	local n=$1 client=$2 want=$3 out rc needles=()
	shift 3
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		needles+=("$1")
		shift
	done
	shift
	out=$OUT/a-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	run_client "$out" "$AUTH_SECS" "$@"
	rc=$?
	expect_failed "$n" "$client" "$out" $rc "$want" "${needles[@]}"
}

# a_curl NAME WANT_STATUS WANT_CODE [CURL ARGS...] URL: curl's status and
# the OCI error code of the body (or "-" for none) must be these. The
# headers are left in $A_CURL.h.
A_CURL=""
a_curl() {
	local n=$1 status=$2 code=$3 f got gotcode
	shift 3
	f=$OUT/a-curl-$(echo "$n" | tr -c 'a-zA-Z0-9\n' '-')
	A_CURL=$f
	got=$(curl -sS -m 10 -o "$f.b" -D "$f.h" -w '%{http_code}' "$@" 2>"$f.err")
	gotcode=$(sed -n 's/.*"code":"\([^"]*\)".*/\1/p' "$f.b" 2>/dev/null)
	printf '%s\t%s %s\n' "$n" "$(head -n 1 "$f.h" | tr -d '\r')" "$(cat "$f.b" 2>/dev/null)" >>"$AUTH_ERRORS"
	expect_eq "$n" "$status ${code}" "$got ${gotcode:--}" "status and error code"
}

# upstream_saw_private FROM: upstream requests for acme/e2e-private from
# line FROM of its log.
upstream_saw_private() { http_lines "$LOGS/upstream.log" "$1" | grep -c ' /v2/acme/e2e-private/'; }

# ---- the checks -------------------------------------------------------------------

if bg_alive mirror-auth; then
	echo "== auth[curl]: the challenge, 403 DENIED for blobs too"
	a_curl "auth[curl]: GET /v2/ without credentials: 401 UNAUTHORIZED" 401 UNAUTHORIZED "http://$BWA/v2/"
	ch=$(awk 'tolower($1) == "www-authenticate:" { $1 = ""; print substr($0, 2) }' "$A_CURL.h" | tr -d '\r')
	expect_eq "auth[curl]: the 401 carries the Basic challenge" 'Basic realm="breakwater-e2e"' "$ch" "WWW-Authenticate"
	a_curl "auth[curl]: GET /v2/ as alice: 200" 200 - -u "alice:$ALICE_PW" "http://$BWA/v2/"
	a_curl "auth[curl]: GET /v2/ with a wrong password: 401" 401 UNAUTHORIZED -u "alice:nope" "http://$BWA/v2/"
	a_curl "auth[curl]: status page without credentials: 401" 401 UNAUTHORIZED "http://$BWA/_breakwater/v1/status"
	a_curl "auth[curl]: /readyz stays open: 200" 200 - "http://$BWA/readyz"
	# a layer of acme/e2e-private, from the upstream itself
	P_BLOB=$(curl -sS -m 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$UP/v2/acme/e2e-private/manifests/v1" |
		grep -o '"digest":"sha256:[0-9a-f]*"' | sed -n '2p' | cut -d'"' -f4)
	upm=$(log_mark "$LOGS/upstream.log")
	a_curl "auth[curl]: alice GETs acme/e2e-private's layer by digest: 403 DENIED" 403 DENIED -u "alice:$ALICE_PW" \
		"http://$BWA/v2/acme/e2e-private/blobs/$P_BLOB?ns=docker.io"
	a_curl "auth[curl]: alice GETs acme/e2e-private's manifest by digest: 403 DENIED" 403 DENIED -u "alice:$ALICE_PW" \
		"http://$BWA/v2/docker.io/acme/e2e-private/manifests/$D_PRIVATE"
	a_curl "auth[curl]: warm API, alice, acme/e2e-private: 403 DENIED" 403 DENIED -u "alice:$ALICE_PW" -X POST \
		-d '{"images":["library/e2e-docker:v1","acme/e2e-private:v1"]}' "http://$BWA/_breakwater/v1/warm"
	a_curl "auth[curl]: warm API, alice, library/e2e-docker: 200" 200 - -u "alice:$ALICE_PW" -X POST \
		-d '{"images":["library/e2e-docker:v1"]}' "http://$BWA/_breakwater/v1/warm"
	expect_eq "auth[curl]: nothing denied reached the upstream" 0 "$(upstream_saw_private "$upm")" "upstream requests for acme/e2e-private"

	echo "== auth[containerd]: ctr images pull --user"
	if [ -n "$CTRD_UP" ]; then
		empty_containerd "auth[containerd]"
		upm=$(log_mark "$LOGS/upstream.log")
		if a_ok "auth[containerd]: ctr images pull --user alice:... --hosts-dir $E2E_REF" "$OUT/a-ctr-alice" \
			"${CTR[@]}" images pull --user "alice:$ALICE_PW" --hosts-dir "$HOSTSA" "$E2E_REF"; then
			d=$(ctr_ images ls "name==$E2E_REF" 2>/dev/null | awk 'NR > 1 { print $3 }')
			expect_eq "auth[containerd]: image digest is upstream's" "$D_E2E" "$d" "digest"
		fi
		empty_containerd "auth[containerd] again"
		a_fail "auth[containerd]: without --user" ctr 1 "401 Unauthorized" -- \
			"${CTR[@]}" images pull --hosts-dir "$HOSTSA" "$E2E_REF"
		a_fail "auth[containerd]: --user with a wrong password" ctr 1 "401 Unauthorized" -- \
			"${CTR[@]}" images pull --user "alice:wrong" --hosts-dir "$HOSTSA" "$E2E_REF"
		a_fail "auth[containerd]: alice, $PRIVATE_REF by tag" ctr 1 "$DENIED_LINE" -- \
			"${CTR[@]}" images pull --user "alice:$ALICE_PW" --hosts-dir "$HOSTSA" "$PRIVATE_REF"
		a_fail "auth[containerd]: alice, acme/e2e-private by digest" ctr 1 "$DENIED_LINE" -- \
			"${CTR[@]}" images pull --user "alice:$ALICE_PW" --hosts-dir "$HOSTSA" "docker.io/acme/e2e-private@$D_PRIVATE"
		expect_eq "auth[containerd]: nothing denied reached the upstream" 0 "$(upstream_saw_private "$upm")" "upstream requests for acme/e2e-private"
		# What the access list grants anonymous clients needs no --user.
		if a_ok "auth[containerd]: anonymous, ctr images pull docker.io/library/e2e-docker:v1 (granted to anonymous)" "$OUT/a-ctr-anon" \
			"${CTR[@]}" images pull --hosts-dir "$HOSTSA" docker.io/library/e2e-docker:v1; then
			d=$(ctr_ images ls "name==docker.io/library/e2e-docker:v1" 2>/dev/null | awk 'NR > 1 { print $3 }')
			expect_eq "auth[containerd]: anonymous, e2e-docker's digest is upstream's" "$D_DOCKER" "$d" "digest"
		fi
	else
		fail "auth[containerd]" "containerd is not running"
	fi

	echo "== auth[docker]: docker login, docker pull $BWA/..."
	if [ -n "$DOCKER_UP" ]; then
		empty_docker "auth[docker]"
		# dockerd sends no request without credentials once /v2/ asked for
		# Basic ones, even for what is granted to anonymous clients.
		a_fail "auth[docker]: docker pull without login (of what anonymous clients may pull)" docker 1 "no basic auth credentials" -- \
			"${DOCKER[@]}" pull "$BWA/library/e2e-docker:v1"
		run_client "$OUT/a-docker-login-bad" 30 sh -c "echo nope | $(printf '%q ' "${DOCKER[@]}") login -u alice --password-stdin $BWA"
		rc=$?
		if [ $rc != 0 ]; then
			pass "auth[docker]: docker login with a wrong password fails (exit $rc)"
		else
			fail "auth[docker]: docker login with a wrong password fails" "it succeeded"
		fi
		printf '%s\t%s\n' "auth[docker]: docker login -u alice (wrong password)" "$(grep -v '^[[:space:]]*$' "$OUT/a-docker-login-bad" | tail -n 1)" >>"$AUTH_ERRORS"
		if run_client "$OUT/a-docker-login" 30 sh -c "printf '%s' '$ALICE_PW' | $(printf '%q ' "${DOCKER[@]}") login -u alice --password-stdin $BWA" &&
			grep -q 'Login Succeeded' "$OUT/a-docker-login"; then
			pass "auth[docker]: docker login $BWA -u alice: Login Succeeded"
		else
			cmd_fail "auth[docker]: docker login $BWA -u alice" "$OUT/a-docker-login" 1
		fi
		upm=$(log_mark "$LOGS/upstream.log")
		if a_ok "auth[docker]: docker pull $BWA/library/e2e-docker:v1 as alice" "$OUT/a-docker-pull" \
			"${DOCKER[@]}" pull "$BWA/library/e2e-docker:v1"; then
			ds=$(docker_ image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$BWA/library/e2e-docker:v1" 2>/dev/null)
			if echo "$ds" | grep -qx "$BWA/library/e2e-docker@$D_DOCKER"; then
				pass "auth[docker]: RepoDigests has $D_DOCKER"
			else
				fail "auth[docker]: RepoDigests has the upstream digest" "RepoDigests: ${ds//$'\n'/ }"
			fi
		fi
		a_fail "auth[docker]: alice, $BWA/acme/e2e-private:v1 by tag" docker 1 "denied" -- \
			"${DOCKER[@]}" pull "$BWA/acme/e2e-private:v1"
		a_fail "auth[docker]: alice, acme/e2e-private by digest" docker 1 "denied" -- \
			"${DOCKER[@]}" pull "$BWA/acme/e2e-private@$D_PRIVATE"
		expect_eq "auth[docker]: nothing denied reached the upstream" 0 "$(upstream_saw_private "$upm")" "upstream requests for acme/e2e-private"
		docker_ logout "$BWA" >"$OUT/a-docker-logout" 2>&1
	else
		fail "auth[docker]" "dockerd is not running"
	fi

	echo "== auth[skopeo, podman]: skopeo --creds, podman login"
	upm=$(log_mark "$LOGS/upstream.log")
	if a_ok "auth[skopeo]: skopeo inspect --creds alice:... docker://$BWA/library/e2e:v1" "$OUT/a-skopeo" \
		"${SKOPEO[@]}" inspect --tls-verify=false --no-tags --creds "alice:$ALICE_PW" --format '{{.Digest}}' "docker://$BWA/library/e2e:v1"; then
		expect_eq "auth[skopeo]: digest is upstream's" "$D_E2E" "$(tail -n 1 "$OUT/a-skopeo")" "digest"
	fi
	if a_ok "auth[skopeo]: anonymous, skopeo inspect docker://$BWA/library/e2e-docker:v1 (granted to anonymous)" "$OUT/a-skopeo-anon" \
		"${SKOPEO[@]}" inspect --tls-verify=false --no-tags --format '{{.Digest}}' "docker://$BWA/library/e2e-docker:v1"; then
		expect_eq "auth[skopeo]: anonymous, e2e-docker's digest is upstream's" "$D_DOCKER" "$(tail -n 1 "$OUT/a-skopeo-anon")" "digest"
	fi
	a_fail "auth[skopeo]: without --creds" skopeo 1 "unauthorized" -- \
		"${SKOPEO[@]}" inspect --tls-verify=false --no-tags "docker://$BWA/library/e2e:v1"
	a_fail "auth[skopeo]: --creds with a wrong password" skopeo 1 "invalid user name or password" -- \
		"${SKOPEO[@]}" inspect --tls-verify=false --no-tags --creds "alice:wrong" "docker://$BWA/library/e2e:v1"
	a_fail "auth[skopeo]: alice, acme/e2e-private:v1" skopeo 1 "denied" -- \
		"${SKOPEO[@]}" inspect --tls-verify=false --no-tags --creds "alice:$ALICE_PW" "docker://$BWA/acme/e2e-private:v1"

	# podman keeps its login in an auth file of this run's (which it wants
	# to exist).
	AUTHFILE=$PM/auth.json
	echo '{"auths": {}}' >"$AUTHFILE"
	podman_ rmi -a -f >"$OUT/a-podman-rmi" 2>&1
	a_fail "auth[podman]: podman pull without login" podman 1 "unauthorized" -- \
		"${PODMAN[@]}" pull --authfile "$AUTHFILE" --tls-verify=false "$BWA/library/e2e:v1"
	if run_client "$OUT/a-podman-login" 30 sh -c "printf '%s' '$ALICE_PW' | $(printf '%q ' "${PODMAN[@]}") login --authfile $AUTHFILE --tls-verify=false -u alice --password-stdin $BWA" &&
		grep -q 'Login Succeeded' "$OUT/a-podman-login"; then
		pass "auth[podman]: podman login $BWA -u alice: Login Succeeded"
	else
		cmd_fail "auth[podman]: podman login $BWA -u alice" "$OUT/a-podman-login" 1
	fi
	if a_ok "auth[podman]: podman pull $BWA/library/e2e:v1 as alice" "$OUT/a-podman-pull" \
		"${PODMAN[@]}" pull --authfile "$AUTHFILE" --tls-verify=false "$BWA/library/e2e:v1"; then
		expect_eq "auth[podman]: image digest is upstream's" "$D_E2E" \
			"$(podman_ image inspect --format '{{.Digest}}' "$BWA/library/e2e:v1" 2>/dev/null)" "digest"
	fi
	a_fail "auth[podman]: alice, $BWA/acme/e2e-private:v1" podman 1 "denied" -- \
		"${PODMAN[@]}" pull --authfile "$AUTHFILE" --tls-verify=false "$BWA/acme/e2e-private:v1"
	expect_eq "auth[skopeo, podman]: nothing denied reached the upstream" 0 "$(upstream_saw_private "$upm")" "upstream requests for acme/e2e-private"

	# The content was there all along, for whoever may pull it.
	if a_ok "auth[skopeo]: ops may: skopeo inspect --creds ops:... acme/e2e-private:v1" "$OUT/a-skopeo-ops" \
		"${SKOPEO[@]}" inspect --tls-verify=false --no-tags --creds "ops:$OPS_PW" --format '{{.Digest}}' "docker://$BWA/acme/e2e-private:v1"; then
		expect_eq "auth[skopeo]: ops gets acme/e2e-private's digest" "$D_PRIVATE" "$(tail -n 1 "$OUT/a-skopeo-ops")" "digest"
	fi

	echo "== auth[cli]: breakwater check and warm --mirror log in as --user"
	if run_client "$OUT/a-check-anon" 30 "$TMP/breakwater" check --mirror "http://$BWA" library/e2e:v1; then
		fail "auth[cli]: check --mirror without --user" "exit 0: $(tail -n 1 "$OUT/a-check-anon")"
	else
		rc=$?
		expect_eq "auth[cli]: check --mirror without --user says denied (exit 1)" "1 denied" "$rc $(awk 'NR == 1 { print $1 }' "$OUT/a-check-anon")" "exit status and verdict"
	fi
	printf '%s\n' "$ALICE_PW" >"$AUTH_DIR/alice-password"
	if a_ok "auth[cli]: breakwater check --mirror --user alice --password-file ... library/e2e:v1" "$OUT/a-check-alice" \
		"$TMP/breakwater" check --mirror "http://$BWA" --user alice --password-file "$AUTH_DIR/alice-password" library/e2e:v1; then
		expect_eq "auth[cli]: check says exists with the upstream's digest" "exists $D_E2E" "$(awk 'NR == 1 { print $1, $3 }' "$OUT/a-check-alice")" "verdict and digest"
	fi
	run_client "$OUT/a-check-private" 30 "$TMP/breakwater" check --mirror "http://$BWA" --user alice --password-file "$AUTH_DIR/alice-password" acme/e2e-private:v1
	expect_eq "auth[cli]: check acme/e2e-private:v1 as alice says denied (exit 1)" "1 denied" "$? $(awk 'NR == 1 { print $1 }' "$OUT/a-check-private")" "exit status and verdict"
	# The password in the environment, not on the command line.
	BREAKWATER_PASSWORD=$ALICE_PW a_ok "auth[cli]: BREAKWATER_PASSWORD=... breakwater warm --mirror --user alice library/e2e:v1" \
		"$OUT/a-warm-alice" "$TMP/breakwater" warm --mirror "http://$BWA" --user alice library/e2e:v1

	echo "== auth[log]: who pulled is in the log, passwords are not"
	users=$(grep '"msg":"request"' "$BWA_LOG" | grep -o '"user":"[^"]*"' | sort | uniq -c | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
	# grep -c, not -q: under pipefail a grep -q that stops reading early
	# fails the pipeline with the SIGPIPE of the grep before it.
	alice=$(grep '"msg":"request"' "$BWA_LOG" | grep '"path":"/v2/library/e2e/manifests/' | grep -c '"user":"alice"')
	if [ "$alice" -gt 0 ]; then
		pass "auth[log]: request lines carry the user ($users)"
	else
		fail "auth[log]: request lines carry the user" "no library/e2e manifest request with \"user\":\"alice\" in $BWA_LOG"
	fi
	if grep -qF -e "$ALICE_PW" -e "$OPS_PW" -e "$(printf 'alice:%s' "$ALICE_PW" | base64)" "$BWA_LOG"; then
		fail "auth[log]: no password in the log" "$BWA_LOG contains a password or its Basic header"
	else
		pass "auth[log]: no password in the log"
	fi
fi
note "auth phase: $(($(date +%s) - AUTH_T0))s${E2E_KEEP:+; client errors in $AUTH_ERRORS}"
