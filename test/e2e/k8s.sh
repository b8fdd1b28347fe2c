# shellcheck shell=bash
# The k8s phase of test/e2e/run.sh, sourced by it after the fleet phase (it
# uses run.sh's helpers, the upstream registry and the Breakwater binary).
# See test/e2e/README.md, "The k8s phase".
#
# A real Kubernetes node whose images come through Breakwater, and what the
# API server says about its pods:
#
#   scripts/k8s.sh        kube-apiserver, kubelet, kubectl (built once per
#                         machine into a cache dir), etcd and containerd
#   k8s_up                etcd, kube-apiserver (its own CA, a token), and a
#                         node: containerd with CRI and the kubelet in a
#                         private mount namespace (test/e2e/k8s-node.sh);
#                         containerd's hosts.toml sends every image of the
#                         upstream names below to mirror-k8s
#   mirror-k8s            one Breakwater, the upstreams fault429.test,
#                         fault503.test, refused.test and timeout.test, each
#                         behind its own fault proxy in front of the e2e's
#                         upstream registry
#   K8S_SECTIONS          what runs against the cluster, in order
#   k8s_down              pods, kubelet, containers, containerd, apiserver,
#                         etcd, then what the node left on the host
#
# There is no scheduler, controller manager nor CNI: a test pod names its
# node (spec.nodeName), uses the host's network and mounts no service
# account token (k8s_pod writes such a pod).
#
# For another section (an admission webhook, say), the cluster is:
#   K8S_API          https://127.0.0.1:PORT, the API server
#   K8S_CA           the cluster CA's certificate (PEM), K8S_CA_KEY its key:
#                    k8s_cert NAME SANS signs a serving certificate with it,
#                    k8s_ca_bundle prints the CA for a caBundle
#   K8S_KUBECONFIG   a kubeconfig for the admin (group system:masters)
#   kubectl_ ARGS    kubectl against it, under timeout
#   K8S_NS, K8S_NODE the test namespace and the node's name

K8S_D=$TMP/k8s
K8S_NS=bw-e2e
K8S_NODE=bw-e2e-node
K8S_PKI=$K8S_D/pki
K8S_CA=$K8S_PKI/ca.crt
K8S_CA_KEY=$K8S_PKI/ca.key
K8S_TOKEN=bw-e2e-admin-$RANDOM$RANDOM
K8S_KUBECONFIG=$K8S_D/kubeconfig
K8S_ETCD_PORT=$(free_port)
K8S_ETCD_PEER_PORT=$(free_port)
K8S_ETCD_METRICS_PORT=$(free_port)
K8S_API_PORT=$(free_port)
K8S_API=https://127.0.0.1:$K8S_API_PORT
K8S_STREAM_PORT=$(free_port)
K8S_KUBELET_PORT=$(free_port)
K8S_KUBELET_HEALTHZ_PORT=$(free_port)
K8S_CTRD_SOCK=$K8S_D/containerd/containerd.sock
K8S_BIN=""
K8S_STARTED="" # k8s_up began: k8s_down has something to do
K8S_API_UP=""
K8S_DOWN_DONE=""
# the pause image, the pods' sandbox (pulled from the upstream directly)
K8S_PAUSE=$UP/bw/pause:v1
K8S_T0=$(date +%s)

# ---- the cluster: reusable by every section ----------------------------------

# kubectl_ ARGS: kubectl (the one scripts/k8s.sh built) against the cluster.
kubectl_() { timeout -k 5 60 "$K8S_BIN/kubectl" --kubeconfig "$K8S_KUBECONFIG" "$@"; }

# k8s_ctr ARGS: ctr against the node's containerd, namespace k8s.io (CRI's).
k8s_ctr() { timeout -k 5 30 ctr -a "$K8S_CTRD_SOCK" -n k8s.io "$@"; }

# k8s_ca_bundle: the cluster CA's certificate, base64 on one line, as a
# caBundle (a webhook's clientConfig) wants it.
k8s_ca_bundle() { base64 -w0 "$K8S_CA"; }

# k8s_cert NAME SANS: a serving certificate NAME.crt and key NAME.key in
# $K8S_PKI, signed by the cluster CA, for SANS (e.g. IP:127.0.0.1,DNS:localhost).
k8s_cert() {
	local f=$K8S_PKI/$1
	printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$2" >"$f.ext"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$f.key" &&
		openssl req -new -key "$f.key" -subj "/CN=breakwater e2e k8s $1" -out "$f.csr" &&
		openssl x509 -req -in "$f.csr" -CA "$K8S_CA" -CAkey "$K8S_CA_KEY" -CAcreateserial -days 2 \
			-extfile "$f.ext" -out "$f.crt"
}

# k8s_pki: the cluster CA, the API server's certificate, the service
# account key pair, the admin token and a kubeconfig using them.
k8s_pki() {
	mkdir -p "$K8S_PKI"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$K8S_CA_KEY" -out "$K8S_CA" \
		-days 2 -subj "/CN=breakwater e2e k8s CA" &&
		k8s_cert apiserver IP:127.0.0.1,DNS:localhost &&
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K8S_PKI/sa.key" &&
		openssl pkey -in "$K8S_PKI/sa.key" -pubout -out "$K8S_PKI/sa.pub" || return 1
	printf '%s,admin,admin-uid,"system:masters"\n' "$K8S_TOKEN" >"$K8S_PKI/tokens.csv"
	cat >"$K8S_KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bw-e2e
  cluster:
    server: $K8S_API
    certificate-authority: $K8S_CA
users:
- name: admin
  user:
    token: $K8S_TOKEN
contexts:
- name: bw-e2e
  context:
    cluster: bw-e2e
    user: admin
current-context: bw-e2e
EOF
}

k8s_readyz() {
	[ "$(curl -s -m 3 --cacert "$K8S_CA" -H "Authorization: Bearer $K8S_TOKEN" "$K8S_API/readyz")" = ok ]
}

# k8s_control_plane_up: etcd and kube-apiserver, ready. No controller
# manager: ServiceAccount admission is off (nothing would create the
# default ServiceAccount), and no endpoint reconciler (a loopback address
# is no valid Endpoints IP).
k8s_control_plane_up() {
	start_bg k8s-etcd "$LOGS/k8s-etcd.log" etcd --name bw-e2e --data-dir "$K8S_D/etcd" \
		--listen-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$K8S_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$K8S_ETCD_PEER_PORT" \
		--initial-cluster "bw-e2e=http://127.0.0.1:$K8S_ETCD_PEER_PORT" --listen-metrics-urls "http://127.0.0.1:$K8S_ETCD_METRICS_PORT"
	if wait_for 30 curl -fs -m 2 "http://127.0.0.1:$K8S_ETCD_PORT/health"; then
		pass "k8s: etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ { print $3 }') healthy on 127.0.0.1:$K8S_ETCD_PORT"
	else
		fail "k8s: etcd start" "GET /health not 200 within 30s$(bg_alive k8s-etcd || echo '; it exited')"
		tail_of "$LOGS/k8s-etcd.log" 10
		return 1
	fi
	start_bg k8s-apiserver "$LOGS/k8s-apiserver.log" "$K8S_BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$K8S_ETCD_PORT" --bind-address=127.0.0.1 --secure-port="$K8S_API_PORT" \
		--advertise-address=127.0.0.1 --tls-cert-file="$K8S_PKI/apiserver.crt" --tls-private-key-file="$K8S_PKI/apiserver.key" \
		--client-ca-file="$K8S_CA" --service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$K8S_PKI/sa.pub" --service-account-signing-key-file="$K8S_PKI/sa.key" \
		--service-cluster-ip-range=10.0.0.0/24 --token-auth-file="$K8S_PKI/tokens.csv" --authorization-mode=RBAC \
		--disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none --allow-privileged=true \
		--cert-dir="$K8S_D/apiserver-certs" --profiling=false
	if wait_for 90 k8s_readyz; then
		K8S_API_UP=1
		pass "k8s: kube-apiserver $("$K8S_BIN/kube-apiserver" --version | awk '{ print $2 }') ready on $K8S_API"
	else
		fail "k8s: kube-apiserver start" "GET $K8S_API/readyz not ok within 90s$(bg_alive k8s-apiserver || echo '; it exited')"
		tail_of "$LOGS/k8s-apiserver.log" 15
		return 1
	fi
}

# k8s_node_up: the node's containerd (CRI) and kubelet, registered. Their
# configuration is written here; test/e2e/k8s-node.sh runs them.
k8s_node_up() {
	local nd=$K8S_D/node
	mkdir -p "$nd/containerd" "$nd/kubelet" "$K8S_D/cni/bin" "$K8S_D/cni/net.d" "$K8S_D/certs.d/$UP"
	# restrict_oom_score_adj: the process lacks CAP_SYS_RESOURCE here
	cat >"$nd/containerd/config.toml" <<EOF
version = 2
root = "$K8S_D/containerd/root"
state = "$K8S_D/containerd/state"

[grpc]
  address = "$K8S_CTRD_SOCK"

[ttrpc]
  address = "$K8S_CTRD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$K8S_D/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$K8S_PAUSE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "$K8S_STREAM_PORT"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$K8S_D/cni/bin"
    conf_dir = "$K8S_D/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$K8S_D/certs.d"
EOF
	cat >"$K8S_D/certs.d/$UP/hosts.toml" <<EOF
server = "http://$UP"

[host."http://$UP"]
  capabilities = ["pull", "resolve"]
EOF
	# Evictions and image GC effectively off, no iptables, logs in the
	# temp dir, cgroup v1 allowed (the host's).
	cat >"$nd/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $K8S_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $K8S_KUBELET_HEALTHZ_PORT
enableServer: true
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$K8S_CTRD_SOCK
podLogsDir: $K8S_D/pod-logs
makeIPTablesUtilChains: false
oomScoreAdj: 0
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
registerNode: true
EOF
	printf '%s\n' "--config=$nd/kubelet/config.yaml" "--kubeconfig=$K8S_KUBECONFIG" \
		"--root-dir=$K8S_D/kubelet" "--cert-dir=$K8S_D/kubelet-pki" "--hostname-override=$K8S_NODE" "--v=2" \
		>"$nd/kubelet/args"
	start_bg k8s-node "$LOGS/k8s-node.log" unshare -m --propagation private \
		bash "$HERE/k8s-node.sh" "$nd" "$K8S_BIN/kubelet" "$LOGS/k8s-containerd.log" "$LOGS/k8s-kubelet.log"
	if wait_for 60 kubectl_ get node "$K8S_NODE"; then
		pass "k8s: node $K8S_NODE registered ($(kubectl_ get node "$K8S_NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}' 2>/dev/null))"
	else
		fail "k8s: node start" "node $K8S_NODE not registered within 60s$(bg_alive k8s-node || echo '; k8s-node.sh exited')"
		tail_of "$LOGS/k8s-node.log" 5
		tail_of "$LOGS/k8s-kubelet.log" 15
		return 1
	fi
}

# k8s_host_state: what the node may change on the host, one item a line:
# the three sysctls, and what exists of the paths the kubelet and
# containerd write outside the temp dir.
k8s_host_state() {
	local k
	for k in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
		echo "sysctl $k=$(sysctl -n "$k" 2>/dev/null)"
	done
	find /sys/fs/cgroup/*/kubepods -maxdepth 0 -type d 2>/dev/null | sed 's/^/cgroup /'
	find /var/log/containers -mindepth 1 -maxdepth 1 -name "*_${K8S_NS}_*" 2>/dev/null | sed 's/^/log /'
	[ -e /var/lib/kubelet/device-plugins/kubelet.sock ] && echo "socket /var/lib/kubelet/device-plugins/kubelet.sock"
	find /run/containerd/runc /run/containerd/s /run/containerd/fifo -mindepth 1 -maxdepth 1 2>/dev/null | sed 's/^/run /'
	return 0
}

# k8s_up: the whole cluster; returns 1 (after a FAIL) when a part failed.
k8s_up() {
	K8S_STARTED=1
	E2E_AT_EXIT+=(k8s_down)
	mkdir -p "$K8S_D"
	k8s_host_state >"$K8S_D/host-before"
	for d in /var/log/containers /var/lib/kubelet /run/containerd; do
		[ -e "$d" ] && echo "$d"
	done >"$K8S_D/host-dirs-before"
	if ! command -v openssl >/dev/null 2>&1; then
		note "installing openssl"
		run_client "$OUT/k8s-apt-openssl" 300 env DEBIAN_FRONTEND=noninteractive apt-get install -y openssl ||
			{ cmd_fail "k8s: apt-get install openssl" "$OUT/k8s-apt-openssl" $?; return 1; }
	fi
	if k8s_pki >"$OUT/k8s-pki" 2>&1; then
		pass "k8s: openssl made the cluster CA, the API server's certificate for 127.0.0.1 and the service account keys"
	else
		fail "k8s: certificates" "see $OUT/k8s-pki"
		tail_of "$OUT/k8s-pki" 5
		return 1
	fi
	k8s_control_plane_up || return 1
	k8s_node_up || return 1
	if kubectl_ create namespace "$K8S_NS" >"$OUT/k8s-ns" 2>&1; then
		pass "k8s: kubectl create namespace $K8S_NS"
	else
		cmd_fail "k8s: kubectl create namespace $K8S_NS" "$OUT/k8s-ns" 1
		return 1
	fi
}

# k8s_stop_pid FILE GRACE: TERM the process whose pid FILE holds, KILL it
# after GRACE seconds.
k8s_stop_pid() {
	local p i
	p=$(cat "$1" 2>/dev/null) || return 0
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || return 0
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$p" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null
	return 0
}

# k8s_down: stop the cluster in order and remove what the node left on the
# host; also at exit (E2E_AT_EXIT), so on failure and on the time limit.
# Safe to call again.
k8s_down() {
	local i c p left shims
	[ -n "$K8S_STARTED" ] && [ -z "$K8S_DOWN_DONE" ] || return 0
	K8S_DOWN_DONE=1
	if [ -n "$K8S_API_UP" ] && bg_alive k8s-node; then
		kubectl_ delete pods -n "$K8S_NS" --all --grace-period=1 --wait=false >/dev/null 2>&1
		for ((i = 0; i < 30; i++)); do
			[ -z "$(kubectl_ get pods -n "$K8S_NS" --no-headers 2>/dev/null)" ] && break
			sleep 1
		done
	fi
	k8s_stop_pid "$K8S_D/node/kubelet.pid" 10
	# the pods' containers and sandboxes: their shims outlive containerd
	if [ -S "$K8S_CTRD_SOCK" ]; then
		for c in $(k8s_ctr tasks ls -q 2>/dev/null); do k8s_ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1; done
		for ((i = 0; i < 50; i++)); do
			[ -z "$(k8s_ctr tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"')" ] && break
			sleep 0.2
		done
		for c in $(k8s_ctr tasks ls -q 2>/dev/null); do k8s_ctr tasks rm -f "$c" >/dev/null 2>&1; done
		for c in $(k8s_ctr containers ls -q 2>/dev/null); do k8s_ctr containers rm "$c" >/dev/null 2>&1; done
	fi
	k8s_stop_pid "$K8S_D/node/containerd.pid" 10
	stop_bg k8s-node 5
	# a shim left behind (its containerd's address names the temp dir)
	shims=$(pgrep -f "containerd-shim.* -address $K8S_CTRD_SOCK" 2>/dev/null)
	for p in $shims; do kill -KILL "$p" 2>/dev/null; done
	stop_bg k8s-apiserver 10
	stop_bg k8s-etcd 10
	# what the kubelet and containerd wrote outside the temp dir: the
	# kubelet's cgroups (every v1 hierarchy, depth first), the log links
	# and device-plugin socket at fixed paths, runc's state and the shims'
	# sockets and fifos under /run/containerd
	for c in /sys/fs/cgroup/*/kubepods; do
		[ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	rm -f /var/log/containers/*_"${K8S_NS}"_*.log
	rm -f /var/lib/kubelet/device-plugins/kubelet.sock
	k8s_host_state | grep '^run ' | while read -r _ p; do
		grep -qxF "run $p" "$K8S_D/host-before" 2>/dev/null || rm -rf -- "$p"
	done
	for c in /var/log/containers /var/lib/kubelet /run/containerd; do
		grep -qxF "$c" "$K8S_D/host-dirs-before" 2>/dev/null && continue
		# created by the node: removed when it holds nothing but
		# (empty) directories
		[ -d "$c" ] && [ -z "$(find "$c" ! -type d 2>/dev/null | head -n 1)" ] && rm -rf -- "$c"
	done
	k8s_host_state >"$K8S_D/host-after"
	left=$(diff "$K8S_D/host-before" "$K8S_D/host-after" | sed -n 's/^[<>] //p')
	if [ -z "$left" ] && [ -z "$shims" ]; then
		pass "k8s: teardown left the host as it was (sysctls, cgroups, /var/log/containers, /var/lib/kubelet, /run/containerd; no shim left)"
	else
		fail "k8s: teardown left the host as it was" "differences:${left:+ $(echo "$left" | tr '\n' ' ')}${shims:+ shims killed: $shims}"
	fi
}

# ---- pods --------------------------------------------------------------------

# k8s_pod NAME IMAGE [JOB_UID]: create pod NAME in $K8S_NS on the node, one
# container c running IMAGE (pulled every time: imagePullPolicy Always);
# with JOB_UID, controlled by the Job NAME of that uid.
k8s_pod() {
	local f=$K8S_D/pods/$1.yaml owner=""
	mkdir -p "$K8S_D/pods"
	[ -n "${3:-}" ] && owner="
  ownerReferences:
  - apiVersion: batch/v1
    kind: Job
    name: $1
    uid: $3
    controller: true"
	cat >"$f" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $K8S_NS$owner
spec:
  nodeName: $K8S_NODE
  hostNetwork: true
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: c
    image: $2
    imagePullPolicy: Always
EOF
	if ! kubectl_ apply -f "$f" >"$OUT/k8s-apply-$1" 2>&1; then
		cmd_fail "k8s: kubectl apply pod $1" "$OUT/k8s-apply-$1" 1
		return 1
	fi
}

# k8s_job_pod NAME IMAGE: a suspended Job NAME and, as k8s_pod, a pod NAME
# that Job controls (with no Job controller here, nothing else acts on
# either).
k8s_job_pod() {
	local f=$K8S_D/pods/$1-job.yaml uid
	mkdir -p "$K8S_D/pods"
	cat >"$f" <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $1
  namespace: $K8S_NS
spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: $2
EOF
	if ! kubectl_ apply -f "$f" >"$OUT/k8s-apply-$1-job" 2>&1; then
		cmd_fail "k8s: kubectl apply job $1" "$OUT/k8s-apply-$1-job" 1
		return 1
	fi
	uid=$(kubectl_ get job -n "$K8S_NS" "$1" -o jsonpath='{.metadata.uid}')
	if [ -z "$uid" ]; then
		fail "k8s: job $1's uid" "kubectl get job printed none"
		return 1
	fi
	k8s_pod "$1" "$2" "$uid"
}

# k8s_states: one line per pod of $K8S_NS, "NAME|WAITING_REASON|
# RUNNING_SINCE|WAITING_MESSAGE" from the API server (empty fields when the
# container is not in that state; the message last, as it may hold a |).
k8s_states() {
	kubectl_ get pods -n "$K8S_NS" -o jsonpath='{range .items[*]}{.metadata.name}|{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.running.startedAt}|{.status.containerStatuses[0].state.waiting.message}{"\n"}{end}' 2>/dev/null
}

# k8s_waiting_json POD: the container's state.waiting as the API server has
# it (JSON).
k8s_waiting_json() {
	kubectl_ get pod -n "$K8S_NS" "$1" -o jsonpath='{.status.containerStatuses[0].state.waiting}' 2>/dev/null
}

# k8s_wait_gone SECS POD...: delete the pods and wait until the API server
# has none of them.
k8s_wait_gone() {
	local secs=$1 i
	shift
	kubectl_ delete pod -n "$K8S_NS" --grace-period=1 --wait=false "$@" >/dev/null 2>&1
	for ((i = 0; i < secs; i++)); do
		[ -z "$(kubectl_ get pods -n "$K8S_NS" --no-headers "$@" 2>/dev/null)" ] && return 0
		sleep 1
	done
	return 1
}

# k8s_classify NAME POD WANT_EXIT: `kubectl get pod -o json | breakwater
# classify` must exit WANT_EXIT (0 transient, 1 fatal).
k8s_classify() {
	local n=$1 pod=$2 want=$3 f=$OUT/k8s-classify-$2 rc verdict
	kubectl_ get pod -n "$K8S_NS" "$pod" -o json >"$f.json" 2>"$f.err"
	"$TMP/breakwater" classify <"$f.json" >"$f" 2>&1
	rc=$?
	printf '%s\tclassify exit %s: %s\n' "$n" "$rc" "$(head -n 1 "$f")" >>"$K8S_RECORD"
	note "classify: $(head -n 1 "$f")"
	case $want in 0) verdict=transient ;; 1) verdict=fatal ;; *) verdict=unknown ;; esac
	if [ "$rc" = "$want" ]; then
		pass "$n: kubectl get pod -o json | breakwater classify rates it $verdict (exit $rc)"
	else
		fail "$n: kubectl get pod -o json | breakwater classify rates it $verdict" "exit $rc, want $want: $(head -n 3 "$f" | tr '\n' ' ')"
	fi
}

# ---- section: image pull errors through Breakwater ------------------------------

# Each fault: the pod, its upstream name, the fault proxy mode, the cause
# in Breakwater's crafted text.
K8S_FAULTS=(429 503 refused timeout)
declare -A K8S_MODE=([429]=429 [503]=503 [refused]=refuse [timeout]=hang)
declare -A K8S_CAUSE=(
	[429]="answered 429 Too Many Requests; retry after"
	[503]="answered 503 Service Unavailable; retry after"
	[refused]="unreachable: connection refused"
	[timeout]="unreachable: i/o timeout"
)
declare -A K8S_FP=() K8S_FPC=()
K8S_OUTAGE_SECS=35  # how long the upstreams stay down once the pods exist
K8S_RECOVER_SECS=150 # how long the pods may take to start after that
K8S_RECORD=$OUT/k8s-waiting.txt
: >"$K8S_RECORD"

# k8s_upstream F: the upstream name of fault F.
k8s_upstream() {
	case $1 in 429 | 503) echo "fault$1.test" ;; *) echo "$1.test" ;; esac
}

# k8s_fp_set F SETTING: switch fault F's proxy (see outage.sh's fp_set).
k8s_fp_set() {
	local want got
	want="mode ${2#set=}"
	want=${want%%&*}
	got=$(curl -sS -m 10 -X POST "http://${K8S_FPC[$1]}/mode?$2" 2>&1)
	[ "$got" = "$want" ] && return 0
	fail "k8s: fault proxy $1: $2" "${got:-no answer}"
	return 1
}

# k8s_mirror_up: the four fault proxies and mirror-k8s in front of them.
k8s_mirror_up() {
	local f ups=() up
	if [ ! -x "$TMP/faultproxy" ]; then
		run_client "$OUT/fp-build" 120 go build -o "$TMP/faultproxy" ./test/e2e/faultproxy ||
			{ cmd_fail "k8s: go build ./test/e2e/faultproxy" "$OUT/fp-build" $?; return 1; }
	fi
	for f in "${K8S_FAULTS[@]}"; do
		K8S_FP[$f]=127.0.0.1:$(free_port)
		K8S_FPC[$f]=127.0.0.1:$(free_port)
		start_bg "faultproxy-k8s-$f" "$LOGS/faultproxy-k8s-$f.stderr" "$TMP/faultproxy" --listen "${K8S_FP[$f]}" \
			--control "${K8S_FPC[$f]}" --upstream "http://$UP" --log "$LOGS/faultproxy-k8s-$f.log"
		ups+=(--upstream "$(k8s_upstream "$f")=http://${K8S_FP[$f]}")
	done
	K8S_BW=127.0.0.1:$(free_port)
	# As outage.sh's mirror-outage: a failing request ends after a 2 s
	# deadline, the breaker never opens (each pod sees its upstream's own
	# cause), every tag request asks the upstream and a cached tag is
	# served when it cannot answer.
	cat >"$K8S_D/mirror.yaml" <<EOF
cache:
  max_stale: 1h
$(fast_resilience "min_requests: 1000000")
log:
  level: info
  format: json
EOF
	start_bg mirror-k8s "$LOGS/mirror-k8s.log" "$TMP/breakwater" serve --config "$K8S_D/mirror.yaml" --listen "$K8S_BW" \
		--cache-dir "$K8S_D/cache" --tag-ttl 0s "${ups[@]}"
	for f in "${K8S_FAULTS[@]}"; do
		if ! wait_for 20 http_ok "http://${K8S_FP[$f]}/v2/"; then
			fail "k8s: faultproxy-k8s-$f start" "GET http://${K8S_FP[$f]}/v2/ not 200 within 20s"
			tail_of "$LOGS/faultproxy-k8s-$f.stderr" 5
			return 1
		fi
	done
	if wait_for 30 http_ok "http://$K8S_BW/healthz"; then
		pass "k8s: mirror-k8s healthy on $K8S_BW, upstreams $(for f in "${K8S_FAULTS[@]}"; do printf '%s ' "$(k8s_upstream "$f")"; done)each behind its fault proxy"
	else
		fail "k8s: mirror-k8s start" "GET http://$K8S_BW/healthz not 200 within 30s$(bg_alive mirror-k8s || echo '; it exited')"
		tail_of "$LOGS/mirror-k8s.log" 10
		return 1
	fi
	# hosts.toml for each upstream name: mirror-k8s is the server itself,
	# so containerd has no other host to fall back to (with the registry's
	# own host as server, containerd tries it after a 404 and reports its
	# error instead; see outage.sh's 404 checks). containerd still names
	# the registry in ?ns=, which is how mirror-k8s picks the upstream.
	for f in "${K8S_FAULTS[@]}"; do
		up=$(k8s_upstream "$f")
		mkdir -p "$K8S_D/certs.d/$up"
		cat >"$K8S_D/certs.d/$up/hosts.toml" <<EOF
server = "http://$K8S_BW"

[host."http://$K8S_BW"]
  capabilities = ["pull", "resolve"]
EOF
	done
}

# k8s_seed: the pause program, built static, pushed to the upstream as
# bw/pause:v1 (the sandbox) and as each test image.
k8s_seed() {
	if ! run_client "$OUT/k8s-pause-build" 120 env CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' \
		-o "$K8S_D/pause" ./test/e2e/pause; then
		cmd_fail "k8s: go build ./test/e2e/pause" "$OUT/k8s-pause-build" $?
		return 1
	fi
	if run_client "$OUT/k8s-seed" 120 go run ./test/e2e/seed --registry "$UP" --binary "$K8S_D/pause" \
		--only bw/pause,library/k8s-cached,library/k8s-429,library/k8s-503,library/k8s-refused,library/k8s-timeout,library/k8s-watch; then
		pass "k8s: seed pushed the pause program as bw/pause:v1 and library/k8s-{cached,429,503,refused,timeout,watch}:v1"
	else
		cmd_fail "k8s: seed --binary pause" "$OUT/k8s-seed" $?
		return 1
	fi
}

# k8s_record NAME POD: the pod's state.waiting, verbatim, to $K8S_RECORD
# and as a note.
k8s_record() {
	local w
	w=$(k8s_waiting_json "$2")
	printf '%s\t%s\n' "$1" "$w" >>"$K8S_RECORD"
	note "$1: $w"
}

# k8s_section_pull_errors: pods whose images come through mirror-k8s while
# its upstreams fail, see the README.
k8s_section_pull_errors() {
	local f pod name reason since msg i t0 trec bwm c all line stale blobs up digest
	local -A seen_err=() seen_back=() running=() classified=() fpmark=()
	echo "== k8s[pull]: pods pull through mirror-k8s; its upstreams answer 429 or 503, refuse connections, time out"
	k8s_mirror_up || return 0
	k8s_seed || return 0

	# -- before the outage: an image that starts, an image that is missing
	echo "== k8s[before]: upstreams up; fault503.test/library/k8s-cached:v1 runs, fault429.test/library/k8s-missing:v1 does not exist"
	k8s_pod k8s-cached-warm fault503.test/library/k8s-cached:v1 || return 0
	k8s_pod k8s-missing fault429.test/library/k8s-missing:v1 || return 0
	all=""
	for ((i = 0; i < 60; i++)); do
		while IFS='|' read -r name reason since msg; do
			case $name in
			k8s-cached-warm) [ -n "$since" ] && running[$name]=1 ;;
			k8s-missing)
				if [ -z "${seen_err[$name]:-}" ] && [ -n "$reason" ] && [ -n "$msg" ]; then
					seen_err[$name]=$reason
					k8s_record "k8s[missing] $reason" k8s-missing
					k8s_classify "k8s[missing]" k8s-missing 1
					case $msg in
					*"not found"*) pass "k8s[missing]: waiting $reason, the message says not found" ;;
					*) fail "k8s[missing]: waiting, the message says not found" "reason $reason, message: $msg" ;;
					esac
				fi
				;;
			esac
		done < <(k8s_states)
		[ -n "${running[k8s-cached-warm]:-}" ] && [ -n "${seen_err[k8s-missing]:-}" ] && all=1 && break
		sleep 1
	done
	if [ -n "${running[k8s-cached-warm]:-}" ]; then
		pass "k8s[before]: pod k8s-cached-warm Running (fault503.test/library/k8s-cached:v1 through mirror-k8s)"
	else
		fail "k8s[before]: pod k8s-cached-warm Running" "not within 60s: $(k8s_states | grep '^k8s-cached-warm|')"
		tail_of "$LOGS/k8s-kubelet.log" 10
	fi
	[ -n "${seen_err[k8s-missing]:-}" ] ||
		fail "k8s[missing]: waiting on the pull" "not within 60s: $(k8s_states | grep '^k8s-missing|')"
	[ -n "$all" ] || return 0
	if k8s_wait_gone 30 k8s-cached-warm k8s-missing; then
		pass "k8s[before]: pods k8s-cached-warm and k8s-missing deleted"
	else
		fail "k8s[before]: pods deleted" "still there after 30s"
		return 0
	fi
	# the node forgets the image: the pod in the outage pulls it again
	# (its name, name@digest and sha256:ID references: all the ones with
	# its manifest digest, which no other image shares)
	digest=$(k8s_ctr images ls 2>/dev/null | awk '$1 ~ /k8s-cached/ { print $3; exit }')
	for c in $(k8s_ctr images ls 2>/dev/null | awk -v d="$digest" 'NR > 1 && $3 == d { print $1 }'); do
		k8s_ctr images rm --sync "$c" >>"$OUT/k8s-ctr-rmi" 2>&1
	done
	if [ -z "$digest" ] || k8s_ctr images ls 2>/dev/null | awk -v d="$digest" '$3 == d' | grep -q .; then
		fail "k8s[before]: the node's containerd forgot library/k8s-cached" "manifest digest '${digest:-<not found>}', references left: $(k8s_ctr images ls -q | tr '\n' ' ')"
	else
		pass "k8s[before]: the node's containerd forgot library/k8s-cached (ctr -n k8s.io images rm)"
	fi

	# -- the outage
	echo "== k8s[outage]: the four upstreams fail for ${K8S_OUTAGE_SECS}s from the pods' creation"
	for f in "${K8S_FAULTS[@]}"; do
		k8s_fp_set "$f" "set=${K8S_MODE[$f]}" || return 0
		fpmark[$f]=$(log_mark "$LOGS/faultproxy-k8s-$f.log")
	done
	bwm=$(log_mark "$LOGS/mirror-k8s.log")
	t0=$(date +%s)
	k8s_pod k8s-cached fault503.test/library/k8s-cached:v1 || return 0
	for f in "${K8S_FAULTS[@]}"; do
		k8s_pod "k8s-$f" "$(k8s_upstream "$f")/library/k8s-$f:v1" || return 0
	done
	while [ $(($(date +%s) - t0)) -lt "$K8S_OUTAGE_SECS" ]; do
		while IFS='|' read -r pod reason since msg; do
			[ -n "$since" ] && [ -z "${running[$pod]:-}" ] && running[$pod]=$(($(date +%s) - t0))
			f=${pod#k8s-}
			if [ -z "${K8S_MODE[$f]:-}" ] || [ -z "$reason" ]; then continue; fi
			case $reason in
			ErrImagePull) [ -z "${seen_err[$pod]:-}" ] || continue; seen_err[$pod]=$msg ;;
			ImagePullBackOff) [ -z "${seen_back[$pod]:-}" ] || continue; seen_back[$pod]=$msg ;;
			*) continue ;;
			esac
			k8s_record "k8s[$f] $reason" "$pod"
			if [ -z "${classified[$pod]:-}" ]; then
				classified[$pod]=1
				k8s_classify "k8s[$f]" "$pod" 0
			fi
		done < <(k8s_states)
		sleep 1
	done
	for f in "${K8S_FAULTS[@]}"; do
		pod=k8s-$f
		up=$(k8s_upstream "$f")
		for reason in ErrImagePull ImagePullBackOff; do
			if [ "$reason" = ErrImagePull ]; then msg=${seen_err[$pod]:-}; else msg=${seen_back[$pod]:-}; fi
			if [ -z "$msg" ]; then
				fail "k8s[$f]: waiting $reason" "not seen within ${K8S_OUTAGE_SECS}s; last: $(k8s_states | grep "^$pod|")"
				continue
			fi
			case $msg in
			*"breakwater-transient: upstream $up ${K8S_CAUSE[$f]}"*)
				pass "k8s[$f]: waiting $reason, the message has 'breakwater-transient: upstream $up ${K8S_CAUSE[$f]}'" ;;
			*) fail "k8s[$f]: waiting $reason with Breakwater's crafted text" "want 'breakwater-transient: upstream $up ${K8S_CAUSE[$f]}', message: $msg" ;;
			esac
		done
		[ -n "${classified[$pod]:-}" ] || fail "k8s[$f]: breakwater classify" "the pod never waited on the pull"
		if [ -n "${running[$pod]:-}" ]; then
			fail "k8s[$f]: not running while the upstream is down" "Running after ${running[$pod]}s"
		else
			pass "k8s[$f]: not running while the upstream is down"
		fi
		c=$(tail -n "+${fpmark[$f]}" "$LOGS/faultproxy-k8s-$f.log" 2>/dev/null | grep '"msg":"request"' | grep -c "\"mode\":\"${K8S_MODE[$f]}\"")
		if [ "$f" = refused ]; then
			expect_eq "k8s[$f]: no request reached faultproxy-k8s-$f (it refuses connections)" 0 "$c" "requests logged"
		elif [ "$c" -gt 0 ]; then
			pass "k8s[$f]: mirror-k8s asked the upstream ($c requests met ${K8S_MODE[$f]})"
		else
			fail "k8s[$f]: mirror-k8s asked the upstream" "faultproxy-k8s-$f logged no request in mode ${K8S_MODE[$f]}"
		fi
	done
	if [ -n "${running[k8s-cached]:-}" ]; then
		pass "k8s[cached]: pod k8s-cached Running ${running[k8s-cached]}s into the outage of fault503.test"
	else
		fail "k8s[cached]: pod k8s-cached Running during the outage" "not within ${K8S_OUTAGE_SECS}s; last: $(k8s_states | grep '^k8s-cached|')"
	fi
	stale=$(bw_lines_k8s "$bwm" | awk '$2 ~ /^\/v2\/library\/k8s-cached\/manifests\/v1\?/ && $3 == 200 && $4 == "stale"' | wc -l)
	blobs=$(bw_lines_k8s "$bwm" | awk '$1 == "GET" && $2 ~ /^\/v2\/library\/k8s-cached\/blobs\/sha256:/ && $3 == 200' | wc -l)
	if [ "$stale" -ge 1 ] && [ "$blobs" -ge 1 ]; then
		pass "k8s[cached]: mirror-k8s served the tag stale ($stale) and the blobs ($blobs GETs) from its cache during the outage"
	else
		fail "k8s[cached]: mirror-k8s served the tag stale and the blobs from its cache" "stale tag answers $stale, blob GETs answered 200 $blobs; its k8s-cached requests:"
		bw_lines_k8s "$bwm" | grep k8s-cached | sed 's/^/    | /'
	fi

	# -- the recovery: nothing but the upstream changes
	echo "== k8s[recovery]: the upstreams answer again; the pods must start by themselves within ${K8S_RECOVER_SECS}s"
	for f in "${K8S_FAULTS[@]}"; do k8s_fp_set "$f" set=pass || return 0; done
	trec=$(date +%s)
	bwm=$(log_mark "$LOGS/mirror-k8s.log")
	while [ $(($(date +%s) - trec)) -lt "$K8S_RECOVER_SECS" ]; do
		while IFS='|' read -r pod reason since msg; do
			[ -n "$since" ] && [ -z "${running[$pod]:-}" ] && running[$pod]=$(($(date +%s) - trec))
		done < <(k8s_states)
		all=1
		for f in "${K8S_FAULTS[@]}"; do [ -n "${running[k8s-$f]:-}" ] || all=""; done
		[ -n "$all" ] && break
		sleep 1
	done
	for f in "${K8S_FAULTS[@]}"; do
		pod=k8s-$f
		if [ -n "${running[$pod]:-}" ]; then
			pass "k8s[$f]: pod $pod Running ${running[$pod]}s after the upstream recovered"
		else
			fail "k8s[$f]: pod $pod Running after the upstream recovered" "not within ${K8S_RECOVER_SECS}s; last: $(k8s_states | grep "^$pod|")"
		fi
		line=$(bw_lines_k8s "$bwm" | awk -v r="/v2/library/k8s-$f/manifests/" -v ns="ns=$(k8s_upstream "$f")" \
			'index($2, r) == 1 && index($2, ns) && $3 == 200' | head -n 1)
		if [ -n "$line" ]; then
			pass "k8s[$f]: the image came through mirror-k8s ($line)"
		else
			fail "k8s[$f]: the image came through mirror-k8s" "no manifest request for library/k8s-$f with ns=$(k8s_upstream "$f") answered 200 since the recovery"
		fi
	done
}

# ---- section: the admission webhook ------------------------------------------

# k8s_section_admission: Breakwater's admission webhook, on its own TLS
# listener (a certificate of the cluster CA for 127.0.0.1), registered with
# the API server for the pods of $K8S_NS; adm.test is the e2e's upstream
# registry, down.test a port nothing listens on.
k8s_section_admission() {
	local port dead cfg f rc ok i
	port=$(free_port)
	dead=$(free_port)
	cfg=$K8S_D/mirror-adm.yaml
	echo "== k8s[admission]: kubectl run through Breakwater's validating webhook (admission.enabled)"
	if ! k8s_cert admission IP:127.0.0.1,DNS:localhost >"$OUT/k8s-adm-cert" 2>&1; then
		fail "k8s[admission]: the webhook's certificate" "see $OUT/k8s-adm-cert"
		return 0
	fi
	cat >"$cfg" <<EOF
listen: 127.0.0.1:$port
tls:
  cert_file: $K8S_PKI/admission.crt
  key_file: $K8S_PKI/admission.key
admission:
  enabled: true
  timeout: 5s
$(fast_resilience "min_requests: 1000000")
default_upstream: adm.test
upstreams:
  adm.test:
    url: http://$UP
  down.test:
    url: http://127.0.0.1:$dead
log:
  level: info
  format: json
EOF
	start_bg mirror-k8s-adm "$LOGS/mirror-k8s-adm.log" "$TMP/breakwater" serve --config "$cfg" --cache-dir "$K8S_D/cache-adm"
	if ! wait_for 30 curl -fs -m 3 --cacert "$K8S_CA" "https://127.0.0.1:$port/healthz"; then
		fail "k8s[admission]: mirror-k8s-adm start" "GET https://127.0.0.1:$port/healthz not 200 within 30s$(bg_alive mirror-k8s-adm || echo '; it exited')"
		tail_of "$LOGS/mirror-k8s-adm.log" 10
		return 0
	fi
	f=$K8S_D/vwc.yaml
	cat >"$f" <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: bw-e2e-images
webhooks:
- name: images.breakwater.dev
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:$port/_breakwater/v1/admission
    caBundle: $(k8s_ca_bundle)
  namespaceSelector:
    matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values: ["$K8S_NS"]
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["pods"]
EOF
	if ! kubectl_ apply -f "$f" >"$OUT/k8s-vwc" 2>&1; then
		cmd_fail "k8s[admission]: kubectl apply the ValidatingWebhookConfiguration" "$OUT/k8s-vwc" 1
		return 0
	fi
	pass "k8s[admission]: ValidatingWebhookConfiguration bw-e2e-images sends $K8S_NS's pods to https://127.0.0.1:$port/_breakwater/v1/admission"
	# The API server takes a moment to call a new webhook: a missing
	# image is refused once it does.
	ok=""
	for ((i = 0; i < 30; i++)); do
		kubectl_ run ghost -n "$K8S_NS" --image=adm.test/library/ghost:v1 --restart=Never \
			--overrides="{\"spec\":{\"nodeName\":\"$K8S_NODE\"}}" >"$OUT/k8s-adm-ghost" 2>&1
		rc=$?
		if [ "$rc" != 0 ] && grep -q 'denied the request' "$OUT/k8s-adm-ghost"; then
			ok=1
			break
		fi
		# created before the webhook was called: not the check
		[ "$rc" = 0 ] && k8s_wait_gone 20 ghost >/dev/null
		sleep 1
	done
	printf 'k8s[admission] kubectl run, missing image\trc=%s: %s\n' "$rc" "$(tr '\n' ' ' <"$OUT/k8s-adm-ghost")" >>"$K8S_RECORD"
	note "kubectl run ghost: $(head -n 2 "$OUT/k8s-adm-ghost" | tr '\n' ' ')"
	if [ -n "$ok" ] && grep -q 'admission webhook "images.breakwater.dev" denied the request: image adm.test/library/ghost:v1 does not exist: adm.test answered 404' "$OUT/k8s-adm-ghost"; then
		pass "k8s[admission]: kubectl run with a missing image is refused, naming the image and adm.test's 404"
	else
		fail "k8s[admission]: kubectl run with a missing image is refused with Breakwater's message" "rc $rc: $(head -n 3 "$OUT/k8s-adm-ghost" | tr '\n' ' ')"
	fi
	if [ -z "$(kubectl_ get pod -n "$K8S_NS" ghost --no-headers 2>/dev/null)" ]; then
		pass "k8s[admission]: no pod ghost was created"
	else
		fail "k8s[admission]: no pod ghost was created" "the API server has one"
	fi
	# Accepted: an image that exists (dry run: nothing is pulled), and one
	# whose registry is down, with the webhook's warning.
	kubectl_ run pause -n "$K8S_NS" --image=adm.test/bw/pause:v1 --restart=Never --dry-run=server >"$OUT/k8s-adm-ok" 2>&1
	rc=$?
	if [ "$rc" = 0 ] && ! grep -qi warning "$OUT/k8s-adm-ok"; then
		pass "k8s[admission]: kubectl run with an existing image is accepted, with no warning"
	else
		fail "k8s[admission]: kubectl run with an existing image is accepted" "rc $rc: $(head -n 3 "$OUT/k8s-adm-ok" | tr '\n' ' ')"
	fi
	kubectl_ run down -n "$K8S_NS" --image=down.test/library/x:v1 --restart=Never --dry-run=server >"$OUT/k8s-adm-down" 2>&1
	rc=$?
	printf 'k8s[admission] kubectl run, registry down\trc=%s: %s\n' "$rc" "$(tr '\n' ' ' <"$OUT/k8s-adm-down")" >>"$K8S_RECORD"
	note "kubectl run down: $(head -n 2 "$OUT/k8s-adm-down" | tr '\n' ' ')"
	if [ "$rc" = 0 ] && grep -q 'Warning: breakwater: down.test/library/x:v1 could not be checked' "$OUT/k8s-adm-down" &&
		grep -q 'unreachable: connection refused' "$OUT/k8s-adm-down"; then
		pass "k8s[admission]: with the upstream down kubectl run is accepted, warning that the image could not be checked and why"
	else
		fail "k8s[admission]: with the upstream down kubectl run is accepted with a warning" "rc $rc: $(head -n 3 "$OUT/k8s-adm-down" | tr '\n' ' ')"
	fi
	kubectl_ delete validatingwebhookconfiguration bw-e2e-images >/dev/null 2>&1
	stop_bg mirror-k8s-adm 5
}

# ---- section: breakwater watch -------------------------------------------------

# k8s_section_watch: breakwater watch on $K8S_NS with --end-after 2: a pod
# whose image is missing gets the ImagePullFatal Event, is counted in the
# gauge and is deleted after two fatal back-offs; a pod waiting through an
# outage is left alone and starts when the upstream recovers.
k8s_section_watch() {
	local mport i ev gauge gone started ended outage_ev t0 jobgone jobended
	mport=$(free_port)
	echo "== k8s[watch]: breakwater watch --end-after 2 reports and ends a pod whose image is missing, and leaves one waiting through an outage"
	[ -n "${K8S_FPC[503]:-}" ] || {
		fail "k8s[watch]" "mirror-k8s is not up (the pull section did not start it)"
		return 0
	}
	start_bg k8s-watch "$LOGS/k8s-watch.log" "$TMP/breakwater" watch --kubeconfig "$K8S_KUBECONFIG" --namespace "$K8S_NS" \
		--end-after 2 --listen "127.0.0.1:$mport"
	if ! wait_for 30 http_ok "http://127.0.0.1:$mport/healthz"; then
		fail "k8s[watch]: breakwater watch start" "GET /healthz not 200 within 30s$(bg_alive k8s-watch || echo '; it exited')"
		tail_of "$LOGS/k8s-watch.log" 10
		return 0
	fi
	pass "k8s[watch]: breakwater watch has listed the pods of $K8S_NS (healthz ok)"
	k8s_fp_set 503 set=503 || return 0
	t0=$(date +%s)
	k8s_pod k8s-watch-missing fault429.test/library/k8s-missing:v1 || return 0
	k8s_pod k8s-watch-outage fault503.test/library/k8s-watch:v1 || return 0
	# A Job's pod (the Job suspended: nothing here runs Jobs) is given the
	# condition before it is deleted; the watch deletes it and says so
	# only once the API server took the condition.
	k8s_job_pod k8s-watch-job fault429.test/library/k8s-missing:v1 || return 0
	gauge="" gone="" ended="" jobgone="" jobended=""
	for ((i = 0; i < 120; i++)); do
		[ -n "$gauge" ] || gauge=$(curl -s -m 3 "http://127.0.0.1:$mport/metrics" | grep -E '^breakwater_pods_image_fatal\{namespace="'"$K8S_NS"'",reason="not-found"\} [12]$')
		if [ -z "$gone" ] && [ -z "$(kubectl_ get pod -n "$K8S_NS" k8s-watch-missing --no-headers 2>/dev/null)" ]; then
			gone=$(($(date +%s) - t0))
		fi
		if [ -z "$jobgone" ] && [ -z "$(kubectl_ get pod -n "$K8S_NS" k8s-watch-job --no-headers 2>/dev/null)" ]; then
			jobgone=$(($(date +%s) - t0))
		fi
		ended=$(kubectl_ get events -n "$K8S_NS" --field-selector involvedObject.name=k8s-watch-missing,reason=ImagePullFatalEnded \
			-o jsonpath='{.items[*].message}' 2>/dev/null)
		jobended=$(kubectl_ get events -n "$K8S_NS" --field-selector involvedObject.name=k8s-watch-job,reason=ImagePullFatalEnded \
			-o jsonpath='{.items[*].message}' 2>/dev/null)
		[ -n "$gone" ] && [ -n "$ended" ] && [ -n "$gauge" ] && [ -n "$jobgone" ] && [ -n "$jobended" ] && break
		sleep 1
	done
	ev=$(kubectl_ get events -n "$K8S_NS" --field-selector involvedObject.name=k8s-watch-missing,reason=ImagePullFatal \
		-o jsonpath='{range .items[*]}{.type} {.reason} {.message}{"\n"}{end}' 2>/dev/null)
	printf 'k8s[watch] events of k8s-watch-missing\t%s | %s\n' "$ev" "$ended" >>"$K8S_RECORD"
	note "k8s-watch-missing: ${ev:-<no ImagePullFatal event>} | ${ended:-<no ImagePullFatalEnded event>}"
	case $ev in
	"Warning ImagePullFatal container c: image fault429.test/library/k8s-missing:v1 will never pull"*)
		pass "k8s[watch]: the missing image's pod got a Warning ImagePullFatal Event naming the container and the image" ;;
	*) fail "k8s[watch]: an ImagePullFatal Event on the missing image's pod" "events: ${ev:-none}" ;;
	esac
	expect_eq "k8s[watch]: one ImagePullFatal Event, not one per pull" 1 "$(printf '%s\n' "$ev" | grep -c ImagePullFatal)" "events"
	if [ -n "$gauge" ]; then
		pass "k8s[watch]: /metrics counted it: $gauge"
	else
		fail "k8s[watch]: breakwater_pods_image_fatal counts the pod" "no such sample within 120s"
	fi
	if [ -n "$gone" ] && [[ $ended == *"waited 2 back-offs"* ]]; then
		pass "k8s[watch]: the pod was deleted ${gone}s after its creation, after 2 fatal back-offs, with an ImagePullFatalEnded Event"
	else
		fail "k8s[watch]: the pod deleted after 2 fatal back-offs" "gone after ${gone:-never}s; ImagePullFatalEnded: ${ended:-none}"
		tail_of "$LOGS/k8s-watch.log" 10
	fi
	if [ -n "$jobgone" ] && [[ $jobended == *"waited 2 back-offs"* ]] && ! grep -q 'its condition was refused' "$LOGS/k8s-watch.log"; then
		pass "k8s[watch]: the Job's pod was given the condition breakwater.dev/ImagePullFatal and deleted ${jobgone}s after its creation"
	else
		fail "k8s[watch]: the Job's pod given the condition and deleted" "gone after ${jobgone:-never}s; ImagePullFatalEnded: ${jobended:-none}"
		grep 'k8s-watch-job' "$LOGS/k8s-watch.log" | tail -n 5 | sed 's/^/    | /'
	fi
	kubectl_ delete job -n "$K8S_NS" k8s-watch-job --wait=false >/dev/null 2>&1
	outage_ev=$(kubectl_ get events -n "$K8S_NS" --field-selector involvedObject.name=k8s-watch-outage \
		-o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' 2>/dev/null | grep -c '^ImagePullFatal')
	if [ -n "$(kubectl_ get pod -n "$K8S_NS" k8s-watch-outage --no-headers 2>/dev/null)" ] && [ "$outage_ev" = 0 ]; then
		pass "k8s[watch]: the pod waiting through the outage was left alone (no ImagePullFatal, not deleted) for $(($(date +%s) - t0))s"
	else
		fail "k8s[watch]: the pod waiting through the outage left alone" "$outage_ev ImagePullFatal events; pod: $(k8s_states | grep '^k8s-watch-outage|')"
	fi
	k8s_fp_set 503 set=pass || return 0
	started=""
	for ((i = 0; i < K8S_RECOVER_SECS; i++)); do
		started=$(kubectl_ get pod -n "$K8S_NS" k8s-watch-outage -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}' 2>/dev/null)
		[ -n "$started" ] && break
		sleep 1
	done
	if [ -n "$started" ]; then
		pass "k8s[watch]: the pod waiting through the outage started when fault503.test recovered (${i}s)"
	else
		fail "k8s[watch]: the outage's pod started after the recovery" "not within ${K8S_RECOVER_SECS}s: $(k8s_states | grep '^k8s-watch-outage|')"
	fi
	stop_bg k8s-watch 5
}

# bw_lines_k8s FROM: mirror-k8s's request lines from line FROM as "METHOD
# URI STATUS CACHE" (the URI with its query).
bw_lines_k8s() {
	tail -n "+$1" "$LOGS/mirror-k8s.log" 2>/dev/null | grep '"msg":"request"' |
		sed -E 's/.*"method":"([^"]*)","path":"([^"]*)","query":"([^"]*)","status":([0-9]+).*/\1 \2?\3 \4 &/' |
		awk '{ c = "-"; if (match($0, /"cache":"[^"]*"/)) c = substr($0, RSTART + 9, RLENGTH - 10); print $1, $2, $3, c }'
}

# ---- the phase -----------------------------------------------------------------

# K8S_SECTIONS: what runs against the cluster, in order, each a function
# that makes its own PASS and FAIL lines and returns 0 (a section that
# cannot go on after a FAIL returns early; the next one still runs). To add
# a section, define k8s_section_NAME above and append it here.
K8S_SECTIONS=(k8s_section_pull_errors k8s_section_admission k8s_section_watch)

echo "== k8s: a kube-apiserver and a kubelet on containerd's CRI, their images through Breakwater"
if run_client "$OUT/k8s.sh" 1200 bash "$ROOT/scripts/k8s.sh"; then
	K8S_BIN=$(tail -n 1 "$OUT/k8s.sh")
	pass "k8s: scripts/k8s.sh provides kube-apiserver, kubelet and kubectl $("$K8S_BIN/kubelet" --version | awk '{ print $2 }') ($K8S_BIN)"
	if [ ! -x "$TMP/breakwater" ]; then
		run_client "$OUT/bw-build" 300 go build -o "$TMP/breakwater" ./cmd/breakwater ||
			cmd_fail "k8s: go build ./cmd/breakwater" "$OUT/bw-build" $?
	fi
	if [ -x "$TMP/breakwater" ] && k8s_up; then
		for s in "${K8S_SECTIONS[@]}"; do
			"$s"
		done
	fi
	k8s_down
else
	cmd_fail "k8s: scripts/k8s.sh" "$OUT/k8s.sh" $?
fi
note "k8s phase: $(($(date +%s) - K8S_T0))s${E2E_KEEP:+; waiting states in $K8S_RECORD}"
