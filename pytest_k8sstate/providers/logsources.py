"""Where each node's components log, per provider (for ``Cluster.snapshot(logs=True)``).

* ``local``: the files the provider writes, ``<cluster dir>/logs/<component>.log``: the control plane's
  (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) on the control-plane node, and
  ``kube-proxy-<node>.log`` on each node (as component ``kube-proxy``).
* every other provider (kind, minikube, existing kubeadm nodes):
  :data:`~pytest_k8sstate.node.logs.KIND_SOURCES` — kube-system pods' logs under ``/var/log/pods``, the
  flanneld log and the node-routes agent's journal; a source a node lacks simply matches nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.node.logs import KIND_SOURCES, LogSource

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster

__all__ = ["LOCAL_CONTROL_PLANE", "log_sources"]

LOCAL_CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def log_sources(cluster: Cluster) -> dict[str, list[LogSource]]:
    """Node name → its log sources. A ``local`` cluster whose directory cannot be named in a glob (a
    space in the cache path) gets none, rather than a failing snapshot."""
    if cluster.provider != "local":
        return {n.name: list(KIND_SOURCES) for n in cluster.nodes}
    base = str(cluster.details.get("dir", ""))
    out: dict[str, list[LogSource]] = {}
    for n in cluster.nodes:
        names = [*(LOCAL_CONTROL_PLANE if n.role == "control-plane" else ()), f"kube-proxy-{n.name}"]
        try:
            out[n.name] = [
                LogSource("kube-proxy" if c.startswith("kube-proxy-") else c, path=f"{base}/logs/{c}.log")
                for c in names
            ]
        except K8sStateError:
            out[n.name] = []
    return out
