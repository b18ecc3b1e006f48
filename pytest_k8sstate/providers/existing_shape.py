"""The ``existing`` provider's one cluster vs. the shape a test's ``k8sstate(...)`` marker asks for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_k8sstate.providers.base import Cluster

__all__ = ["shape_mismatch"]


def shape_mismatch(cluster: Cluster, requested: Mapping[str, Any]) -> str | None:
    """Why the attached ``cluster`` is not the shape a ``k8sstate(...)`` marker asks for (None: it is).

    The existing provider attaches to one cluster as it is: a test asking for another kube-proxy mode, number
    of workers, CNI or version is skipped with this reason instead of running on the wrong cluster.
    """
    problems = []
    mode = requested.get("proxy_mode")
    if mode is not None and mode != cluster.proxy_mode:
        problems.append(f"kube-proxy mode {mode} (it runs {cluster.proxy_mode})")
    nodes = requested.get("nodes")
    if nodes is not None and nodes != len(cluster.workers):
        problems.append(f"{nodes} worker node(s) (it has {len(cluster.workers)})")
    cni = requested.get("cni")
    if cni is not None and f"cni-{cni}" not in cluster.capabilities:
        problems.append(f"CNI {cni} (not known to run there)")
    version = str(requested.get("version") or "").removeprefix("v")
    have = cluster.version.removeprefix("v")
    if version and have and not (have == version or have.startswith(version + ".")):
        problems.append(f"Kubernetes {version} (it runs {have})")
    if not problems:
        return None
    return (
        f"needs {'; '.join(problems)}: the existing provider attaches to cluster {cluster.name!r} as it is "
        "and creates no other; run this test on a cluster of that shape or with --k8sstate-provider kind"
    )
