"""Finding 10: scaling 2 → 3 rewrites the service's probability chain (iptables) / one vmap (nftables)."""

from __future__ import annotations

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


@pytest.mark.finding(
    10, "scaling 2→3 changes every endpoint probability; KUBE-SVC jumps rewritten by position"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_10_scaling_rewrites_probabilities_iptables(k8s_cluster, cluster_state, k8s):
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
    k8s.apply(manifest("10-scale.yaml"))
    old_ips = k8s.wait_endpoints("svc/f10-web", count=2)
    wait_proxy_endpoints(k8s_cluster, service, 2)
    two = cluster_state.snapshot("two-replicas")

    k8s.scale("deployment/f10-web", 3)
    ips = k8s.wait_endpoints("svc/f10-web", count=3)
    wait_proxy_endpoints(k8s_cluster, service, 3)
    diff = cluster_state.diff(since="two-replicas")
    three = cluster_state.after
    cluster_ip = k8s.cluster_ip("svc/f10-web")
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


@pytest.mark.finding(
    10, "scaling 2→3 in nftables mode changes only the service's numgen vmap (+ the new endpoint)"
)
@pytest.mark.k8sstate(proxy_mode="nftables")
@pytest.mark.needs("nftables")
def test_finding_10_scaling_changes_only_the_vmap_nftables(k8s_cluster, cluster_state, k8s):
    """Seed 002, section 'IPVS vs IPtables': "iptables: ... A pod was added — all probabilities were
    changed"; "ipvs: ... it is enough to add the new pod's ip to the address, instead of updating the rules
    entirely each time, changing probabilities".

    The same scaling in kube-proxy's nftables mode (GA in 1.33, after the seed was written), which balances
    like IPVS does — by one lookup, not a chain of probabilities: the only rule that changes is the
    service chain's ``numgen random mod N vmap { … }`` (mod 2 → mod 3); the only additions are the new
    endpoint's ``endpoint-…`` chain and its rules; no other rule or chain of the ``ip kube-proxy`` table
    changes; the traced split goes from 1/2 to exactly 1/3 each.
    """
    service = "default/f10n-web"
    k8s.apply(manifest("10-scale-nft.yaml"))
    k8s.wait_endpoints("svc/f10n-web", count=2)
    wait_proxy_endpoints(k8s_cluster, service, 2)
    two = cluster_state.snapshot("two-replicas")

    k8s.scale("deployment/f10n-web", 3)
    ips = k8s.wait_endpoints("svc/f10n-web", count=3)
    wait_proxy_endpoints(k8s_cluster, service, 3)
    diff = cluster_state.diff(since="two-replicas")
    three = cluster_state.after
    cluster_ip = k8s.cluster_ip("svc/f10n-web")
    table = "ip kube-proxy"

    for node in node_names(k8s_cluster):
        nd = diff.nodes[node]
        removed = [(c, r) for t, c, r in nd.nft_rules_removed if t == table]
        added = [(c, r) for t, c, r in nd.nft_rules_added if t == table]
        chains_added = [c for t, c in nd.nft_chains_added if t == table]
        assert not [c for t, c in nd.nft_chains_removed if t == table], node
        elements = [e for e in (*nd.nft_elements_added, *nd.nft_elements_removed) if e[0] == table]
        assert elements == [], (node, elements)  # no verdict-map/set element (service-ips, ...) changed

        assert len(removed) == 1, (node, removed)
        svc_chain_name, old_rule = removed[0]
        assert svc_chain_name.startswith("service-"), removed
        assert "/f10n-web/" in svc_chain_name, removed
        assert "numgen random mod 2" in old_rule, old_rule
        assert len(chains_added) == 1, (node, chains_added)
        assert chains_added[0].startswith("endpoint-"), (node, chains_added)
        new_endpoint = chains_added[0]
        assert any(new_endpoint.endswith(f"__{ip}/8080") for ip in ips), new_endpoint
        vmaps = [r for c, r in added if c == svc_chain_name]
        assert len(vmaps) == 1, (node, vmaps)
        assert "numgen random mod 3" in vmaps[0], (node, vmaps)
        others = [(c, r) for c, r in added if c not in (svc_chain_name, new_endpoint)]
        assert others == [], (node, others)

        assert sorted(
            trace_on(two, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints.values()
        ) == [
            Fraction(1, 2),
            Fraction(1, 2),
        ]
        split = trace_on(three, k8s_cluster, node, cluster_ip, 80, src=IN_CLUSTER_SRC).endpoints
        assert split == {f"{ip}:8080": Fraction(1, 3) for ip in ips}, (node, split)
