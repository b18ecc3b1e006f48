"""Finding 14: a Service without ready endpoints is a filter-table REJECT on every node."""

from __future__ import annotations

import pytest

from pytest_k8sstate.assertions import assert_dnat_to

from .helpers import (
    IN_CLUSTER_SRC,
    OUTSIDE_SRC,
    chain_specs,
    manifest,
    node_names,
    trace_on,
    wait_proxy_text,
    wait_until,
)
from .workloads import agnhost_on_nodes, observe

PORT_ID = "default/f14-none:http"


@pytest.mark.k8sstate_finding(
    14, "Service with no ready endpoints: filter-table REJECT on every node; traced REJECT"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_14_no_endpoints_reject(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Readiness and Liveness Probes': "Readiness — is the container ready ... can
    traffic be routed to it. If a pod stops being ready it is automatically removed from the list of the
    lb". Section 'Cluster IP': "when a pod inside the cluster tries to connect to the virtual IP of the
    service, the node where the pod runs replaces the destination address with the real pod address" — with
    no ready pod there is nothing to replace it with.

    Checked with a Service whose selector matches no Pod: on every node the filter table's KUBE-SERVICES
    gets ``-d <ClusterIP>/32 -p tcp -m comment --comment "default/f14-none:http has no endpoints" -m tcp
    --dport 80 -j REJECT --reject-with icmp-port-unreachable``; the nat table gets no KUBE-SVC/KUBE-SEP
    chain for it; a traced new connection (from a pod and from outside) has the single outcome REJECT,
    probability 1, no DNAT.

    Real cluster vs article: the seeds do not show this rule; it is how kube-proxy (iptables mode) makes
    connections to an empty Service fail fast instead of timing out.
    """
    k8s_api.apply(manifest("14-no-endpoints.yaml"))
    wait_proxy_text(
        k8s_cluster, "kube-proxy to reject default/f14-none", lambda d: f"{PORT_ID} has no endpoints" in d
    )
    diff = cluster_state.diff()
    after = cluster_state.after
    cluster_ip = k8s_api.cluster_ip("svc/f14-none")
    assert k8s_api.ready_endpoints("svc/f14-none") == []

    reject = (
        f'-d {cluster_ip}/32 -p tcp -m comment --comment "{PORT_ID} has no endpoints" -m tcp --dport 80 '
        "-j REJECT --reject-with icmp-port-unreachable"
    )
    for node in node_names(k8s_cluster):
        assert reject in chain_specs(after, node, "filter", "KUBE-SERVICES"), node
        nd = diff.nodes[node]
        assert ("filter", "KUBE-SERVICES", reject) in nd.rules_added, node
        assert not [c for c in nd.chains_added if c[1].startswith(("KUBE-SVC-", "KUBE-SEP-"))], node
        assert not [r for r in nd.rules_added if r[0] == "nat" and "f14-none" in r[2]], node
        for src in (IN_CLUSTER_SRC, OUTSIDE_SRC):
            result = trace_on(after, k8s_cluster, node, cluster_ip, 80, src=src)
            assert [(o.probability, o.dnat, o.verdict) for o in result.outcomes] == [(1, None, "REJECT")], (
                node,
                src,
                result.outcomes,
            )
    assert_dnat_to(after, service=PORT_ID, endpoints=[])


@pytest.mark.k8sstate_finding(
    14, "a Service whose only pod is not Ready: REJECT on every node, like no endpoints"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
@pytest.mark.k8sstate_needs("kubelet")
def test_finding_14_unready_endpoint_reject(k8s_cluster, cluster_state, k8s_api):
    """The same claim with an endpoint that exists but is not ready: a pod whose readiness gate
    (``k8sstate.example.com/never``) is never set stays not Ready; its EndpointSlice lists it with
    ``ready: false``; every node rejects connections to the ClusterIP exactly as for an empty Service, and no
    KUBE-SEP chain is written for the pod.

    Needs a kubelet: kwok (the ``local`` provider) marks every pod Ready, readiness gates included.
    """
    k8s_api.apply(manifest("14-unready-pod.yaml"))
    port_id = "default/f14-unready:http"

    def listed() -> list[dict]:
        slices = k8s_api.list("endpointslice", {"kubernetes.io/service-name": "f14-unready"})
        return [ep for s in slices for ep in s.get("endpoints") or []]

    # the slice lists the pod only once it has an IP (its sandbox is up); kube-proxy rejects even before
    wait_until("the EndpointSlice of svc/f14-unready to list the (not ready) pod", listed)
    wait_proxy_text(
        k8s_cluster, "kube-proxy to reject default/f14-unready", lambda d: f"{port_id} has no endpoints" in d
    )
    after = cluster_state.snapshot("programmed")
    pod = k8s_api.get("pod/f14-unready")
    ready = [c["status"] for c in pod["status"].get("conditions", []) if c["type"] == "Ready"]
    assert ready == ["False"], pod["status"]
    endpoints = listed()
    assert len(endpoints) == 1, endpoints
    assert endpoints[0]["conditions"]["ready"] is False, endpoints
    cluster_ip = k8s_api.cluster_ip("svc/f14-unready")
    for node in node_names(k8s_cluster):
        assert not [c for c in chain_specs(after, node, "nat", "KUBE-SERVICES") if port_id in c], node
        result = trace_on(after, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC)
        assert [(o.probability, o.dnat, o.verdict) for o in result.outcomes] == [(1, None, "REJECT")], node


@pytest.mark.k8sstate_finding(
    14, "observed: connections to a Service without endpoints are refused, as traced"
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_14_observed_refused(k8s_cluster, cluster_state, k8s_api):
    """The observed half of finding 14: 10 real connections from a node to the ClusterIP of ``f14-none``
    (no endpoints) are all refused — the filter-table ``REJECT --reject-with icmp-port-unreachable`` the
    trace has as the only outcome; a DROP would show as time-outs, a stale DNAT as an answer.
    """
    agnhost_on_nodes(k8s_cluster)  # the probe client (busybox) on the nodes
    k8s_api.apply(manifest("14-no-endpoints.yaml"))
    wait_proxy_text(
        k8s_cluster, "kube-proxy to reject default/f14-none", lambda d: f"{PORT_ID} has no endpoints" in d
    )
    snap = cluster_state.snapshot("programmed")
    node = node_names(k8s_cluster)[-1]
    observed, comparison = observe(
        k8s_cluster, snap, "default/f14-none:80", source=f"node/{node}", node=node, count=10
    )  # measured about 1 refusal/s after the first few (each further one waits about 1 s): keep N small
    assert observed.outcomes() == {"refused": 10}, observed.connections[:3]
    assert [r[0] for r in comparison.split.rows] == ["refused"]
