#!/usr/bin/env bash
# The `existing` provider end to end against a real multi-node cluster (the kind stage's last step, run by
# scripts/kind-e2e.sh; also runnable alone with the project's engine up):
#   1. `k8sstate cluster create --provider kind --kind-config tests/data/kind-existing.yaml --kind-image ...`
#      (1 control plane + 1 worker, real kubelets);
#   2. what a user of such a cluster supplies (tests/existing_kind.py): a debug image the nodes have and
#      etcd's endpoint + client certificates taken from the control-plane node;
#   3. tests/test_provider_existing_kind.py (debug-pod capture == docker exec capture, etcd, nothing else
#      touched, the plugin with --k8sstate-provider existing), tests/test_k8s_workloads_kind.py (load_image,
#      exec, logs, port_forward) and the findings with --k8sstate-provider existing --k8sstate-kubeconfig
#      (those needing another provider's capability or cluster shape skip with the reason);
# then deletes the cluster -- also on failure or Ctrl-C.
# Needs: root, DOCKER_HOST (the project's engine), K8SSTATE_KIND_IMAGE. Usage: scripts/existing-on-kind.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
: "${DOCKER_HOST:?set DOCKER_HOST to the project engine: unix:///run/k8sstate-docker/docker.sock}"
: "${K8SSTATE_KIND_IMAGE:?set K8SSTATE_KIND_IMAGE to the kind node image}"

name=${K8SSTATE_EXISTING_NAME:-k8ss-existing}
dir=$(mktemp -d /tmp/k8sstate-existing.XXXXXX)
t0=$(date +%s)

cleanup() {
    rc=$?
    trap '' INT TERM
    trap - EXIT
    timeout 600 "$PY" -m pytest_k8sstate.cli cluster delete --provider kind --name "$name" || rc=1
    rm -rf "$dir"
    echo "[existing-on-kind] done in $(($(date +%s) - t0))s (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "[existing-on-kind] kind cluster $name (1 control plane + 1 worker)"
"$PY" -m pytest_k8sstate.cli cluster create --provider kind --name "$name" --nodes 1 \
    --kind-config tests/data/kind-existing.yaml --kind-image "$K8SSTATE_KIND_IMAGE" --kubeconfig "$dir/kubeconfig"
exports=$("$PY" tests/existing_kind.py "$name" "$dir/pki")
eval "$exports"
export K8SSTATE_EXISTING_KIND_CONFIG=tests/data/kind-existing.yaml

echo "[existing-on-kind] existing provider + workload helper tests"
"$PY" -m pytest -p no:cacheprovider -q -rs tests/test_provider_existing_kind.py tests/test_k8s_workloads_kind.py "$@"

echo "[existing-on-kind] findings with --k8sstate-provider existing"
"$PY" -m pytest -p no:cacheprovider -q -rs tests/findings --k8sstate-provider existing \
    --k8sstate-kubeconfig "$dir/kubeconfig" "$@"
