"""nft tracer: IPv6 and dual-stack, inet tables, interfaces, conntrack state, affinity, snat, limit, xt.

Rulesets are loaded with ``nft -f`` into a network namespace of our own and read back with ``nft -j``
(real kernel-validated JSON); the ``xt`` cases are JSON written by hand (``nft -f`` cannot create them).
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction

import pytest

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.trace import Packet, TraceResult, trace
from pytest_k8sstate.trace.nft import trace_nft

EP6 = ("[fd00:10:180::1]:8080", "[fd00:10:180::2]:8080")
VIP6 = "fd00:172:30::10"

DUAL = """
table ip kube-proxy {
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict
    elements = { 172.30.0.10 . tcp . 80 : goto svc4 }
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr . meta l4proto . th dport vmap @service-ips
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    ip daddr . meta l4proto . th dport vmap @service-ips
  }
  chain nat-postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr 10.180.0.0/16 ip saddr != 10.0.0.0/8 snat to 192.168.0.2
  }
  chain svc4 {
    meta l4proto tcp dnat to 10.180.0.1:8080
  }
}
table ip6 kube-proxy {
  set affinity-a { type ipv6_addr; flags dynamic,timeout; timeout 3h; }
  set affinity-b { type ipv6_addr; flags dynamic,timeout; timeout 3h; }
  map service-ips {
    type ipv6_addr . inet_proto . inet_service : verdict
    elements = { fd00:172:30::10 . tcp . 80 : goto svc6 }
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr . meta l4proto . th dport vmap @service-ips
  }
  chain svc6 {
    ip6 saddr @affinity-a goto ep-a
    ip6 saddr @affinity-b goto ep-b
    numgen random mod 2 vmap { 0 : goto ep-a, 1 : goto ep-b }
  }
  chain ep-a {
    update @affinity-a { ip6 saddr }
    meta l4proto tcp dnat to [fd00:10:180::1]:8080
  }
  chain ep-b {
    update @affinity-b { ip6 saddr }
    meta l4proto tcp dnat to [fd00:10:180::2]:8080
  }
}
table inet filter {
  set allow {
    type ipv4_addr . inet_service; flags interval;
    elements = { 10.0.0.0/8 . 8000-8090, 198.51.100.7 . 80 }
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ip6 daddr fd00:10:180::2 tcp dport 8080 drop
    ip daddr 10.180.0.1 ip saddr . th dport != @allow drop
  }
}
"""


def _load(text: str) -> NftRuleset:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    with netns.temporary("nftfeat") as ns:
        ns.run(["nft", "-f", "-"], input=text.encode(), timeout=60)
        return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text, source="dual.nft")


@pytest.fixture(scope="module")
def dual() -> NftRuleset:
    return _load(DUAL)


def test_the_table_follows_the_packets_family(dual: NftRuleset) -> None:
    v4 = trace(dual, Packet("172.30.0.10", 80, src="10.1.2.3"))
    assert [(o.dnat, o.verdict) for o in v4.outcomes] == [("10.180.0.1:8080", "ACCEPT")]
    v6 = trace(dual, Packet(VIP6, 80, src="fd00:10:1::5"))
    assert v6.endpoints == {EP6[0]: Fraction(1, 2), EP6[1]: Fraction(1, 2)}
    assert all(p[0].startswith("kube-proxy/") for p in v6.path_examples)


def test_ipv6_without_an_ip6_table_names_the_family() -> None:
    rs = parse_nft_json({"nftables": [{"table": {"family": "ip", "name": "kube-proxy"}}]}, source="v4only")
    with pytest.raises(TraceError, match=r"no table ip6 kube-proxy in v4only \(tables: ip kube-proxy\)"):
        trace_nft(rs, Packet("fd00::1", 80, src="fd00::2"))


def test_inet_tables_see_both_families(dual: NftRuleset) -> None:
    v6 = trace_nft(dual, Packet(VIP6, 80, src="fd00:10:1::5"), tables="all")
    assert {(o.dnat, o.verdict) for o in v6.outcomes} == {(EP6[0], "ACCEPT"), (EP6[1], "DROP")}
    # the IPv4 packet skips "ip6 daddr ..." and is checked against the concatenated interval set
    ok = trace_nft(dual, Packet("172.30.0.10", 80, src="10.1.2.3"), tables="all")
    assert [(o.dnat, o.verdict) for o in ok.outcomes] == [("10.180.0.1:8080", "ACCEPT")]
    # after DNAT, "th dport" is 8080: inside 8000-8090 of the allowed interval, but not from outside
    blocked = trace_nft(dual, Packet("172.30.0.10", 80, src="203.0.113.10"), tables="all")
    assert [(o.dnat, o.verdict, o.masquerade) for o in blocked.outcomes] == [
        ("10.180.0.1:8080", "DROP", False)
    ]


def test_explicit_tables_of_the_other_family_are_skipped_or_named(dual: NftRuleset) -> None:
    v6 = trace_nft(
        dual, Packet(VIP6, 80, src="fd00:10:1::5"), tables=[("ip", "kube-proxy"), ("ip6", "kube-proxy")]
    )
    assert len(v6.endpoints) == 2
    with pytest.raises(TraceError, match=r"none of the tables ip kube-proxy sees an IPv6 packet"):
        trace_nft(dual, Packet(VIP6, 80, src="fd00:10:1::5"), tables=[("ip", "kube-proxy")])


def test_snat_is_recorded_as_masquerade(dual: NftRuleset) -> None:
    r = trace(dual, Packet("172.30.0.10", 80, src="203.0.113.10"))
    assert [(o.dnat, o.masquerade) for o in r.outcomes] == [("10.180.0.1:8080", True)]
    inside = trace(dual, Packet("172.30.0.10", 80, src="10.1.2.3"))
    assert [o.masquerade for o in inside.outcomes] == [False]


def test_an_established_packet_skips_nat_and_meets_ct_state(dual: NftRuleset) -> None:
    r = trace_nft(dual, Packet("10.180.0.1", 8080, src="203.0.113.10", ctstate="ESTABLISHED"), tables="all")
    assert [(o.dnat, o.verdict, o.masquerade) for o in r.outcomes] == [(None, "ACCEPT", False)]
    new = trace_nft(dual, Packet("10.180.0.1", 8080, src="203.0.113.10"), tables="all")
    assert [o.verdict for o in new.outcomes] == ["DROP"]  # not established: the allow-list decides
    with pytest.raises(TraceError, match="ctstate 'SYN' is not one of NEW, ESTABLISHED"):
        trace(dual, Packet("10.180.0.1", 8080, ctstate="SYN"))


def test_a_returning_client_keeps_its_backend(dual: NftRuleset) -> None:
    svc = dual.tables[("ip6", "kube-proxy")].chains["svc6"]
    numgen_step = f"kube-proxy/svc6#{svc.rules[2].handle}"
    affinity_steps = {f"kube-proxy/svc6#{r.handle}" for r in svc.rules[:2]}
    new = trace(dual, Packet(VIP6, 80, src="fd00:10:1::5"))
    assert all(numgen_step in p for p in new.path_examples)
    back = trace(dual, Packet(VIP6, 80, src="fd00:10:1::5", affinity="returning"))
    assert back.endpoints == {EP6[0]: Fraction(1, 2), EP6[1]: Fraction(1, 2)}
    for outcome, path in zip(back.outcomes, back.path_examples, strict=True):
        assert numgen_step not in path
        assert affinity_steps & set(path)
        # the affinity rule it took leads to the endpoint it was DNATed to the first time
        ep_chain = "ep-a" if outcome.dnat == EP6[0] else "ep-b"
        assert any(s.startswith(f"kube-proxy/{ep_chain}#") for s in path)


# --------------------------------------------------------------------------- interfaces

IFACES = """
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "docker0" oifname != "docker0" jump isolation-2
    iifname "lo" drop
  }
  chain isolation-2 {
    oifname "docker0" drop
    oifname "br-*" drop
  }
}
table ip kube-proxy {
  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }
}
"""


@pytest.fixture(scope="module")
def ifaces() -> NftRuleset:
    return _load(IFACES)


def test_a_path_never_takes_contradictory_interfaces(ifaces: NftRuleset) -> None:
    # from docker0 to an unknown interface: "oifname != docker0" then "oifname docker0" can't both hold
    r = trace_nft(
        ifaces, Packet("10.9.0.1", 80, src="172.17.0.2", in_iface="docker0", out_iface="eth0"), tables="all"
    )
    assert [o.verdict for o in r.outcomes] == ["ACCEPT"]
    with pytest.raises(
        TraceError,
        match=r"(?s)depends on the packet's oif interface.*oif another interface matching br-\*: DROP",
    ):
        trace_nft(ifaces, Packet("10.9.0.1", 80, src="172.17.0.2", in_iface="docker0"), tables="all")


def test_unknown_interfaces_are_reported_when_they_matter(ifaces: NftRuleset) -> None:
    with pytest.raises(TraceError) as exc:
        trace_nft(ifaces, Packet("10.9.0.1", 80, src="172.17.0.2"), tables="all")
    msg = str(exc.value)
    assert "depends on the packet's iif/oif interface" in msg
    assert "Packet(in_iface=..., out_iface=...)" in msg
    assert "iif docker0 and oif another interface matching br-*: DROP" in msg
    assert "iif any other interface and oif any other interface: ACCEPT" in msg
    dropped = trace_nft(
        ifaces, Packet("10.9.0.1", 80, src="172.17.0.2", in_iface="docker0", out_iface="br-1a"), tables="all"
    )
    assert [o.verdict for o in dropped.outcomes] == ["DROP"]


def test_interfaces_that_do_not_matter_need_not_be_given(ifaces: NftRuleset) -> None:
    r = trace_nft(ifaces, Packet("10.9.0.1", 80, src="172.17.0.2", in_iface="eth0"), tables="all")
    assert [o.verdict for o in r.outcomes] == ["ACCEPT"]


def test_a_local_packet_to_a_local_address_comes_back_on_lo(ifaces: NftRuleset) -> None:
    # forward never runs for it; nothing here depends on an interface the packet didn't give
    local = frozenset({"192.168.0.2"})
    r = trace_nft(ifaces, Packet("192.168.0.2", 80, src="192.168.0.2", local_ips=local), tables="all")
    assert [o.verdict for o in r.outcomes] == ["ACCEPT"]


# --------------------------------------------------------------------------- xt (iptables-nft), by hand


def _xt_ruleset(*exprs: object) -> NftRuleset:
    return parse_nft_json(
        {
            "nftables": [
                {"table": {"family": "inet", "name": "t"}},
                {
                    "chain": {
                        "family": "inet",
                        "table": "t",
                        "name": "pre",
                        "type": "filter",
                        "hook": "prerouting",
                        "prio": 0,
                        "policy": "accept",
                    }
                },
                {"rule": {"family": "inet", "table": "t", "chain": "pre", "handle": 7, "expr": list(exprs)}},
            ]
        },
        source="xt.json",
    )


def _run(rs: NftRuleset, packet: Packet) -> TraceResult:
    return trace_nft(rs, packet, tables="all")


def test_xt_comment_is_no_op_and_other_xt_is_named() -> None:
    comment = _xt_ruleset({"xt": {"type": "match", "name": "comment"}}, {"drop": None})
    assert [o.verdict for o in _run(comment, Packet("10.0.0.1", 80)).outcomes] == ["DROP"]
    logged = _xt_ruleset({"xt": {"type": "match", "name": "recent"}}, {"counter": None})
    assert [o.verdict for o in _run(logged, Packet("10.0.0.1", 80)).outcomes] == ["ACCEPT"]
    masq = _xt_ruleset({"xt": {"type": "target", "name": "MASQUERADE"}})
    with pytest.raises(
        TraceError, match=r"cannot evaluate rule .* \(handle 7\): iptables-nft .*xt target 'MASQUERADE'"
    ):
        _run(masq, Packet("10.0.0.1", 80))
    with pytest.raises(TraceError, match="trace_iptables"):
        _run(_xt_ruleset({"xt": {"type": "match", "name": "recent"}}, {"drop": None}), Packet("10.0.0.1", 80))


def test_fib_type_of_multicast_and_ct_status_of_an_established_packet() -> None:
    fib = _xt_ruleset(
        {
            "match": {
                "op": "==",
                "left": {"fib": {"flags": ["daddr"], "result": "type"}},
                "right": "multicast",
            }
        },
        {"drop": None},
    )
    assert [o.verdict for o in _run(fib, Packet("239.1.2.3", 80)).outcomes] == ["DROP"]
    assert [o.verdict for o in _run(fib, Packet("ff02::1", 80, src="fd00::1")).outcomes] == ["DROP"]
    assert [o.verdict for o in _run(fib, Packet("10.0.0.1", 80)).outcomes] == ["ACCEPT"]
    status = _xt_ruleset(
        {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"drop": None}
    )
    assert [o.verdict for o in _run(status, Packet("10.0.0.1", 80)).outcomes] == ["ACCEPT"]
    with pytest.raises(TraceError, match=r"\(handle 7\): 'ct status' of a non-NEW packet"):
        _run(status, Packet("10.0.0.1", 80, ctstate="ESTABLISHED"))


def test_mixed_families_in_one_packet_are_refused() -> None:
    with pytest.raises(TraceError, match="different IP families"):
        _run(_xt_ruleset({"accept": None}), Packet("fd00::1", 80, src="10.0.0.1"))
