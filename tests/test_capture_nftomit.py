"""The nft part leaves out iptables-nft's own tables of a family read exactly over netlink (node/nftomit.py).

Real ``iptables-nft-restore`` and ``nft`` in a temporary namespace; ``iptfast.MIN_CHAINS`` is lowered so a
small ruleset takes the paths a large one takes. Each capture is compared with a capture of the same
namespace with ``K8SSTATE_NFT_OMIT=0`` (every table in the nft part, as before).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from test_capture_nft import ZOO6, _load, needs_nft  # tests/ is on sys.path (rootdir-less layout)

from pytest_k8sstate.errors import ParseError, TraceError
from pytest_k8sstate.node import iptfast, netns, nftomit
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.nft import NftRuleset
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.state.nodediff import diff_nodes
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.nft import trace_nft

NATIVE = (
    "table inet k8ss-native {\n"
    " set allowed {\n  type ipv4_addr\n  elements = { 10.0.0.1, 10.0.0.2 }\n }\n"
    " chain input {\n  type filter hook input priority 0; policy accept;\n"
    "  ip saddr @allowed tcp dport 22 counter accept\n }\n}\n"
    "table ip kube-proxy {\n chain services {\n  ip daddr 10.96.0.1 tcp dport 443 accept\n }\n}\n"
)
IPT_V4 = ("ip", "filter"), ("ip", "nat")


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetnsExec]:
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 40)  # "large" from 40 chains of a family's iptables tables
    with netns.temporary("nftomit") as n:
        n.run(["nft", "-f", "-"], input=NATIVE.encode(), timeout=30)
        _load(n, kube_proxy_iptables(make_services(12, 2)))  # ~50 chains: large
        _load(n, ZOO6, v6=True)  # a few chains: small
        yield n


def _full(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> NodeState:
    with monkeypatch.context() as m:
        m.setenv(nftomit.ENV, "0")
        st = collect_node(ns, ipvs=False)
    assert not st.errors, st.errors
    return st


@needs_nft
@pytest.mark.parametrize("batch", [True, False])
def test_iptables_tables_of_a_large_family_are_left_out_and_nothing_else(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, batch: bool
) -> None:
    st = collect_node(ns, ipvs=False, batch=batch)
    assert not st.errors, st.errors
    full = _full(ns, monkeypatch)
    assert st.nft is not None
    assert full.nft is not None
    assert st.methods["iptables"] == "nf_tables netlink"
    assert set(st.nft.omitted) == {t for t in full.nft.tables if t[0] == "ip" and t[1] in ("filter", "nat")}
    assert set(IPT_V4) <= set(st.nft.omitted)
    assert not set(st.nft.omitted) & set(st.nft.tables)
    # every other table (native ones, the small ip6 family's iptables tables) exactly as before
    kept = {k: t for k, t in full.nft.tables.items() if k not in st.nft.omitted}
    assert {k: t.to_json() for k, t in st.nft.tables.items()} == {k: t.to_json() for k, t in kept.items()}
    assert ("inet", "k8ss-native") in st.nft.tables
    assert ("ip6", "nat") in st.nft.tables
    assert st.iptables == full.iptables  # the left-out rules are all in the iptables part
    assert full.nft.omitted == ()


@needs_nft
def test_no_large_family_means_nothing_left_out(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 10_000)
    st = collect_node(ns, ipvs=False)
    assert st.nft is not None
    assert st.nft.omitted == ()
    assert set(IPT_V4) <= set(st.nft.tables)


@needs_nft
def test_a_family_not_read_exactly_keeps_its_tables_in_the_nft_part(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a rule the translator does not know: the iptables part comes from iptables-save, so the nft
    # part must hold those tables itself
    ns.run(["iptables-nft", "-A", "INPUT", "-m", "limit", "--limit", "5/min", "-j", "ACCEPT"], timeout=30)
    st = collect_node(ns, ipvs=False)
    assert not st.errors, st.errors
    assert st.methods["iptables"].startswith("iptables-save -c (fast path not exact")
    assert st.nft is not None
    assert st.nft.omitted == ()
    full = _full(ns, monkeypatch)
    assert full.nft is not None
    assert st.nft.to_json() == full.nft.to_json()


@needs_nft
@pytest.mark.parametrize("after_a_whole_capture", [False, True])
def test_the_nft_part_without_the_iptables_part_is_whole(ns: NetnsExec, after_a_whole_capture: bool) -> None:
    if after_a_whole_capture:  # its nft part (tables left out) is not reused for a capture without iptables
        assert collect_node(ns, ipvs=False).nft.omitted  # type: ignore[union-attr]
    st = collect_node(ns, parts=["nft"])
    assert st.nft is not None
    assert st.nft.omitted == ()
    assert set(IPT_V4) <= set(st.nft.tables)


@needs_nft
def test_left_out_tables_round_trip_and_diff_as_iptables_only(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = collect_node(ns, ipvs=False)
    snap = Snapshot(label="x", taken_at=1.0, cluster={}, etcd=None, nodes={"n": st})
    back = Snapshot.from_json(snap.to_json())
    assert back.nodes["n"].nft is not None
    assert back.nodes["n"].nft.omitted == st.nft.omitted  # type: ignore[union-attr]
    assert back.nodes["n"].nft == st.nft
    # a capture with every table and one without: the same node, no nft difference
    nd = diff_nodes(_full(ns, monkeypatch), st)
    assert not nd.nft_chains_added
    assert not nd.nft_chains_removed
    assert not nd.rules_added
    assert not nd.rules_removed


@needs_nft
def test_both_families_left_out_diff_count_and_show_as_before(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both families large: a capture with both families' iptables tables left out and one with every
    table give an empty diff, and count_rules / show --chain answer a left-out table from the iptables
    part of its family."""
    from pytest_k8sstate.assertions import count_rules
    from pytest_k8sstate.cli.state import chain_lines

    monkeypatch.setattr(iptfast, "MIN_CHAINS", 3)  # ZOO6 has more chains than that
    st = collect_node(ns, ipvs=False)
    assert not st.errors, st.errors
    assert st.nft is not None
    assert {("ip", "nat"), ("ip6", "nat"), ("ip6", "filter")} <= set(st.nft.omitted)
    full = _full(ns, monkeypatch)
    for a, b in ((full, st), (st, full), (st, st)):
        nd = diff_nodes(a, b)
        for name in (
            "nft_chains_added",
            "nft_chains_removed",
            "nft_rules_added",
            "nft_rules_removed",
            "nft_policies_changed",
            "nft_elements_added",
            "nft_elements_removed",
            "rules_added",
            "rules_removed",
        ):
            assert not getattr(nd, name), (name, getattr(nd, name)[:3])
    for table in ("ip nat", "ip6 nat", "ip6 filter", "nat", "kube-proxy"):
        assert count_rules(st, "*", table=table) == count_rules(full, "*", table=table), table
    assert count_rules(st, "*", table="ip6 nat") > 0
    snap = Snapshot(label="x", taken_at=1.0, cluster={}, etcd=None, nodes={"n": st})
    chain = next(iter(st.ip6tables.tables["nat"].chains))  # type: ignore[union-attr]
    lines = chain_lines(snap, f"ip6 nat/{chain}", None)
    assert lines[0] == "# node n, ip6tables table nat"
    assert chain_lines(snap, "ip nat/KUBE-SERVICES", None)[0] == "# node n, iptables table nat"


@needs_nft
def test_an_ipv6_only_node_diffs_its_left_out_tables_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """No IPv4 iptables tables at all (the nft diff cannot skip ip6 nat by the IPv4 part's table names):
    a capture without and one with the ip6 tables left out still give an empty diff."""
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 3)
    with netns.temporary("nftomit6") as n:
        _load(n, ZOO6, v6=True)
        st = collect_node(n, ipvs=False)
        assert not st.errors, st.errors
        assert st.nft is not None
        assert ("ip6", "nat") in st.nft.omitted
        full = _full(n, monkeypatch)
        assert full.nft is not None
        assert ("ip6", "nat") in full.nft.tables
        for a, b in ((full, st), (st, full)):
            nd = diff_nodes(a, b)
            assert not nd.nft_chains_added
            assert not nd.nft_chains_removed
            assert not nd.nft_rules_added
            assert not nd.nft_rules_removed


@needs_nft
@pytest.mark.parametrize(
    "extra",
    [
        ["nft", "add", "set", "ip", "filter", "allowed", "{ type ipv4_addr; }"],
        ["nft", "add", "counter", "ip", "nat", "hits"],
        ["nft", "add", "chain", "ip", "filter", "odd", "{ type filter hook input priority 10; }"],
    ],
    ids=["a set", "a named counter", "a base chain iptables does not make"],
)
def test_a_table_with_more_than_iptables_shows_stays_in_the_nft_part(ns: NetnsExec, extra: list[str]) -> None:
    ns.run(extra, timeout=30)
    st = collect_node(ns, ipvs=False)
    assert st.nft is not None
    assert st.nft.omitted == ()
    assert set(IPT_V4) <= set(st.nft.tables)


@needs_nft
def test_tracing_a_left_out_table_says_where_its_rules_are(ns: NetnsExec) -> None:
    st = collect_node(ns, ipvs=False)
    assert st.nft is not None
    pkt = Packet("10.96.0.1", 443, src="10.0.0.9")
    for tables in ("all", [("ip", "nat")]):
        with pytest.raises(
            TraceError, match=r"ip nat.* captured as the node's iptables part only.*trace_iptables"
        ):
            trace_nft(st.nft, pkt, tables=tables)
    (out,) = trace_nft(st.nft, pkt).outcomes  # kube-proxy's own nft table is there
    assert out.verdict == "ACCEPT"


def test_merge_documents() -> None:
    meta = b'{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}'
    one = b'{"nftables": [' + meta + b', {"table": {"family": "ip", "name": "a", "handle": 1}}]}\n'
    two = (
        b'{"nftables": ['
        + meta
        + b', {"table": {"family": "inet", "name": "b", "handle": 2}}, {"chain": {}}]}\n'
    )
    merged = nftomit.merge_documents(one + two)
    assert merged == (
        b'{"nftables": [' + meta + b', {"table": {"family": "ip", "name": "a", "handle": 1}}, '
        b'{"table": {"family": "inet", "name": "b", "handle": 2}}, {"chain": {}}]}'
    )
    assert nftomit.merge_documents(one) == one.rstrip()
    assert nftomit.merge_documents(b"") == b'{"nftables": []}'
    for bad in (b"garbage\n", b'{"nftables": [' + meta + b"]}\n", one + b"{}\n"):
        with pytest.raises(ValueError, match="not an `nft -j list table` document"):
            nftomit.merge_documents(bad)


@pytest.mark.parametrize(
    ("omitted", "where"),
    [("ip nat", "omitted"), ([["ip"]], "omitted[0]"), ([["ip", 3]], "omitted[0]")],
)
def test_a_bad_omitted_list_is_refused_naming_it(omitted: object, where: str) -> None:
    d = {"source": "x", "tables": [], "other": [], "omitted": omitted}
    with pytest.raises(ParseError, match=re.escape(where)):
        NftRuleset.from_json(d)


@needs_nft
def test_a_commit_after_the_listing_reads_the_whole_ruleset(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytest_k8sstate.node.capture as capture

    settle = capture._settle_nft

    def commit_first(exec: NetnsExec, *args: object, **kwargs: object) -> object:
        # a real commit between the tables' listing and the nft part being settled
        ns.run(["nft", "add", "table", "inet", "racer"], timeout=30)
        return settle(exec, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(capture, "_settle_nft", commit_first)
    st = collect_node(ns, ipvs=False)
    assert not st.errors, st.errors
    assert st.nft is not None
    assert st.nft.omitted == ()
    assert ("inet", "racer") in st.nft.tables
    assert set(IPT_V4) <= set(st.nft.tables)
