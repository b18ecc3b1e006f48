"""Real workloads for the traffic findings (27-31): the offline agnhost image on the nodes, manifests with its
tag, ``kubectl exec`` into a pod, ``crictl`` on a node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.binaries import ensure_binaries, find_binary
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.kind.image.agnhost import ensure_agnhost_image, load_into_nodes
from pytest_k8sstate.traffic.probe import HOST_BUSYBOX, PodExec

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
