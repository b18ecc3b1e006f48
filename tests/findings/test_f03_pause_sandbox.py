"""Finding 3: a Pod runs in a ``pause`` sandbox whose network namespace its containers share."""

from __future__ import annotations

import json

import pytest

from .helpers import manifest


def _crictl_json(node_exec, command: str, *args: str):
    # ``-o json`` goes before any positional argument: crictl's CLI parser stops taking flags at the first
    # one, so ``crictl inspectp ID -o json`` asks for the sandboxes "ID", "-o" and "json" (NotFound)
    return json.loads(node_exec.run(["crictl", command, "-o", "json", *args], timeout=30).text)


def _netns_path(spec: dict) -> str | None:
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network":
            return str(ns.get("path") or "")
    return None


@pytest.mark.k8sstate_finding(
    3, "a Pod = pause sandbox + containers sharing its network namespace; hosts/resolv.conf mounted"
)
@pytest.mark.k8sstate_needs("container-runtime")
def test_finding_03_pause_sandbox_shares_netns(k8s_cluster, k8s_api):
    """Seed 000 (article), step 'create the first simple Pod': "two new containers joined in one Pod ...
    the second container is called pause and is needed to reserve the namespace for the Pod"; "by default
    /etc/hosts and /etc/resolv.conf are mounted into the container for DNS".
    Seed 002, section 'Pause-container': "needed to reserve the kernel namespace and network configuration
    for the Pod".

    Checked on the pod's node through the CRI (``crictl``): one sandbox for the pod whose image is
    ``pause``; both app containers join the sandbox's network namespace (same netns path, the sandbox's
    process); each container's OCI spec mounts ``/etc/hosts`` and ``/etc/resolv.conf`` (the CRI status lists
    only the kubelet's mounts; resolv.conf is added by the runtime from the sandbox).

    Real cluster vs article: the article used dockerd (cri-dockerd), where the sandbox is a visible
    ``k8s_POD_…`` docker container; with containerd the sandbox is a CRI pod sandbox and its pause
    process is not listed as a container.
    """
    k8s_api.apply(manifest("03-two-containers.yaml"))
    k8s_api.wait_ready("pod/f03-pod")
    pod = k8s_api.get("pod/f03-pod")
    node = k8s_cluster.node(pod["spec"]["nodeName"]).exec

    pods = _crictl_json(node, "pods", "--name", "f03-pod", "--namespace", "default", "--state", "ready")[
        "items"
    ]
    assert len(pods) == 1, pods
    sandbox_id = pods[0]["id"]
    sandbox = _crictl_json(node, "inspectp", sandbox_id)
    info = sandbox.get("info", {})
    assert "pause" in str(info.get("image", "")), f"sandbox image is {info.get('image')!r}, expected pause"
    sandbox_pid = info.get("pid")
    sandbox_netns = _netns_path(info.get("runtimeSpec", {}))

    containers = _crictl_json(node, "ps", "--pod", sandbox_id)["containers"]
    assert sorted(c["metadata"]["name"] for c in containers) == ["first", "second"]
    paths = []
    for c in containers:
        inspected = _crictl_json(node, "inspect", c["id"])
        path = _netns_path(inspected.get("info", {}).get("runtimeSpec", {}))
        assert path, f"container {c['metadata']['name']} has no network namespace path"
        paths.append(path)
        # the OCI spec's mounts: the kubelet's (/etc/hosts) and the runtime's own (/etc/resolv.conf, ...)
        spec_mounts = inspected.get("info", {}).get("runtimeSpec", {}).get("mounts", [])
        mounts = {m.get("destination") for m in spec_mounts}
        assert {"/etc/hosts", "/etc/resolv.conf"} <= mounts, mounts
    assert paths[0] == paths[1], f"the containers are in different network namespaces: {paths}"
    assert paths[0] == sandbox_netns or paths[0] == f"/proc/{sandbox_pid}/ns/net", (paths[0], sandbox_netns)
