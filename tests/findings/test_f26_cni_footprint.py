"""Finding 26: what a Pod's creation adds on its node depends on the CNI — routes (ptp), a bridge port and
masquerade rules (bridge), or a bridge port only, the node-to-node part living in flannel's own device and
routes (flannel vxlan / host-gw).

Seed 000, step "create the first simple Pod": "iptables — new rules appeared that regulate the traffic
leaving the created pod". Finding 2 shows that Kubernetes itself adds no rule for a Pod; these two tests show
where the article's rules came from: minikube's default CNI is the reference ``bridge`` plugin with
``ipMasq``, which adds a per-pod chain to nat POSTROUTING. kindnet's layout (``ptp``: a veth and a /32 route
per pod) adds none. flannel (the real flanneld) masquerades once for the whole pod network, so a Pod adds no
rule either; what flannel adds is per *node*: ``flannel.1`` (vxlan) with an FDB and a neighbour entry and an
``onlink`` route per other node's pod CIDR — or, with ``host-gw``, plain routes via the other nodes'
addresses. Each runs on a kind cluster with that CNI (``@pytest.mark.k8sstate(cni=…)``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from pytest_k8sstate.assertions import (
    assert_new_chains,
    assert_new_links,
    assert_new_routes,
    assert_no_netfilter_change,
)
from pytest_k8sstate.k8s import pod_ip

from .helpers import manifest


def _create_pod(cluster_state: Any, k8s_api: Any) -> tuple[Any, str, str]:
    k8s_api.apply(manifest("26-pod.yaml"))
    k8s_api.wait_ready("pod/f26-pod")
    node = k8s_api.get("pod/f26-pod")["spec"]["nodeName"]
    return cluster_state.diff(), node, pod_ip(k8s_api, "f26-pod")


@pytest.mark.k8sstate_finding(26, "CNI footprint of a Pod: ptp adds a veth and a /32 route, no rule")
@pytest.mark.k8sstate(cni="ptp", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-ptp")
def test_finding_26_ptp_routes_each_pod(k8s_cluster, cluster_state, k8s_api):
    diff, node, ip = _create_pod(cluster_state, k8s_api)
    [(_, veth)] = assert_new_links(diff, "veth*", kind="veth", node=node, count=1)
    # the pod's IP is routed to its own veth: one /32 route per pod, no bridge in between
    assert_new_routes(diff, ip, dev=veth.name, node=node, count=1)
    assert "cni0" not in {link.get("ifname") for link in cluster_state.after.nodes[node].links}
    assert_no_netfilter_change(diff, node=node)


@pytest.mark.k8sstate_finding(26, "CNI footprint of a Pod: bridge adds a port on cni0 and a masquerade chain")
@pytest.mark.k8sstate(cni="bridge", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-bridge")
def test_finding_26_bridge_masquerades_each_pod(k8s_cluster, cluster_state, k8s_api):
    diff, node, ip = _create_pod(cluster_state, k8s_api)
    assert_new_links(diff, "veth*", kind="veth", node=node, count=1)
    # the pod sits on the bridge's subnet: no route of its own
    assert not [r for r in diff.nodes[node].routes_added if r.split()[0] in (ip, f"{ip}/32")]
    links = {link.get("ifname"): link for link in cluster_state.after.nodes[node].links}
    assert "cni0" in links, f"no cni0 bridge on {node}: {sorted(links)}"
    # ipMasq: a chain per pod, jumped to from POSTROUTING for the pod's source address
    [chain] = assert_new_chains(diff, ["CNI-*"], node=node)[node]
    rules = [spec for t, c, spec in diff.nodes[node].rules_added if (t, c) == ("nat", "POSTROUTING")]
    assert any(f"-s {ip}/32" in r and f"-j {chain}" in r for r in rules), rules
    masq = [spec for t, c, spec in diff.nodes[node].rules_added if (t, c) == ("nat", chain)]
    assert any("MASQUERADE" in r for r in masq), masq


def _flannel_pod(cluster_state: Any, k8s_api: Any) -> tuple[Any, str, dict[str, tuple[str, str]]]:
    """Create the pod; its node, and every other node's (podCIDR, InternalIP)."""
    diff, node, ip = _create_pod(cluster_state, k8s_api)
    # one veth on cni0, no route and no rule of its own: the pod is on the bridge's subnet
    [(_, veth)] = assert_new_links(diff, "veth*", kind="veth", node=node, count=1)
    assert not [r for r in diff.nodes[node].routes_added if r.split()[0] in (ip, f"{ip}/32")]
    assert_no_netfilter_change(diff, node=node)
    links = {link.get("ifname"): link for link in cluster_state.after.nodes[node].links}
    assert links[veth.name].get("master") == "cni0", links[veth.name]
    others = {}
    for n in k8s_api.list("node"):
        if n["metadata"]["name"] != node:
            addr = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
            others[n["metadata"]["name"]] = (n["spec"]["podCIDR"], addr)
    assert others, "flannel's node-to-node part needs a second node"
    # flanneld masquerades pod traffic leaving the pod network once, in its own chain
    nat = cluster_state.after.nodes[node].iptables.tables["nat"]
    assert "FLANNEL-POSTRTG" in nat.chains, sorted(nat.chains)
    assert any("MASQUERADE" in r.text for r in nat.chains["FLANNEL-POSTRTG"].rules)
    return diff, node, others


def _routes(state: Any, node: str) -> dict[str, dict[str, Any]]:
    return {r["dst"]: r for r in state.nodes[node].routes if r.get("table") in (None, "main")}


@pytest.mark.k8sstate_finding(
    26, "CNI footprint: flannel vxlan adds a port on cni0; other nodes are reached via flannel.1"
)
@pytest.mark.k8sstate(cni="flannel", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-flannel")
def test_finding_26_flannel_vxlan(k8s_cluster, cluster_state, k8s_api):
    _, node, others = _flannel_pod(cluster_state, k8s_api)
    links = {link.get("ifname"): link for link in cluster_state.after.nodes[node].links}
    assert links["flannel.1"].get("kind") == "vxlan", links.get("flannel.1")
    routes = _routes(cluster_state.after, node)
    fdb = json.loads(
        k8s_cluster.node(node).exec.run(["bridge", "-j", "fdb", "show", "dev", "flannel.1"]).text
    )
    neigh = json.loads(
        k8s_cluster.node(node).exec.run(["ip", "-j", "neigh", "show", "dev", "flannel.1"]).text
    )
    for other, (cidr, addr) in others.items():
        # the other node's pod CIDR via its VTEP (the CIDR's network address), onlink, over flannel.1
        vtep = str(ipaddress.ip_network(cidr).network_address)
        r = routes.get(cidr)
        assert r is not None, (other, cidr, sorted(routes))
        assert (r["dev"], r["gateway"]) == ("flannel.1", vtep), (other, r)
        assert "onlink" in (r.get("flags") or []), r
        # the VTEP's MAC (neighbour entry) is reached by VXLAN to the other node's address (FDB entry)
        [mac] = [e["lladdr"] for e in neigh if e.get("dst") == vtep]
        assert any(e.get("mac") == mac and e.get("dst") == addr for e in fdb), (other, fdb)


@pytest.mark.k8sstate_finding(
    26, "CNI footprint: flannel host-gw adds a port on cni0; other nodes are plain routes"
)
@pytest.mark.k8sstate(cni="flannel-host-gw", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-flannel-host-gw")
def test_finding_26_flannel_host_gw(k8s_cluster, cluster_state, k8s_api):
    _, node, others = _flannel_pod(cluster_state, k8s_api)
    links = {link.get("ifname"): link for link in cluster_state.after.nodes[node].links}
    assert "flannel.1" not in links, "host-gw needs no overlay device"
    routes = _routes(cluster_state.after, node)
    for other, (cidr, addr) in others.items():
        r = routes.get(cidr)
        assert r is not None, (other, cidr, sorted(routes))
        assert (r["dev"], r["gateway"]) == ("eth0", addr), (other, r)
