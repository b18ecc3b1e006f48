"""Finding 29: sessionAffinity ClientIP — every connection of one client lands on one backend (observed);
without affinity the same client's connections spread over all backends as traced."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from pytest_k8sstate.traffic import assert_traffic_matches_trace, probe, traced_outcomes

from .helpers import chain_specs, node_names, svc_chain, wait_proxy_endpoints
from .workloads import agnhost_docs, agnhost_on_nodes, kubectl

N_STICKY = 30  # without affinity, all 30 on one of 3 backends has probability 3·3⁻³⁰ ≈ 1.5e-14
N_SPREAD = 300  # 3 traced-equal backends: 100 expected each (see pytest_k8sstate.traffic.stats)


@pytest.mark.k8sstate_finding(
    29, "sessionAffinity ClientIP: one client's connections stay on one backend (observed); none: spread"
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_29_session_affinity(k8s_cluster, cluster_state, k8s_api):
    """Issue 11 (no seed covers affinity; seed 002 'Cluster IP' covers the random split it overrides):
    with ``sessionAffinity: ClientIP`` one client's connections stay on one backend (kube-proxy keeps the
    choice per client address for ``sessionAffinityConfig.clientIP.timeoutSeconds``, default 10800 s).

    Three agnhost pods behind ``f29-sticky`` (ClientIP) and ``f29-spread`` (None). Checked:

    * rules: ``f29-sticky``'s KUBE-SVC chain first checks, per endpoint, ``-m recent --rcheck --seconds
      10800 --reap --name KUBE-SEP-…`` (the client's address remembered by xt_recent) and every one of its
      KUBE-SEP chains records the client (``-m recent --set``); ``f29-spread`` has neither;
    * observed: 30 connections from each node (two clients, two source addresses) to the sticky ClusterIP
      all land on one backend per client (without affinity: probability 1.5e-14);
    * observed: 300 connections from one node to ``f29-spread`` reach all 3 backends and match the trace's
      1/3 split (chi-square, false-failure rate 1e-4).

    * traced and compared: the tracer models the ``-m recent`` lists a client's first connection fills
      (``Packet(affinity="returning", first_backend=…)``, :mod:`pytest_k8sstate.trace.affinity`): a
      follow-up connection of the client whose first connection went to a pod goes to that pod with
      probability 1. Each node's 29 follow-up connections are compared with that trace (any connection
      elsewhere fails); a first connection alone is traced 1/3 per pod (``affinity="new"``).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(agnhost_docs("29-affinity.yaml", tag))
    pod_ips = k8s_api.wait_endpoints("svc/f29-sticky", count=3, timeout=180)
    k8s_api.wait_endpoints("svc/f29-spread", count=3, timeout=60)
    wait_proxy_endpoints(k8s_cluster, "default/f29-sticky", 3)
    wait_proxy_endpoints(k8s_cluster, "default/f29-spread", 3)
    snap = cluster_state.snapshot("affinity")
    nodes = node_names(k8s_cluster)

    sticky_chain = svc_chain("default/f29-sticky:http")
    specs = chain_specs(snap, nodes[0], "nat", sticky_chain)
    recent = [s for s in specs if "-m recent" in s and "--rcheck" in s]
    assert len(recent) == 3, specs
    for spec in recent:
        assert "--seconds 10800" in spec, spec
        assert "--reap" in spec, spec
        sep = re.search(r"-j (KUBE-SEP-\S+)", spec)
        assert sep, spec
        assert f"--name {sep[1]}" in spec, spec
        sep_specs = chain_specs(snap, nodes[0], "nat", sep[1])
        assert any("-m recent" in s and "--set" in s and f"--name {sep[1]}" in s for s in sep_specs), (
            sep_specs
        )
    spread_specs = chain_specs(snap, nodes[0], "nat", svc_chain("default/f29-spread:http"))
    assert spread_specs
    assert not any("-m recent" in s for s in spread_specs), spread_specs

    kc = kubectl()
    chosen: dict[str, str] = {}
    rates: list[str] = []
    for node in nodes:
        sticky = probe(
            k8s_cluster, "default/f29-sticky:80", source=f"node/{node}", count=N_STICKY, kubectl=kc
        )
        rates.append(f"node/{node} {sticky.rate:.1f}/s")
        counts = sticky.counts()
        assert sticky.outcomes() == {"ok": N_STICKY}, (node, counts)
        assert len(counts) == 1, (node, counts)
        [backend] = counts
        assert sticky.backend_ips[backend] in pod_ips, (backend, sticky.backend_ips, pod_ips)
        chosen[node] = backend
        first = f"{sticky.backend_ips[sticky.connections[0].backend or '']}:8080"
        follow_ups = replace(sticky, connections=sticky.connections[1:])
        traced = assert_traffic_matches_trace(
            snap, follow_ups, node=node, affinity="returning", first_backend=first
        )
        assert [(r[0], r[1]) for r in traced.split.rows] == [(backend, 1.0)], traced.table()

    _, new_probs, _ = traced_outcomes(snap, sticky, node=nodes[0], affinity="new")
    assert sorted(round(p, 6) for p in new_probs.values()) == [round(1 / 3, 6)] * 3, new_probs

    spread = probe(
        k8s_cluster, "default/f29-spread:80", source=f"node/{nodes[0]}", count=N_SPREAD, kubectl=kc
    )
    assert sorted(spread.backend_ips.values()) == sorted(pod_ips), spread.counts()
    split = assert_traffic_matches_trace(snap, spread, node=nodes[0])
    print(
        f"\n[f29] sticky backend per client: {chosen}; rates: {'; '.join(rates)}; spread: "
        + "; ".join(split.table())
    )
