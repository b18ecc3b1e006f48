"""trace/ipt_classes.py: a packet whose source reads answer like an earlier packet's reuses its walk.

The property: for generated rulesets (kube-proxy Services of 1..N endpoints with extra rules that read
the source address and port before and after them, hand-written statistic chains that do not follow
kube-proxy's shape) and a stream of packets from many kinds of sources (endpoints — the
``-s ep/32`` hairpin rule —, pod addresses, outside clients, the node itself), ``trace_iptables``
(which reuses results per class, and statistic splits per ruleset: ``ipt_memo.SplitMemo``) gives
exactly what the plain walk (``_walk`` on a freshly parsed ruleset) gives for the same packet: the
same outcomes, exact probabilities, masquerade, verdicts, assumptions, weights and path examples, or
the same error.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.iptables import IptablesRuleset, parse_iptables_save
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet, TraceResult
from pytest_k8sstate.trace.ipt_classes import RESULTS_KEY as _RESULTS_KEY
from pytest_k8sstate.trace.iptables import _walk, trace_iptables

NODE_IP = "192.168.0.5"
OUTSIDE = ["203.0.113.10", "203.0.113.11", "198.51.100.7", "127.0.0.1", "224.0.0.9"]
PODS = ["10.244.0.2", "10.244.0.3", "10.244.0.9", "10.244.200.1", "10.244.7.7"]
RSOURCE = "--mask 255.255.255.255 --rsource"
SPORTS = [0, 1000, 1023, 1024, 1500, 40000, 65535]


_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _plain(rs: IptablesRuleset, pkt: Packet) -> TraceResult | str:
    try:
        return _walk(rs, pkt, None, set())
    except TraceError as exc:
        return f"TraceError: {exc}"


def _fast(rs: IptablesRuleset, pkt: Packet) -> TraceResult | str:
    try:
        return trace_iptables(rs, pkt)
    except TraceError as exc:
        return f"TraceError: {exc}"


def _insert(dump: str, table: str, decls: list[str], head: list[str], tail: list[str]) -> str:
    """``decls`` after the table's chain declarations, ``head`` before its first rule, ``tail`` last."""
    lines = dump.splitlines()
    start = lines.index(f"*{table}")
    end = lines.index("COMMIT", start)
    first = next((i for i in range(start, end) if lines[i].startswith("-A ")), end)
    out = lines[:first] + decls + head + lines[first:end] + tail + lines[end:]
    return "\n".join(out) + "\n"


@st.composite
def _rulesets(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """(iptables-save text, Service VIPs, endpoint addresses)."""
    counts = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    svcs = make_services(len(counts), counts)
    vips = [s.cluster_ip for s in svcs]
    eps = [e.rpartition(":")[0] for s in svcs for e in s.endpoints]
    dump = kube_proxy_iptables(svcs)
    nets = ["10.244.0.0/16", "10.244.0.0/24", "203.0.113.0/24", "0.0.0.0/0", "224.0.0.0/4", f"{NODE_IP}/32"]
    nets += [f"{e}/32" for e in eps[:4]] + ["10.244.0.3"]
    targets = ["ACCEPT", "DROP", "RETURN", "KUBE-MARK-MASQ", "MARK --or-mark 0x1"]
    ports = ["1000", "1024:", ":1023", "1000:2000", "40000"]

    def extra(chain: str, filter_table: bool) -> str:
        kind = draw(st.sampled_from(["s", "!s", "sport", "multi", "srctype", "recent", "d"]))
        tgt = draw(st.sampled_from(targets[:3] if filter_table else targets))
        if kind in ("s", "!s"):
            match = f"{'! ' if kind == '!s' else ''}-s {draw(st.sampled_from(nets))}"
        elif kind == "sport":
            match = f"-p tcp -m tcp {draw(st.sampled_from(['', '! ']))}--sport {draw(st.sampled_from(ports))}"
        elif kind == "multi":
            pair = f"{draw(st.sampled_from(ports))},{draw(st.sampled_from(ports))}"
            match = f"-p tcp -m multiport --sports {pair}"
        elif kind == "srctype":
            match = f"-m addrtype {draw(st.sampled_from(['', '! ']))}--src-type LOCAL"
        elif kind == "recent":
            match = f"-m recent --rcheck --seconds 60 --name seen {RSOURCE}"
        else:
            match = f"-d {draw(st.sampled_from(vips))}/32"
        return f"-A {chain} {match} -j {tgt}"

    nat_head = [extra("PREROUTING", False) for _ in range(draw(st.integers(0, 3)))]
    nat_head += [extra("OUTPUT", False) for _ in range(draw(st.integers(0, 2)))]
    nat_tail = [extra("KUBE-SERVICES", False) for _ in range(draw(st.integers(0, 2)))]
    decls: list[str] = []
    if draw(
        st.integers(0, 3)
    ):  # a statistic chain that is not kube-proxy's: any probabilities, RETURNs, reuse
        n = draw(st.integers(1, 5))
        decls += [":FAN - [0:0]", ":T0 - [0:0]", ":T1 - [0:0]", ":T2 - [0:0]"]
        vip = draw(st.sampled_from(vips))
        nat_head.append(f"-A PREROUTING -d {vip}/32 -p tcp -m tcp --dport 80 -j FAN")
        nat_head.append(f"-A OUTPUT -d {vip}/32 -p tcp -m tcp --dport 80 -j FAN")
        for _ in range(n):
            p = draw(st.sampled_from(["0.25", "0.7", "0.5000000000", "0.1", "1", "0"]))
            mode = (
                "--mode nth --every 2 --packet 0"
                if draw(st.integers(0, 29)) == 0
                else f"--mode random --probability {p}"
            )
            pre = draw(st.sampled_from(["", "-p tcp ", f"-s {draw(st.sampled_from(nets))} "]))
            nat_tail.append(f"-A FAN {pre}-m statistic {mode} -j T{draw(st.integers(0, 2))}")
        if draw(st.booleans()):
            nat_tail.append("-A FAN -j T0")
        for t in range(3):
            ep = draw(st.sampled_from(eps))
            nat_tail.append(f"-A T{t} -s {ep}/32 -j KUBE-MARK-MASQ")
            end = draw(st.sampled_from(["dnat", "dnat", "return", "fall"]))
            if end == "dnat":
                nat_tail.append(f"-A T{t} -p tcp -j DNAT --to-destination {ep}:8080")
            elif end == "return":
                nat_tail.append(f"-A T{t} -j RETURN")
    dump = _insert(dump, "nat", decls, nat_head, nat_tail)
    fwd = [extra("FORWARD", True) for _ in range(draw(st.integers(0, 2)))]
    dump = _insert(dump, "filter", [], fwd, [extra("INPUT", True) for _ in range(draw(st.integers(0, 1)))])
    return dump, vips, eps


@st.composite
def _packets(draw: st.DrawFn, vips: list[str], eps: list[str]) -> Packet:
    src = draw(st.sampled_from([*OUTSIDE, *PODS, NODE_IP, *eps]))
    return Packet(
        dst=draw(st.sampled_from([*vips, "10.96.99.99"])),
        dport=draw(st.sampled_from([80, 80, 81])),
        proto=draw(st.sampled_from(["tcp", "tcp", "udp"])),
        src=src,
        sport=draw(st.sampled_from(SPORTS)),
        local_ips=frozenset({NODE_IP}) if draw(st.integers(0, 3)) else frozenset(),
        in_iface=draw(st.sampled_from([None, "eth0"])),
        ctstate=draw(st.sampled_from(["NEW", "NEW", "ESTABLISHED"])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW)
@given(data=st.data())
def test_class_results_equal_the_plain_walk(data: st.DataObject) -> None:
    dump, vips, eps = data.draw(_rulesets())
    rs = parse_iptables_save(dump)
    pkts = data.draw(st.lists(_packets(vips, eps), min_size=1, max_size=14))
    for pkt in pkts:  # the plain walk on a fresh ruleset: no class, index or split kept from before
        assert _fast(rs, pkt) == _plain(parse_iptables_save(dump), pkt), (pkt, dump)


def test_other_sources_reuse_the_walk_and_hairpin_sources_do_not() -> None:
    svcs = make_services(1, 50)
    rs = parse_iptables_save(kube_proxy_iptables(svcs))
    vip = svcs[0].cluster_ip
    ep = svcs[0].endpoints[7].rpartition(":")[0]
    first = trace_iptables(rs, Packet(vip, 80))
    assert all(o.masquerade for o in first.outcomes)  # outside client: the "! -s pod CIDR" rule marks
    other = trace_iptables(rs, Packet(vip, 80, src="198.51.100.7", sport=1234))
    assert other.outcomes is first.outcomes  # the same class: the walk's result is reused
    assert other.packet.src == "198.51.100.7"
    pod = trace_iptables(rs, Packet(vip, 80, src="10.244.99.1"))
    assert not any(o.masquerade for o in pod.outcomes)
    hair = trace_iptables(rs, Packet(vip, 80, src=ep))  # its own "-s ep/32 -j KUBE-MARK-MASQ" rule
    masq = [o for o in hair.outcomes if o.masquerade]
    assert [o.dnat for o in masq] == [svcs[0].endpoints[7]]
    assert sum(o.probability for o in hair.outcomes) == 1
    assert masq[0].probability == Fraction(1, 50) or abs(float(masq[0].probability) - 0.02) < 1e-9
    again = trace_iptables(rs, Packet(vip, 80, src="10.244.99.2", sport=9))
    assert again.outcomes is pod.outcomes
    assert len(next(iter(rs.cache[_RESULTS_KEY].by_other.values()))) == 3  # outside, pod, hairpin


def test_a_ruleset_reading_the_source_through_recent_lists_walks_every_packet() -> None:
    svcs = make_services(1, 3)
    dump = _insert(
        kube_proxy_iptables(svcs),
        "nat",
        [],
        [f"-A PREROUTING -m recent --rcheck --seconds 60 --name seen {RSOURCE} -j ACCEPT"],
        [],
    )
    rs = parse_iptables_save(dump)
    a = trace_iptables(rs, Packet(svcs[0].cluster_ip, 80))
    b = trace_iptables(rs, Packet(svcs[0].cluster_ip, 80, src="198.51.100.7"))
    assert a.outcomes == b.outcomes
    assert a.outcomes is not b.outcomes
    assert not rs.cache[_RESULTS_KEY].by_other


def test_classes_are_bounded() -> None:
    from pytest_k8sstate.trace.ipt_classes import MAX_CLASSES

    svcs = make_services(1, MAX_CLASSES + 5)
    rs = parse_iptables_save(kube_proxy_iptables(svcs))
    for e in svcs[0].endpoints:  # each endpoint's address is a class of its own
        trace_iptables(rs, Packet(svcs[0].cluster_ip, 80, src=e.rpartition(":")[0]))
    kept = rs.cache[_RESULTS_KEY]
    assert sum(len(v) for v in kept.by_other.values()) == kept.count == MAX_CLASSES


V6 = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:SVC - [0:0]
:EP1 - [0:0]
:EP2 - [0:0]
-A PREROUTING -d fd00:10:96::1/128 -p tcp -m tcp --dport 80 -j SVC
-A OUTPUT -d fd00:10:96::1/128 -p tcp -m tcp --dport 80 -j SVC
-A POSTROUTING -m addrtype --src-type LOCAL -j ACCEPT
-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
-A SVC ! -s fd00:10:244::/64 -j MARK --or-mark 0x4000
-A SVC -m statistic --mode random --probability 0.3 -j EP1
-A SVC -j EP2
-A EP1 -s fd00:10:244::5/128 -j MARK --or-mark 0x4000
-A EP1 -p tcp -j DNAT --to-destination [fd00:10:244::5]:8080
-A EP2 -s fd00:10:244::6/128 -j MARK --or-mark 0x4000
-A EP2 -p tcp -j DNAT --to-destination [fd00:10:244::6]:8080
COMMIT
"""


def test_ipv6_sources_in_any_spelling() -> None:
    rs, plain_rs = parse_iptables_save(V6), parse_iptables_save(V6)
    node = frozenset({"FD00::1"})
    srcs = ["2001:db8::10", "2001:DB8::11", "fd00:10:244::5", "FD00:10:244:0::5", "fd00:10:244::7", "fd00::1"]
    srcs += ["FD00::1", "fd00:0::1", "::1", "ff02::1", "10.0.0.1"]
    for src in srcs:
        for local in (node, frozenset()):
            pkt = Packet("fd00:10:96::1", 80, src=src, sport=5, local_ips=local)
            assert _fast(rs, pkt) == _plain(plain_rs, pkt), pkt
    hair = trace_iptables(rs, Packet("fd00:10:96::1", 80, src="FD00:10:244:0::5"))
    assert [o.dnat for o in hair.outcomes if o.masquerade] == ["[fd00:10:244::5]:8080"]


def test_kept_outcomes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_k8sstate.trace import ipt_classes

    monkeypatch.setattr(ipt_classes, "MAX_OUTCOMES", 250)  # the real bound: 100,000 (no 20,000-branch trace)
    n = 250 // 3 + 1  # three classes of n outcomes do not fit: the oldest goes
    svcs = make_services(1, n)
    rs = parse_iptables_save(kube_proxy_iptables(svcs))
    vip = svcs[0].cluster_ip
    for src in ("203.0.113.1", "10.244.255.1", svcs[0].endpoints[0].rpartition(":")[0]):
        trace_iptables(rs, Packet(vip, 80, src=src))
    kept = rs.cache[_RESULTS_KEY]
    assert kept.count == 2
    assert kept.outcomes == 2 * n
    again = trace_iptables(rs, Packet(vip, 80, src="10.244.255.2"))  # the pod class is still kept
    assert kept.count == 2
    assert len(again.outcomes) == n
    out = trace_iptables(rs, Packet(vip, 80, src="203.0.113.2"))  # the outside class went first: a walk
    assert kept.count == 2
    # the pod class was used after the hairpin class: the hairpin class went now, the pod class stays
    assert trace_iptables(rs, Packet(vip, 80, src="10.244.255.3")).outcomes is again.outcomes
    assert trace_iptables(rs, Packet(vip, 80, src="203.0.113.3")).outcomes is out.outcomes
