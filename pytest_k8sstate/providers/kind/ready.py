"""When is a kind cluster ready: every node Ready with its Lease, and CoreDNS available.

``kind create cluster --wait`` covers control-plane nodes only; :func:`wait_ready` waits for the rest with
``kubectl`` inside the control-plane node (the admin kubeconfig there works whatever the engine's network).
:func:`inotify_warning` names kind's known host limit before a create.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.kind import noderoutes
from pytest_k8sstate.util.poll import wait_until
from pytest_k8sstate.util.progress import progress as live_progress

__all__ = [
    "INOTIFY_INSTANCES",
    "deployment_available",
    "inotify_warning",
    "missing_names",
    "not_ready",
    "read_int",
    "wait_ready",
]

INOTIFY_INSTANCES = 512
KUBECTL = ("kubectl", "--kubeconfig=/etc/kubernetes/admin.conf")


def missing_names(
    list_json: str, expected: Sequence[str], where: Callable[[dict[str, Any]], bool] | None = None
) -> list[str]:
    """Names in ``expected`` with no item (satisfying ``where``) in a ``kubectl get … -o json`` list."""
    try:
        items = json.loads(list_json).get("items") or []
    except (ValueError, AttributeError):
        return list(expected)
    have = {
        (item.get("metadata") or {}).get("name")
        for item in items
        if isinstance(item, dict) and (where is None or where(item))
    }
    return [n for n in expected if n not in have]


def _node_ready(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def not_ready(nodes_json: str, expected: Sequence[str]) -> list[str]:
    """Names in ``expected`` whose Node is missing or not Ready in ``kubectl get nodes -o json``."""
    return missing_names(nodes_json, expected, _node_ready)


def deployment_available(deployment_json: str) -> bool:
    """True when every desired replica of the Deployment is available."""
    try:
        d = json.loads(deployment_json)
        want = int((d.get("spec") or {}).get("replicas", 1))
        have = int((d.get("status") or {}).get("availableReplicas") or 0)
    except (ValueError, AttributeError, TypeError):
        return False
    return have >= want


def inotify_warning(max_user_instances: int | None) -> str | None:
    """kind's known issue: every node's systemd/kubelet/containerd use inotify instances; with the
    kernel default (128) kubelets of later nodes die with "inotify_init: too many open files"."""
    if max_user_instances is None or max_user_instances >= INOTIFY_INSTANCES:
        return None
    return (
        f"fs.inotify.max_user_instances is {max_user_instances}: with several kind nodes on this machine "
        "kubelets fail with 'inotify_init: too many open files'; raise it with "
        f"`sysctl -w fs.inotify.max_user_instances={INOTIFY_INSTANCES}` (kind's known issue)"
    )


def read_int(path: Path) -> int | None:
    """The first number in ``path`` (a sysctl file), None when unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def not_ready_yet(cluster: Cluster) -> str | None:
    """None when every node is Ready with its Lease and CoreDNS is available, else what is missing."""
    cp = cluster.control_plane.exec
    names = [n.name for n in cluster.nodes]
    res = cp.run([*KUBECTL, "get", "nodes", "-o", "json"], check=False, timeout=30)
    waiting = not_ready(res.text, names) if res.returncode == 0 else ["api"]
    if not waiting:
        # a kubelet may report Ready before its node Lease exists: snapshots of a "ready" cluster
        # must not depend on that race (finding 6 compares the keys of two clusters)
        res = cp.run(
            [*KUBECTL, "-n", "kube-node-lease", "get", "leases", "-o", "json"], check=False, timeout=30
        )
        waiting = [f"lease {n}" for n in missing_names(res.text, names)] if res.returncode == 0 else ["api"]
    if not waiting:
        dns = cp.run(
            [*KUBECTL, "-n", "kube-system", "get", "deployment", "coredns", "-o", "json"],
            check=False,
            timeout=30,
        )
        if dns.returncode != 0 or deployment_available(dns.text):
            return None  # no CoreDNS deployment (custom config): nothing to wait for
        waiting = ["coredns"]
    return ", ".join(waiting)


def wait_ready(cluster: Cluster, timeout: float) -> None:
    """Wait until :func:`not_ready_yet` is None; ProviderError naming what is missing after ``timeout``."""
    hint = f"see `kind export logs --name {cluster.name}`"
    if cluster.details.get("default_cni") in (noderoutes.CONFIGMAP, *noderoutes.MODES):
        hint += f" and `journalctl -u {noderoutes.UNIT_NAME}` in a node"
    with live_progress(f"kind cluster {cluster.name!r}") as live:
        live.step("waiting for every node Ready with its Lease and CoreDNS available")

        def probe() -> str | None:
            why = not_ready_yet(cluster)
            live.step(f"waiting for {why}" if why else "ready")
            return why

        wait_until(
            f"kind cluster {cluster.name!r} to be ready",
            probe,
            timeout=timeout,
            error=ProviderError,
            interval=1.0,
            max_interval=1.0,
            details=lambda: hint,
        )
