"""Finding 28: externalTrafficPolicy Cluster masquerades NodePort clients; Local keeps the client's address
and drops connections on a node without a local endpoint — traced and observed."""

from __future__ import annotations

import pytest

from pytest_k8sstate.traffic import ProbeResult, assert_traffic_matches_trace, probe, traced_outcomes

from .helpers import node_names, wait_proxy_endpoints, wait_proxy_text
from .workloads import agnhost_docs, agnhost_on_nodes, kubectl, node_port

N_OK = 20  # one backend: every connection must reach it (no split to test)
N_DROP = 5  # each dropped connection costs its whole timeout (2 s)


@pytest.mark.k8sstate_finding(
    28, "externalTrafficPolicy: Cluster masquerades (observed), Local keeps the client IP and drops without"
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_28_external_traffic_policy(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'service.spec.externalTrafficPolicy': ""Local" preserves the client source IP and
    avoids a second hop for LoadBalancer and Nodeport type services ... "Cluster" obscures the client
    source IP and may cause a second hop to another node"; "nodes only route traffic to pods that are on
    the same node". Issue 11: Local drops on nodes without an endpoint (traced and observed).

    One agnhost pod (on node E) behind ``f28-cluster`` and ``f28-local`` (NodePort, identical but for the
    policy); the other node (X) has no endpoint. Real connections from one node to the other's NodePort
    (a client outside the pod network: a node's own address), each asking the pod which source it saw:

    * Cluster, X → E:nodePort: all answered; the pod saw an address of E (masqueraded on E), as traced
      on E's captured rules;
    * Cluster, E → X:nodePort: all answered via X (forwarded to E's pod); the pod saw an address of X;
    * Local, X → E:nodePort: all answered; the pod saw X's own address (client source preserved), as
      traced (no masquerade on E);
    * Local, E → X:nodePort: every connection times out; X's trace is a DROP (kube-proxy's "has no local
      endpoints" rule in filter KUBE-EXTERNAL-SERVICES).

    Real cluster vs seed: on a node, a NodePort connection the node itself originates is always
    masqueraded and served by any endpoint (``--src-type LOCAL`` → cluster chain, also with Local), so
    the client is the other node, never the node probed.
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(agnhost_docs("28-etp.yaml", tag))
    [pod_ip] = k8s_api.wait_endpoints("svc/f28-cluster", count=1, timeout=180)
    k8s_api.wait_endpoints("svc/f28-local", count=1, timeout=60)
    [pod] = k8s_api.list("pod", {"app": "f28-web"})
    with_ep = pod["spec"]["nodeName"]
    without = [n for n in node_names(k8s_cluster) if n != with_ep]
    assert without, f"needs a second node without the endpoint; nodes: {node_names(k8s_cluster)}"
    no_ep = without[0]
    wait_proxy_endpoints(k8s_cluster, "default/f28-cluster", 1)
    wait_proxy_endpoints(k8s_cluster, "default/f28-local", 1)
    wait_proxy_text(
        k8s_cluster,
        f"kube-proxy on {no_ep} to drop f28-local (no local endpoint)",
        lambda d: "default/f28-local:http has no local endpoints" in d,
        nodes=[no_ep],
    )
    snap = cluster_state.snapshot("etp")
    ip = {n: k8s_cluster.node(n).ip for n in node_names(k8s_cluster)}
    np_cluster = node_port(k8s_api.get("svc/f28-cluster"))
    np_local = node_port(k8s_api.get("svc/f28-local"))
    name = pod["metadata"]["name"]
    kc = kubectl()
    rates: list[str] = []

    def run(node: str, port: int, src: str, count: int = N_OK) -> ProbeResult:
        res = probe(k8s_cluster, f"{ip[node]}:{port}", source=f"node/{src}", count=count, kubectl=kc)
        rates.append(f"{src}->{node}:{port} {res.rate:.1f}/s")
        return res

    cluster_at_ep = run(with_ep, np_cluster, no_ep)
    assert cluster_at_ep.outcomes() == {"ok": N_OK}, cluster_at_ep.connections[:3]
    seen = cluster_at_ep.clients_by_backend()
    assert list(seen) == [name], seen
    assert seen[name] <= snap.nodes[with_ep].local_ips, (seen, snap.nodes[with_ep].local_ips)
    assert_traffic_matches_trace(snap, cluster_at_ep, node=with_ep)

    cluster_via_x = run(no_ep, np_cluster, with_ep)
    assert cluster_via_x.outcomes() == {"ok": N_OK}, cluster_via_x.connections[:3]
    seen = cluster_via_x.clients_by_backend()
    assert seen == {name: {ip[no_ep]}}, seen
    assert_traffic_matches_trace(snap, cluster_via_x, node=no_ep)

    local_at_ep = run(with_ep, np_local, no_ep)
    assert local_at_ep.outcomes() == {"ok": N_OK}, local_at_ep.connections[:3]
    assert local_at_ep.clients_by_backend() == {name: {ip[no_ep]}}
    assert_traffic_matches_trace(snap, local_at_ep, node=with_ep)

    local_at_x = run(no_ep, np_local, with_ep, N_DROP)
    assert local_at_x.outcomes() == {"timeout": N_DROP}, local_at_x.connections[:3]
    traced, probs, _ = traced_outcomes(snap, local_at_x, node=no_ep)
    assert probs == {"timeout": 1.0}, traced.outcomes
    assert_traffic_matches_trace(snap, local_at_x, node=no_ep)
    print(f"\n[f28] pod {name} ({pod_ip}) on {with_ep}; probe rates: {'; '.join(rates)}")
