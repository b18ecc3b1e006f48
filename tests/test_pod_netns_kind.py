"""``pods=True`` on a real kind cluster: each pod's own network namespace — its ``eth0`` (a veth), the pod IP
and its default route via the CNI's gateway (the first address of the node's pod CIDR: the ptp veth's
node side, or ``cni0`` for bridge and flannel) — and the step's normalised node footprint per CNI.

Runs where the cluster has a container runtime (``--k8sstate-provider kind``, any ``--k8sstate-cni``);
skipped with the reason on ``local`` (whose kwok pods have no network namespace; ``tests/test_pod_netns.py``
covers the capture on namespaces made here).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pytest_k8sstate.assertions import assert_pod_interface
from pytest_k8sstate.state.footprint import footprint

pytestmark = pytest.mark.k8sstate_needs("container-runtime")

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "pn-pod", "labels": {"app": "pn-pod"}},
    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.1"}]},
}


def test_pods_true_captures_the_pods_own_network_namespace(k8s_cluster: Any, k8s_api: Any) -> None:
    before = k8s_cluster.snapshot("before", pods=True)
    k8s_api.apply(POD)
    k8s_api.wait_ready("pod/pn-pod")
    pod = k8s_api.get("pod/pn-pod")
    node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
    key = f"{pod['metadata']['namespace']}/pn-pod"
    after = k8s_cluster.snapshot("after", pods=True)

    cidr = ipaddress.ip_network(k8s_api.get(f"node/{node}")["spec"]["podCIDR"])
    gateway = str(cidr.network_address + 1)
    net = assert_pod_interface(
        after, key, node=node, interface="eth0", address=ip, route=f"default via {gateway}"
    )
    eth0 = next(link for link in net.links if link.get("ifname") == "eth0")
    assert eth0.get("kind") == "veth", eth0
    assert after.pods is not None
    assert not after.pods[node].errors, after.pods[node].errors
    diff = before.diff(after)
    assert diff.pods is not None
    assert key in diff.pods.added.get(node, []), diff.pods.to_json()

    # the node side of the same step, normalised (state/footprint.py), as the CNI table shows it
    short = node.removeprefix(f"{k8s_cluster.name}-")
    fp = footprint(diff, after).nodes[short]
    assert ("veth* (veth)", 1) in fp.items("links", "added"), fp.to_json()
    routes = [t for t, _ in fp.items("routes", "added")]
    chains = [t for t, _ in fp.items("chains", "added")]
    caps = k8s_cluster.capabilities
    if "cni-bridge" in caps:
        assert chains == ["nat CNI-…"], fp.to_json()
    elif "cni-ptp" in caps:
        assert "<pod IP> dev veth*" in routes, fp.to_json()
        assert not chains, fp.to_json()
    elif "cni-flannel" in caps or "cni-flannel-host-gw" in caps:
        assert "<pod IP> dev veth*" not in routes, fp.to_json()
        assert not chains, fp.to_json()
