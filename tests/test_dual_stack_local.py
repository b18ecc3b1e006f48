"""A real IPv6-only ``local`` cluster (root): IPv6 node addresses, Service and pod ranges, kube-proxy rules
in ``ip6tables`` only for the cluster's Services, a snapshot that captures them and the tracer taking the
IPv6 ClusterIP of kube-dns to a coredns pod's IPv6 address. (Dual-stack: finding 33.)"""

from __future__ import annotations

import ipaddress
import os
from fractions import Fraction

import pytest
from test_provider_contract import leftovers, unavailable  # tests/ is on sys.path (rootdir-less layout)

from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.local.addons import DNS_IP6
from pytest_k8sstate.providers.local.components import CLUSTER_CIDR6, SERVICE_CIDR6
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.trace import Packet, trace


def test_ipv6_only_local_cluster() -> None:
    why = unavailable("local")
    if why:
        pytest.skip(why)
    prov = LocalProvider()
    name = f"v6{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=1, ip_family="ipv6"))
    try:
        assert c.details["ip_family"] == "ipv6"
        assert c.has("ipv6")
        assert not c.has("dual-stack")
        assert ipaddress.ip_address(c.control_plane.ip).version == 6  # as Kubernetes knows the node
        from kubernetes import client

        api = client.CoreV1Api(c.kube_api())
        svc = api.read_namespaced_service("kubernetes", "default")
        assert svc.spec.ip_families == ["IPv6"]
        assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network(SERVICE_CIDR6)
        dns = api.read_namespaced_service("kube-dns", "kube-system")
        assert dns.spec.cluster_ips == [DNS_IP6]
        pods = api.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
        pod_ips = sorted(p.status.pod_ip for p in pods)
        assert len(pod_ips) == 2
        for ip in pod_ips:
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(CLUSTER_CIDR6)
        for node in api.list_node().items:
            internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
            assert [ipaddress.ip_address(a).version for a in internal] == [6], internal

        snap = c.snapshot("v6")
        for node in c.nodes:
            ns = snap.nodes[node.name]
            assert ns.ip6tables is not None, ns.errors
            nat6 = ns.ip6tables.tables["nat"]
            assert any(DNS_IP6 in r.spec for r in nat6.chains["KUBE-SERVICES"].rules)
            nat4 = ns.iptables.tables["nat"] if ns.iptables is not None else None
            assert nat4 is None or not any(
                "kube-dns" in r.spec for ch in nat4.chains.values() for r in ch.rules
            ), "an IPv6-only cluster's Services have no IPv4 rules"
            packet = Packet(
                dst=DNS_IP6, dport=53, proto="tcp", src="2001:db8::10", local_ips=frozenset({"::1"})
            )
            split = dict(trace(ns.ip6tables, packet).endpoints)
            assert split == {f"[{ip}]:53": Fraction(1, 2) for ip in pod_ips}, split
    finally:
        prov.delete(name)
        assert leftovers("local", name) == []
