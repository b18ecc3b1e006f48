"""Finding 26: what a Pod's creation adds on its node depends on the CNI — routes (ptp) or a bridge port and
masquerade rules (bridge).

Seed 000, step "create the first simple Pod": "iptables — new rules appeared that regulate the traffic
leaving the created pod". Finding 2 shows that Kubernetes itself adds no rule for a Pod; these two tests show
where the article's rules came from: minikube's default CNI is the reference ``bridge`` plugin with
``ipMasq``, which adds a per-pod chain to nat POSTROUTING. kindnet's layout (``ptp``: a veth and a /32 route
per pod) adds none. Each runs on a kind cluster with that CNI (``@pytest.mark.k8sstate(cni=…)``).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_k8sstate.assertions import (
    assert_new_chains,
    assert_new_links,
    assert_new_routes,
    assert_no_netfilter_change,
)
from pytest_k8sstate.k8s import pod_ip

from .helpers import manifest


def _create_pod(cluster_state: Any, k8s_api: Any) -> tuple[Any, str, str]:
    k8s_api.apply(manifest("26-pod.yaml"))
    k8s_api.wait_ready("pod/f26-pod")
    node = k8s_api.get("pod/f26-pod")["spec"]["nodeName"]
    return cluster_state.diff(), node, pod_ip(k8s_api, "f26-pod")


@pytest.mark.k8sstate_finding(26, "CNI footprint of a Pod: ptp adds a veth and a /32 route, no rule")
@pytest.mark.k8sstate(cni="ptp", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-ptp")
def test_finding_26_ptp_routes_each_pod(k8s_cluster, cluster_state, k8s_api):
    diff, node, ip = _create_pod(cluster_state, k8s_api)
    [(_, veth)] = assert_new_links(diff, "veth*", kind="veth", node=node, count=1)
    # the pod's IP is routed to its own veth: one /32 route per pod, no bridge in between
    assert_new_routes(diff, ip, dev=veth.name, node=node, count=1)
    assert "cni0" not in {link.get("ifname") for link in cluster_state.after.nodes[node].links}
    assert_no_netfilter_change(diff, node=node)


@pytest.mark.k8sstate_finding(26, "CNI footprint of a Pod: bridge adds a port on cni0 and a masquerade chain")
@pytest.mark.k8sstate(cni="bridge", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-bridge")
def test_finding_26_bridge_masquerades_each_pod(k8s_cluster, cluster_state, k8s_api):
    diff, node, ip = _create_pod(cluster_state, k8s_api)
    assert_new_links(diff, "veth*", kind="veth", node=node, count=1)
    # the pod sits on the bridge's subnet: no route of its own
    assert not [r for r in diff.nodes[node].routes_added if r.split()[0] in (ip, f"{ip}/32")]
    links = {link.get("ifname"): link for link in cluster_state.after.nodes[node].links}
    assert "cni0" in links, f"no cni0 bridge on {node}: {sorted(links)}"
    # ipMasq: a chain per pod, jumped to from POSTROUTING for the pod's source address
    [chain] = assert_new_chains(diff, ["CNI-*"], node=node)[node]
    rules = [spec for t, c, spec in diff.nodes[node].rules_added if (t, c) == ("nat", "POSTROUTING")]
    assert any(f"-s {ip}/32" in r and f"-j {chain}" in r for r in rules), rules
    masq = [spec for t, c, spec in diff.nodes[node].rules_added if (t, c) == ("nat", chain)]
    assert any("MASQUERADE" in r for r in masq), masq
