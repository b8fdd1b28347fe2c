# shellcheck shell=bash
# The TLS phase of test/e2e/run.sh, sourced by it after the outage phase
# (it uses run.sh's clients, helpers and variables). See test/e2e/README.md,
# "The TLS phase".
#
# openssl makes a server CA with a certificate for IP 127.0.0.1, a client CA
# with a client certificate, and another CA with another client
# certificate. Three more Breakwater instances, each with its own port,
# cache and log, speak TLS:
#
#   mirror-tls      in front of the upstream; its certificate files are laid
#                   out as the kubelet lays out a Secret volume (..data
#                   symlink). curl and openssl see ALPN http/1.1 only;
#                   containerd (hosts.toml ca), dockerd (certs.d), skopeo
#                   (--cert-dir) and podman (registries.conf mirror and
#                   --cert-dir) pull through it; then the certificate is
#                   rotated as the kubelet does it and the new one served
#                   without a restart.
#   mirror-tls-503  in front of its own fault proxy answering every request
#                   503: the crafted reason phrase must reach ctr, skopeo
#                   and docker over TLS.
#   mirror-mtls     mutual TLS with the client CA: a client without a
#                   certificate or with the other CA's is refused, one with
#                   the client CA's pulls.

TLS_T0=$(date +%s)
TLS_D=$TMP/tls
TLS_ERRORS=$OUT/tls-errors.txt
mkdir -p "$TLS_D"
: >"$TLS_ERRORS"

BWT_PORT=$(free_port)
BWT5_PORT=$(free_port)
BWM_PORT=$(free_port)
FPT_PORT=$(free_port)
FPTC_PORT=$(free_port)
BWT=127.0.0.1:$BWT_PORT
BWT5=127.0.0.1:$BWT5_PORT
BWM=127.0.0.1:$BWM_PORT
FPT=127.0.0.1:$FPT_PORT
FPTC=127.0.0.1:$FPTC_PORT
BWT_LOG=$LOGS/mirror-tls.log
BWT5_LOG=$LOGS/mirror-tls-503.log
BWM_LOG=$LOGS/mirror-mtls.log
FPT_LOG=$LOGS/faultproxy-tls.log
# dockerd reads certificates only from /etc/docker/certs.d/HOST:PORT/.
DOCKER_CERTS=/etc/docker/certs.d

echo "== tls: Breakwater speaking TLS (HTTP/1.1 only) to containerd, dockerd, skopeo and podman"
note "mirror-tls $BWT, mirror-tls-503 $BWT5 (fault proxy $FPT, control $FPTC), mirror-mtls $BWM"

# ---- helpers ---------------------------------------------------------------

# tls_run NAME CMD...: run CMD (quick: certificates, handshakes), output to
# $OUT/tls-NAME; returns CMD's status.
tls_run() {
	local n=$1
	shift
	run_client "$OUT/tls-$n" 60 "$@"
}

# tls_ca NAME: a self-signed CA, $TLS_D/NAME.crt and .key.
tls_ca() {
	local f=$TLS_D/$1
	printf '%s\n' "basicConstraints=critical,CA:TRUE" "keyUsage=critical,keyCertSign,cRLSign" \
		"subjectKeyIdentifier=hash" >"$f.ext"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$f.key" &&
		openssl req -new -key "$f.key" -subj "/CN=breakwater e2e $1" -out "$f.csr" &&
		openssl x509 -req -in "$f.csr" -signkey "$f.key" -days 2 -extfile "$f.ext" -out "$f.crt"
}

# tls_leaf CA NAME server|client SERIAL: a certificate CA signs,
# $TLS_D/NAME.crt and .key; a server's is for IP 127.0.0.1.
tls_leaf() {
	local ca=$TLS_D/$1 f=$TLS_D/$2 kind=$3 serial=$4
	{
		printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "authorityKeyIdentifier=keyid"
		if [ "$kind" = server ]; then
			printf '%s\n' "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1"
		else
			printf '%s\n' "extendedKeyUsage=clientAuth"
		fi
	} >"$f.ext"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$f.key" &&
		openssl req -new -key "$f.key" -subj "/CN=breakwater e2e $2" -out "$f.csr" &&
		openssl x509 -req -in "$f.csr" -CA "$ca.crt" -CAkey "$ca.key" -set_serial "$serial" -days 2 \
			-extfile "$f.ext" -out "$f.crt"
}

# tls_secret_update SERIAL: lay out server-SERIAL.crt/.key under
# $TLS_D/secret as the kubelet updates a Secret volume: the files go into a
# new timestamped directory, then the ..data symlink is swapped to it in one
# rename; tls.crt and tls.key are symlinks through ..data.
tls_secret_update() {
	local s=$TLS_D/secret ts
	ts="..$(date +%Y_%m_%d_%H_%M_%S).$1"
	mkdir -p "$s/$ts"
	cp "$TLS_D/server-$1.crt" "$s/$ts/tls.crt"
	cp "$TLS_D/server-$1.key" "$s/$ts/tls.key"
	ln -s "$ts" "$s/..data_tmp"
	mv -T "$s/..data_tmp" "$s/..data"
	[ -L "$s/tls.crt" ] || ln -s ..data/tls.crt "$s/tls.crt"
	[ -L "$s/tls.key" ] || ln -s ..data/tls.key "$s/tls.key"
}

# tls_serial ADDR: the serial number of the certificate ADDR serves, as
# openssl prints it (serial=1001), verified against the server CA.
tls_serial() {
	openssl s_client -connect "$1" -CAfile "$TLS_D/ca.crt" -verify_return_error </dev/null 2>/dev/null |
		openssl x509 -noout -serial 2>/dev/null
}

# tls_hosts DIR MIRROR SERVER [EXTRA]: a hosts.toml for docker.io in DIR
# whose mirror is https://MIRROR, trusted with ca = the server CA, EXTRA
# lines added to the [host] table (client = ...).
tls_hosts() {
	mkdir -p "$1/docker.io"
	cat >"$1/docker.io/hosts.toml" <<EOF
server = "$3"

[host."https://$2"]
  capabilities = ["pull", "resolve"]
  ca = "$TLS_D/ca.crt"
${4:-}
EOF
}

# tls_saw NAME LOG MARK ERE WHAT: PASS when the Breakwater log LOG, from MARK
# on, has a request line ("METHOD URI STATUS") matching ERE.
tls_saw() {
	if http_lines "$2" "$3" | grep -Eq -- "$4"; then
		pass "$1"
	else
		fail "$1" "no request in $2 matched $5; it logged:"
		http_lines "$2" "$3" | tail -n 10 | sed 's/^/    | /'
	fi
}

# tls_refused NAME OUT RC LOG MARK WHY NEEDLE...: the command that wrote OUT
# (status RC) must have failed, not timed out, its output must contain every
# NEEDLE, and, unless LOG is -, the Breakwater logging to LOG must have
# logged from MARK on a TLS handshake error saying WHY. The client's error
# line is recorded.
tls_refused() {
	local n=$1 out=$2 rc=$3 log=$4 mark=$5 why=$6 needle missing=""
	shift 6
	printf '%s\t%s\n' "$n" "$(grep -v '^[[:space:]]*$' "$out" | tail -n 1)" >>"$TLS_ERRORS"
	case $rc in
	0)
		fail "$n" "it succeeded"
		return
		;;
	124 | 137)
		fail "$n" "timed out: $(cat "$out.cmd")"
		return
		;;
	esac
	for needle in "$@"; do
		grep -qF -- "$needle" "$out" || missing+=" '$needle'"
	done
	if [ "$log" != - ] && ! tail -n "+$mark" "$log" | grep '"msg":"http: TLS handshake error' | grep -qF -- "$why"; then
		missing+=" (and $log has no TLS handshake error saying '$why')"
	fi
	if [ -z "$missing" ]; then
		pass "$n (exit $rc${why:+; Breakwater: $why})"
	else
		fail "$n" "exit $rc, but the output lacks$missing"
		tail_of "$out" 6
	fi
}

# tls_ctr_pull NAME HOSTSDIR REF DIGEST LOG: ctr images pull --hosts-dir
# HOSTSDIR REF must succeed with DIGEST and its blobs come through the
# Breakwater logging to LOG.
tls_ctr_pull() {
	local n=$1 hosts=$2 ref=$3 want=$4 log=$5 out rc d mark repo
	out=$OUT/tls-ctr-$(echo "$1" | tr -c 'a-zA-Z0-9\n' '-')
	repo=${ref#docker.io/}
	repo=${repo%:*}
	mark=$(log_mark "$log")
	run_client "$out" "$PULL_SECS" "${CTR[@]}" images pull --hosts-dir "$hosts" "$ref"
	rc=$?
	if [ $rc = 0 ]; then pass "$n: ctr images pull --hosts-dir $ref"; else cmd_fail "$n: ctr images pull --hosts-dir $ref" "$out" $rc; fi
	d=$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }')
	expect_eq "$n: image digest is upstream's" "$want" "$d" "digest"
	tls_saw "$n: blobs came over TLS with ?ns=docker.io" "$log" "$mark" \
		"^GET /v2/$repo/blobs/sha256:[0-9a-f]{64}\\?([^ ]*&)?ns=docker\\.io(&[^ ]*)? 200$" "a blob GET of $repo with ns=docker.io answered 200"
}

# tls_503 CLIENT OUT RC: CLIENT's pull through mirror-tls-503 must have
# failed with the crafted reason phrase, which classify rates transient.
TLS_PHRASE="503 Service Unavailable (breakwater-transient: upstream docker.io answered 503 Service Unavailable; retry after "
tls_503() {
	local client=$1 out=$2 rc=$3 n="tls[503] $1" line crc
	line=$(err_line "$client" "$out")
	printf '%s\t%s\n' "$n" "$(raw_line "$client" "$out")" >>"$TLS_ERRORS"
	note "$client printed: $(raw_line "$client" "$out")"
	if [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		fail "$n: fails with the crafted reason phrase" "exit $rc: $(cat "$out.cmd")"
		return
	fi
	case $line in
	*"$TLS_PHRASE"*) pass "$n: error carries the crafted reason phrase over TLS ('$TLS_PHRASE...')" ;;
	*) fail "$n: error carries the crafted reason phrase over TLS" "want '$TLS_PHRASE...' in: $line" ;;
	esac
	"$TMP/breakwater" classify --reason ErrImagePull --message "$line" >"$out.classify" 2>&1
	crc=$?
	if [ "$crc" = 0 ]; then
		pass "$n: breakwater classify rates it transient"
	else
		fail "$n: breakwater classify rates it transient" "exit $crc: $(head -n 1 "$out.classify")"
	fi
}

# ---- set up: certificates, builds, images, the three Breakwater instances ----

if ! command -v openssl >/dev/null 2>&1; then
	note "installing openssl"
	run_client "$OUT/apt-openssl" 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y openssl ||
		{ cmd_fail "tls: apt-get install openssl" "$OUT/apt-openssl" $?; return 0; }
fi
if (
	set -e
	tls_ca ca
	tls_ca client-ca
	tls_ca other-ca
	tls_leaf ca server-1001 server 1001
	tls_leaf ca server-1002 server 1002
	tls_leaf client-ca client client 2001
	tls_leaf other-ca other-client client 3001
	openssl verify -CAfile "$TLS_D/ca.crt" "$TLS_D/server-1001.crt" "$TLS_D/server-1002.crt"
	openssl verify -CAfile "$TLS_D/client-ca.crt" "$TLS_D/client.crt"
) >"$OUT/tls-openssl" 2>&1; then
	pass "tls: $(openssl version | awk '{ print $1, $2 }') made a server CA with certificates for IP 127.0.0.1, a client CA and another CA with a client certificate each"
else
	fail "tls: openssl certificates" "see $OUT/tls-openssl"
	tail_of "$OUT/tls-openssl" 10
	return 0
fi
tls_secret_update 1001

if [ ! -x "$TMP/breakwater" ]; then
	run_client "$OUT/bw-build" 300 go build -o "$TMP/breakwater" ./cmd/breakwater ||
		{ cmd_fail "tls: go build ./cmd/breakwater" "$OUT/bw-build" $?; return 0; }
fi
if [ ! -x "$TMP/faultproxy" ]; then
	run_client "$OUT/fp-build" 120 go build -o "$TMP/faultproxy" ./test/e2e/faultproxy ||
		{ cmd_fail "tls: go build ./test/e2e/faultproxy" "$OUT/fp-build" $?; return 0; }
fi

# Images no client has pulled yet, so that every blob comes through TLS.
TLS_IMAGES=(e2e-tls-ctr e2e-tls-rotated e2e-tls-docker e2e-tls-docker-wrongca e2e-tls-skopeo e2e-tls-podman e2e-mtls-ctr e2e-mtls-skopeo)
if run_client "$OUT/seed-tls" 240 go run ./test/e2e/seed --registry "$UP" --only "$(printf 'library/%s,' "${TLS_IMAGES[@]}" | sed 's/,$//')"; then
	TLS_SEED=$(grep -E '^e2e-tls-ctr=sha256:' "$OUT/seed-tls" | tail -n 1)
	pass "tls: seed pushed library/{$(printf '%s,' "${TLS_IMAGES[@]}" | sed 's/,$//')}:v1"
else
	cmd_fail "tls: seed" "$OUT/seed-tls" $?
	return 0
fi
# tls_digest NAME: the digest the seed printed for NAME.
tls_digest() { echo "$TLS_SEED" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# tls_config FILE CERT KEY [CLIENT_CA [MORE]]: a configuration with TLS
# from those files, MORE (YAML) added.
tls_config() {
	{
		printf 'tls:\n  cert_file: %s\n  key_file: %s\n' "$2" "$3"
		[ -z "${4:-}" ] || printf '  client_ca_file: %s\n' "$4"
		[ -z "${5:-}" ] || printf '%s\n' "$5"
		printf 'log:\n  level: info\n  format: json\n'
	} >"$1"
}
tls_config "$TLS_D/tls.yaml" "$TLS_D/secret/tls.crt" "$TLS_D/secret/tls.key"
# As the outage phase's mirror-outage, so that the cause stays the
# upstream's 503 and each failing pull takes 2 s.
tls_config "$TLS_D/tls-503.yaml" "$TLS_D/server-1001.crt" "$TLS_D/server-1001.key" "" "$(fast_resilience "min_requests: 1000000")"
tls_config "$TLS_D/mtls.yaml" "$TLS_D/server-1001.crt" "$TLS_D/server-1001.key" "$TLS_D/client-ca.crt"
start_bg faultproxy-tls "$LOGS/faultproxy-tls.stderr" "$TMP/faultproxy" --listen "$FPT" --control "$FPTC" \
	--upstream "http://$UP" --log "$FPT_LOG"
start_bg mirror-tls "$BWT_LOG" "$TMP/breakwater" serve --config "$TLS_D/tls.yaml" --listen "$BWT" \
	--cache-dir "$TMP/cache-tls" --upstream "docker.io=http://$UP"
start_bg mirror-tls-503 "$BWT5_LOG" "$TMP/breakwater" serve --config "$TLS_D/tls-503.yaml" --listen "$BWT5" \
	--cache-dir "$TMP/cache-tls-503" --upstream "docker.io=http://$FPT"
start_bg mirror-mtls "$BWM_LOG" "$TMP/breakwater" serve --config "$TLS_D/mtls.yaml" --listen "$BWM" \
	--cache-dir "$TMP/cache-mtls" --upstream "docker.io=http://$UP"

CURL_TLS=(curl -sS -m 10 --cacert "$TLS_D/ca.crt")
CURL_MTLS=("${CURL_TLS[@]}" --cert "$TLS_D/client.crt" --key "$TLS_D/client.key")
tls_healthy() { [ "$("$@" -o /dev/null -w '%{http_code}' 2>/dev/null)" = 200 ]; }
for m in "mirror-tls $BWT" "mirror-tls-503 $BWT5" "mirror-mtls $BWM"; do
	read -r name addr <<<"$m"
	curl_cmd=("${CURL_TLS[@]}")
	[ "$name" = mirror-mtls ] && curl_cmd=("${CURL_MTLS[@]}")
	if wait_for 30 tls_healthy "${curl_cmd[@]}" "https://$addr/healthz"; then
		pass "$name: healthy over TLS (GET https://$addr/healthz = 200, its certificate verified against the server CA)"
	else
		fail "$name: start" "GET https://$addr/healthz not 200 within 30s$(bg_alive "$name" || echo '; the process exited')"
		tail_of "$LOGS/$name.log" 10
		return 0
	fi
done
if wait_for 20 http_ok "http://$FPT/v2/"; then
	pass "faultproxy-tls: passes GET /v2/ to the upstream"
else
	fail "faultproxy-tls: start" "GET http://$FPT/v2/ not 200 within 20s"
	return 0
fi
if grep '"msg":"tls on: the listen address speaks TLS, HTTP/1.1 only"' "$BWM_LOG" | grep -q "\"client_ca_file\":\"$TLS_D/client-ca.crt\""; then
	pass "mirror-mtls: logged at start that TLS is on, with its files and mutual TLS"
else
	fail "mirror-mtls: start-up log" "no 'tls on' line naming client_ca_file in $BWM_LOG"
fi

# ---- the protocol: HTTP/1.1 only --------------------------------------------

echo "== tls[alpn]: only http/1.1 is offered"
tls_run alpn-both openssl s_client -connect "$BWT" -CAfile "$TLS_D/ca.crt" -verify_return_error -alpn h2,http/1.1
if grep -q '^ALPN protocol: http/1.1$' "$OUT/tls-alpn-both" && grep -q 'Verify return code: 0 (ok)' "$OUT/tls-alpn-both"; then
	pass "tls[alpn]: openssl s_client offering h2,http/1.1 gets ALPN http/1.1 (certificate verified)"
else
	fail "tls[alpn]: openssl s_client offering h2,http/1.1 gets ALPN http/1.1" "$(grep -E 'ALPN|Verify return' "$OUT/tls-alpn-both" | tr '\n' ' ')"
fi
tls_run alpn-h2 openssl s_client -connect "$BWT" -CAfile "$TLS_D/ca.crt" -alpn h2
if grep -q '^ALPN protocol: h2' "$OUT/tls-alpn-h2"; then
	fail "tls[alpn]: a client offering only h2 is refused" "it negotiated h2"
elif grep -q 'no application protocol' "$OUT/tls-alpn-h2"; then
	pass "tls[alpn]: a client offering only h2 is refused (alert no application protocol)"
else
	fail "tls[alpn]: a client offering only h2 is refused" "$(tail -n 3 "$OUT/tls-alpn-h2" | tr '\n' ' ')"
fi
if curl -V | grep -qw HTTP2; then
	got=$("${CURL_TLS[@]}" --http2 -o /dev/null -w '%{http_version}' "https://$BWT/v2/" 2>"$OUT/tls-curl-h2.err")
	expect_eq "tls[alpn]: curl --http2 gets HTTP/1.1" 1.1 "$got" "http_version"
else
	skip "tls[alpn]: curl --http2 gets HTTP/1.1" "this curl has no HTTP/2 ($(curl -V | head -n 1))"
fi
got=$(curl -s -m 10 -o "$OUT/tls-plain.body" -w '%{http_code}' "http://$BWT/healthz")
expect_eq "tls: plain HTTP to the TLS port is answered 400 ($(head -c 60 "$OUT/tls-plain.body"))" 400 "$got" "status"

# ---- the clients ---------------------------------------------------------------

echo "== tls[clients]: containerd (hosts.toml ca), dockerd (certs.d), skopeo and podman (--cert-dir) pull through mirror-tls"
TLS_HOSTS=$TLS_D/certs.d
TLS_HOSTS_NOCA=$TLS_D/certs.d-noca
tls_hosts "$TLS_HOSTS" "$BWT" "https://registry-1.docker.io"
# Without ca, and the mirror as the server so that containerd has nothing
# else to try and reports the mirror's error.
mkdir -p "$TLS_HOSTS_NOCA/docker.io"
cat >"$TLS_HOSTS_NOCA/docker.io/hosts.toml" <<EOF
server = "https://$BWT"

[host."https://$BWT"]
  capabilities = ["pull", "resolve"]
EOF
if [ -n "$CTRD_UP" ]; then
	run_client "$OUT/tls-ctr-noca" 60 "${CTR[@]}" images pull --hosts-dir "$TLS_HOSTS_NOCA" docker.io/library/e2e-tls-ctr:v1
	tls_refused "tls[ctr]: without ca = the server certificate is refused" "$OUT/tls-ctr-noca" $? - 0 "" "x509: certificate signed by unknown authority"
	tls_ctr_pull "tls[ctr]" "$TLS_HOSTS" docker.io/library/e2e-tls-ctr:v1 "$(tls_digest e2e-tls-ctr)" "$BWT_LOG"
else
	fail "tls[ctr]: pull" "containerd is not running"
fi

if [ -n "$DOCKER_UP" ]; then
	# dockerd takes every registry in 127.0.0.0/8 as insecure, always: it
	# tries HTTPS without verifying the certificate (and without reading
	# certs.d, so without client certificates either), then plain HTTP.
	# The recommended certs.d is used here; the pull after it shows that a
	# wrong CA changes nothing on loopback.
	[ -d "$DOCKER_CERTS" ] || E2E_RM_AFTER+=("$DOCKER_CERTS")
	mkdir -p "$DOCKER_CERTS/$BWT"
	E2E_RM_AFTER+=("$DOCKER_CERTS/$BWT")
	cp "$TLS_D/ca.crt" "$DOCKER_CERTS/$BWT/ca.crt"
	for im in e2e-tls-docker e2e-tls-docker-wrongca; do
		[ "$im" = e2e-tls-docker-wrongca ] && cp "$TLS_D/other-ca.crt" "$DOCKER_CERTS/$BWT/ca.crt"
		ref=$BWT/library/$im:v1
		mark=$(log_mark "$BWT_LOG")
		out=$OUT/tls-docker-$im
		run_client "$out" "$PULL_SECS" "${DOCKER[@]}" pull "$ref"
		rc=$?
		case $im in
		e2e-tls-docker) what="docker pull $ref with $DOCKER_CERTS/$BWT/ca.crt" ;;
		*) what="docker pull $ref with the wrong CA in $DOCKER_CERTS/$BWT/ca.crt also works: dockerd does not verify a registry in 127.0.0.0/8" ;;
		esac
		if [ $rc = 0 ]; then pass "tls[docker]: $what"; else cmd_fail "tls[docker]: $what" "$out" $rc; fi
		ds=$(docker_ image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" 2>/dev/null)
		if echo "$ds" | grep -qx "$BWT/library/$im@$(tls_digest "$im")"; then
			pass "tls[docker]: $im RepoDigests has the upstream digest"
		else
			fail "tls[docker]: $im RepoDigests has the upstream digest" "RepoDigests: ${ds//$'\n'/ }"
		fi
		# The port speaks only TLS (plain HTTP is answered 400 before any
		# request is logged): these lines are the proof that dockerd used it.
		tls_saw "tls[docker]: $im blobs came over TLS" "$BWT_LOG" "$mark" \
			"^GET /v2/library/$im/blobs/sha256:[0-9a-f]{64} 200$" "a blob GET of library/$im answered 200"
	done
else
	fail "tls[docker]: pull" "dockerd is not running"
fi

TLS_CERTDIR=$TLS_D/cert-dir
mkdir -p "$TLS_CERTDIR"
cp "$TLS_D/ca.crt" "$TLS_CERTDIR/ca.crt"
src=docker://$BWT/library/e2e-tls-skopeo:v1
run_client "$OUT/tls-skopeo-nocert" 60 "${SKOPEO[@]}" inspect --no-tags "$src"
tls_refused "tls[skopeo]: without --cert-dir the server certificate is refused (127.0.0.1 is not insecure to containers/image)" \
	"$OUT/tls-skopeo-nocert" $? - 0 "" "x509: certificate signed by unknown authority"
mark=$(log_mark "$BWT_LOG")
if run_client "$OUT/tls-skopeo" 60 "${SKOPEO[@]}" copy --src-cert-dir "$TLS_CERTDIR" "$src" "dir:$TLS_D/skopeo-copy"; then
	pass "tls[skopeo]: skopeo copy --src-cert-dir $TLS_CERTDIR $src"
	expect_eq "tls[skopeo]: sha256 of the copied manifest is upstream's" "$(tls_digest e2e-tls-skopeo)" \
		"sha256:$(sha256sum "$TLS_D/skopeo-copy/manifest.json" | awk '{ print $1 }')" "digest"
else
	cmd_fail "tls[skopeo]: skopeo copy --src-cert-dir $TLS_CERTDIR $src" "$OUT/tls-skopeo" $?
fi
if run_client "$OUT/tls-skopeo-inspect" 60 "${SKOPEO[@]}" inspect --cert-dir "$TLS_CERTDIR" --no-tags --format '{{.Digest}}' "$src"; then
	expect_eq "tls[skopeo]: skopeo inspect --cert-dir: digest is upstream's" "$(tls_digest e2e-tls-skopeo)" "$(tail -n 1 "$OUT/tls-skopeo-inspect")" "digest"
else
	cmd_fail "tls[skopeo]: skopeo inspect --cert-dir $TLS_CERTDIR $src" "$OUT/tls-skopeo-inspect" $?
fi
tls_saw "tls[skopeo]: blobs came over TLS" "$BWT_LOG" "$mark" \
	'^GET /v2/library/e2e-tls-skopeo/blobs/sha256:[0-9a-f]{64} 200$' "a blob GET of library/e2e-tls-skopeo answered 200"

# podman: the docker.io mirror is mirror-tls, as `breakwater registries-conf`
# writes it for an https:// mirror (no `insecure`).
echo 'unqualified-search-registries = []' >"$PM/registries-tls.conf"
if "$TMP/breakwater" registries-conf --mirror "https://$BWT" >>"$PM/registries-tls.conf" 2>"$OUT/registries-conf-tls" &&
	grep -q "^location = \"$BWT/docker.io\"" "$PM/registries-tls.conf" && ! grep -q '^insecure = true' "$PM/registries-tls.conf"; then
	pass "tls[podman]: breakwater registries-conf --mirror https://$BWT names mirror-tls, not insecure"
else
	fail "tls[podman]: breakwater registries-conf --mirror https://$BWT" "$(cat "$OUT/registries-conf-tls" "$PM/registries-tls.conf")"
fi
PODMAN_T=("${PODMAN[@]/#CONTAINERS_REGISTRIES_CONF=*/CONTAINERS_REGISTRIES_CONF=$PM/registries-tls.conf}")
ref=docker.io/library/e2e-tls-podman:v1
mark=$(log_mark "$BWT_LOG")
if run_client "$OUT/tls-podman" "$PULL_SECS" "${PODMAN_T[@]}" pull --cert-dir "$TLS_CERTDIR" "$ref"; then
	pass "tls[podman]: podman pull --cert-dir $TLS_CERTDIR $ref (registries.conf mirror $BWT, not insecure)"
else
	cmd_fail "tls[podman]: podman pull --cert-dir $TLS_CERTDIR $ref" "$OUT/tls-podman" $?
fi
d=$(timeout -k 5 60 "${PODMAN_T[@]}" image inspect --format '{{.Digest}}' "$ref" 2>/dev/null)
expect_eq "tls[podman]: image digest is upstream's" "$(tls_digest e2e-tls-podman)" "$d" "digest"
tls_saw "tls[podman]: manifest and blobs came through the mirror over TLS" "$BWT_LOG" "$mark" \
	'^GET /v2/docker\.io/library/e2e-tls-podman/blobs/sha256:[0-9a-f]{64} 200$' "a blob GET of docker.io/library/e2e-tls-podman answered 200"

# ---- rotation, as cert-manager and the kubelet do it ----------------------------

echo "== tls[rotation]: mirror-tls's Secret volume gets a new certificate; it must be served without a restart"
pid=$(bg_pid mirror-tls)
before=$(tls_serial "$BWT")
expect_eq "tls[rotation]: serving the first certificate" serial=03E9 "$before" "serial (1001)"
t0=$(date +%s)
tls_secret_update 1002
if wait_for 20 sh -c "[ \"\$(openssl s_client -connect $BWT -CAfile $TLS_D/ca.crt -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial)\" = serial=03EA ]"; then
	pass "tls[rotation]: the new certificate (serial 1002) is served $(($(date +%s) - t0))s after the ..data swap (polled every 10s)"
else
	fail "tls[rotation]: the new certificate is served within 20s" "still $(tls_serial "$BWT")"
fi
expect_eq "tls[rotation]: by the same process (no restart)" "$pid" "$(bg_pid mirror-tls)$(bg_alive mirror-tls || echo ' (exited)')" "pid"
if grep -q '"msg":"tls: certificate files reloaded".*"serial":"3ea"' "$BWT_LOG"; then
	pass "tls[rotation]: mirror-tls logged the reload with the new serial"
else
	fail "tls[rotation]: mirror-tls logged the reload" "no 'certificate files reloaded' line with serial 3ea in $BWT_LOG"
fi
[ -n "$CTRD_UP" ] && tls_ctr_pull "tls[rotation] ctr" "$TLS_HOSTS" docker.io/library/e2e-tls-rotated:v1 "$(tls_digest e2e-tls-rotated)" "$BWT_LOG"

# ---- the crafted 503 over TLS ---------------------------------------------------

echo "== tls[503]: mirror-tls-503's upstream answers every request 503; the reason phrase must survive TLS"
got=$(curl -sS -m 10 -X POST "http://$FPTC/mode?set=503" 2>&1)
expect_eq "tls[503]: fault proxy answers 503" "mode 503" "$got" "control answer"
"${CURL_TLS[@]}" --http2 -D "$OUT/tls-503-curl.h" -o "$OUT/tls-503-curl.b" "https://$BWT5/v2/library/e2e-outage/manifests/v1" 2>"$OUT/tls-503-curl.err"
status=$(head -n 1 "$OUT/tls-503-curl.h" | tr -d '\r')
printf '%s\t%s\n' "tls[503] curl --http2" "$status" >>"$TLS_ERRORS"
note "status line: $status"
case $status in
"HTTP/1.1 $TLS_PHRASE"*"s)") pass "tls[503] curl --http2: HTTP/1.1 with the crafted reason phrase" ;;
*) fail "tls[503] curl --http2: HTTP/1.1 with the crafted reason phrase" "status line '$status'" ;;
esac
TLS_HOSTS5=$TLS_D/certs.d-503
tls_hosts "$TLS_HOSTS5" "$BWT5" "https://registry-1.docker.io"
if [ -n "$CTRD_UP" ]; then
	run_client "$OUT/tls-503-ctr" 30 "${CTR[@]}" images pull --hosts-dir "$TLS_HOSTS5" docker.io/library/e2e-outage:v1
	tls_503 ctr "$OUT/tls-503-ctr" $?
fi
run_client "$OUT/tls-503-skopeo" 30 "${SKOPEO[@]}" inspect --cert-dir "$TLS_CERTDIR" --no-tags "docker://$BWT5/library/e2e-outage:v1"
tls_503 skopeo "$OUT/tls-503-skopeo" $?
if [ -n "$DOCKER_UP" ]; then
	run_client "$OUT/tls-503-docker" 30 "${DOCKER[@]}" pull "$BWT5/library/e2e-outage:v1"
	tls_503 docker "$OUT/tls-503-docker" $?
fi

# ---- mutual TLS -------------------------------------------------------------------

echo "== tls[mtls]: mirror-mtls admits clients with a certificate of the client CA only"
NOCERT="tls: client didn't provide a certificate"
mark=$(log_mark "$BWM_LOG")
"${CURL_TLS[@]}" -o /dev/null "https://$BWM/healthz" >"$OUT/tls-mtls-curl-none" 2>&1
tls_refused "tls[mtls] curl: without a client certificate, refused" "$OUT/tls-mtls-curl-none" $? "$BWM_LOG" "$mark" "$NOCERT" "certificate required"
# curl (OpenSSL) sends its certificate even when the server's list of CAs
# does not name its issuer, so Breakwater verifies it and says why not.
mark=$(log_mark "$BWM_LOG")
"${CURL_TLS[@]}" --cert "$TLS_D/other-client.crt" --key "$TLS_D/other-client.key" -o /dev/null "https://$BWM/healthz" >"$OUT/tls-mtls-curl-other" 2>&1
tls_refused "tls[mtls] curl: with the other CA's certificate, refused" "$OUT/tls-mtls-curl-other" $? "$BWM_LOG" "$mark" \
	"tls: failed to verify certificate: x509: certificate signed by unknown authority"
TLS_HOSTSM=$TLS_D/certs.d-mtls
TLS_HOSTSM_NONE=$TLS_D/certs.d-mtls-none
TLS_HOSTSM_OTHER=$TLS_D/certs.d-mtls-other
tls_hosts "$TLS_HOSTSM" "$BWM" "https://$BWM" "  client = [[\"$TLS_D/client.crt\", \"$TLS_D/client.key\"]]"
tls_hosts "$TLS_HOSTSM_NONE" "$BWM" "https://$BWM"
tls_hosts "$TLS_HOSTSM_OTHER" "$BWM" "https://$BWM" "  client = [[\"$TLS_D/other-client.crt\", \"$TLS_D/other-client.key\"]]"
if [ -n "$CTRD_UP" ]; then
	mark=$(log_mark "$BWM_LOG")
	run_client "$OUT/tls-mtls-ctr-none" 60 "${CTR[@]}" images pull --hosts-dir "$TLS_HOSTSM_NONE" docker.io/library/e2e-mtls-ctr:v1
	tls_refused "tls[mtls] ctr: without client = ..., refused" "$OUT/tls-mtls-ctr-none" $? "$BWM_LOG" "$mark" "$NOCERT" \
		"remote error: tls: certificate required"
	# Go's TLS client (containerd's) offers no certificate whose issuer the
	# server's CertificateRequest does not name: to Breakwater this is a
	# client without a certificate.
	mark=$(log_mark "$BWM_LOG")
	run_client "$OUT/tls-mtls-ctr-other" 60 "${CTR[@]}" images pull --hosts-dir "$TLS_HOSTSM_OTHER" docker.io/library/e2e-mtls-ctr:v1
	tls_refused "tls[mtls] ctr: with the other CA's certificate, refused" "$OUT/tls-mtls-ctr-other" $? "$BWM_LOG" "$mark" "$NOCERT" \
		"remote error: tls: certificate required"
	tls_ctr_pull "tls[mtls] ctr (client = [[crt, key]])" "$TLS_HOSTSM" docker.io/library/e2e-mtls-ctr:v1 "$(tls_digest e2e-mtls-ctr)" "$BWM_LOG"
fi
TLS_CERTDIRM=$TLS_D/cert-dir-mtls
mkdir -p "$TLS_CERTDIRM"
# containers/image: *.crt are CAs, NAME.cert with NAME.key a client pair.
cp "$TLS_D/ca.crt" "$TLS_CERTDIRM/ca.crt"
cp "$TLS_D/client.crt" "$TLS_CERTDIRM/client.cert"
cp "$TLS_D/client.key" "$TLS_CERTDIRM/client.key"
src=docker://$BWM/library/e2e-mtls-skopeo:v1
mark=$(log_mark "$BWM_LOG")
run_client "$OUT/tls-mtls-skopeo-none" 60 "${SKOPEO[@]}" inspect --cert-dir "$TLS_CERTDIR" --no-tags "$src"
tls_refused "tls[mtls] skopeo: a --cert-dir without client.cert, refused" "$OUT/tls-mtls-skopeo-none" $? "$BWM_LOG" "$mark" "$NOCERT" \
	"remote error: tls: certificate required"
if run_client "$OUT/tls-mtls-skopeo" 60 "${SKOPEO[@]}" inspect --cert-dir "$TLS_CERTDIRM" --no-tags --format '{{.Digest}}' "$src"; then
	expect_eq "tls[mtls] skopeo: inspect --cert-dir with client.cert and client.key: digest is upstream's" \
		"$(tls_digest e2e-mtls-skopeo)" "$(tail -n 1 "$OUT/tls-mtls-skopeo")" "digest"
else
	cmd_fail "tls[mtls] skopeo: inspect --cert-dir with client.cert and client.key" "$OUT/tls-mtls-skopeo" $?
fi
if [ -n "$DOCKER_UP" ]; then
	# As above, dockerd reads no certs.d for a loopback registry, so it has
	# no client certificate to offer: recorded, and checked as the README
	# states it.
	mkdir -p "$DOCKER_CERTS/$BWM"
	E2E_RM_AFTER+=("$DOCKER_CERTS/$BWM")
	cp "$TLS_D/ca.crt" "$DOCKER_CERTS/$BWM/ca.crt"
	cp "$TLS_D/client.crt" "$DOCKER_CERTS/$BWM/client.cert"
	cp "$TLS_D/client.key" "$DOCKER_CERTS/$BWM/client.key"
	mark=$(log_mark "$BWM_LOG")
	run_client "$OUT/tls-mtls-docker" 60 "${DOCKER[@]}" pull "$BWM/library/e2e-mtls-ctr:v1"
	tls_refused "tls[mtls] docker: certs.d's client.cert is not used for 127.0.0.0/8: refused, as a client without a certificate" \
		"$OUT/tls-mtls-docker" $? "$BWM_LOG" "$mark" "$NOCERT"
fi

note "tls phase: $(($(date +%s) - TLS_T0))s${E2E_KEEP:+; client errors in $TLS_ERRORS}"
