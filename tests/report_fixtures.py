"""Snapshots for the HTML report's tests: a Deployment scaled 2 → 3 whose Service ``default/web:http`` goes
from 2 to 3 endpoints (kube-proxy iptables rules written by :mod:`pytest_k8sstate.testing.iptables_gen`,
parsed by the real parser; pods with their IPs in etcd), a ConfigMap whose annotation and data carry HTML,
and a Service removed."""

from __future__ import annotations

import json
from typing import Any

from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing.iptables_gen import KubeService, kube_proxy_iptables

POD_IPS = ("10.244.1.2", "10.244.1.3", "10.244.2.4")
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
NODE = "node-1"
NODE_ADDR = {"family": "inet", "local": "172.18.0.2", "ifname": "eth0", "prefixlen": 16}


def entry(key: str, obj: dict[str, Any], rev: int) -> EtcdEntry:
    value = json.dumps(obj).encode()
    return EtcdEntry(key, rev, rev, 1, len(value), value=value)


def meta(ns: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", **extra}


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("default", "web", generation=replicas),
        "spec": {"replicas": replicas},
    }


def pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("default", name, labels={"app": "web"}),
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def configmap(note: str, data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("default", "cfg", annotations={"note": note}),
        "data": {"html": data},
    }


def etcd(replicas: int, rev: int, *, extra: dict[str, dict[str, Any]] | None = None) -> EtcdState:
    objs: dict[str, dict[str, Any]] = {"/registry/deployments/default/web": deployment(replicas)}
    for i, ip in enumerate(POD_IPS[:replicas]):
        objs[f"/registry/pods/default/web-{i}"] = pod(f"web-{i}", ip)
    objs.update(extra or {})
    # unchanged pods keep their revision; the rest are written at ``rev``
    revs = {k: (5 + i if k.startswith("/registry/pods/") else rev) for i, k in enumerate(sorted(objs))}
    return EtcdState(rev, "/registry", {k: entry(k, v, revs[k]) for k, v in objs.items()})


def iptables_node(endpoints: int, *, others: bool = True) -> NodeState:
    web = KubeService(
        "default",
        "web",
        "10.96.0.20",
        80,
        endpoints=tuple(f"{ip}:8080" for ip in POD_IPS[:endpoints]),
        port_name="http",
        node_port=30080,
    )
    services = [web]
    if others:
        services.append(KubeService("kube-system", "old", "10.96.0.30", 53, endpoints=("10.244.0.9:53",)))
    text = kube_proxy_iptables(services)
    return NodeState(
        NODE, iptables=parse_iptables_save(text, source=f"{NODE} iptables-save"), addrs=[NODE_ADDR]
    )


def snapshots() -> tuple[Snapshot, Snapshot]:
    """before: 2 replicas, 2 endpoints, kube-system/old; after: 3 replicas, 3 endpoints, old gone, a
    ConfigMap with HTML in its annotation changed."""
    cm_before = {"/registry/configmaps/default/cfg": configmap("plain", "a")}
    cm_after = {"/registry/configmaps/default/cfg": configmap(HOSTILE, HOSTILE)}
    before = Snapshot("before", 1.0, etcd=etcd(2, 10, extra=cm_before), nodes={NODE: iptables_node(2)})
    after = Snapshot(
        "after", 2.0, etcd=etcd(3, 30, extra=cm_after), nodes={NODE: iptables_node(3, others=False)}
    )
    return before, after
