"""Finding 8: a Service for a 2-replica Deployment: KUBE-SVC with two KUBE-SEP, split 1/2–1/2."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pytest_k8sstate.assertions import assert_dnat_to

from .helpers import (
    IN_CLUSTER_SRC,
    added_keys,
    endpoint_jumps,
    load_manifest,
    manifest,
    node_names,
    sep_chain,
    split_events,
    stores_ipaddresses,
    svc_chain,
    trace_on,
    wait_proxy_endpoints,
    without_noise,
)
from .workloads import agnhost_on_nodes, netexec, observe

SERVICE = "default/f08-web"
N = 300  # 2 traced-equal backends: 150 expected each (see pytest_k8sstate.traffic.stats)
PORT_ID = "default/f08-web:http"


@pytest.mark.k8sstate_finding(
    8, "2 endpoints: KUBE-SVC → 2 KUBE-SEP, the first at probability 0.5; traced 1/2–1/2"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_08_two_endpoints_half_each(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), step 'Service for the Deployment': "etcd — everything as when creating a
    service in the single-node cluster; iptables — the new rules are the same, except that the service now
    has two endpoints, so the endpoint rules were duplicated".
    Seed 001, section 'Kube-proxy': ``-A KUBE-SVC-… -m statistic --mode random --probability 0.5000000000
    -j KUBE-SEP-MMYWB6DZJI4RZ5CQ`` ("incoming traffic with probability 50% goes to this chain") and
    ``-A KUBE-SVC-… -j KUBE-SEP-J33LX377GA3DLDWM`` ("everything else goes to this chain").

    Checked: the etcd keys are those of finding 4 (service spec, endpoints, one endpoint slice, the
    ClusterIP's IPAddress); on every node KUBE-SVC-<hash> has exactly two endpoint jumps — the first with
    ``--probability 0.50000000000``, the second unconditional — to the KUBE-SEP chains of the two pods;
    the traced split of new connections is exactly 1/2 per pod.

    Real cluster vs article: iptables-save prints the probability with 11 decimals (0.50000000000; the
    article's ``iptables -S``-style text had 10).
    """
    deployment, _service = load_manifest("08-deployment-service.yaml")
    k8s_api.apply(deployment)  # the Deployment first, as in the article
    k8s_api.wait_ready("deployment/f08-web")
    deployed = cluster_state.snapshot("deployment-ready")
    k8s_api.apply(manifest("08-deployment-service.yaml"))
    ips = k8s_api.wait_endpoints("svc/f08-web", count=2)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 2)
    diff = cluster_state.diff(since="deployment-ready")
    after = cluster_state.after
    cluster_ip = k8s_api.cluster_ip("svc/f08-web")
    endpoints = [f"{ip}:8080" for ip in ips]

    _events, keys = split_events(without_noise(added_keys(diff)))
    expected = ["/registry/services/endpoints/default/f08-web", "/registry/services/specs/default/f08-web"]
    if stores_ipaddresses(deployed):
        expected.append(f"/registry/ipaddresses/{cluster_ip}")
    slices = [k for k in keys if k.startswith("/registry/endpointslices/default/f08-web-")]
    assert len(slices) == 1, keys
    assert sorted(keys) == sorted([*expected, *slices])

    svc = svc_chain(PORT_ID)
    seps = {sep_chain(PORT_ID, ep) for ep in endpoints}
    for node in node_names(k8s_cluster):
        jumps = endpoint_jumps(after, node, svc)
        assert [p for p, _ in jumps] == ["0.50000000000", None], (node, jumps)
        assert {t for _, t in jumps} == seps, (node, jumps)
        split = trace_on(after, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert split == {ep: Fraction(1, 2) for ep in endpoints}, (node, split)
    assert_dnat_to(after, service=PORT_ID, endpoints=endpoints, balanced=True)


@pytest.mark.k8sstate_finding(8, "observed: 300 connections split over the 2 pods as traced (1/2 each)")
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_08_observed_split(k8s_cluster, cluster_state, k8s_api):
    """The observed half of finding 8 ("incoming traffic with probability 50% goes to this chain"): the
    Deployment's two pods are agnhost ``netexec``; 300 real connections from a node to the ClusterIP
    reach both, and the split matches the traced 1/2–1/2 (chi-square, false-failure rate 1e-4; 150
    expected each), each pod seeing the node's address (masqueraded, as traced).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(netexec(load_manifest("08-deployment-service.yaml"), tag))
    ips = k8s_api.wait_endpoints("svc/f08-web", count=2, timeout=180)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 2)
    snap = cluster_state.snapshot("programmed")
    node = node_names(k8s_cluster)[0]
    observed, comparison = observe(
        k8s_cluster, snap, f"{SERVICE}:80", source=f"node/{node}", node=node, count=N
    )
    assert sorted(observed.backend_ips.values()) == sorted(ips), observed.counts()
    assert [round(r[1], 6) for r in comparison.split.rows] == [0.5, 0.5]
