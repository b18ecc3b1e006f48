#!/usr/bin/env bash
# One-shot set-up on a fresh Debian machine (idempotent; a second run takes seconds):
#   1. system packages (iptables, nftables, ipset, conntrack, iproute2, ipvsadm, jq, busybox-static)
#   2. a virtualenv in .venv with the plugin and its test extras
#   3. the pinned Kubernetes/etcd/kwok binaries (cache, else download, else build from the Go module proxy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "[setup] system packages"
bash scripts/install-system-deps.sh

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PY" -m venv .venv
fi
echo "[setup] python packages"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

echo "[setup] kubernetes binaries"
.venv/bin/k8sstate binaries install
