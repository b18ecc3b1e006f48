"""Reuse of unchanged node parts (node/reuse.py + node/netnsio.py) on a real network namespace.

Every capture with reuse on must equal a capture with reuse off taken right after it (the real
``iptables-save -c`` / ``nft -j`` / ``ip -j`` / ``ipset save``): reuse only saves work, it never changes
what a snapshot holds — counters included for iptables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from pytest_k8sstate.node import iptfast, netns, netnsio, nftomit, reuse
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.nft import parse_nft_json


def _skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter)"
    for b in ("iptables-nft-restore", "nft", "ip", "ipset"):
        if shutil.which(b) is None:
            return f"{b} not found"
    v = subprocess.run(["iptables", "-V"], capture_output=True, text=True, timeout=10).stdout
    return None if "nf_tables" in v else "iptables is not the nf_tables variant here"


_SKIP = _skip()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

PARTS = ["iptables", "ip6tables", "nft", "ipsets", "links", "addrs", "routes"]
RULES = (
    "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n"
    "-A OUTPUT -p udp -j X\n-A X -j ACCEPT\nCOMMIT\n"
)


@pytest.fixture
def ns() -> Iterator[NetnsExec]:
    with netns.temporary("reuse") as n:
        n.run(["ip", "link", "set", "lo", "up"], timeout=10)
        n.run(["iptables-nft-restore"], input=RULES.encode(), timeout=30)
        yield n


def _fresh(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> NodeState:
    with monkeypatch.context() as m:
        m.setenv(reuse.ENV, "0")
        return collect_node(ns, parts=PARTS)


def _same(a: NodeState, b: NodeState) -> None:
    assert not a.errors, a.errors
    assert not b.errors, b.errors
    for p in PARTS:
        assert getattr(a, p) == getattr(b, p), p
    assert a.methods == b.methods


def test_an_unchanged_node_is_not_read_again_and_equals_a_full_read(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = collect_node(ns, parts=PARTS)
    second = collect_node(ns, parts=PARTS)
    for p in ("iptables", "ip6tables", "nft", "links", "routes"):
        assert getattr(second, p) is getattr(first, p), f"{p} was read again"
    _same(second, _fresh(ns, monkeypatch))


def test_every_kind_of_change_is_seen(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    collect_node(ns, parts=PARTS)
    changes: list[Sequence[str]] = [
        ["iptables", "-A", "X", "-p", "tcp", "--dport", "81", "-j", "DROP"],
        ["ip6tables", "-N", "Y6"],
        ["nft", "add table inet k8ss-reuse-test"],
        ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
        ["ip", "addr", "add", "192.0.2.7/24", "dev", "d0"],
        ["ip", "link", "set", "d0", "up"],
        ["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"],
        ["ipset", "create", "k8ss-reuse-test", "hash:ip"],
        ["ipset", "add", "k8ss-reuse-test", "192.0.2.9"],
        ["ip", "link", "set", "d0", "name", "d1"],
    ]
    try:
        for argv in changes:
            before = collect_node(ns, parts=PARTS)
            ns.run(list(argv), timeout=30)
            after = collect_node(ns, parts=PARTS)
            _same(after, _fresh(ns, monkeypatch))
            assert any(getattr(after, p) != getattr(before, p) for p in PARTS), f"{argv} not seen"
    finally:
        ns.run(["ipset", "destroy", "k8ss-reuse-test"], timeout=30, check=False)


def test_iptables_counters_are_current(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    first = collect_node(ns, parts=PARTS)
    code = "import socket\nfor i in range(5):\n socket.socket(2, 2).sendto(b'x', ('127.0.0.1', 9))\n"
    ns.run([sys.executable, "-c", code], timeout=30)
    second = collect_node(ns, parts=PARTS)
    assert second.iptables is not None
    assert first.iptables is not None
    x = second.iptables.chain("filter", "X")
    x0 = first.iptables.chain("filter", "X")
    assert x is not None
    assert x0 is not None
    assert x.rules[0].counters is not None
    assert x0.rules[0].counters is not None
    assert x.rules[0].counters[0] == x0.rules[0].counters[0] + 5
    _same(second, _fresh(ns, monkeypatch))


def test_nft_with_a_dynamic_set_is_always_read(ns: NetnsExec) -> None:
    rules = (
        "table ip k8ss-dyn {\n set seen { type ipv4_addr; flags dynamic,timeout; timeout 1h; }\n"
        " chain out { type filter hook output priority 0; policy accept;\n"
        "  udp dport 9 update @seen { ip daddr }\n }\n}\n"
    )
    ns.run(["nft", "-f", "-"], input=rules.encode(), timeout=30)
    first = collect_node(ns, parts=["nft"])
    code = "import socket\nsocket.socket(2, 2).sendto(b'x', ('127.0.0.1', 9))\n"
    ns.run([sys.executable, "-c", code], timeout=30)  # adds an element, no new generation
    second = collect_node(ns, parts=["nft"])
    assert second.nft is not None
    assert first.nft is not None
    seen = second.nft.table("ip", "k8ss-dyn")
    assert seen is not None
    assert [e.key for e in seen.sets["seen"].elements] == [("127.0.0.1",)]
    assert second.nft is not first.nft


class _Wrapped(NetnsExec):
    """A subclass that runs the node's commands its own way: never read in-process."""

    def command(self, argv: Sequence[str]) -> list[str]:
        return super().command(["env", *argv])


def test_no_reuse_when_turned_off_or_for_a_subclass(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = _Wrapped(ns.netns, node="wrapped")
    assert netnsio.netns_id(wrapped) is None
    a, b = collect_node(wrapped, parts=["nft"]), collect_node(wrapped, parts=["nft"])
    assert a.nft == b.nft
    assert a.nft is not b.nft
    monkeypatch.setenv(reuse.ENV, "0")
    a, b = collect_node(ns, parts=["nft"]), collect_node(ns, parts=["nft"])
    assert a.nft == b.nft
    assert a.nft is not b.nft


def test_a_node_that_is_not_local_gets_no_fingerprints() -> None:
    from pytest_k8sstate.node.exec import DockerExec

    assert netnsio.fingerprints(DockerExec("no-such-container")) is None


def test_large_rulesets_are_fingerprinted_by_generation(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reuse, "LARGE_CHAINS", 1)  # every non-empty ruleset here counts as large
    collect_node(ns, parts=PARTS)
    first = collect_node(ns, parts=PARTS)  # recorded by generation from now on
    cmds = {"iptables": "iptables", "nft": "nft"}
    p = reuse.plan(ns, list(cmds), cmds, 30, variant=(True, iptfast.MIN_CHAINS, nftomit.enabled()))
    assert "iptables" not in p.dumps  # no rule read for its fingerprint
    assert set(p.reused) == {"iptables", "nft"}
    second = collect_node(ns, parts=PARTS)
    assert second.iptables is first.iptables
    ns.run(["iptables", "-A", "X", "-p", "tcp", "--dport", "82", "-j", "DROP"], timeout=30)
    third = collect_node(ns, parts=PARTS)
    assert third.iptables != first.iptables
    _same(third, _fresh(ns, monkeypatch))


def test_diff_of_reused_parts_is_empty_and_a_change_still_shows(ns: NetnsExec) -> None:
    from pytest_k8sstate.state.nodediff import diff_nodes

    a = collect_node(ns, parts=PARTS)
    b = collect_node(ns, parts=PARTS)
    assert b.iptables is a.iptables
    assert not diff_nodes(a, b).rules_added
    ns.run(["iptables", "-A", "X", "-p", "tcp", "--dport", "83", "-j", "DROP"], timeout=30)
    c = collect_node(ns, parts=PARTS)
    assert [r for _t, _c, r in diff_nodes(b, c).rules_added] == ["-p tcp -m tcp --dport 83 -j DROP"]


def test_generation_mode_reuses_despite_traffic_and_still_sees_rule_changes(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(reuse.ENV, "generation")
    collect_node(ns, parts=PARTS)
    first = collect_node(ns, parts=PARTS)
    code = "import socket\nfor i in range(5):\n socket.socket(2, 2).sendto(b'x', ('127.0.0.1', 9))\n"
    ns.run([sys.executable, "-c", code], timeout=30)  # counters change, the generation does not
    second = collect_node(ns, parts=PARTS)
    assert second.iptables is first.iptables  # the documented trade-off: counters of the last read
    ns.run(["iptables", "-A", "X", "-p", "tcp", "--dport", "84", "-j", "DROP"], timeout=30)
    third = collect_node(ns, parts=PARTS)
    assert third.iptables is not None
    x = third.iptables.chain("filter", "X")
    assert x is not None
    assert any("--dport 84" in r.spec for r in x.rules)
    _same(third, _fresh(ns, monkeypatch))


def test_collect_node_parses_only_what_changed(ns: NetnsExec) -> None:
    """Real nft in a namespace: the second capture, after one rule was added, equals a plain parse of
    ``nft -j list ruleset`` and took every other rule from the first capture."""
    lines = ["table ip k8ss-memo {", " chain c {"]
    lines += [f"  ip daddr 10.97.0.{i} tcp dport 80 accept" for i in range(40)]
    lines += [" }", "}"]
    ns.run(["nft", "-f", "-"], input="\n".join(lines).encode(), timeout=30)
    first = collect_node(ns, parts=["nft"])
    ns.run(["nft", "add rule ip k8ss-memo c ip daddr 10.97.1.1 drop"], timeout=30)
    second = collect_node(ns, parts=["nft"])
    raw = ns.run(["nft", "-j", "list", "ruleset"], timeout=30).stdout
    assert first.nft is not None
    assert second.nft is not None
    assert second.nft == parse_nft_json(raw, source=second.nft.source)
    a, b = first.nft.table("ip", "k8ss-memo"), second.nft.table("ip", "k8ss-memo")
    assert a is not None
    assert b is not None
    old, new = a.chains["c"].rules, b.chains["c"].rules
    assert len(new) == len(old) + 1
    assert all(y.expr is x.expr for x, y in zip(old, new, strict=False)), "unchanged rules taken over"
    assert new[-1].text.endswith("drop")
