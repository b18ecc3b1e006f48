"""The walk through a large chain that is not built yet: its destination index is read from the rule
lines, only the rules the packet meets are built, and every outcome and path equals the walk of the same
ruleset with every rule built first."""

from __future__ import annotations

import random

import pytest

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.iptables import trace_iptables

# lines a generator does not write but a dump may hold: counters, a negated or later -d, an old-style
# "-d ! IP", "-c" counters, IPv6 and bad addresses, trailing blanks, a prefix
ODD = [
    "[3:180] -A KUBE-SERVICES -d 10.96.200.1/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES ! -d 10.96.0.0/12 -p tcp -m tcp --dport 81 -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -p tcp -d 10.96.200.2/32 -m tcp --dport 80 -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -d ! 10.96.200.3 -p udp -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -c 7 8 -d 10.96.200.4/32 -p tcp -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -d 010.96.200.5 -p tcp -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -d 10.96.200.6/32 -p tcp -j KUBE-MARK-MASQ   ",
    "-A KUBE-SERVICES -d 10.96.200.0/24 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -d 10.96.200.7 -p tcp -m tcp --dport 80 -j RETURN",
    "-A KUBE-SERVICES -p tcp -m tcp --dport 81 -j KUBE-MARK-MASQ",
    "-A KUBE-SERVICES -d 10.0.0.0/8 -p tcp -m tcp --dport 81 -j RETURN",
]


def _dump(extra: list[str]) -> str:
    text = kube_proxy_iptables(make_services(120, [i % 4 for i in range(120)], node_ports=10))
    nat = text.index("*nat\n")
    at = text.index("-A KUBE-SERVICES ", nat)  # the nat table's KUBE-SERVICES rules
    return text[:at] + "".join(line + "\n" for line in extra) + text[at:]


def _walk(text: str, pkt: Packet, build: bool) -> object:
    rs = parse_iptables_save(text)
    try:
        if build:
            for t in rs.tables.values():
                for ch in t.chains.values():
                    _ = ch.rules
        res = trace_iptables(rs, pkt)
    except K8sStateError as exc:
        return f"{type(exc).__name__}: {exc}"
    return [(o.probability, o.dnat, o.masquerade, o.verdict) for o in res.outcomes], res.path_examples


@pytest.mark.parametrize("seed", range(6))
def test_walks_of_an_unbuilt_chain_equal_walks_of_the_built_one(seed: int) -> None:
    rng = random.Random(seed)
    # seed 0: every line a walk can read, in order (a line with an unreadable address stops every walk
    # that meets it, the same way built or not)
    extra = (
        [x for x in ODD if " 010." not in x]
        if seed == 0
        else rng.sample(ODD, k=rng.randrange(1, len(ODD) + 1))
    )
    text = _dump(extra)
    dsts = (
        ["10.200.0.1", "192.168.1.1"]
        + [f"10.96.200.{i}" for i in range(9)]
        + [f"10.96.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(20)]
    )
    for dst in dsts:
        for port in (80, 81):
            pkt = Packet(dst, port, "tcp", local_ips=frozenset({"172.18.0.2"}))
            assert _walk(text, pkt, False) == _walk(text, pkt, True), (dst, port, extra)


def test_a_walk_builds_only_the_rules_its_packet_meets() -> None:
    rs = parse_iptables_save(kube_proxy_iptables(make_services(2000, 2)))
    svc = rs.tables["nat"].chains["KUBE-SERVICES"]
    res = trace_iptables(rs, Packet("10.96.0.20", 80, "tcp", local_ips=frozenset({"172.18.0.2"})))
    assert len(res.endpoints) == 2
    assert svc.unbuilt_lines() is not None, "KUBE-SERVICES is still not built"
    assert 0 < len(svc._some) <= 4 < svc.rule_count()
    met = dict(svc._some)
    rules = svc.rules  # built now: the rules built alone are the ones the chain holds
    assert all(rules[i] is r for i, r in met.items())
    again = (
        parse_iptables_save(kube_proxy_iptables(make_services(2000, 2))).tables["nat"].chains["KUBE-SERVICES"]
    )
    assert [(r.line, r.spec, r.counters) for r in rules] == [
        (r.line, r.spec, r.counters) for r in again.rules
    ]


@pytest.mark.parametrize(
    "bad",
    [
        ['-A KUBE-SERVICES -d 10.96.200.9/32 -m comment --comment "oops -j RETURN'],
        ['[1:2] -A KUBE-SERVICES -d 10.96.200.9/32 -m comment --comment "a \\"b -j RETURN'],
        # the first bad line is read from its text, the second is built (no -d first): the first is named
        [
            '-A KUBE-SERVICES -d 10.96.200.9/32 -m comment --comment "one -j RETURN',
            '-A KUBE-SERVICES -p tcp -m comment --comment "two -j RETURN',
        ],
        [
            '-A KUBE-SERVICES -p tcp -m comment --comment "two -j RETURN',
            '-A KUBE-SERVICES -d 10.96.200.9/32 -m comment --comment "one -j RETURN',
        ],
    ],
)
def test_an_unclosed_quote_in_a_line_the_packet_never_meets_still_fails_the_walk(bad: list[str]) -> None:
    """Building the chain refuses such a line; reading the index from the lines refuses it the same way,
    naming the same (first) bad line, whatever the packet's destination."""
    text = _dump(bad)
    pkt = Packet("10.96.0.20", 80, "tcp", local_ips=frozenset({"172.18.0.2"}))
    lazy, built = _walk(text, pkt, False), _walk(text, pkt, True)
    assert isinstance(lazy, str)
    assert lazy.startswith("ParseError: ")
    assert "closed double quote" in lazy
    assert lazy == built
    first = text.splitlines().index(bad[0]) + 1
    assert f"iptables-save:{first}:" in lazy
