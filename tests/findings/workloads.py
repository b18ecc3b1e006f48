"""Real workloads for the traffic findings (4, 5, 8, 9, 14, 24, 25, 27-31): the offline agnhost image on the
nodes, manifests with its tag (or ``pause`` swapped for ``netexec``), ``kubectl exec`` into a pod, ``crictl``
on a node, probes compared with the trace, probes from outside the nodes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.binaries import ensure_binaries, find_binary
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.kind.image.agnhost import ensure_agnhost_image, load_into_nodes
from pytest_k8sstate.traffic import ProbeResult, TrafficComparison, assert_traffic_matches_trace, probe
from pytest_k8sstate.traffic.probe import HOST_BUSYBOX, PodExec, run_probe
from pytest_k8sstate.traffic.targets import pod_ips

from .helpers import load_manifest


def agnhost_on_nodes(cluster: Any) -> str:
    """The offline agnhost image (built once, cached by version + content) in every node's containerd."""
    if not Path(HOST_BUSYBOX).is_file():
        pytest.skip(
            f"{HOST_BUSYBOX} missing (the image's shell and probe client): apt-get install busybox-static"
        )
    bins = ensure_binaries(["agnhost"])
    execs = [n.exec for n in cluster.nodes]
    docker = DockerCli(getattr(execs[0], "host", None))
    image = ensure_agnhost_image(docker, bins["agnhost"], Path(HOST_BUSYBOX), bins.versions.agnhost)
    load_into_nodes(docker, image.tag, execs)
    return image.tag


def agnhost_docs(name: str, tag: str) -> list[dict[str, Any]]:
    """``manifests/findings/<name>`` with every agnhost container (pod templates and bare pods) on ``tag``."""
    docs = load_manifest(name)
    for d in docs:
        spec = d.get("spec", {})
        pod_spec = spec.get("template", {}).get("spec", spec) if d.get("kind") != "Pod" else spec
        for c in pod_spec.get("containers", []) or []:
            if "agnhost" in str(c.get("image", "")):
                c["image"] = tag
    return docs


def kubectl() -> str:
    return str(find_binary("kubectl") or "kubectl")


def pod_exec(cluster: Any, pod: str, namespace: str = "default") -> PodExec:
    return PodExec(namespace, pod, kubeconfig=cluster.kubeconfig, kubectl=kubectl())


def crictl_json(node_exec: Any, command: str, *args: str) -> Any:
    """``crictl COMMAND -o json ARGS`` on a node (``-o json`` before any positional argument)."""
    return json.loads(node_exec.run(["crictl", command, "-o", "json", *args], timeout=30).text)


def node_port(service: dict[str, Any], port_name: str = "http") -> int:
    for p in service["spec"].get("ports", []):
        if p.get("name") == port_name and p.get("nodePort"):
            return int(p["nodePort"])
    raise AssertionError(f"service {service['metadata']['name']} has no nodePort named {port_name}")


# ------------------------------------------------------------------ observed halves of findings 4-24


def real_pods(cluster: Any) -> bool:
    """Whether the cluster runs real containers (kind) — kwok's pods (``local``) answer no connection."""
    return "container-runtime" in cluster.capabilities


def netexec(docs: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """``docs`` with every ``pause`` container (pod templates and bare pods) replaced by an agnhost
    ``netexec`` on the same port 8080, ready once it answers ``/hostname``."""
    for d in docs:
        spec = d.get("spec", {})
        pod_spec = spec.get("template", {}).get("spec", spec) if d.get("kind") != "Pod" else spec
        for c in pod_spec.get("containers", []) or []:
            if "pause" in str(c.get("image", "")):
                c["image"] = tag
                c["imagePullPolicy"] = "Never"
                c["args"] = ["netexec", "--http-port=8080", "--udp-port=8081"]
                c["readinessProbe"] = {"httpGet": {"path": "/hostname", "port": 8080}, "periodSeconds": 2}
    return docs


def observe(
    cluster: Any,
    snapshot: Any,
    to: str,
    *,
    source: str,
    node: str,
    count: int,
    **compare: Any,
) -> tuple[ProbeResult, TrafficComparison]:
    """``count`` real connections from ``source`` to ``to``, compared with the trace on ``node``."""
    observed = probe(cluster, to, source=source, count=count, kubectl=kubectl())
    comparison = assert_traffic_matches_trace(snapshot, observed, node=node, **compare)
    print(f"\n[{source} -> {to}] {observed.rate:.0f} connections/s; " + "; ".join(comparison.table()))
    return observed, comparison


OUTSIDE_NETNS = "k8ss-docker"  # the project's Docker engine: on the kind network, outside every node


def probe_from_outside(cluster: Any, ip: str, port: int, count: int) -> ProbeResult:
    """``count`` connections from the Docker engine's network namespace (not a node) to ``ip:port``."""
    if not Path(f"/run/netns/{OUTSIDE_NETNS}").exists():
        pytest.skip(f"network namespace {OUTSIDE_NETNS} (the project's Docker engine) not here")
    exec = NetnsExec(OUTSIDE_NETNS, node=f"outside/{OUTSIDE_NETNS}")
    route = json.loads(exec.run(["ip", "-j", "route", "get", ip], timeout=10).text)
    src = str(route[0]["prefsrc"])
    result = run_probe(
        exec, ip, port, count, busybox=HOST_BUSYBOX, source=f"outside/{OUTSIDE_NETNS}", source_ip=src
    )
    seen = {c.backend for c in result.connections if c.backend}
    return replace(result, backend_ips=pod_ips(seen, kubectl=kubectl(), kubeconfig=cluster.kubeconfig))
