"""Finding 24: the same Service in iptables and nftables mode: same traced outcomes, different rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest

from pytest_k8sstate.assertions import service_rules
from pytest_k8sstate.k8s.helper import K8sHelper

from .helpers import (
    IN_CLUSTER_SRC,
    OUTSIDE_SRC,
    close_to,
    load_manifest,
    node_names,
    trace_on,
    wait_proxy_endpoints,
    wait_settled,
)
from .workloads import agnhost_on_nodes, netexec, observe, real_pods

SERVICE = "default/f24-web"
Outcome = tuple[Fraction, int | None, bool, str]
N = 300  # 3 traced-equal backends: 100 expected each (see pytest_k8sstate.traffic.stats)


@dataclass
class ScenarioResult:
    """What one mode's run of the scenario saw: per client, the outcomes every node agrees on; the rules."""

    outcomes: dict[str, list[Outcome]]
    rules: list[str]
    observed: dict[int, int] | None = None
    """Real pods only: connections per endpoint (index among the sorted endpoints) from a node."""


def _normalised(result: Any, endpoints: list[str]) -> list[Outcome]:
    """Outcomes with the DNAT target replaced by its index among the (sorted) endpoints: the two clusters'
    pod IPs may differ, the distribution must not."""
    out = []
    for o in result.outcomes:
        index = endpoints.index(o.dnat) if o.dnat in endpoints else None
        out.append((o.probability, index, o.masquerade, o.verdict))
    return sorted(out, key=lambda t: (t[1] if t[1] is not None else -1, t[2], t[3]))


def _run_scenario(mode: str, cluster: Any, snapshot: Callable[[str], Any], k8s_api: Any) -> ScenarioResult:
    """The same 3-replica Deployment + ClusterIP Service, traced on every node from a pod and from outside;
    with real pods (kind) also observed: 300 connections from a node, compared with that node's trace."""
    assert cluster.proxy_mode == mode
    real = real_pods(cluster)
    docs = load_manifest("24-compare.yaml")
    k8s_api.apply(netexec(docs, agnhost_on_nodes(cluster)) if real else docs)
    ips = k8s_api.wait_endpoints("svc/f24-web", count=3, timeout=180)
    wait_proxy_endpoints(cluster, SERVICE, 3)
    snap = snapshot("programmed")
    cluster_ip = k8s_api.cluster_ip("svc/f24-web")
    endpoints = sorted(f"{ip}:8080" for ip in ips)

    per_node = {}
    for node in node_names(cluster):
        per_node[node] = {
            src_name: _normalised(trace_on(snap, cluster, node, cluster_ip, 80, src=src), endpoints)
            for src_name, src in (("pod", IN_CLUSTER_SRC), ("outside", OUTSIDE_SRC))
        }
    first = next(iter(per_node.values()))
    assert all(v == first for v in per_node.values()), per_node  # every node agrees
    # a new connection reaches each of the three pods, from a pod and from outside
    for src_name, outcomes in first.items():
        assert sorted(o[1] for o in outcomes if o[1] is not None) == [0, 1, 2], (src_name, outcomes)
    result = ScenarioResult(first, service_rules(snap, SERVICE))
    if real:
        node = node_names(cluster)[0]
        observed, _ = observe(
            cluster, snap, f"{SERVICE}:80", source=f"node/{node}", node=node, count=N, mode=mode
        )
        by_host = {h: endpoints.index(f"{ip}:8080") for h, ip in observed.backend_ips.items()}
        assert sorted(by_host.values()) == [0, 1, 2], observed.counts()
        result.observed = {by_host[h]: n for h, n in observed.counts().items()}
    return result


def _check_rules_of_mode(mode: str, rules: list[str]) -> None:
    """kube-proxy wrote the Service's rules in its own mode's ruleset and none in the other one."""
    iptables = [r for r in rules if r.startswith("-t ")]
    nft = [r for r in rules if r.startswith("ip kube-proxy ")]
    assert len(iptables) + len(nft) == len(rules), rules  # service_rules gives only these two kinds
    if mode == "iptables":
        assert nft == [], nft
        assert any(" -A KUBE-SVC-" in r for r in iptables), iptables
        assert any(" -A KUBE-SEP-" in r for r in iptables), iptables
    else:
        assert iptables == [], iptables
        assert nft, rules


def _scenario_on(mode: str, k8s_clusters: Any, request: pytest.FixtureRequest) -> ScenarioResult:
    """The scenario on the pool's cluster of ``mode``, with the settling and cleanup the findings'
    autouse fixture gives ``k8s_cluster`` tests."""
    cluster = k8s_clusters.get(proxy_mode=mode)
    api = k8s_clusters.api_client(cluster)
    k8s_api = K8sHelper(api, cluster=cluster, manifests_dir=request.config.rootpath / "manifests")
    wait_settled(cluster, k8s_api, f"before the {mode} scenario")
    try:
        return _run_scenario(mode, cluster, lambda label: cluster.snapshot(label), k8s_api)
    finally:
        problems = k8s_api.cleanup(timeout=30)
        assert not problems, f"deleting the {mode} scenario's objects failed: {problems}"
        wait_settled(cluster, k8s_api, f"after the {mode} scenario")


@pytest.mark.k8sstate_finding(24, "iptables vs nftables mode: the Service traced in iptables mode")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_24_scenario_iptables(k8s_cluster, cluster_state, k8s_api):
    """Seed 001, section 'Kube-proxy': "Kube-proxy implements the service abstraction! ... Service — a set
    of rules (ipvs/iptables)"; "in the context of iptables it is a set of rules that balance traffic to the
    pods via mode random probability". Seed 002, section 'IPVS vs IPtables': the same Service realised by
    another proxy mode.

    Runs the scenario (3-replica Deployment ``f24-web`` + ClusterIP Service) on a cluster whose kube-proxy
    runs in iptables mode; traces, on every node, a new connection from a pod and one from outside to the
    ClusterIP: every node agrees, and each of the three pods is reached. The Service's rules are iptables
    rules (KUBE-SVC/KUBE-SEP chains), none in nftables. ``test_finding_24_modes_agree`` compares the modes.
    With real pods (kind) the scenario is also observed: 300 connections from a node split over the three
    pods as that node's captured rules predict (chi-square, false-failure rate 1e-4).
    """
    result = _run_scenario("iptables", k8s_cluster, cluster_state.snapshot, k8s_api)
    _check_rules_of_mode("iptables", result.rules)


@pytest.mark.k8sstate_finding(24, "iptables vs nftables mode: the Service traced in nftables mode")
@pytest.mark.k8sstate(proxy_mode="nftables")
@pytest.mark.k8sstate_needs("nftables")
def test_finding_24_scenario_nftables(k8s_cluster, cluster_state, k8s_api):
    """The same scenario as ``test_finding_24_scenario_iptables`` on a cluster whose kube-proxy runs in
    nftables mode; its rules are in the ``ip kube-proxy`` table, none in iptables. With real pods (kind):
    observed as in iptables mode, compared with the trace of the nftables ruleset.

    Real cluster vs article: kube-proxy's nftables mode (GA in 1.33) postdates the seeds; in it kube-proxy
    writes no iptables rule at all but a ``table ip kube-proxy`` with verdict maps.
    """
    result = _run_scenario("nftables", k8s_cluster, cluster_state.snapshot, k8s_api)
    _check_rules_of_mode("nftables", result.rules)


@pytest.mark.k8sstate_finding(24, "iptables vs nftables mode: same traced outcomes, different rule sets")
@pytest.mark.k8sstate_needs("iptables", "nftables")
def test_finding_24_modes_agree(k8s_clusters, request):
    """Runs the scenario on a cluster in each mode (taken from the pool, so this test stands alone) and
    compares: the traced outcome distributions (probability per endpoint, masquerade, verdict — for a pod
    and an outside client) are the same (probabilities up to iptables' 2⁻³¹ resolution: 0.33333333349 vs
    nftables' exact 1/3), while the rules kube-proxy wrote for the Service are in different rulesets
    (iptables KUBE-SVC/KUBE-SEP rules vs ``ip kube-proxy`` chains and map elements).
    """
    ipt = _scenario_on("iptables", k8s_clusters, request)
    nft = _scenario_on("nftables", k8s_clusters, request)
    for src in ("pod", "outside"):
        a, b = ipt.outcomes[src], nft.outcomes[src]
        # same endpoints, masquerade and verdicts; probabilities equal up to the 2^-31 steps iptables'
        # statistic match stores them in (0.33333333349 for 1/3), nftables' numgen is exact
        assert [o[1:] for o in a] == [o[1:] for o in b], (src, a, b)
        assert all(close_to(x[0], y[0]) for x, y in zip(a, b, strict=True)), (src, a, b)
    _check_rules_of_mode("iptables", ipt.rules)
    _check_rules_of_mode("nftables", nft.rules)
    # real pods: each mode's observed split already matched its own trace; both reached all three pods
    assert (ipt.observed is None) == (nft.observed is None), (ipt.observed, nft.observed)
    if ipt.observed is not None and nft.observed is not None:
        assert sorted(ipt.observed) == sorted(nft.observed) == [0, 1, 2], (ipt.observed, nft.observed)
