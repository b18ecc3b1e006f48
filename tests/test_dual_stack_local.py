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


def test_dual_stack_local_cluster_reset_restores_both_families() -> None:
    """``fresh=True`` on a dual-stack cluster: a RequireDualStack Service's ip6tables rules go too."""
    why = unavailable("local")
    if why:
        pytest.skip(why)
    import time

    from kubernetes import client

    from pytest_k8sstate.providers.pristine import rules_text

    prov = LocalProvider()
    name = f"ds{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=1, ip_family="dual"))
    try:
        assert c.has("dual-stack")
        worker = c.workers[0]
        pristine = rules_text(worker.exec, "iptables", ip6=True)
        assert any(ln.startswith("ip6 ") for ln in pristine)
        api = client.CoreV1Api(c.kube_api())
        api.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "ds-web", "labels": {"app": "ds-web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10.1"}]},
            },
        )
        svc = api.create_namespaced_service(
            "default",
            {
                "metadata": {"name": "ds-web"},
                "spec": {
                    "ipFamilyPolicy": "RequireDualStack",
                    "selector": {"app": "ds-web"},
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            },
        )
        vip6 = next(ip for ip in svc.spec.cluster_ips if ":" in ip)
        deadline = time.monotonic() + 60
        while not any(vip6 in ln for ln in rules_text(worker.exec, "iptables", ip6=True)):
            assert time.monotonic() < deadline, f"kube-proxy never programmed {vip6} in ip6tables"
            time.sleep(0.5)
        prov.reset(c)
        assert rules_text(worker.exec, "iptables", ip6=True) == pristine
    finally:
        prov.delete(name)
        assert leftovers("local", name) == []
