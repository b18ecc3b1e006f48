"""Where a probe goes (``ns/name[:port]`` or ``IP:PORT``) and starts (``node/NAME`` or ``pod/NS/NAME``).

:func:`probe` ties it together on a :class:`~pytest_k8sstate.providers.base.Cluster`: resolves a Service to
its ClusterIP and port through ``kubectl``, runs :func:`~pytest_k8sstate.traffic.probe.run_probe` in the
node (busybox copied in) or the pod (the agnhost image's ``/bin/busybox``), then looks up the IP of every
pod that answered.
"""

from __future__ import annotations

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

__all__ = ["Source", "Target", "parse_source", "parse_target", "pod_ips", "probe", "resolve_target"]

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
