"""Finding 10: scaling 2 → 3 rewrites the service's probability chain (iptables) / one vmap (nftables)."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from .helpers import (
    IN_CLUSTER_SRC,
    close_to,
    endpoint_jumps,
    jump_target,
    manifest,
    node_names,
    sep_chain,
    svc_chain,
    trace_on,
    wait_proxy_endpoints,
)


@pytest.mark.k8sstate_finding(
    10, "scaling 2→3 changes every endpoint probability; KUBE-SVC jumps rewritten by position"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_10_scaling_rewrites_probabilities_iptables(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'IPVS vs IPtables' (difference in balancing): "iptables: a sequential chain of
    rules 0.33 * ip pod1 > 0.5 * pod2 > pod3 — these probabilities of choosing a pod change dynamically
    with scaling. A pod was added — all probabilities were changed."

    Checked between the 2-replica and the 3-replica state, on every node: the endpoint jumps of the
    service's KUBE-SVC chain go from (0.5, unconditional) to (0.33333333349, 0.5, unconditional); the
    traced probability of *every* endpoint changes (1/2 each → 1/3 each). In the diff, exactly the jump
    rules whose text changed are removed and re-added (a probability lives in the rule text), plus the new
    endpoint's jump and its KUBE-SEP chain.

    Real cluster vs article: the rule texts are conditional probabilities by position — the i-th of n
    jumps carries 1/(n−i) — and kube-proxy orders endpoints by address, so which *rules* are rewritten
    depends on where the new pod's IP sorts: none of the old jumps when it sorts first (then only a new
    first jump with 1/3 is added), every old jump when it sorts last. What always changes is every
    endpoint's effective probability, which the trace shows.
    """
    service, port_id = "default/f10-web", "default/f10-web:http"
    k8s_api.apply(manifest("10-scale.yaml"))
    old_ips = k8s_api.wait_endpoints("svc/f10-web", count=2)
    wait_proxy_endpoints(k8s_cluster, service, 2)
    two = cluster_state.snapshot("two-replicas")

    k8s_api.scale("deployment/f10-web", 3)
    ips = k8s_api.wait_endpoints("svc/f10-web", count=3)
    wait_proxy_endpoints(k8s_cluster, service, 3)
    diff = cluster_state.diff(since="two-replicas")
    three = cluster_state.after
    cluster_ip = k8s_api.cluster_ip("svc/f10-web")
    svc = svc_chain(port_id)
    (new_ip,) = set(ips) - set(old_ips)
    new_sep = sep_chain(port_id, f"{new_ip}:8080")

    for node in node_names(k8s_cluster):
        old_jumps, new_jumps = endpoint_jumps(two, node, svc), endpoint_jumps(three, node, svc)
        assert [p for p, _ in old_jumps] == ["0.50000000000", None], node
        assert [p for p, _ in new_jumps] == ["0.33333333349", "0.50000000000", None], node
        old_p, new_p = {sep: p for p, sep in old_jumps}, {sep: p for p, sep in new_jumps}
        rewritten = {sep for sep in old_p if old_p[sep] != new_p[sep]}

        nd = diff.nodes[node]
        removed = [s for t, c, s in nd.rules_removed if (t, c) == ("nat", svc)]
        added = [s for t, c, s in nd.rules_added if (t, c) == ("nat", svc)]
        assert {jump_target(s) for s in removed} == rewritten, (node, removed)
        assert {jump_target(s) for s in added} == rewritten | {new_sep}, (node, added)
        assert [c for t, c in nd.chains_added if t == "nat"] == [new_sep], node

        before_split = trace_on(two, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert before_split == {f"{ip}:8080": Fraction(1, 2) for ip in old_ips}, (node, before_split)
        after_split = trace_on(three, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert set(after_split) == {f"{ip}:8080" for ip in ips}, (node, after_split)
        assert all(close_to(p, Fraction(1, 3)) for p in after_split.values()), (node, after_split)


_MAP_ENTRY = re.compile(r"(\d+) : (\d+\.\d+\.\d+\.\d+) \. (\d+)")


def _numgen_map(rule: str) -> tuple[int, dict[int, str]]:
    """``… dnat ip to numgen random mod N map { 0 : IP . PORT, … }`` → (N, {index: "IP:PORT"})."""
    m = re.search(r"numgen random mod (\d+) map \{([^}]*)\}", rule)
    assert m, f"not a numgen dnat map: {rule}"
    return int(m.group(1)), {int(i): f"{ip}:{port}" for i, ip, port in _MAP_ENTRY.findall(m.group(2))}


@pytest.mark.k8sstate_finding(
    10, "scaling 2→3 in nftables mode replaces one numgen map rule (+ a hairpin element)"
)
@pytest.mark.k8sstate(proxy_mode="nftables")
@pytest.mark.k8sstate_needs("nftables")
def test_finding_10_scaling_changes_only_the_vmap_nftables(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'IPVS vs IPtables': "iptables: ... A pod was added — all probabilities were
    changed"; "ipvs: ... it is enough to add the new pod's ip to the address, instead of updating the rules
    entirely each time, changing probabilities".

    The same scaling in kube-proxy's nftables mode (GA in 1.33, after the seed was written), which balances
    the way the seed describes IPVS — by one lookup, not a chain of probabilities. Checked on every node:
    the only rule of the ``ip kube-proxy`` table that changes is the one in the Service's chain
    ``service-…-default/f10n-web/tcp/http``, ``dnat ip to numgen random mod 2 map { 0 : A . 8080, 1 : B .
    8080 }`` → ``… mod 3 map { … }`` listing all three pods; no chain is added or removed; the only set/map
    element that changes is the new pod's entry in ``@hairpin-connections`` — on the node that runs the
    new pod only. The traced split goes from 1/2 to exactly 1/3 per pod.

    Real cluster vs article (and vs shared/docs/upstream.md): kube-proxy 1.37 writes no per-endpoint
    ``endpoint-…`` chains and no verdict map per service: one ``dnat`` through an inline ``numgen`` map,
    hairpin masquerade through the ``hairpin-connections`` set (``ct status dnat … @hairpin-connections
    masquerade``).
    """
    service = "default/f10n-web"
    k8s_api.apply(manifest("10-scale-nft.yaml"))
    old_ips = k8s_api.wait_endpoints("svc/f10n-web", count=2)
    wait_proxy_endpoints(k8s_cluster, service, 2)
    two = cluster_state.snapshot("two-replicas")

    k8s_api.scale("deployment/f10n-web", 3)
    ips = k8s_api.wait_endpoints("svc/f10n-web", count=3)
    wait_proxy_endpoints(k8s_cluster, service, 3)
    diff = cluster_state.diff(since="two-replicas")
    three = cluster_state.after
    cluster_ip = k8s_api.cluster_ip("svc/f10n-web")
    (new_ip,) = set(ips) - set(old_ips)
    new_pod_node = next(
        p["spec"]["nodeName"] for p in k8s_api.list("pod", "app=f10n-web") if p["status"]["podIP"] == new_ip
    )
    table = "ip kube-proxy"

    for node in node_names(k8s_cluster):
        nd = diff.nodes[node]
        removed = [(c, r) for t, c, r in nd.nft_rules_removed if t == table]
        added = [(c, r) for t, c, r in nd.nft_rules_added if t == table]
        assert len(removed) == 1, (node, removed)
        assert len(added) == 1, (node, added)
        (old_chain, old_rule), (new_chain, new_rule) = removed[0], added[0]
        assert old_chain == new_chain, (old_chain, new_chain)
        assert re.fullmatch(r"service-[A-Z0-9]+-default/f10n-web/tcp/http", new_chain), new_chain
        old_mod, old_map = _numgen_map(old_rule)
        new_mod, new_map = _numgen_map(new_rule)
        assert (old_mod, sorted(old_map.values())) == (2, sorted(f"{ip}:8080" for ip in old_ips)), old_rule
        assert (new_mod, sorted(new_map.values())) == (3, sorted(f"{ip}:8080" for ip in ips)), new_rule

        assert [c for t, c in (*nd.nft_chains_added, *nd.nft_chains_removed) if t == table] == [], node
        assert [e for e in nd.nft_elements_removed if e[0] == table] == [], node
        hairpin = [(s, e) for t, s, e in nd.nft_elements_added if t == table]
        expected = (
            [("hairpin-connections", f"{new_ip} . {new_ip} . tcp . 8080")] if node == new_pod_node else []
        )
        assert hairpin == expected, (node, hairpin)

    for node in node_names(k8s_cluster):
        before = trace_on(two, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert before == {f"{ip}:8080": Fraction(1, 2) for ip in old_ips}, (node, before)
        split = trace_on(three, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert split == {f"{ip}:8080": Fraction(1, 3) for ip in ips}, (node, split)
