"""Finding 33: a dual-stack Service = a ClusterIP and an EndpointSlice per family, rules in both families."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pytest_k8sstate.trace import Packet, trace
from pytest_k8sstate.traffic import probe

from .helpers import (
    added_keys,
    load_manifest,
    manifest,
    node_names,
    sep_chain,
    split_events,
    stores_ipaddresses,
    svc_chain,
    wait_until,
    without_noise,
)
from .workloads import agnhost_on_nodes, kubectl, netexec

SERVICE = "default/f33-web"
PORT_ID = "default/f33-web:http"
OUTSIDE6 = "2001:db8::10"  # a client outside the cluster (documentation prefix; no packet is sent)
OUTSIDE4 = "203.0.113.10"


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if _family(ip) == 6 else f"{ip}:{port}"


def _local_ips(snapshot: Any, node: str, v6: bool) -> frozenset[str]:
    """The node's own addresses of one family, as captured (``addrtype LOCAL``)."""
    fam = "inet6" if v6 else "inet"
    own = {str(a["local"]) for a in snapshot.nodes[node].addrs if a.get("family") == fam and "local" in a}
    return frozenset(own | {"::1" if v6 else "127.0.0.1"})


def _proxy_text(cluster: Any, node: str, v6: bool) -> str:
    """What kube-proxy wrote on ``node`` for one family, read live (for waiting)."""
    ex = cluster.node(node).exec
    if cluster.proxy_mode == "nftables":
        res = ex.run(["nft", "list", "table", "ip6" if v6 else "ip", "kube-proxy"], check=False, timeout=20)
        return res.text if res.returncode == 0 else ""
    return ex.run(["ip6tables-save" if v6 else "iptables-save", "-t", "nat"], timeout=20).text


def _programmed(cluster: Any, endpoints: dict[int, str]) -> bool:
    """Every node's kube-proxy DNATs the Service to its endpoint of each family."""
    for node in node_names(cluster):
        for fam, ep in endpoints.items():
            text = _proxy_text(cluster, node, fam == 6)
            ip, port = ep.rsplit(":", 1)
            if ep not in text and f"{ip.strip('[]')} . {port}" not in text:
                return False
    return True


@pytest.mark.k8sstate_finding(
    33, "Dual-stack Service: a ClusterIP and an EndpointSlice per family; rules in iptables and ip6tables"
)
@pytest.mark.k8sstate_needs("dual-stack")
def test_finding_33_dual_stack_service(k8s_cluster, cluster_state, k8s_api):
    """Issue 12 (IPv6 and dual-stack end to end), the dual-stack half of a ClusterIP Service (finding 4):

    ``ipFamilyPolicy: RequireDualStack`` gives the Service one ClusterIP per family (``spec.clusterIPs``,
    IPv4 first as the cluster's primary family, ``spec.clusterIP`` is the first); the EndpointSlice
    controller writes one slice per address type (``IPv4`` and ``IPv6``) with the pod's address of that
    family (``status.podIPs``); every node's kube-proxy programs the Service in both families — iptables
    mode: ``KUBE-SERVICES -d <ClusterIP>`` → ``KUBE-SVC-…`` → ``KUBE-SEP-…`` DNAT in ``iptables`` and
    in ``ip6tables`` (the SVC chain has the same name in both, its hash names no family; the SEP chain's
    hash covers the ``[addr]:port`` endpoint), nftables mode: the ``service-…`` chain in the ``ip`` and
    the ``ip6`` ``kube-proxy`` tables. Traced from outside the cluster, the IPv6 ClusterIP ``[fd…]:80``
    reaches the pod's IPv6 address, the IPv4 one its IPv4 address.
    """
    k8s_api.apply(manifest("33-dual-stack.yaml"))
    k8s_api.wait_ready("pod/f33-web")
    k8s_api.wait_endpoints("svc/f33-web", count=2)  # one address per family, each in its own slice
    svc = k8s_api.get("svc/f33-web")
    pod = k8s_api.get("pod/f33-web")
    cluster_ips = list(svc["spec"]["clusterIPs"])
    pod_ips = [p["ip"] for p in pod["status"].get("podIPs") or []]

    # one ClusterIP and one pod address per family, IPv4 (the primary family) first
    assert svc["spec"]["ipFamilies"] == ["IPv4", "IPv6"], svc["spec"]
    assert [_family(ip) for ip in cluster_ips] == [4, 6], cluster_ips
    assert svc["spec"]["clusterIP"] == cluster_ips[0]
    assert sorted(_family(ip) for ip in pod_ips) == [4, 6], pod_ips
    pod_ip = {_family(ip): ip for ip in pod_ips}
    vip = {_family(ip): ip for ip in cluster_ips}
    endpoints = {fam: _hostport(ip, 8080) for fam, ip in pod_ip.items()}

    wait_until(
        f"every kube-proxy to program {SERVICE} in both families ({endpoints[4]}, {endpoints[6]})",
        lambda: _programmed(k8s_cluster, endpoints),
    )
    diff = cluster_state.diff()
    after = cluster_state.after

    # etcd: the Service, its Endpoints, an EndpointSlice per family, an IPAddress per ClusterIP
    _events, keys = split_events(without_noise(added_keys(diff)))
    ours = [k for k in keys if "f33-web" in k or k.startswith("/registry/ipaddresses/")]
    slices = [k for k in ours if k.startswith("/registry/endpointslices/default/f33-web-")]
    assert len(slices) == 2, ours
    expected = [
        "/registry/pods/default/f33-web",
        "/registry/services/endpoints/default/f33-web",
        "/registry/services/specs/default/f33-web",
        *slices,
    ]
    if stores_ipaddresses(after):
        expected += [f"/registry/ipaddresses/{ip}" for ip in cluster_ips]
    assert sorted(ours) == sorted(expected)
    types = {}
    for key in slices:
        fields = after.etcd.entries[key].decoded.fields
        types[fields["addressType"]] = [a for ep in fields.get("endpoints", []) for a in ep["addresses"]]
    assert types == {"IPv4": [pod_ip[4]], "IPv6": [pod_ip[6]]}, types

    for node in node_names(k8s_cluster):
        ns = after.nodes[node]
        for fam in (4, 6):
            v6 = fam == 6
            if k8s_cluster.proxy_mode == "nftables":
                ruleset = ns.nft
                assert ruleset is not None, (node, ns.errors)
                table = ruleset.table("ip6" if v6 else "ip", "kube-proxy")
                assert table is not None, (node, sorted(ruleset.tables))
                chains = [
                    c for c in table.chains if c.startswith("service-") and c.endswith(f"-{SERVICE}/tcp/http")
                ]
                assert len(chains) == 1, (node, fam, sorted(table.chains))
                texts = " ".join(r.text for r in table.chains[chains[0]].rules)
                assert pod_ip[fam] in texts, (node, fam, texts)  # its DNAT (or endpoint chain) names the pod
                assert vip[10 - fam] not in texts, (node, fam, texts)
            else:
                ruleset = ns.ip6tables if v6 else ns.iptables
                assert ruleset is not None, (node, fam, ns.errors)
                nat = ruleset.tables["nat"]
                svc_name, sep_name = svc_chain(PORT_ID), sep_chain(PORT_ID, endpoints[fam])
                prefix = 128 if v6 else 32
                assert [
                    r.spec for r in nat.chains["KUBE-SERVICES"].rules if r.spec.endswith(f"-j {svc_name}")
                ] == [
                    f'-d {vip[fam]}/{prefix} -p tcp -m comment --comment "{PORT_ID} cluster IP" -m tcp '
                    f"--dport 80 -j {svc_name}"
                ], (node, fam)
                dnat = f"-j DNAT --to-destination {endpoints[fam]}"
                assert [r.spec for r in nat.chains[sep_name].rules][-1] == (
                    f'-p tcp -m comment --comment "{PORT_ID}" -m tcp {dnat}'
                ), (node, fam)
                # the other family's ClusterIP is nowhere in this family's rules
                other = vip[10 - fam]
                assert not [r.spec for c in nat.chains.values() for r in c.rules if other in r.spec], (
                    node,
                    fam,
                )
            packet = Packet(
                dst=vip[fam],
                dport=80,
                proto="tcp",
                src=OUTSIDE6 if v6 else OUTSIDE4,
                local_ips=_local_ips(after, node, v6),
            )
            result = trace(ruleset, packet)
            assert dict(result.endpoints) == {endpoints[fam]: 1}, (node, fam, result)


@pytest.mark.k8sstate_finding(
    33, "Dual-stack Service: a ClusterIP and an EndpointSlice per family; rules in iptables and ip6tables"
)
@pytest.mark.k8sstate_needs("dual-stack", "container-runtime")
def test_finding_33_observed_both_families_reach_the_pod(k8s_cluster, cluster_state, k8s_api):
    """The observed half of finding 33 (real pods: kind): the same Pod, now an agnhost ``netexec`` on
    port 8080. From every node, 10 real connections to the IPv4 ClusterIP and 10 to the IPv6 one all reach
    ``f33-web``, and the pod saw a client address of the family the connection used — each family's rules
    (``iptables`` and ``ip6tables``, or the ``ip``/``ip6`` tables) carry their own traffic, as traced above.
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(netexec(load_manifest("33-dual-stack.yaml"), tag))
    k8s_api.wait_ready("pod/f33-web")
    k8s_api.wait_endpoints("svc/f33-web", count=2)
    svc = k8s_api.get("svc/f33-web")
    pod = k8s_api.get("pod/f33-web")
    vip = {_family(ip): ip for ip in svc["spec"]["clusterIPs"]}
    pod_ip = {_family(p["ip"]): p["ip"] for p in pod["status"].get("podIPs") or []}
    endpoints = {fam: _hostport(ip, 8080) for fam, ip in pod_ip.items()}
    wait_until(
        f"every kube-proxy to program {SERVICE} in both families ({endpoints[4]}, {endpoints[6]})",
        lambda: _programmed(k8s_cluster, endpoints),
    )
    for node in node_names(k8s_cluster):
        for fam in (4, 6):
            to = _hostport(vip[fam], 80)
            observed = probe(k8s_cluster, to, source=f"node/{node}", count=10, kubectl=kubectl())
            assert observed.counts() == {"f33-web": 10}, (node, to, observed.connections[:3])
            seen = {c.client_ip or "none" for c in observed.connections}
            assert {_family(ip) if ip != "none" else 0 for ip in seen} == {fam}, (node, to, seen)
