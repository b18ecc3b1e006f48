"""Two snapshots that differ the way a test's cluster does: a Deployment scaled 2 → 3, a big ConfigMap
with one changed line, a Service added in another namespace, a heartbeat Lease renewed, and kube-proxy's
iptables rules of a node where ``default/web:http`` lost one of its three endpoints (rules written by
:mod:`pytest_k8sstate.testing.iptables_gen`, parsed by the real parser)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing.iptables_gen import KubeService, kube_proxy_iptables, make_services

WEB_ENDPOINTS = ("10.244.1.2:8080", "10.244.1.3:8080", "10.244.1.4:8080")
BIG = "\n".join(f"line {i}: value {i}" for i in range(2000))


def _entry(key: str, obj: dict[str, Any], rev: int) -> EtcdEntry:
    value = json.dumps(obj).encode()
    return EtcdEntry(key, rev, rev, 1, len(value), value=value)


def _meta(ns: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", **extra}


def deployment(replicas: int, image: str = "agnhost:2.52") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("default", "web", labels={"app": "web"}, generation=replicas),
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "web", "image": image}]}},
        },
    }


def configmap(ns: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(ns, name), "data": data}


def svc(ns: str, name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ns, name),
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }


def lease(renew: str) -> dict[str, Any]:
    return {
        "kind": "Lease",
        "metadata": _meta("kube-node-lease", "kind-worker"),
        "spec": {"renewTime": renew},
    }


K_DEPLOY = "/registry/deployments/default/web"
K_BIG = "/registry/configmaps/default/big"
K_GONE = "/registry/configmaps/kube-system/gone"
K_SVC = "/registry/services/specs/other/api"
K_LEASE = "/registry/leases/kube-node-lease/kind-worker"


def etcd_states() -> tuple[EtcdState, EtcdState]:
    big_after = BIG.replace("line 1000: value 1000", "line 1000: value CHANGED")
    before = {
        K_DEPLOY: _entry(K_DEPLOY, deployment(2), 5),
        K_BIG: _entry(K_BIG, configmap("default", "big", {"config": BIG}), 6),
        K_GONE: _entry(K_GONE, configmap("kube-system", "gone", {}), 7),
        K_LEASE: _entry(K_LEASE, lease("t1"), 8),
    }
    after = {
        K_DEPLOY: _entry(K_DEPLOY, deployment(3), 20),
        K_BIG: _entry(K_BIG, configmap("default", "big", {"config": big_after}), 21),
        K_SVC: _entry(K_SVC, svc("other", "api", "10.96.0.50"), 22),
        K_LEASE: _entry(K_LEASE, lease("t2"), 23),
    }
    return EtcdState(10, "/registry", before), EtcdState(30, "/registry", after)


def web_services(endpoints: tuple[str, ...] = WEB_ENDPOINTS) -> list[KubeService]:
    web = KubeService(
        "default", "web", "10.96.0.20", 80, endpoints=endpoints, port_name="http", node_port=30080
    )
    return [web, *make_services(2, 2, namespace="kube-system")]


def iptables_node(name: str, endpoints: tuple[str, ...] = WEB_ENDPOINTS) -> NodeState:
    text = kube_proxy_iptables(web_services(endpoints))
    return NodeState(name, iptables=parse_iptables_save(text, source=f"{name} iptables-save"))


def snapshots() -> tuple[Snapshot, Snapshot]:
    eb, ea = etcd_states()
    before = Snapshot("before", 1.0, etcd=eb, nodes={"kind-worker": iptables_node("kind-worker")})
    scaled = iptables_node("kind-worker", WEB_ENDPOINTS[:2])
    after = Snapshot("after", 2.0, etcd=ea, nodes={"kind-worker": scaled})
    return before, after


def write_snapshots(tmp: Path) -> tuple[Path, Path]:
    b, a = snapshots()
    return b.save(tmp / "before.json"), a.save(tmp / "after.json")


def same_snapshot(tmp: Path) -> Path:
    b, _ = snapshots()
    return dataclasses.replace(b, label="again").save(tmp / "again.json")
