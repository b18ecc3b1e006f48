"""Finding 9: three endpoints: probabilities 1/3, 1/2, then unconditional; hairpin masquerade per SEP."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pytest_k8sstate.assertions import assert_dnat_to

from .helpers import (
    IN_CLUSTER_SRC,
    chain_specs,
    close_to,
    endpoint_jumps,
    load_manifest,
    manifest,
    node_names,
    sep_chain,
    svc_chain,
    trace_on,
    wait_proxy_endpoints,
)
from .workloads import agnhost_on_nodes, netexec, observe

SERVICE = "default/f09-web"
PORT_ID = "default/f09-web:http"
N = 300  # 3 traced-equal backends: 100 expected each (see pytest_k8sstate.traffic.stats)


@pytest.mark.k8sstate_finding(
    9, "3 endpoints: probabilities 0.33333333349, 0.5, unconditional; traced 1/3 each; hairpin"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_09_three_endpoints(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Cluster IP': "an example for a service of 3 endpoints ... with 33% it flies on
    along the chain or settles in the pod, and if it flew on, with 50% it settles in one of the next
    pods": ``-A KUBE-SVC-FXIYY6OHUSNBITIX ... --probability 0.33333333349 -j KUBE-SEP-JPAADZTWUNYJQEJV``,
    ``... --probability 0.50000000000 -j KUBE-SEP-KVEHKWBOWX3KCL2I``, ``... -j KUBE-SEP-74M76R3MOH5BJ7FU``;
    each ``-A KUBE-SEP-… -s <podIP>/32 ... -j KUBE-MARK-MASQ``.

    Checked on every node: the three endpoint jumps of KUBE-SVC-<hash> carry ``0.33333333349``,
    ``0.50000000000`` and nothing; every KUBE-SEP chain starts with ``-s <its podIP>/32 ... -j
    KUBE-MARK-MASQ`` (hairpin: a pod reaching itself through the Service is masqueraded, which the trace
    from a pod's own IP confirms) and DNATs to that pod; the traced split is 1/3 per pod (within the
    2⁻³¹ resolution iptables stores probabilities with).
    """
    k8s_api.apply(manifest("09-three-endpoints.yaml"))
    ips = k8s_api.wait_endpoints("svc/f09-web", count=3)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 3)
    after = cluster_state.snapshot("three-endpoints")
    cluster_ip = k8s_api.cluster_ip("svc/f09-web")
    endpoints = [f"{ip}:8080" for ip in ips]

    svc = svc_chain(PORT_ID)
    for node in node_names(k8s_cluster):
        jumps = endpoint_jumps(after, node, svc)
        assert [p for p, _ in jumps] == ["0.33333333349", "0.50000000000", None], (node, jumps)
        assert {t for _, t in jumps} == {sep_chain(PORT_ID, ep) for ep in endpoints}
        for ip, ep in zip(ips, endpoints, strict=True):
            specs = chain_specs(after, node, "nat", sep_chain(PORT_ID, ep))
            assert specs[0] == f'-s {ip}/32 -m comment --comment "{PORT_ID}" -j KUBE-MARK-MASQ', (node, specs)
            assert specs[1].endswith(f"-j DNAT --to-destination {ep}"), (node, specs)

        split = trace_on(after, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert set(split) == set(endpoints), (node, split)
        assert all(close_to(p, Fraction(1, 3)) for p in split.values()), (node, split)

        # hairpin: from a pod to its own Service, the connections that land on itself are masqueraded
        hairpin = trace_on(after, k8s_cluster, node, cluster_ip, 80, src=ips[0])
        for o in hairpin.outcomes:
            assert o.masquerade == (o.dnat == endpoints[0]), (node, o)
    assert_dnat_to(after, service=PORT_ID, endpoints=endpoints, balanced=True)


@pytest.mark.k8sstate_finding(
    9, "observed: 1/3 split from a node; hairpin: a pod reaching its Service lands on itself, masqueraded"
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_09_observed_split_and_hairpin(k8s_cluster, cluster_state, k8s_api):
    """The observed half of finding 9 ("with 33% it flies on along the chain or settles in the pod"): the
    three pods are agnhost ``netexec``.

    * 300 real connections from a node to the ClusterIP split 1/3 each as traced (chi-square,
      false-failure rate 1e-4);
    * hairpin: 300 connections from one of the pods to its own Service: about 1/3 land on the pod itself
      and it sees a source address of its node (the KUBE-SEP chain's ``-s <podIP>/32 -j KUBE-MARK-MASQ``:
      masqueraded, as traced), the other 2/3 land on the other pods, which see the client pod's own
      address (not masqueraded, as traced from the pod's IP).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(netexec(load_manifest("09-three-endpoints.yaml"), tag))
    ips = k8s_api.wait_endpoints("svc/f09-web", count=3, timeout=180)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 3)
    snap = cluster_state.snapshot("programmed")
    node = node_names(k8s_cluster)[0]
    observed, _ = observe(k8s_cluster, snap, f"{SERVICE}:80", source=f"node/{node}", node=node, count=N)
    assert sorted(observed.backend_ips.values()) == sorted(ips), observed.counts()

    by_ip = {ip: name for name, ip in observed.backend_ips.items()}
    client = k8s_api.get(f"pod/{by_ip[ips[0]]}")
    client_node = client["spec"]["nodeName"]
    hairpin, comparison = observe(
        k8s_cluster, snap, f"{SERVICE}:80", source=f"pod/default/{by_ip[ips[0]]}", node=client_node, count=N
    )
    assert comparison.masquerade == {by_ip[ip]: ip == ips[0] for ip in ips}, comparison.masquerade
    seen = hairpin.clients_by_backend()
    assert seen[by_ip[ips[0]]] <= snap.nodes[client_node].local_ips, seen  # itself: masqueraded
    for ip in ips[1:]:
        assert seen[by_ip[ip]] == {ips[0]}, seen  # the others: the client pod's own address
