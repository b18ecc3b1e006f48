"""Finding 34: one more node adds exactly one route per CNI to every other node — to the new node's pod CIDR —
and leaves the route to the local pods alone.

Seed 000 (article), step 'a cluster with two nodes': "routes — before, all traffic went to the bridge; now
only the traffic of the node's own pods does, the rest goes to the other node". Made precise on kind by
comparing the control-plane node of a cluster with N workers against one with N+1 (the pool's ``nodes=1``
and ``nodes=2`` clusters of the same CNI and kube-proxy mode). The expectation is built from each cluster's
own Node objects (``spec.podCIDR``, the ``InternalIP``, flannel's ``VtepMAC`` annotation), never from
hard-coded addresses; addresses are compared by the role of the node they belong to (``worker2``…).

* ``ptp``, ``bridge`` (the ``k8sstate-node-routes`` agent) and ``flannel-host-gw``: one route
  ``<podCIDR of the new node> via <its InternalIP> dev eth0``;
* ``flannel`` (vxlan): one route ``<podCIDR> via <its VTEP> dev flannel.1 onlink`` (the VTEP is the CIDR's
  network address), one FDB entry on ``flannel.1`` (its VTEP MAC → its InternalIP) and one neighbour entry
  (its VTEP → its VTEP MAC);
* the local pods' routes are unchanged: per-pod ``/32`` routes to veths (ptp; exactly the node's pods), or
  the node's own pod CIDR on ``cni0`` (bridge, flannel).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

import pytest

from pytest_k8sstate.k8s.helper import K8sHelper

from .helpers import load_manifest

VXLAN = "flannel.1"
ROUTE_FIELDS = ("type", "dst", "gateway", "dev", "protocol", "scope", "prefsrc", "metric", "flags")


def _nodes(api: Any, cluster: Any) -> dict[str, dict[str, Any]]:
    """The cluster's Node objects by role (the node name without ``<cluster>-``)."""
    prefix = f"{cluster.name}-"
    return {n["metadata"]["name"].removeprefix(prefix): n for n in api.list("node")}


def _internal_ip(node: Mapping[str, Any]) -> str:
    return next(str(a["address"]) for a in node["status"]["addresses"] if a["type"] == "InternalIP")


def _vtep_mac(node: Mapping[str, Any]) -> str | None:
    data = (node["metadata"].get("annotations") or {}).get("flannel.alpha.coreos.com/backend-data")
    return str(json.loads(data).get("VtepMAC")).lower() if data and data != "null" else None


def _names(nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Address (IP, pod CIDR, VTEP, VTEP MAC) → ``<what of role>``: the same text in either cluster."""
    names: dict[str, str] = {}
    for role, n in nodes.items():
        cidr = str(n["spec"]["podCIDR"])
        names[_internal_ip(n)] = f"<IP of {role}>"
        names[cidr] = f"<podCIDR of {role}>"
        net = ipaddress.ip_network(cidr)
        names[str(net.network_address)] = f"<VTEP of {role}>"
        names[str(net.network_address + 1)] = f"<gateway of {role}>"  # cni0's address (bridge, flannel)
        mac = _vtep_mac(n)
        if mac:
            names[mac] = f"<VTEP MAC of {role}>"
    return names


def _route_text(route: Mapping[str, Any], names: Mapping[str, str]) -> str:
    parts = []
    for key in ROUTE_FIELDS:
        value = route.get(key)
        if value in (None, [], ""):
            continue
        if isinstance(value, list):
            value = ",".join(sorted(str(v) for v in value))
        value = names.get(str(value), str(value))
        if key == "dev" and value.startswith("veth"):
            value = "<veth>"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _routes(
    api: Any, cluster: Any, label: str, role: str
) -> tuple[set[str], set[str], dict[str, dict[str, Any]]]:
    """The ``role`` node's main-table IPv4 routes, normalised: (routes to other places, routes into its own
    pod CIDR, the Node objects). Per-pod /32 routes are checked against the node's pods here."""
    nodes = _nodes(api, cluster)
    names = _names(nodes)
    own = ipaddress.ip_network(nodes[role]["spec"]["podCIDR"])
    state = cluster.snapshot(label).nodes[f"{cluster.name}-{role}"]
    main = [r for r in state.routes if r.get("table") in (None, "main") and ":" not in str(r.get("dst"))]
    local_pods: set[str] = set()
    local: set[str] = set()
    other: set[str] = set()
    for r in main:
        dst = str(r.get("dst"))
        net = ipaddress.ip_network(dst if dst != "default" else "0.0.0.0/0", strict=False)
        if net.version == 4 and net != ipaddress.ip_network("0.0.0.0/0") and net.subnet_of(own):
            if net.prefixlen == 32:
                local_pods.add(str(net.network_address))
                local.add(_route_text({**r, "dst": "<a local pod>"}, names))
            else:
                local.add(_route_text(r, names))
        else:
            other.add(_route_text(r, names))
    if cluster.has("cni-ptp"):
        pods = api.list("pod", all_namespaces=True)
        expected = {
            p["status"]["podIP"]
            for p in pods
            if p["spec"].get("nodeName") == f"{cluster.name}-{role}"
            and not p["spec"].get("hostNetwork")
            and p["status"].get("podIP")
            and p["status"].get("phase") == "Running"
        }
        assert local_pods == expected, (cluster.name, role, sorted(local_pods), sorted(expected))
    return other, local, nodes


def _fdb_neigh(cluster: Any, role: str, names: Mapping[str, str]) -> tuple[set[str], set[str]]:
    ex = cluster.node(f"{cluster.name}-{role}").exec
    fdb = json.loads(ex.run(["bridge", "-j", "fdb", "show", "dev", VXLAN], timeout=20).text)
    neigh = json.loads(ex.run(["ip", "-j", "neigh", "show", "dev", VXLAN], timeout=20).text)
    fdb_set = {
        f"{names.get(e['mac'], e['mac'])} -> {names.get(e['dst'], e['dst'])}" for e in fdb if e.get("dst")
    }
    neigh_set = {
        f"{names.get(e['dst'], e['dst'])} lladdr {names.get(e.get('lladdr', ''), e.get('lladdr'))}"
        for e in neigh
    }
    return fdb_set, neigh_set


def _pin(api: Any, cluster: Any, role: str) -> None:
    """A pause Pod on the compared node: it has local pods (and, on a bridge, cni0) in either cluster."""
    docs = load_manifest("34-pin.yaml")
    docs[0]["spec"]["nodeName"] = f"{cluster.name}-{role}"
    api.apply(docs)
    api.wait_ready("pod/f34-pin", timeout=120)


def _second_node_routes(k8s_cluster: Any, k8s_api: Any, k8s_clusters: Any, cni: str) -> None:
    one = k8s_clusters.get(nodes=1, proxy_mode=k8s_cluster.proxy_mode, cni=cni)
    role = "control-plane"
    api1 = K8sHelper(k8s_clusters.api_client(one), cluster=one)
    try:
        _pin(api1, one, role)
        other1, local1, nodes1 = _routes(api1, one, "f34-one-worker", role)
    finally:
        api1.delete("pod/f34-pin", namespace="default", timeout=120)
    _pin(k8s_api, k8s_cluster, role)
    other2, local2, nodes2 = _routes(k8s_api, k8s_cluster, "f34-two-workers", role)
    assert sorted(nodes1) == ["control-plane", "worker"], sorted(nodes1)
    assert sorted(nodes2) == ["control-plane", "worker", "worker2"], sorted(nodes2)
    new = "worker2"
    cidr, ip = f"<podCIDR of {new}>", f"<IP of {new}>"
    vxlan = cni == "flannel"
    if vxlan:
        expected = {f"type=unicast dst={cidr} gateway=<VTEP of {new}> dev={VXLAN} flags=onlink"}
    else:
        expected = {f"type=unicast dst={cidr} gateway={ip} dev=eth0"}
    # exactly one route more: the new node's pod CIDR (same shape as the route to the existing worker)
    assert other2 - other1 == expected, (sorted(other2 - other1), sorted(other1))
    assert other1 - other2 == set(), sorted(other1 - other2)
    existing = next(r for r in other1 if "<podCIDR of worker>" in r)
    assert existing.replace("worker", new) in expected, existing
    # the local pods' routes are unchanged (ptp: /32s to veths, exactly the node's pods; else cni0)
    assert local1 == local2, (sorted(local1), sorted(local2))
    if cni in ("bridge", "flannel", "flannel-host-gw"):
        assert f" dst=<podCIDR of {role}> " in " ".join(local1), sorted(local1)
        assert all("dev=cni0" in r for r in local1), sorted(local1)
    else:
        assert all(r.startswith("type=unicast dst=<a local pod> dev=<veth>") for r in local1), sorted(local1)
    print(f"\n[f34 {cni}] {role}: +{sorted(other2 - other1)}; local pods' routes unchanged: {sorted(local1)}")
    if vxlan:
        fdb1, neigh1 = _fdb_neigh(one, role, _names(nodes1))
        fdb2, neigh2 = _fdb_neigh(k8s_cluster, role, _names(nodes2))
        assert fdb2 - fdb1 == {f"<VTEP MAC of {new}> -> {ip}"}, (sorted(fdb1), sorted(fdb2))
        assert fdb1 <= fdb2, (sorted(fdb1), sorted(fdb2))
        assert neigh2 - neigh1 == {f"<VTEP of {new}> lladdr <VTEP MAC of {new}>"}, (
            sorted(neigh1),
            sorted(neigh2),
        )
        assert neigh1 <= neigh2, (sorted(neigh1), sorted(neigh2))


@pytest.mark.k8sstate_finding(
    34, "a second node (ptp): one route to its pod CIDR via its address; local /32s kept"
)
@pytest.mark.k8sstate(cni="ptp", nodes=2)
@pytest.mark.k8sstate_needs("container-runtime", "cni-ptp")
def test_finding_34_second_node_routes_ptp(k8s_cluster, k8s_api, k8s_clusters):
    _second_node_routes(k8s_cluster, k8s_api, k8s_clusters, "ptp")


@pytest.mark.k8sstate_finding(
    34, "a second node (bridge): one route to its pod CIDR via its address; cni0 kept"
)
@pytest.mark.k8sstate(cni="bridge", nodes=2)
@pytest.mark.k8sstate_needs("container-runtime", "cni-bridge")
def test_finding_34_second_node_routes_bridge(k8s_cluster, k8s_api, k8s_clusters):
    _second_node_routes(k8s_cluster, k8s_api, k8s_clusters, "bridge")


@pytest.mark.k8sstate_finding(
    34, "a second node (flannel vxlan): an onlink route via flannel.1, an FDB and a neighbour entry"
)
@pytest.mark.k8sstate(cni="flannel", nodes=2)
@pytest.mark.k8sstate_needs("container-runtime", "cni-flannel")
def test_finding_34_second_node_routes_flannel(k8s_cluster, k8s_api, k8s_clusters):
    _second_node_routes(k8s_cluster, k8s_api, k8s_clusters, "flannel")


@pytest.mark.k8sstate_finding(
    34, "a second node (flannel host-gw): one route to its pod CIDR via its address"
)
@pytest.mark.k8sstate(cni="flannel-host-gw", nodes=2)
@pytest.mark.k8sstate_needs("container-runtime", "cni-flannel-host-gw")
def test_finding_34_second_node_routes_flannel_host_gw(k8s_cluster, k8s_api, k8s_clusters):
    _second_node_routes(k8s_cluster, k8s_api, k8s_clusters, "flannel-host-gw")
