# shellcheck shell=bash
# Helpers for test/e2e/run.sh: check bookkeeping, process and port handling,
# log parsing. Sourced, not run. Needs: $TMP (the run's temp dir).

E2E_PASSED=0
E2E_FAILED=0
E2E_SKIPPED=0
E2E_FAILED_NAMES=()

note() { printf '  .. %s\n' "$*"; }

pass() {
	E2E_PASSED=$((E2E_PASSED + 1))
	printf 'PASS %s\n' "$1"
}

# fail NAME WHY...
fail() {
	local n=$1
	shift
	E2E_FAILED=$((E2E_FAILED + 1))
	E2E_FAILED_NAMES+=("$n")
	printf 'FAIL %s: %s\n' "$n" "$*"
}

# skip NAME WHY...: a check that does not apply to this run.
skip() {
	local n=$1
	shift
	E2E_SKIPPED=$((E2E_SKIPPED + 1))
	printf 'SKIP %s: %s\n' "$n" "$*"
}

# expect_eq NAME WANT GOT [WHAT]: PASS when equal.
expect_eq() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1" "${4:-value}: want '$2', got '${3:-<empty>}'"
	fi
}

# indent the last N lines of a file, for failure messages.
tail_of() {
	local f=$1 n=${2:-15}
	[ -s "$f" ] || {
		echo "    (no output: $f)"
		return
	}
	tail -n "$n" "$f" | cut -c1-600 | sed 's/^/    | /'
}

# ---- Breakwater configurations -------------------------------------------

# fast_resilience BREAKER_LINE...: the resilience block of a Breakwater
# whose failing requests end after a 2 s deadline, retried fast until then,
# with the breaker keys given ("min_requests: 2", ...).
fast_resilience() {
	printf '%s\n' "resilience:" "  retry:" "    base_delay: 50ms" "    max_delay: 200ms" "    deadline: 2s" \
		"    attempt_timeout: 2s" "  breaker:"
	printf '    %s\n' "$@"
}

# ---- processes ----------------------------------------------------------

# E2E_RM_AFTER: paths outside $TMP a phase created (dockerd reads
# certificates from /etc/docker/certs.d only); the run removes them at exit.
# shellcheck disable=SC2034 # appended to by the phases, read by run.sh
E2E_RM_AFTER=()

# E2E_AT_EXIT: functions run.sh's cleanup calls, newest first, before it
# stops the processes started with start_bg: what a phase must undo in
# order, and also when it was cut short (the k8s phase's k8s_down). Each
# must be safe to call again.
# shellcheck disable=SC2034 # appended to by the phases, read by run.sh
E2E_AT_EXIT=()

# E2E_CTR_TASKS: containers a phase ran with ctr run; their shims outlive
# containerd, so remove_ctr_tasks (the phase, and run.sh at exit) kills and
# removes them.
E2E_CTR_TASKS=()
remove_ctr_tasks() {
	local c
	for c in "${E2E_CTR_TASKS[@]}"; do
		ctr_ task kill -s SIGKILL "$c" >/dev/null 2>&1
		ctr_ task delete -f "$c" >/dev/null 2>&1
		ctr_ containers rm "$c" >/dev/null 2>&1
	done
	E2E_CTR_TASKS=()
}

# start_bg NAME LOG CMD...: start CMD as the leader of a new session (so that
# it and any children it forks can be stopped together), remember its pid.
E2E_BG_NAMES=()
start_bg() {
	local name=$1 log=$2
	shift 2
	setsid "$@" </dev/null >"$log" 2>&1 &
	echo $! >"$TMP/pids/$name"
	E2E_BG_NAMES+=("$name")
}

bg_pid() { cat "$TMP/pids/$1" 2>/dev/null; }

bg_alive() {
	local p
	p=$(bg_pid "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

# stop_bg NAME [GRACE]: TERM the process group we started, KILL it after GRACE s.
stop_bg() {
	local name=$1 grace=${2:-10} p i
	p=$(bg_pid "$name") || return 0
	[ -n "$p" ] || return 0
	if kill -0 "$p" 2>/dev/null; then
		kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
		for ((i = 0; i < grace * 10; i++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
	fi
	# the leader may be gone while children of its group linger
	kill -KILL -- "-$p" 2>/dev/null
	kill -KILL "$p" 2>/dev/null
	rm -f "$TMP/pids/$name"
	return 0
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

http_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$1"; }
http_ok() { [ "$(http_code "$1")" = 200 ]; }

# ---- ports --------------------------------------------------------------

E2E_PORTS_TAKEN=" "
port_in_use() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v h="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == h) f = 1 } END { exit !f }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# free_port: a loopback TCP port nobody listens on (nor has lately), and that
# this run has not handed out before.
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		case $E2E_PORTS_TAKEN in *" $p "*) continue ;; esac
		port_in_use "$p" && continue
		E2E_PORTS_TAKEN+="$p "
		echo "$p"
		return 0
	done
	return 1
}

# ---- logs ---------------------------------------------------------------

# http_lines LOG [FROM]: the requests in a server log, one per line as
# "METHOD URI STATUS", from line FROM (1-based) on. Understands both
#   Breakwater (log/slog JSON): {"msg":"request","method":..,"path":..,"query":..,"status":N}
#   distribution 2.8 (formatter: json): {"msg":"response completed",
#       "http.request.method":..,"http.request.uri":..,"http.response.status":N}
http_lines() {
	local log=$1 from=${2:-1}
	[ -f "$log" ] || return 0
	tail -n "+$from" "$log" | awk '
	function sv(k,   re, v) {
		re = "\"" k "\":\"[^\"]*\""
		gsub(/\./, "\\.", re)
		if (!match($0, re)) return ""
		v = substr($0, RSTART, RLENGTH)
		sub(/^"[^"]*":"/, "", v); sub(/"$/, "", v)
		return v
	}
	function nv(k,   re, v) {
		re = "\"" k "\":[0-9]+"
		gsub(/\./, "\\.", re)
		if (!match($0, re)) return ""
		v = substr($0, RSTART, RLENGTH)
		sub(/^"[^"]*":/, "", v)
		return v
	}
	/"msg":"request"/ {
		u = sv("path"); q = sv("query")
		gsub(/\\u0026/, "\\&", q)
		if (q != "") u = u "?" q
		print sv("method"), u, nv("status"); next
	}
	/"msg":"response completed/ {
		print sv("http.request.method"), sv("http.request.uri"), nv("http.response.status")
	}'
}

# log_mark LOG: the line number the next log_since reads from.
log_mark() { echo $(($( (cat "$1" 2>/dev/null || true) | wc -l) + 1)); }

# upstream_blob_gets LOG: the number of blob GETs the upstream received.
upstream_blob_gets() {
	http_lines "$1" | awk '$1 == "GET" && $2 ~ /\/blobs\/sha256:/ { n++ } END { print n + 0 }'
}

# upstream_blob_get_counts LOG: "COUNT DIGEST" per blob digest GET from upstream.
upstream_blob_get_counts() {
	http_lines "$1" | awk '$1 == "GET" && $2 ~ /\/blobs\/sha256:/ {
		d = $2; sub(/.*\/blobs\//, "", d); sub(/\?.*/, "", d); print d }' | sort | uniq -c
}

# ---- client errors ----------------------------------------------------------

# now_ns; secs_since T0_NS: seconds since T0_NS, two decimals.
now_ns() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }

# err_line CLIENT OUT: the client's error as a pod would show it.
#   ctr:    the last `ctr: ...` line without `ctr: ` (kubelet shows
#           containerd's CRI error, the same text without the prefix)
#   skopeo: the msg="..." of the last `level=fatal` line, unquoted
#   docker: the last `Error response from daemon: ...` line
#   podman: the last `Error: ...` line without `Error: ` (CRI-O reports
#           the same containers/image text)
# falling back to the last non-empty line.
err_line() {
	local l=""
	case $1 in
	ctr) l=$(grep '^ctr: ' "$2" | tail -n 1 | sed 's/^ctr: //') ;;
	skopeo) l=$(grep 'level=fatal msg=' "$2" | tail -n 1 | sed -e 's/^.*level=fatal msg="//' -e 's/"$//' -e 's/\\"/"/g') ;;
	docker) l=$(grep '^Error response from daemon: ' "$2" | tail -n 1) ;;
	podman) l=$(grep '^Error: ' "$2" | tail -n 1 | sed 's/^Error: //') ;;
	esac
	[ -n "$l" ] || l=$(grep -v '^[[:space:]]*$' "$2" | tail -n 1)
	printf '%s' "$l"
}

# raw_line CLIENT OUT: the client's error line exactly as printed.
raw_line() {
	local l=""
	case $1 in
	ctr) l=$(grep '^ctr: ' "$2" | tail -n 1) ;;
	skopeo) l=$(grep 'level=fatal' "$2" | tail -n 1) ;;
	docker) l=$(grep '^Error response from daemon: ' "$2" | tail -n 1) ;;
	podman) l=$(grep '^Error: ' "$2" | tail -n 1) ;;
	esac
	[ -n "$l" ] || l=$(grep -v '^[[:space:]]*$' "$2" | tail -n 1)
	printf '%s' "$l"
}

# retry_secs TEXT: the N of the last "retry after Ns" in TEXT.
retry_secs() { printf '%s' "$1" | grep -o 'retry after [0-9]*s' | tail -n 1 | tr -dc '0-9'; }

# expect_failed NAME CLIENT OUT RC WANT_EXIT NEEDLE...: the pull that wrote
# OUT must have failed (not timed out), its error must contain every NEEDLE,
# and `breakwater classify --reason ErrImagePull --message ERROR` must exit
# WANT_EXIT (0 transient, 1 fatal). The error is recorded in $E2E_ERRORS
# and left in E_LINE (empty when the pull did not fail).
E_LINE=""
expect_failed() {
	local n=$1 client=$2 out=$3 rc=$4 want=$5 line raw needle missing="" says="" crc verdict
	shift 5
	E_LINE=""
	case $rc in
	0)
		fail "$n: fails" "the pull succeeded"
		return
		;;
	124 | 137)
		fail "$n: fails" "timed out: $(cat "$out.cmd")"
		tail_of "$out" 8
		return
		;;
	esac
	pass "$n: fails (exit $rc)"
	raw=$(raw_line "$client" "$out")
	line=$(err_line "$client" "$out")
	# shellcheck disable=SC2034 # the callers read it
	E_LINE=$line
	printf '%s\t%s\n' "$n" "$raw" >>"$E2E_ERRORS"
	note "$client printed: $raw"
	for needle in "$@"; do
		says+="${says:+, }'$needle'"
		case $line in *"$needle"*) ;; *) missing+=" '$needle'" ;; esac
	done
	if [ -z "$missing" ]; then
		pass "$n: error says $says"
	else
		fail "$n: error says $says" "missing$missing"
		tail_of "$out" 6
	fi
	"$TMP/breakwater" classify --reason ErrImagePull --message "$line" >"$out.classify" 2>&1
	crc=$?
	printf '%s\tclassify exit %s: %s\n' "$n" "$crc" "$(head -n 1 "$out.classify")" >>"$E2E_ERRORS"
	note "classify: $(head -n 1 "$out.classify")"
	case $want in 0) verdict=transient ;; 1) verdict=fatal ;; *) verdict=unknown ;; esac
	if [ "$crc" = "$want" ]; then
		pass "$n: breakwater classify rates it $verdict (exit $crc)"
	else
		fail "$n: breakwater classify rates it $verdict" "exit $crc, want $want: $(head -n 1 "$out.classify")"
	fi
}
