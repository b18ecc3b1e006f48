"""Finding 24: the same Service in iptables and nftables mode: same traced outcomes, different rules."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from pytest_k8sstate.assertions.dataplane import service_rules

from .helpers import (
    IN_CLUSTER_SRC,
    OUTSIDE_SRC,
    close_to,
    manifest,
    node_names,
    trace_on,
    wait_proxy_endpoints,
)

RESULTS: dict[str, dict[str, Any]] = {}
"""What each mode's scenario recorded, for ``test_finding_24_modes_agree`` (same process: the three tests
share the ``xdist_group`` below, so ``pytest -n … --dist loadgroup`` keeps them on one worker)."""

pytestmark = pytest.mark.xdist_group("finding-24")


def _normalised(result, endpoints: list[str]) -> list[tuple[Fraction, int | None, bool, str]]:
    """Outcomes with the DNAT target replaced by its index among the (sorted) endpoints: the two clusters'
    pod IPs may differ, the distribution must not."""
    out = []
    for o in result.outcomes:
        index = endpoints.index(o.dnat) if o.dnat in endpoints else None
        out.append((o.probability, index, o.masquerade, o.verdict))
    return sorted(out, key=lambda t: (t[1] if t[1] is not None else -1, t[2], t[3]))


def _run_scenario(mode, k8s_cluster, cluster_state, k8s) -> None:
    """The same 3-replica Deployment + ClusterIP Service, traced on every node from a pod and from outside."""
    assert k8s_cluster.proxy_mode == mode
    k8s.apply(manifest("24-compare.yaml"))
    ips = k8s.wait_endpoints("svc/f24-web", count=3)
    wait_proxy_endpoints(k8s_cluster, "default/f24-web", 3)
    snap = cluster_state.snapshot("programmed")
    cluster_ip = k8s.cluster_ip("svc/f24-web")
    endpoints = sorted(f"{ip}:8080" for ip in ips)

    per_node = {}
    for node in node_names(k8s_cluster):
        per_node[node] = {
            src_name: _normalised(trace_on(snap, k8s_cluster, node, cluster_ip, 80, src=src), endpoints)
            for src_name, src in (("pod", IN_CLUSTER_SRC), ("outside", OUTSIDE_SRC))
        }
    first = next(iter(per_node.values()))
    assert all(v == first for v in per_node.values()), per_node  # every node agrees
    RESULTS[mode] = {"outcomes": first, "rules": service_rules(snap, "default/f24-web")}


@pytest.mark.finding(24, "iptables vs nftables mode: the Service traced in iptables mode")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_24_scenario_iptables(k8s_cluster, cluster_state, k8s):
    """Seed 001, section 'Kube-proxy': "Kube-proxy implements the service abstraction! ... Service — a set
    of rules (ipvs/iptables)"; "in the context of iptables it is a set of rules that balance traffic to the
    pods via mode random probability". Seed 002, section 'IPVS vs IPtables': the same Service realised by
    another proxy mode.

    Runs the scenario (3-replica Deployment ``f24-web`` + ClusterIP Service) on a cluster whose kube-proxy
    runs in iptables mode; traces, on every node, a new connection from a pod and one from outside to the
    ClusterIP (every node must agree); ``test_finding_24_modes_agree`` compares the modes.
    """
    _run_scenario("iptables", k8s_cluster, cluster_state, k8s)


@pytest.mark.finding(24, "iptables vs nftables mode: the Service traced in nftables mode")
@pytest.mark.k8sstate(proxy_mode="nftables")
@pytest.mark.needs("nftables")
def test_finding_24_scenario_nftables(k8s_cluster, cluster_state, k8s):
    """The same scenario as ``test_finding_24_scenario_iptables`` on a cluster whose kube-proxy runs in
    nftables mode.

    Real cluster vs article: kube-proxy's nftables mode (GA in 1.33) postdates the seeds; in it kube-proxy
    writes no iptables rule at all but a ``table ip kube-proxy`` with verdict maps.
    """
    _run_scenario("nftables", k8s_cluster, cluster_state, k8s)


@pytest.mark.finding(24, "iptables vs nftables mode: same traced outcomes, different rule sets")
@pytest.mark.needs("iptables", "nftables")
def test_finding_24_modes_agree():
    """Compares what ``test_finding_24_scenario_iptables`` and ``..._nftables`` recorded: the traced
    outcome distributions (probability per endpoint, masquerade, verdict — for a pod and an outside
    client) are the same (probabilities up to iptables' 2⁻³¹ resolution: 0.33333333349 vs nftables'
    exact 1/3), and the rules kube-proxy wrote for the Service are different (iptables
    KUBE-SVC/KUBE-SEP rules vs ``ip kube-proxy`` chains and map elements).
    """
    missing = [m for m in ("iptables", "nftables") if m not in RESULTS]
    if missing:
        pytest.fail(
            f"the scenario did not complete in mode(s) {', '.join(missing)} in this process; see those tests "
            "(with pytest-xdist use --dist loadgroup)"
        )
    ipt, nft = RESULTS["iptables"], RESULTS["nftables"]
    for src in ("pod", "outside"):
        a, b = ipt["outcomes"][src], nft["outcomes"][src]
        # same endpoints, masquerade and verdicts; probabilities equal up to the 2^-31 steps iptables'
        # statistic match stores them in (0.33333333349 for 1/3), nftables' numgen is exact
        assert [o[1:] for o in a] == [o[1:] for o in b], (src, a, b)
        assert all(close_to(x[0], y[0]) for x, y in zip(a, b, strict=True)), (src, a, b)
    assert len(ipt["outcomes"]["pod"]) == 3
    assert set(ipt["rules"]).isdisjoint(nft["rules"])
    assert any("KUBE-SVC-" in r for r in ipt["rules"])
    assert not any("KUBE-SVC-" in r for r in nft["rules"])
    assert any("kube-proxy" in r for r in nft["rules"])
