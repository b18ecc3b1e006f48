"""Text rendering of diffs: the one-line failure summary and the per-change lines, driven by NODE_FIELDS."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_k8sstate.state import NODE_FIELDS, EtcdDiff, KeyChange, NodeDiff, StateDiff, node_diff_lines
from pytest_k8sstate.state.render import summarize_diff

# one item of the right shape for every change list
_ITEMS = {0: "x", 2: ("t", "c"), 3: ("t", "c", "r"), 4: ("filter", "INPUT", "ACCEPT", "DROP")}


def _one(name: str, width: int) -> StateDiff:
    return StateDiff(nodes={"node-1": NodeDiff(**{name: [_ITEMS[width]]}), "node-2": NodeDiff()})


def test_summary_names_an_ipset_member_change() -> None:
    diff = StateDiff(
        nodes={"node-1": NodeDiff(ipset_members_added=[("KUBE-CLUSTER-IP", "10.96.0.10,tcp:53")])}
    )
    assert summarize_diff(diff) == "no etcd key changed; 1 ipset members added on 1 node"


@pytest.mark.parametrize(
    "node_diff",
    [
        NodeDiff(ipsets_added=["KUBE-LOOP-BACK"]),
        NodeDiff(policies_changed=[("filter", "FORWARD", "ACCEPT", "DROP")]),
        NodeDiff(nft_chains_added=[("inet filter", "forward")]),
        NodeDiff(nft_policies_changed=[("inet filter", "forward", "accept", "drop")]),
    ],
    ids=["ipset", "policy", "nft-chain", "nft-policy"],
)
def test_the_plugin_failure_summary_names_every_node_change(node_diff: NodeDiff) -> None:
    """The summary above a failed test's diff: it had its own field list without these (issue 9, #1)."""
    from pytest_k8sstate.plugin.state import summarize_diff as plugin_summarize_diff

    diff = StateDiff(nodes={"node-1": node_diff})
    assert "no node state changed" not in plugin_summarize_diff(diff)
    assert plugin_summarize_diff(diff) == summarize_diff(diff)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ipsets_added", "1 ipsets added on 1 node"),
        ("ipsets_removed", "1 ipsets removed on 1 node"),
        ("policies_changed", "1 chain policies changed on 1 node"),
        ("nft_chains_added", "1 nft chains added on 1 node"),
        ("nft_policies_changed", "1 nft chain policies changed on 1 node"),
        ("nft_chains_removed", "1 nft chains removed on 1 node"),
        ("links_added", "1 links added on 1 node"),
        ("routes_removed", "1 routes removed on 1 node"),
    ],
)
def test_summary_names_what_the_old_field_list_left_out(name: str, text: str) -> None:
    width = next(f.width for f in NODE_FIELDS if f.name == name)
    assert summarize_diff(_one(name, width)) == f"no etcd key changed; {text}"


def test_every_node_change_list_is_summarised_and_rendered() -> None:
    names = [f.name for f in dataclasses.fields(NodeDiff) if f.name not in ("notes", "services")]
    assert [f.name for f in NODE_FIELDS] == names
    for f in NODE_FIELDS:
        diff = _one(f.name, f.width)
        assert "no node state changed" not in summarize_diff(diff), f.name
        assert f"1 {f.noun} {f.change} on 1 node" in summarize_diff(diff), f.name
        assert len(node_diff_lines(diff.nodes["node-1"])) == 1, f.name
        assert NodeDiff.from_json(diff.nodes["node-1"].to_json()) == diff.nodes["node-1"], f.name


def test_summary_text_rules_first_and_etcd_counts() -> None:
    rule = ("nat", "KUBE-SERVICES", "-j KUBE-SVC-X")
    diff = StateDiff(
        etcd=EtcdDiff(
            added=[KeyChange("/registry/pods/default/web"), KeyChange("/registry/events/default/web.1")],
            modified=[KeyChange("/registry/services/specs/default/web")],
        ),
        nodes={
            "node-1": NodeDiff(chains_added=[("nat", "KUBE-SVC-X")], rules_added=[rule, rule]),
            "node-2": NodeDiff(rules_added=[rule], ipsets_removed=["KUBE-LOOP-BACK"]),
        },
    )
    assert summarize_diff(diff) == (
        "1 etcd key added, 1 modified (1 more hidden by ignore patterns); "
        "3 rules added on 2 nodes, 1 chains added on 1 node, 1 ipsets removed on 1 node"
    )
    assert summarize_diff(StateDiff()) == "no etcd key changed; no node state changed"


def test_node_diff_lines_format_and_name_globs() -> None:
    nd = NodeDiff(
        chains_added=[("nat", "KUBE-SVC-X")],
        rules_removed=[("nat", "KUBE-SVC-X", "-j KUBE-SEP-1")],
        policies_changed=[("filter", "FORWARD", "ACCEPT", "DROP")],
        nft_elements_added=[("ip kube-proxy", "cluster-ips", "10.96.0.1")],
        ipset_members_removed=[("KUBE-CLUSTER-IP", "10.96.0.1,tcp:443")],
        ipvs_added=["TCP 10.96.0.1:443 rr"],
        routes_added=["10.244.1.0/24 via 172.18.0.3 dev eth0"],
    )
    assert node_diff_lines(nd) == [
        "+ chain nat KUBE-SVC-X",
        "- rule nat -A KUBE-SVC-X -j KUBE-SEP-1",
        "~ policy filter FORWARD: ACCEPT → DROP",
        "+ nft element ip kube-proxy @cluster-ips: 10.96.0.1",
        "- ipset KUBE-CLUSTER-IP member 10.96.0.1,tcp:443",
        "+ ipvs TCP 10.96.0.1:443 rr",
        "+ route 10.244.1.0/24 via 172.18.0.3 dev eth0",
    ]
    assert node_diff_lines(nd, netfilter_only=True, ignore_names=["KUBE-SVC-*", "KUBE-CLUSTER-IP"]) == [
        "~ policy filter FORWARD: ACCEPT → DROP",
        "+ nft element ip kube-proxy @cluster-ips: 10.96.0.1",
        "+ ipvs TCP 10.96.0.1:443 rr",
    ]
