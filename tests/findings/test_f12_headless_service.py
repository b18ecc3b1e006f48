"""Finding 12: a headless Service has endpoints and slices but no netfilter rule."""

from __future__ import annotations

import pytest

from .helpers import (
    added_keys,
    foreign_netfilter_changes,
    manifest,
    node_names,
    sep_chain,
    split_events,
    svc_chain,
    wait_proxy_endpoints,
    without_noise,
)


@pytest.mark.k8sstate_finding(
    12, "headless Service: endpoints and slices exist, no netfilter rule on any node"
)
def test_finding_12_headless_service_has_no_rules(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Headless service': "clusterIP: None — works only as a DNS record: you ask for
    its address and get the list of endpoints back". Section 'Kube-proxy vs CNIs': "kube-proxy's job is
    rather simple, it just redirects requests from Cluster IP to Pod IP" — without a ClusterIP there is
    nothing to redirect.

    Checked between "pod ready" and "headless Service + a later ordinary barrier Service programmed": etcd
    gains ``/registry/services/specs/default/f12-web``, ``/registry/services/endpoints/default/f12-web``
    and an ``/registry/endpointslices/default/f12-web-…`` key (no ``/registry/ipaddresses/`` key: no
    ClusterIP) — the slice carries the ``service.kubernetes.io/headless`` label kube-proxy filters out and
    lists the pod — while every netfilter change on every node (iptables and nftables) belongs to the barrier
    Service ``f12-barrier`` — none to ``f12-web``.

    Real cluster vs article: the barrier makes "no rule" checkable without sleeping: kube-proxy handles
    Service events in order, so once the later Service is programmed the headless one was processed.
    """
    k8s_api.apply(manifest("12-pod.yaml"))
    k8s_api.wait_ready("pod/f12-web")
    cluster_state.snapshot("pod-ready")
    k8s_api.apply(manifest("12-headless.yaml"))
    k8s_api.wait_endpoints("svc/f12-web", count=1)
    k8s_api.apply(manifest("12-barrier.yaml"))
    wait_proxy_endpoints(k8s_cluster, "default/f12-barrier", 1)
    diff = cluster_state.diff(since="pod-ready")

    _events, keys = split_events(without_noise(added_keys(diff)))
    ours = [k for k in keys if "/f12-web" in k]
    slices = [k for k in ours if k.startswith("/registry/endpointslices/default/f12-web-")]
    assert len(slices) == 1, ours
    assert sorted(ours) == sorted(
        ["/registry/services/specs/default/f12-web", "/registry/services/endpoints/default/f12-web", *slices]
    )
    assert not [k for k in keys if k.startswith("/registry/ipaddresses/") and "f12" in k]
    headless = k8s_api.get("svc/f12-web")
    assert headless["spec"]["clusterIP"] == "None"
    # the slice is marked headless — the label kube-proxy's informer filters out
    (slice_,) = k8s_api.list("endpointslice", {"kubernetes.io/service-name": "f12-web"})
    assert "service.kubernetes.io/headless" in slice_["metadata"]["labels"], slice_["metadata"]["labels"]
    assert [ep["addresses"] for ep in slice_["endpoints"]] == [[k8s_api.pod_ip("f12-web")]]

    barrier = "default/f12-barrier:http"
    pod_ip = k8s_api.pod_ip("f12-web")
    barrier_marks = ["f12-barrier", svc_chain(barrier), sep_chain(barrier, f"{pod_ip}:8080")]
    for node in node_names(k8s_cluster):
        assert foreign_netfilter_changes(diff.nodes[node], barrier_marks) == [], node
