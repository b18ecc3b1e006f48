"""trace/nft_classes.py: a packet whose source reads answer like an earlier packet's reuses its walk.

The property: for generated rulesets — kube-proxy's nftables layout (``testing.nft_gen``: Services of
1..N endpoints behind ``numgen random mod N vmap``, the ``ip saddr EP`` hairpin rule of each endpoint
chain, ``ip saddr != clusterCIDR``), an IPv6 table of the same shape, and extra rules reading ``ip
saddr``/``ip6 saddr`` (addresses, prefixes, ranges, anonymous sets, ``!=``), ``th|tcp|udp sport``
(values, ranges, sets, ``<``/``>=``), ``fib saddr type``, a named set and a concatenated named set
keyed by the source and a dynamic affinity set (those three must disable reuse) — and a stream of
packets from many kinds of sources, ``trace_nft`` (which reuses results per class) gives exactly what
the plain walk (``nft._walk``) gives for the same packet: the same outcomes, exact probabilities,
masquerade, verdicts, paths, or the same error.

Rulesets are loaded with ``nft -f`` into a network namespace of our own and read back with ``nft -j``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.netns import NetnsExec
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset
from pytest_k8sstate.trace import Packet, TraceResult
from pytest_k8sstate.trace import nft as nft_mod
from pytest_k8sstate.trace.nft import _check_packet, _select_tables, _walk, trace_nft
from pytest_k8sstate.trace.nft_classes import RESULTS_KEY
from pytest_k8sstate.trace.nftvalues import ip

NODE = "192.168.0.2"
NODE6 = "2001:db8::2"
OUTSIDE = ["203.0.113.10", "203.0.113.11", "198.51.100.7", "127.0.0.1", "224.0.0.9"]
PODS = ["10.180.0.1", "10.180.0.2", "10.180.0.5", "10.180.0.200", "10.244.0.3"]
OUTSIDE6 = ["2001:db8::10", "2001:db8::11", "::1", "ff02::9", "2001:db8:1::7"]
PODS6 = ["fd00:10:180::1", "fd00:10:180::2", "fd00:10:180::5", "fd00:10:180::c8", "fd00:10:244::3"]
SPORTS = [0, 53, 1000, 1023, 1024, 1500, 40000, 65535]
VIP6 = "fd00:172:30::10"
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def ns() -> Iterator[NetnsExec]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    with netns.temporary("nftcls") as n:
        yield n


def _load(ns: NetnsExec, text: str) -> NftRuleset:
    ns.run(["nft", "flush", "ruleset"], timeout=60)
    ns.run(["nft", "-f", "-"], input=text.encode(), timeout=60)
    return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text, source="gen.nft")


def _plain(rs: NftRuleset, pkt: Packet) -> TraceResult | str:
    try:
        checked = _check_packet(pkt)
        tabs = _select_tables(rs, None, ip(checked.src).version == 6)
        return _walk(rs, tabs, checked, pkt, set())
    except TraceError as exc:
        return f"TraceError: {exc}"


def _fast(rs: NftRuleset, pkt: Packet) -> TraceResult | str:
    try:
        return trace_nft(rs, pkt)
    except TraceError as exc:
        return f"TraceError: {exc}"


def _ipv6_table(n_eps: int) -> list[str]:
    t = "ip6 kube-proxy"
    a = [
        f"add table {t}",
        f"add map {t} service-ips {{ type ipv6_addr . inet_proto . inet_service : verdict ; }}",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}",
        f"add chain {t} filter-forward {{ type filter hook forward priority 0 ; }}",
        f"add chain {t} mark-for-masquerade",
        f"add chain {t} services",
        f"add chain {t} svc6",
        *(f"add chain {t} ep6-{i}" for i in range(n_eps)),
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nat-output jump services",
        f"add rule {t} services ip6 daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add rule {t} nat-postrouting mark and 0x4000 == 0 return",
        f"add rule {t} nat-postrouting masquerade",
        f"add rule {t} svc6 ip6 daddr {VIP6} ip6 saddr != fd00:10::/32 jump mark-for-masquerade",
        f"add rule {t} svc6 numgen random mod {n_eps} vmap {{ "
        + " , ".join(f"{i} : goto ep6-{i}" for i in range(n_eps))
        + " }",
        f"add element {t} service-ips {{ {VIP6} . tcp . 80 : goto svc6 }}",
    ]
    for i in range(n_eps):
        ep = f"fd00:10:180::{i + 1:x}"
        a.append(f"add rule {t} ep6-{i} ip6 saddr {ep} jump mark-for-masquerade")
        a.append(f"add rule {t} ep6-{i} meta l4proto tcp dnat to [{ep}]:8080")
    return a


def _sets(fam: str) -> list[str]:
    t = f"{fam} kube-proxy"
    addr = "ipv6_addr" if fam == "ip6" else "ipv4_addr"
    one, two = ("fd00:10:180::1", "2001:db8::10") if fam == "ip6" else ("10.180.0.1", "203.0.113.10")
    return [
        f"add set {t} srcs {{ type {addr} ; }}",
        f"add element {t} srcs {{ {one}, {two} }}",
        f"add set {t} pairs {{ type {addr} . inet_service ; }}",
        f"add element {t} pairs {{ {one} . 80 }}",
        f"add set {t} aff {{ type {addr} ; flags dynamic,timeout ; timeout 3h ; }}",
    ]


@st.composite
def _rulesets(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """(nft -f text, IPv4 VIPs, IPv4 endpoint addresses)."""
    n_svc = draw(st.integers(1, 3))
    n_eps = draw(st.integers(1, 12))
    svcs = generate_services(n_svc, n_eps)
    lines = render_ruleset(svcs, nodeport_ips=[NODE]).splitlines()
    lines += _ipv6_table(draw(st.integers(1, 6)))
    lines += _sets("ip") + _sets("ip6")
    vips = [s.cluster_ip for s in svcs]
    eps = [e for s in svcs for e, _ in s.endpoints]

    def extra(fam: str) -> str:
        x = "ip6" if fam == "ip6" else "ip"
        if fam == "ip6":
            nets = [
                "fd00:10:180::1",
                "fd00:10:180::/112",
                "fd00:10::/32",
                "2001:db8::/64",
                "::/0",
                "ff00::/8",
            ]
            nets += [NODE6, "fd00:10:180::2-fd00:10:180::9", "{ fd00:10:180::3, 2001:db8::10 }"]
        else:
            nets = ["10.180.0.1", "10.180.0.0/24", "10.0.0.0/8", "203.0.113.0/24", "0.0.0.0/0", "224.0.0.0/4"]
            nets += [NODE, "10.180.0.2-10.180.0.9", "{ 10.180.0.3, 203.0.113.10 }", *eps[:3]]
        ports = ["1000", "1024-65535", "!= 53", "{ 80, 1000-2000 }", "< 1024", ">= 40000", "0"]
        kinds = ["saddr", "saddr", "sport", "fib", "fib", "set", "pairs", "vmap", "aff", "affd", "daddr"]
        kind = draw(st.sampled_from(kinds))
        if kind == "saddr":
            match = f"{x} saddr {draw(st.sampled_from(['', '!= ']))}{draw(st.sampled_from(nets))}"
        elif kind == "sport":
            match = f"{draw(st.sampled_from(['th', 'tcp', 'udp']))} sport {draw(st.sampled_from(ports))}"
        elif kind == "fib":
            types = ["local", "{ local, multicast }", "!= unicast", "multicast"]
            match = f"fib saddr type {draw(st.sampled_from(types))}"
        elif kind == "set":
            match = f"{x} saddr @srcs"
        elif kind == "pairs":
            match = f"{x} saddr . th dport @pairs"
        elif kind == "vmap":
            one, two = (nets[0], NODE6) if fam == "ip6" else (nets[0], NODE)
            return f"{x} saddr vmap {{ {one} : drop, {two} : accept }}"
        elif kind == "affd":  # the set is keyed by the source (update) but looked up by the destination
            return f"{x} daddr @aff drop" if draw(st.booleans()) else f"update @aff {{ {x} saddr }}"
        elif kind == "aff":
            return f"{x} saddr @aff accept" if draw(st.booleans()) else f"update @aff {{ {x} saddr }}"
        else:
            match = f"{x} daddr {VIP6 if fam == 'ip6' else draw(st.sampled_from(vips))}"
        return f"{match} {draw(st.sampled_from(['jump mark-for-masquerade', 'return', 'accept', 'drop']))}"

    for fam, chains in (("ip", ["services", "nat-prerouting", "nat-output"]), ("ip6", ["services", "svc6"])):
        for _ in range(draw(st.integers(0, 4))):
            verb = draw(st.sampled_from(["insert", "add"]))
            lines.append(f"{verb} rule {fam} kube-proxy {draw(st.sampled_from(chains))} {extra(fam)}")
        for _ in range(draw(st.integers(0, 1))):
            rule = extra(fam).replace("jump mark-for-masquerade", "accept")
            lines.append(f"insert rule {fam} kube-proxy filter-forward {rule}")
    return "\n".join(lines) + "\n", vips, eps


@st.composite
def _packets(draw: st.DrawFn, vips: list[str], eps: list[str]) -> Packet:
    v6 = draw(st.integers(0, 3)) == 0
    if v6:
        src = draw(st.sampled_from([*OUTSIDE6, *PODS6, NODE6]))
        dst = draw(st.sampled_from([VIP6, VIP6, "fd00:172:30::99"]))
        local = frozenset({NODE6})
    else:
        src = draw(st.sampled_from([*OUTSIDE, *PODS, NODE, *eps]))
        dst = draw(st.sampled_from([*vips, "172.30.0.250", NODE]))
        local = frozenset({NODE})
    return Packet(
        dst=dst,
        dport=draw(st.sampled_from([80, 80, 81, 30000])),
        proto=draw(st.sampled_from(["tcp", "tcp", "udp"])),
        src=src,
        sport=draw(st.sampled_from(SPORTS)),
        local_ips=local if draw(st.integers(0, 3)) else frozenset(),
        in_iface=draw(st.sampled_from([None, "eth0"])),
        ctstate=draw(st.sampled_from(["NEW", "NEW", "ESTABLISHED"])),
        affinity=draw(st.sampled_from(["new", "new", "returning"])),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=_SLOW)
@given(data=st.data())
def test_class_results_equal_the_plain_walk(ns: NetnsExec, data: st.DataObject) -> None:
    text, vips, eps = data.draw(_rulesets())
    rs = _load(ns, text)
    # a few packets, each then from many sources of its family: later ones meet known classes
    pkts: list[Packet] = []
    for p in data.draw(st.lists(_packets(vips, eps), min_size=1, max_size=3)):
        pool = [*OUTSIDE6, *PODS6, NODE6] if ":" in p.dst else [*OUTSIDE, *PODS, NODE, *eps]
        others = data.draw(st.lists(st.tuples(st.sampled_from(pool), st.sampled_from(SPORTS)), max_size=10))
        pkts += [p] + [replace(p, src=s, sport=sp) for s, sp in others]
    for p in pkts:
        assert _fast(rs, p) == _plain(rs, p), p


def _kube_proxy(ns: NetnsExec, n_eps: int) -> tuple[NftRuleset, str, list[str]]:
    svcs = generate_services(1, n_eps)
    rs = _load(ns, render_ruleset(svcs, nodeport_ips=[NODE]))
    return rs, svcs[0].cluster_ip, [e for e, _ in svcs[0].endpoints]


def test_other_sources_reuse_the_walk_and_endpoints_are_their_own_class(ns: NetnsExec) -> None:
    rs, vip, eps = _kube_proxy(ns, 20)
    outside = [Packet(vip, 80, src=f"203.0.113.{i}", sport=1000 + i) for i in range(1, 6)]
    for p in outside:
        got = trace_nft(rs, p)
        assert got == _plain(rs, p)
        assert got.packet == p
        assert all(o.masquerade for o in got.outcomes)  # from outside: ip saddr != 10.0.0.0/8
    assert rs.cache[RESULTS_KEY].count == 1  # one walk served all five
    pod = Packet(vip, 80, src="10.244.9.9")
    assert not any(o.masquerade for o in trace_nft(rs, pod).outcomes)
    hairpin = Packet(vip, 80, src=eps[3])  # masqueraded to itself only
    got = trace_nft(rs, hairpin)
    assert got == _plain(rs, hairpin)
    assert [o.masquerade for o in got.outcomes].count(True) == 1
    assert rs.cache[RESULTS_KEY].count == 3


def test_a_lookup_keyed_by_the_source_is_never_reused(ns: NetnsExec) -> None:
    lines = render_ruleset(generate_services(1, 2), nodeport_ips=[NODE]).splitlines() + _sets("ip")
    lines.append("insert rule ip kube-proxy nat-prerouting ip saddr @srcs drop")
    rs = _load(ns, "\n".join(lines) + "\n")
    vip = "172.30.0.10"
    assert trace_nft(rs, Packet(vip, 80, src="203.0.113.11")).outcomes[0].verdict == "ACCEPT"
    assert trace_nft(rs, Packet(vip, 80, src="203.0.113.10")).outcomes[0].verdict == "DROP"
    assert rs.cache[RESULTS_KEY].count == 0


def test_a_set_update_keyed_by_the_source_is_never_reused(ns: NetnsExec) -> None:
    """``update @aff { ip saddr }`` then ``ip daddr @aff``: the answer is whether source == destination,
    which no recorded test asks — so the walk must not be reused."""
    lines = render_ruleset(generate_services(1, 2), nodeport_ips=[NODE]).splitlines() + _sets("ip")
    lines.append("insert rule ip kube-proxy nat-prerouting ip daddr @aff drop")
    lines.append("insert rule ip kube-proxy nat-prerouting update @aff { ip saddr }")
    rs = _load(ns, "\n".join(lines) + "\n")
    vip = "172.30.0.10"
    first, same = Packet(vip, 80, src="203.0.113.11"), Packet(vip, 80, src=vip)
    assert trace_nft(rs, first).outcomes[0].verdict == "ACCEPT"
    assert trace_nft(rs, same) == _plain(rs, same)
    assert trace_nft(rs, same).outcomes[0].verdict == "DROP"


def test_dropping_a_recorded_read_breaks_the_property(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: without the record of ``ip saddr`` tests, an endpoint's own (hairpin)
    packet reuses a pod client's result (not masqueraded) — wrongly."""
    rs, vip, eps = _kube_proxy(ns, 4)
    monkeypatch.setattr(nft_mod._Tracer, "_note_src", lambda self, value, op, right: None)
    pod, hairpin = Packet(vip, 80, src="10.244.9.9"), Packet(vip, 80, src=eps[0])
    assert _fast(rs, pod) == _plain(rs, pod)
    assert _fast(rs, hairpin) != _plain(rs, hairpin)
