"""Finding 5: a NodePort Service adds a KUBE-NODEPORTS → KUBE-EXT-… path on every node."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pytest_k8sstate.assertions import assert_new_chains
from pytest_k8sstate.traffic import assert_traffic_matches_trace

from .helpers import (
    OUTSIDE_SRC,
    chain_specs,
    load_manifest,
    manifest,
    node_names,
    svc_chain,
    trace_on,
    wait_proxy_endpoints,
)
from .workloads import agnhost_on_nodes, netexec, observe, probe_from_outside

SERVICE = "default/f05-web"
PORT_ID = "default/f05-web:http"


@pytest.mark.k8sstate_finding(
    5, "NodePort Service: KUBE-NODEPORTS → KUBE-EXT-… on every node; nodeIP:nodePort → pod, masqueraded"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_05_nodeport_service(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), step 'a Service for the Pod': "one can notice that two chains were created,
    one for the cluster IP of the service and another for the NodePort, but both in the end send the
    packet to the single endpoint, namely the created container".
    Seed 002, section 'NodePort': "the same port from a special range is opened on every node, which
    does DNAT to the addresses of the Pods".

    Checked on every node: KUBE-NODEPORTS gets ``-p tcp ... --dport <nodePort> -j KUBE-EXT-<hash>``;
    KUBE-EXT-<hash> marks the connection for masquerade and jumps to the same KUBE-SVC-<hash> chain the
    ClusterIP path uses. Traced: a new connection from outside the cluster to ``<nodeIP>:<nodePort>`` of
    every node is DNATed to ``<podIP>:8080`` with probability 1 and masqueraded; so is the ClusterIP path.

    Real cluster vs article:
    - since kube-proxy 1.24 the NodePort path goes through a per-service ``KUBE-EXT-…`` chain ("masquerade
      traffic for … external destinations") instead of jumping from KUBE-NODEPORTS straight to
      KUBE-SVC-… with a KUBE-MARK-MASQ rule next to it;
    - KUBE-NODEPORTS has a second rule for the same port, ``-d 127.0.0.0/8 … -m nfacct --nfacct-name
      localhost_nps_accepted_pkts``, counting NodePort connections to localhost
      (``--iptables-localhost-nodeports``, default true); iptables-save prints it with two spaces after
      ``--nfacct-name``;
    - the article's "a service is about ten lines in iptables": this one-endpoint NodePort Service adds
      9 rules + 3 chain declarations = 12 lines of ``iptables-save`` on every node.
    """
    k8s_api.apply(manifest("05-nodeport.yaml"))
    k8s_api.wait_endpoints("svc/f05-web", count=1)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 1)
    diff = cluster_state.diff()
    after = cluster_state.after

    svc = k8s_api.get("svc/f05-web")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    cluster_ip = svc["spec"]["clusterIP"]
    endpoint = f"{k8s_api.pod_ip('f05-web')}:8080"
    svc_name, ext_name = svc_chain(PORT_ID), svc_chain(PORT_ID, prefix="KUBE-EXT-")

    assert_new_chains(diff, [svc_name, ext_name, "KUBE-SEP-*"], table="nat")
    for node in node_names(k8s_cluster):
        nodeports = [s for s in chain_specs(after, node, "nat", "KUBE-NODEPORTS") if PORT_ID in s]
        assert nodeports == [
            f'-d 127.0.0.0/8 -p tcp -m comment --comment "{PORT_ID}" -m tcp --dport {node_port} '
            f"-m nfacct --nfacct-name  localhost_nps_accepted_pkts -j {ext_name}",
            f'-p tcp -m comment --comment "{PORT_ID}" -m tcp --dport {node_port} -j {ext_name}',
        ], (node, nodeports)
        assert chain_specs(after, node, "nat", ext_name) == [
            f'-m comment --comment "masquerade traffic for {PORT_ID} external destinations" '
            "-j KUBE-MARK-MASQ",
            f"-j {svc_name}",
        ], node

        # "ten lines": 9 rules + 3 chain declarations (KUBE-SVC, KUBE-SEP, KUBE-EXT) in iptables-save
        nd = diff.nodes[node]
        assert len([r for r in nd.rules_added if r[0] in ("nat", "filter")]) == 9, (node, nd.rules_added)
        assert len(nd.chains_added) == 3, (node, nd.chains_added)

        node_ip = k8s_cluster.node(node).ip
        for dst, port in ((node_ip, node_port), (cluster_ip, 80)):
            result = trace_on(after, k8s_cluster, node, dst, port, src=OUTSIDE_SRC)
            assert [(o.probability, o.dnat, o.masquerade, o.verdict) for o in result.outcomes] == [
                (Fraction(1), endpoint, True, "ACCEPT")
            ], (node, dst, port, result.outcomes, result.path_examples)


@pytest.mark.k8sstate_finding(
    5, "observed: nodeIP:nodePort reaches the pod from another node and from outside the nodes, masqueraded"
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_05_observed_nodeport_from_another_node_and_outside(k8s_cluster, cluster_state, k8s_api):
    """The observed half of finding 5 ("the same port ... is opened on every node, which does DNAT to the
    addresses of the Pods"): the Pod is an agnhost ``netexec``. 20 real connections to
    ``<nodeIP>:<nodePort>`` of a node from another node, and 20 from outside every node (the project's
    Docker engine's network namespace on the kind network), all reach ``f05-web``; each compared with the
    trace on the receiving node (DNAT to the pod, masqueraded: the pod saw an address of the receiving
    node, not the client's).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(netexec(load_manifest("05-nodeport.yaml"), tag))
    k8s_api.wait_endpoints("svc/f05-web", count=1, timeout=180)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 1)
    snap = cluster_state.snapshot("programmed")
    node_port = k8s_api.get("svc/f05-web")["spec"]["ports"][0]["nodePort"]
    nodes = node_names(k8s_cluster)
    target, client = nodes[0], nodes[-1]
    target_ip = k8s_cluster.node(target).ip
    to = f"{target_ip}:{node_port}"

    observed, _ = observe(k8s_cluster, snap, to, source=f"node/{client}", node=target, count=20)
    assert observed.counts() == {next(iter(observed.backend_ips)): 20}, observed.counts()
    assert client != target

    outside = probe_from_outside(k8s_cluster, target_ip, node_port, 20)
    comparison = assert_traffic_matches_trace(snap, outside, node=target)
    print(
        f"\n[f05] outside ({outside.source_ip}) -> {to}: {outside.rate:.0f}/s; "
        + "; ".join(comparison.table())
    )
    assert outside.counts() == observed.counts(), (outside.counts(), observed.counts())
    assert outside.source_ip not in snap.nodes[target].local_ips
