"""Finding 11: in iptables mode the ClusterIP exists only in rules; in IPVS mode it is on kube-ipvs0."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pytest_k8sstate.assertions import count_rules, local_ips
from pytest_k8sstate.k8s.helper import K8sHelper

from .helpers import (
    chain_specs,
    interface_addresses,
    ipvs_virtual_server,
    manifest,
    node_names,
    wait_proxy_endpoints,
    wait_until,
)


def _addresses_in_node(node_exec) -> set[str]:
    out = json.loads(node_exec.run(["ip", "-j", "addr", "show"]).text or "[]")
    return {a["local"] for link in out for a in link.get("addr_info", []) if a.get("local")}


@pytest.mark.k8sstate_finding(
    11, "iptables mode: the ClusterIP is on no interface of any node, only in rules"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_11_clusterip_only_in_rules_iptables(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'ClusterIP': "ClusterIP allocates an IP for each service from a special range
    (this address is virtual and is not even configured on network interfaces)"; "nowhere in the network,
    outside the node, does the virtual ClusterIP exist"; "so with iptables the ClusterIP address is created
    and exists only in the etcd database, from where kube-proxy picks it up"; "from the physical nodes this
    IP should not ping — it is kept only in iptables chains".

    Checked on every node: the Service's ClusterIP is not among the node's addresses (captured ``ip -j
    addr`` and a fresh ``ip -j addr show`` inside the node), no ``kube-ipvs0`` link exists, and the IP does
    appear in kube-proxy's KUBE-SERVICES rule. The Service exists in etcd.
    """
    k8s_api.apply(manifest("11-clusterip.yaml"))
    k8s_api.wait_endpoints("svc/f11-web", count=1)
    wait_proxy_endpoints(k8s_cluster, "default/f11-web", 1)
    snap = cluster_state.snapshot("service-programmed")
    cluster_ip = k8s_api.cluster_ip("svc/f11-web")
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("10.96.0.0/12")
    assert "/registry/services/specs/default/f11-web" in snap.etcd.entries

    for node in node_names(k8s_cluster):
        ns = snap.nodes[node]
        assert local_ips(ns), f"no addresses captured for node {node}: {ns.errors}"
        assert cluster_ip not in local_ips(ns), node
        assert cluster_ip not in _addresses_in_node(k8s_cluster.node(node).exec), node
        assert not any("kube-ipvs0" in str(link) for link in ns.links), node
        assert any(
            s.startswith(f"-d {cluster_ip}/32 ") for s in chain_specs(snap, node, "nat", "KUBE-SERVICES")
        )


@pytest.mark.k8sstate_finding(
    11, "IPVS mode: ClusterIP on kube-ipvs0, in ipset KUBE-CLUSTER-IP, rr virtual server"
)
@pytest.mark.k8sstate(proxy_mode="ipvs")
@pytest.mark.k8sstate_needs("ipvs")
def test_finding_11_clusterip_on_kube_ipvs0_ipvs(k8s_clusters, request):
    """Seed 002, section 'IPVS vs IPtables': "with ipvs instead of iptables the clusterIP is written onto
    a network interface ... and it can be pinged"; "kube-ipvs0 ... inet 10.102.189.119/32 scope global
    kube-ipvs0"; "ipset list ... Name: KUBE-CLUSTER-IP Type: hash:ip,port ... 10.102.189.119,tcp:80";
    "``TCP 10.99.69.111:80 rr`` with ``-> 172.17.0.3:8000 Masq 1 0 0``" for three pods; "IPVS proxier will
    use ipset ... to make sure the number of IPTABLES rules be constant, no matter how many services we
    have".

    Checked on every node of a cluster in IPVS mode: the ClusterIP is an address of ``kube-ipvs0``;
    ``KUBE-CLUSTER-IP`` holds ``<ClusterIP>,tcp:80``; IPVS has a virtual server ``<ClusterIP>:80`` with
    scheduler rr and the three pods as Masq real servers; adding the Service changed the number of
    iptables rules by zero.

    Real cluster vs article: IPVS mode is deprecated since Kubernetes 1.35 (KEP-5495); it needs the
    kernel's ip_vs, which this machine's kernel lacks — the test is skipped there, naming the capability.
    (The IPVS cluster is taken from the pool inside the test, so a provider without IPVS is never asked
    to create one.)
    """
    cluster = k8s_clusters.get(proxy_mode="ipvs")
    api = k8s_clusters.api_client(cluster)
    k8s_api = K8sHelper(api, cluster=cluster, manifests_dir=request.config.rootpath / "manifests")
    try:
        before = cluster.snapshot("before")
        rules_before = count_rules(before, "*", table=None)
        k8s_api.apply(manifest("11-ipvs.yaml"))
        ips = k8s_api.wait_endpoints("svc/f11v-web", count=3)
        cluster_ip = k8s_api.cluster_ip("svc/f11v-web")
        wait_until(
            "kube-proxy (ipvs) to add the virtual server on every node",
            lambda: all(cluster_ip in n.exec.run(["ipvsadm", "-Ln"]).text for n in cluster.nodes),
        )
        snap = cluster.snapshot("service-programmed")
        for node in node_names(cluster):
            ns = snap.nodes[node]
            ipvs0 = interface_addresses(ns, "kube-ipvs0")
            assert cluster_ip in ipvs0, (node, sorted(ipvs0))
            members = {m for s in ns.ipsets if s.name == "KUBE-CLUSTER-IP" for m in s.members}
            assert f"{cluster_ip},tcp:80" in members, (node, sorted(members))
            vs = ipvs_virtual_server(ns, cluster_ip, 80)
            assert vs.scheduler == "rr", (node, vs)
            real = sorted((rs.address, rs.port) for rs in vs.real_servers)
            assert real == sorted((ip, 8080) for ip in ips), (node, vs)
            assert {rs.forward for rs in vs.real_servers} == {"Masq"}, (node, vs)
        assert count_rules(snap, "*", table=None) == rules_before
    finally:
        k8s_api.cleanup(timeout=30)
