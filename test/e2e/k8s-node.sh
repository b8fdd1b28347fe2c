#!/usr/bin/env bash
# The k8s phase's node (test/e2e/k8s.sh): containerd with CRI, then the
# kubelet, both in this process's mount namespace, which k8s.sh makes
# private for them:
#
#   setsid unshare -m --propagation private bash test/e2e/k8s-node.sh DIR KUBELET CONTAINERD_LOG KUBELET_LOG
#
# DIR holds containerd/config.toml, kubelet/config.yaml, kubeconfig and the
# kubelet's flags in kubelet/args (one a line); the pids go to
# DIR/containerd.pid and DIR/kubelet.pid, so that k8s.sh stops the kubelet
# first, then removes the pods' containers through containerd, then stops it.
#
# The kubelet's container manager sets three host-wide sysctls that differ
# here (vm.overcommit_memory 1, kernel.panic 10, kernel.panic_on_oops 1). So
# that the shared host keeps its values, regular files already holding the
# kubelet's are bind-mounted over those /proc/sys files in this namespace
# only; the kubelet finds them right and writes nothing. Its mounts (pod
# volumes) are in the same namespace as containerd's and runc's, so the
# containers see them.
set -u
dir=$1 kubelet=$2 ctrd_log=$3 kubelet_log=$4

mkdir -p "$dir/sysctl"
for kv in vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1; do
	f=$dir/sysctl/${kv%%=*}
	mkdir -p "${f%/*}"
	echo "${kv#*=}" >"$f"
	if ! mount --bind "$f" "/proc/sys/${kv%%=*}"; then
		echo "k8s-node.sh: cannot mask /proc/sys/${kv%%=*}" >&2
		exit 1
	fi
done

sock=$(awk -F'"' '/^ *address *=/ { print $2; exit }' "$dir/containerd/config.toml")
# a socket left by an earlier containerd would answer for a moment
rm -f "$sock" "$sock.ttrpc"
containerd --config "$dir/containerd/config.toml" >"$ctrd_log" 2>&1 &
echo $! >"$dir/containerd.pid"
up=""
for _ in $(seq 1 150); do
	if timeout 5 ctr -a "$sock" version >/dev/null 2>&1; then
		up=1
		break
	fi
	kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || break
	sleep 0.2
done
if [ -z "$up" ]; then
	echo "k8s-node.sh: containerd did not answer on $sock within 30s" >&2
	exit 1
fi
echo "k8s-node.sh: containerd $(containerd --version | awk '{ print $3 }') answers on $sock"

mapfile -t args <"$dir/kubelet/args"
"$kubelet" "${args[@]}" >"$kubelet_log" 2>&1 &
echo $! >"$dir/kubelet.pid"
echo "k8s-node.sh: kubelet started (pid $!)"
wait
