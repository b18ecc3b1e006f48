"""Finding 2: creating a Pod adds the pod key and its event keys — and no netfilter rule."""

from __future__ import annotations

import pytest

from pytest_k8sstate.assertions import assert_new_chains, assert_new_keys, assert_no_netfilter_change

from .helpers import added_keys, manifest, split_events, without_noise


@pytest.mark.k8sstate_finding(2, "a Pod adds only its pod key and event keys; no netfilter rule")
def test_finding_02_pod_adds_pod_and_event_keys(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), step 'create the first simple Pod': "etcd keys — only two kinds of keys
    appeared: events about creating the pod and the pod itself"; "iptables — new rules appeared that
    regulate the traffic leaving the created pod".

    Checked: the only new etcd keys are ``/registry/pods/default/f02-pod`` and
    ``/registry/events/default/f02-pod.*`` (at least the scheduler's ``Scheduled`` event); no iptables or
    nftables rule changes on any node.

    Real cluster vs article: the article's new iptables rules came from minikube's CNI *bridge* plugin
    (per-pod masquerade of outgoing traffic), not from Kubernetes: kube-proxy does not watch Pods at all.
    With no CNI plugin (``local``) — and with kindnet, ptp or flannel (kind), which route or bridge without
    per-pod rules — creating a Pod changes no netfilter rule, so the test asserts none. With the ``bridge``
    CNI (the article's own set-up) the article's observation holds and is asserted: the CNI's per-pod
    masquerade chain, and nothing else (finding 26 has the details).
    """
    k8s_api.apply(manifest("02-pod.yaml"))
    k8s_api.wait_ready("pod/f02-pod")
    diff = cluster_state.diff()

    assert_new_keys(diff, ["/registry/pods/default/f02-pod"], exact=True)
    events, others = split_events(without_noise(added_keys(diff)))
    assert others == ["/registry/pods/default/f02-pod"]
    assert events, "no event key was written for the pod (expected at least the scheduler's 'Scheduled')"
    assert all(k.startswith("/registry/events/default/f02-pod.") for k in events), events
    if "cni-bridge" not in k8s_cluster.capabilities:
        assert_no_netfilter_change(diff)
        return
    node = k8s_api.get("pod/f02-pod")["spec"]["nodeName"]
    assert_new_chains(diff, ["CNI-*"], node=node)
    for other in k8s_cluster.nodes:
        if other.name != node:
            assert_no_netfilter_change(diff, node=other.name)
