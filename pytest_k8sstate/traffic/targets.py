"""Where a probe goes (``ns/name[:port]`` or ``IP:PORT``) and starts (``node/NAME`` or ``pod/NS/NAME``).

:func:`probe` ties it together on a :class:`~pytest_k8sstate.providers.base.Cluster`: resolves a Service to
its ClusterIP and port through ``kubectl``, runs :func:`~pytest_k8sstate.traffic.probe.run_probe` in the
node (busybox copied in) or the pod (the agnhost image's ``/bin/busybox``), then looks up the IP of every
pod that answered.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ConfigError, K8sStateError
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.traffic.probe import (
    HOST_BUSYBOX,
    POD_BUSYBOX,
    PodExec,
    ProbeResult,
    install_busybox,
    run_probe,
)

__all__ = [
    "Source",
    "Target",
    "check_in_cluster",
    "cluster_ranges",
    "parse_source",
    "parse_target",
    "pod_ips",
    "probe",
    "resolve_target",
]

_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_SVC = re.compile(rf"(?P<ns>{_NAME})/(?P<name>{_NAME})(:(?P<port>[A-Za-z0-9-]+))?")
_IPPORT = re.compile(r"(?P<ip>\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})")
KUBECTL_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """A Service (``namespace``/``name``, ``port`` by number or name, None: its first port) or an IP:port."""

    namespace: str = ""
    name: str = ""
    port: str | None = None
    ip: str = ""

    def __str__(self) -> str:
        if self.ip:
            return f"{self.ip}:{self.port}"
        return f"{self.namespace}/{self.name}" + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class Source:
    kind: str  # "node" | "pod"
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        return f"node/{self.name}" if self.kind == "node" else f"pod/{self.namespace}/{self.name}"


def parse_target(text: str) -> Target:
    """``NAMESPACE/SERVICE[:PORT]`` or ``IP:PORT`` (a ClusterIP, a NodePort on a node IP, a pod IP)."""
    text = text.strip()
    m = _IPPORT.fullmatch(text)
    if m:
        port = int(m["port"])
        if not 0 < port < 65536:
            raise ConfigError(f"--to {text!r}: port {port} is out of range 1-65535")
        return Target(ip=m["ip"].strip("[]"), port=str(port))
    m = _SVC.fullmatch(text)
    if m:
        return Target(namespace=m["ns"], name=m["name"], port=m["port"])
    raise ConfigError(
        f"--to {text!r}: expected NAMESPACE/SERVICE[:PORT] (e.g. default/web:80) "
        "or IP:PORT (e.g. 10.96.0.10:53)"
    )


def parse_source(text: str) -> Source:
    """``node/NAME`` or ``pod/NAMESPACE/NAME``."""
    parts = text.strip().split("/")
    if len(parts) == 2 and parts[0] == "node" and parts[1]:
        return Source("node", parts[1])
    if len(parts) == 3 and parts[0] == "pod" and parts[1] and parts[2]:
        return Source("pod", parts[2], parts[1])
    raise ConfigError(f"--from {text!r}: expected node/NAME or pod/NAMESPACE/NAME")


def _kubectl_json(kubectl: str, kubeconfig: Path | str, *args: str) -> Any:
    res = run_command(
        [kubectl, "--kubeconfig", str(kubeconfig), *args, "-o", "json"],
        timeout=KUBECTL_TIMEOUT,
        where="kubectl",
    )
    try:
        return json.loads(res.text)
    except ValueError as exc:
        raise K8sStateError(f"kubectl {' '.join(args)}: not JSON ({exc})") from None


def resolve_target(target: Target, *, kubectl: str, kubeconfig: Path | str) -> tuple[str, int]:
    """``(IP, port)``: as given, or the Service's ClusterIP and the port named/numbered (default: first)."""
    if target.ip:
        return target.ip, int(target.port or 0)
    svc = _kubectl_json(kubectl, kubeconfig, "-n", target.namespace, "get", "service", target.name)
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    if not ip or ip == "None":
        raise ConfigError(f"--to {target}: the Service has no ClusterIP (type {spec.get('type')}, headless?)")
    ports = spec.get("ports") or []
    if not ports:
        raise ConfigError(f"--to {target}: the Service has no ports")
    if target.port is None:
        return str(ip), int(ports[0]["port"])
    for p in ports:
        if target.port in (str(p.get("port")), p.get("name")):
            return str(ip), int(p["port"])
    have = ", ".join(f"{p.get('name') or '-'}={p.get('port')}" for p in ports)
    raise ConfigError(f"--to {target}: the Service has no port {target.port!r} (it has {have})")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def cluster_ranges(cluster: Any, *, kubectl: str, kubeconfig: Path | str) -> list[tuple[Network, str]]:
    """Where a probe may go on ``cluster``, each with what it is: the Service ranges (``ServiceCIDR``
    objects), every ClusterIP, external IP and load-balancer IP of its Services, every node's pod ranges
    and addresses, and every pod IP (CNIs without per-node pod ranges)."""
    out: list[tuple[Network, str]] = []

    def add(text: object, what: str) -> None:
        try:
            out.append((ipaddress.ip_network(str(text), strict=False), what))
        except ValueError:
            pass

    for n in getattr(cluster, "nodes", ()):
        add(n.ip, f"node {n.name}")
    try:
        cidrs = _kubectl_json(kubectl, kubeconfig, "get", "servicecidrs")
    except K8sStateError:  # an apiserver without the ServiceCIDR API: the Services' own IPs below
        cidrs = {}
    for item in cidrs.get("items") or []:
        for c in (item.get("spec") or {}).get("cidrs") or []:
            add(c, "the Service range")
    for node in _kubectl_json(kubectl, kubeconfig, "get", "nodes").get("items") or []:
        name = (node.get("metadata") or {}).get("name")
        spec, status = node.get("spec") or {}, node.get("status") or {}
        for c in spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []):
            add(c, f"the pod range of node {name}")
        for a in status.get("addresses") or []:
            if a.get("type") in ("InternalIP", "ExternalIP"):
                add(a.get("address"), f"node {name}")
    for svc in _kubectl_json(kubectl, kubeconfig, "get", "services", "--all-namespaces").get("items") or []:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        what = f"Service {meta.get('namespace')}/{meta.get('name')}"
        for ip in [*(spec.get("clusterIPs") or []), *(spec.get("externalIPs") or [])]:
            add(ip, what)
        for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ing.get("ip"):
                add(ing["ip"], what)
    for pod in _kubectl_json(kubectl, kubeconfig, "get", "pods", "--all-namespaces").get("items") or []:
        meta = pod.get("metadata") or {}
        for p in (pod.get("status") or {}).get("podIPs") or []:
            add(p.get("ip"), f"pod {meta.get('namespace')}/{meta.get('name')}")
    return out


def check_in_cluster(ip: str, ranges: list[tuple[Network, str]], cluster: str, target: Target) -> str:
    """What ``ip`` is in ``cluster`` (the first of ``ranges`` holding it); ConfigError when it is none of
    them: probes only go to the cluster's own Services, pods and nodes."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        raise ConfigError(f"--to {target}: {ip!r} is not an IP address") from None
    for net, what in ranges:
        if a.version == net.version and a in net:
            return what
    kinds = list(
        dict.fromkeys(
            f"{what} {net.network_address if net.prefixlen == net.max_prefixlen else net}"
            for net, what in ranges
            if not what.startswith(("pod ", "Service "))
        )
    )
    shown = ", ".join(kinds[:8]) + (", ..." if len(kinds) > 8 else "")
    raise ConfigError(
        f"--to {target}: {ip} is not an address of cluster {cluster!r} (its Services, pods and nodes: "
        f"{shown or 'none found'}); probes only go to the cluster's own Services, pods and nodes — "
        "give a ClusterIP, a pod IP or a node IP:NodePort, or NAMESPACE/SERVICE[:PORT]"
    )


def pod_ips(names: set[str], *, kubectl: str, kubeconfig: Path | str) -> dict[str, str]:
    """Pod name → pod IP for the pods among ``names`` (the hostnames agnhost answered with)."""
    if not names:
        return {}
    pods = _kubectl_json(kubectl, kubeconfig, "get", "pods", "--all-namespaces")
    out: dict[str, str] = {}
    for pod in pods.get("items") or []:
        name = (pod.get("metadata") or {}).get("name")
        ip = (pod.get("status") or {}).get("podIP")
        if name in names and ip:
            out[str(name)] = str(ip)
    return out


def probe(
    cluster: Any,
    to: str | Target,
    *,
    source: str | Source | None = None,
    count: int = 100,
    timeout: float = 2.0,
    kubectl: str = "kubectl",
    busybox: Path | None = None,
) -> ProbeResult:
    """``count`` real connections on ``cluster`` from ``source`` (default: the first node) to ``to``."""
    target = parse_target(to) if isinstance(to, str) else to
    src = parse_source(source) if isinstance(source, str) else source
    if src is None:
        if not cluster.nodes:
            raise ConfigError(f"cluster {cluster.name!r} has no nodes to probe from")
        src = Source("node", cluster.nodes[0].name)
    ip, port = resolve_target(target, kubectl=kubectl, kubeconfig=cluster.kubeconfig)
    if target.ip:  # a Service's ClusterIP is the cluster's own; any other address must be too
        ranges = cluster_ranges(cluster, kubectl=kubectl, kubeconfig=cluster.kubeconfig)
        check_in_cluster(ip, ranges, cluster.name, target)
    if src.kind == "node":
        names = [n.name for n in cluster.nodes]
        if src.name not in names:
            raise ConfigError(f"--from {src}: cluster {cluster.name!r} has nodes {', '.join(names)}")
        info = cluster.node(src.name)
        bb = install_busybox(info.exec, busybox or Path(HOST_BUSYBOX))
        result = run_probe(
            info.exec, ip, port, count, busybox=bb, source=str(src), timeout=timeout, source_ip=info.ip
        )
    else:
        pod = _kubectl_json(kubectl, cluster.kubeconfig, "-n", src.namespace, "get", "pod", src.name)
        exec = PodExec(src.namespace, src.name, kubeconfig=cluster.kubeconfig, kubectl=kubectl)
        pod_ip = (pod.get("status") or {}).get("podIP")
        result = run_probe(
            exec, ip, port, count, busybox=POD_BUSYBOX, source=str(src), timeout=timeout, source_ip=pod_ip
        )
    seen = {c.backend for c in result.connections if c.backend}
    return replace(result, backend_ips=pod_ips(seen, kubectl=kubectl, kubeconfig=cluster.kubeconfig))
