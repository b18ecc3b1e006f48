#!/usr/bin/env bash
# The kind provider end to end on a machine without a registry (docs/kind-on-restricted-machines.md):
#   1. the project's Docker engine (scripts/docker-setup.sh start: Debian's docker.io, own netns),
#   2. the offline node image (k8sstate image build; cached, rebuilt only when its inputs change: a fresh
#      machine builds CoreDNS, crictl, kubelet and kubeadm from the Go module proxy),
#   3. the provider contract tests and the findings suite on real kind clusters,
# then stops the engine again. What it starts or changes is undone on exit, failure or Ctrl-C: clusters a
# dead test session left, the engine and its namespace, fs.inotify.max_user_instances (raised to 512 while
# kind nodes run), an empty /lib/modules docker had to create for kind's bind mount. Packages it installs
# (docker.io, debootstrap) and the cached node image stay.
# Usage: scripts/kind-e2e.sh [extra pytest args]     (make test-kind)
# K8SSTATE_KIND_DEFAULT_CNI=auto|kindnet|k8sstate-node-routes picks the node image's default CNI (auto:
# kindnet when a kindnetd binary is at hand, see docs/kind-on-restricted-machines.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if [ "$(id -u)" != 0 ]; then
    echo "kind-e2e: needs root (Docker engine, network namespace)" >&2
    exit 1
fi

inotify=/proc/sys/fs/inotify/max_user_instances
old_inotify=$(cat "$inotify")
had_modules=0
[ -e /lib/modules ] && had_modules=1
engine_started=0

cleanup() {
    rc=$?
    trap '' INT TERM # a second Ctrl-C must not cut the clean-up short
    trap - EXIT
    # clusters of a pytest that died hard (their forwarders run on the root namespace's loopback)
    timeout 600 "$PY" -c 'from pytest_k8sstate.providers.kind.provider import KindProvider; KindProvider().reap()' ||
        true
    if [ "$engine_started" = 1 ]; then
        echo "[kind-e2e] stopping the Docker engine"
        PYTHON="$PY" timeout 600 bash scripts/docker-setup.sh stop || rc=1
    fi
    if [ "$(cat "$inotify")" != "$old_inotify" ]; then
        echo "$old_inotify" >"$inotify" || true
    fi
    if [ "$had_modules" = 0 ] && [ -d /lib/modules ]; then
        rmdir /lib/modules 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v debootstrap >/dev/null; then
    echo "[kind-e2e] installing debootstrap (Debian package)"
    args=(-y -o DPkg::Lock::Timeout=300 --no-install-recommends debootstrap)
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install "${args[@]}" || {
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get update -q
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install "${args[@]}"
    }
fi

if ! PYTHON="$PY" bash scripts/docker-setup.sh status >/dev/null 2>&1; then
    engine_started=1
    PYTHON="$PY" bash scripts/docker-setup.sh start
fi
export DOCKER_HOST=unix:///run/k8sstate-docker/docker.sock

if [ "$old_inotify" -lt 512 ]; then
    echo "[kind-e2e] fs.inotify.max_user_instances $old_inotify -> 512 while kind nodes run (restored on exit)"
    echo 512 >"$inotify"
fi

echo "[kind-e2e] node image"
# one JSON line on stdout ({"tag": ..., "tarball": ..., ...}); progress goes to stderr
out=$("$PY" -m pytest_k8sstate.cli image build --default-cni "${K8SSTATE_KIND_DEFAULT_CNI:-auto}")
echo "$out"
K8SSTATE_KIND_IMAGE=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["tag"])' "$out")
export K8SSTATE_KIND_IMAGE

echo "[kind-e2e] provider contract + kind provider tests on kind ($K8SSTATE_KIND_IMAGE)"
K8SSTATE_CONTRACT_PROVIDERS=kind "$PY" -m pytest -p no:cacheprovider -q \
    tests/test_provider_contract.py tests/test_provider_kind.py tests/test_traffic_image.py "$@"

# JUnit files of the runs below (each finding test on a CNI records its node footprint): the side-by-side CNI
# table of this run is generated from them at the end (docs/cnis.md "Regenerate the table")
runs=${K8SSTATE_CI_RUNS:-.k8sstate/ci-runs}
rm -rf "$runs" && mkdir -p "$runs"

echo "[kind-e2e] findings on kind (+ step logs and pod network namespaces on kind)"
"$PY" -m pytest -p no:cacheprovider -q tests/findings tests/test_logs_kind.py tests/test_pod_netns_kind.py tests/test_kind_fresh.py \
    --k8sstate-provider kind --junitxml "$runs/ptp-iptables.xml" "$@"

# CNI x kube-proxy mode: the findings whose claims involve the pod network, on two more combinations (ptp x
# iptables ran above; docs/cnis.md has the full-matrix command)
# (findings 26, 32, 34 pick each CNI by marker: they ran for every CNI above under iptables; hostPort on bridge
# also under nftables here)
matrix_findings=(tests/findings/test_f02_pod.py tests/findings/test_f25_real_traffic.py
    tests/findings/test_f32_hostport.py)
for combo in "bridge nftables hostport_bridge" "flannel iptables f02"; do
    read -r cni mode extra <<<"$combo"
    echo "[kind-e2e] findings on kind, CNI $cni x kube-proxy $mode"
    "$PY" -m pytest -p no:cacheprovider -q "${matrix_findings[@]}" -k "f02 or f25 or $extra" \
        --k8sstate-provider kind --k8sstate-cni "$cni" --k8sstate-proxy-mode "$mode" \
        --junitxml "$runs/$cni-$mode.xml" "$@"
done
echo "[kind-e2e] CNI table of this run: $runs/cni-table.md"
"$PY" -m pytest_k8sstate.cli findings cni-table "$runs"/*.xml >"$runs/cni-table.md"

# IPv6 + IPv4: a dual-stack kind cluster (the node-routes agent gives pods an address per family), finding 33
echo "[kind-e2e] findings on kind, dual-stack"
"$PY" -m pytest -p no:cacheprovider -q tests/findings/test_f33_dual_stack.py --k8sstate-provider kind \
    --k8sstate-ip-family dual "$@"

# The existing provider against a real multi-node cluster (kind's kubeconfig, real kubelets): debug-pod node
# capture == docker exec capture, etcd with the control-plane's certificates, the workload helpers, the
# findings through --k8sstate-provider existing; its cluster is deleted on exit, failure or Ctrl-C
echo "[kind-e2e] existing provider on kind"
PYTHON="$PY" bash scripts/existing-on-kind.sh "$@"
