"""``fresh=True`` on kind in seconds: etcd back to the pristine capture, and the nodes back in line with it.

At create (:func:`capture`) the kind provider records, besides etcd and the rules (:mod:`..pristine`), each
node's side: the pods with a ready sandbox, its links and its routes (``pristine-nodes.json``).
:func:`reset` then

1. restores etcd (keys added since deleted, removed/modified ones put back) — the apiserver, the
   controllers, the kubelets and kube-proxy follow through their watches;
2. on every node at once, removes the sandboxes of pods that are not pristine (``crictl stopp``/``rmp``:
   the CNI's DEL takes their veth, routes, hostPort rules and IPAM lease) and deletes the conntrack
   entries of their addresses — at once, not after the kubelet's grace period;
3. waits until every node's kube-proxy rules equal the pristine ones, and its pods, links and routes do
   (a veth's random name counts as ``veth``).

What stays: images loaded into the nodes, container logs, the kubelets' own caches. Measured in
``bench/bench_kind_fresh.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.errors import K8sStateError, ProviderError
from pytest_k8sstate.providers.kind.ready import KUBECTL
from pytest_k8sstate.providers.pristine import (
    capture_pristine,
    load_pristine,
    restore_all,
    wait_each_node,
    wait_rules,
)
from pytest_k8sstate.util.files import atomic_write_text
from pytest_k8sstate.util.poll import wait_until

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster, NodeInfo

__all__ = ["NODES_FILE", "capture", "node_state", "reset"]

NODES_FILE = "pristine-nodes.json"

# prints the node's ready pods (namespace/name), links and routes, sections separated by "---"
_STATE = r"""
crictl pods --state ready -o json | jq -r '.items[] | .metadata.namespace + "/" + .metadata.name' | sort
echo ---
ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
echo ---
{ ip -4 route show; ip -6 route show; } | sort
"""

# $1: the pristine pods (namespace/name per line). Removes every other sandbox (any state) and the
# conntrack entries of its addresses; prints what it removed
_CLEAN = r"""
keep="$1"
crictl pods -o json | jq -r '.items[] | [.id, .metadata.namespace + "/" + .metadata.name] | @tsv' |
while IFS=$'\t' read -r id pod; do
  printf '%s\n' "$keep" | grep -qxF "$pod" && continue
  ips=$(crictl inspectp -o json "$id" 2>/dev/null |
        jq -r '.status.network.ip // empty, (.status.network.additionalIps[]?.ip // empty)')
  crictl stopp "$id" >/dev/null 2>&1
  crictl rmp -f "$id" >/dev/null 2>&1
  for a in $ips; do
    ip -o addr show | grep -qF " $a/" && continue  # a host-network pod: the node's own address
    conntrack -D --orig-src "$a" >/dev/null 2>&1
    conntrack -D --reply-src "$a" >/dev/null 2>&1
  done
  echo "$pod $id $ips"
done
"""

_VETH = re.compile(r"\bveth[0-9a-f]{4,}\b")


def _normalise(line: str) -> str:
    return _VETH.sub("veth", line.strip())


def node_state(node: NodeInfo) -> dict[str, list[str]]:
    """The node's ready pods, links and routes (sorted; random veth names as ``veth``)."""
    res = node.exec.run(["bash", "-c", _STATE], timeout=20)
    parts = (res.text + "\n").split("---\n")
    if len(parts) != 3:
        raise ProviderError(f"node {node.name}: unexpected pod/link/route listing: {res.text[:200]!r}")
    pods, links, routes = ([_normalise(ln) for ln in p.splitlines() if ln.strip()] for p in parts)
    return {"pods": pods, "links": sorted(links), "routes": sorted(routes)}


def _each_node(cluster: Cluster, fn: Callable[[NodeInfo], Any]) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(cluster.nodes))) as pool:
        futures = {n.name: pool.submit(fn, n) for n in cluster.nodes}
        return {name: f.result() for name, f in futures.items()}


def _unready_pods(cluster: Cluster) -> str | None:
    """None when every pod reports Ready (the static pods' mirror pods included), else which do not."""
    res = cluster.control_plane.exec.run(
        [*KUBECTL, "get", "pods", "-A", "-o", "json"], check=False, timeout=30
    )
    if res.returncode != 0:
        return f"kubectl get pods: {res.text[:200] or res.returncode}"
    try:
        items = json.loads(res.text)["items"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"kubectl get pods: {exc}"
    waiting = [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in items
        if not any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]
    return f"pods not Ready: {', '.join(waiting[:5])}" if waiting else None


def capture(cluster: Cluster, directory: Path, *, ip6: bool, ready_timeout: float = 60.0) -> None:
    """The pristine capture of a kind cluster that just became ready (etcd, rules, node side).

    First every pod must report Ready: right after ``kind create`` the static pods' mirror pods may still
    carry a not-ready status that their kubelet corrects seconds later — captured, every reset would put it
    back. After ``ready_timeout`` the capture is taken as it is (the cluster is usable; a reset then shows
    that status refresh as a change)."""
    with contextlib.suppress(ProviderError):
        wait_until(
            f"every pod of kind cluster {cluster.name!r} Ready before its pristine capture",
            lambda: _unready_pods(cluster),
            timeout=ready_timeout,
            error=ProviderError,
            interval=0.5,
            max_interval=2.0,
        )
    capture_pristine(cluster, directory, ip6=ip6, settle_timeout=30.0)
    nodes = _each_node(cluster, node_state)
    atomic_write_text(directory / NODES_FILE, json.dumps(nodes))


def _load_nodes(cluster: Cluster, directory: Path) -> dict[str, dict[str, list[str]]]:
    path = directory / NODES_FILE
    try:
        data = json.loads(path.read_text())
        return {str(k): {str(p): [str(x) for x in v] for p, v in d.items()} for k, d in data.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ProviderError(
            f"{path}: no pristine capture of kind cluster {cluster.name!r} ({type(exc).__name__}: {exc}); it "
            f"was created without one (an older version, or plain kind): recreate it (`k8sstate cluster "
            f"delete --name {cluster.name} --provider kind`, then create)"
        ) from exc


def _differences(want: dict[str, list[str]], now: dict[str, list[str]]) -> str | None:
    for part in ("pods", "links", "routes"):
        a, b = Counter(want.get(part, [])), Counter(now.get(part, []))
        if a != b:  # multisets: two veths are two lines "veth"
            extra = sorted((b - a).elements())[:3]
            missing = sorted((a - b).elements())[:3]
            return f"{part} differ (extra {extra}, missing {missing})"
    return None


def reset(cluster: Cluster, directory: Path, *, ip6: bool, timeout: float = 30.0) -> dict[str, float]:
    """Bring ``cluster`` back to its pristine capture (module doc); returns timings in seconds."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    nodes = _load_nodes(cluster, directory)
    etcd, rules = load_pristine(cluster, directory)
    passes = restore_all(cluster, etcd)
    t_etcd = time.monotonic() - t0

    def clean(node: NodeInfo) -> str:
        keep = "\n".join(nodes.get(node.name, {}).get("pods", []))
        return node.exec.run(["bash", "-c", _CLEAN, "k8sstate-reset", keep], timeout=60).text

    _each_node(cluster, clean)
    t_nodes = time.monotonic() - t0
    wait_rules(cluster, rules, ip6=ip6, deadline=deadline)

    def differs(node: NodeInfo) -> str | None:
        try:
            now = node_state(node)
        except K8sStateError as exc:
            return f"node {node.name}: {exc}"
        want = nodes.get(node.name, now)
        diff = _differences(want, now)
        if diff is None:
            return None
        if set(now["pods"]) - set(want["pods"]):
            clean(node)  # a sandbox the kubelet started while etcd was being restored
        return f"node {node.name}: {diff}"

    wait_each_node(
        cluster,
        f"the nodes of kind cluster {cluster.name!r} to return to the pristine state (reset)",
        differs,
        deadline=deadline,
        details=lambda: (
            "a pristine pod recreated, or links/routes changed outside the CNI, are not restored — "
            f"recreate the cluster (`k8sstate cluster delete --name {cluster.name} --provider kind`)"
        ),
    )
    return {
        "etcd": t_etcd,
        "nodes": t_nodes,
        "total": time.monotonic() - t0,
        "passes": float(passes),
    }
