"""The nftables tracer on the ruleset a real kube-proxy v1.37.1 wrote (data/kube-proxy-1.37-nftables.nft).

kube-proxy ≥ 1.33 no longer has per-endpoint chains: a service chain DNATs itself with
``dnat ip to numgen random mod N map { n : IP . PORT }`` and hairpin traffic is masqueraded through the
``hairpin-connections`` set with ``ct status dnat``. The dump is loaded back with ``nft -f`` into a
network namespace of our own and captured with ``nft -j`` before tracing.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from kube_proxy_flows import Flow, FlowGroup, nft_script, upstream_flows

from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.trace import Packet, trace

DUMP = Path(__file__).parent / "data" / "kube-proxy-1.37-nftables.nft"
WEB = "10.108.197.216"
NODE_IP = "172.31.0.3"
ENDPOINTS = {"10.244.1.2:8080", "10.244.1.3:8080", "10.244.1.4:8080"}


@pytest.fixture(scope="module")
def ruleset() -> NftRuleset:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    with netns.temporary("nft137") as ns:
        ns.run(["nft", "-f", "-"], input=DUMP.read_bytes(), timeout=60)
        return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text, source=str(DUMP))


def test_cluster_ip_from_outside_splits_in_thirds_with_masquerade(ruleset: NftRuleset) -> None:
    res = trace(ruleset, Packet(dst=WEB, dport=80))
    assert {o.dnat for o in res.outcomes} == ENDPOINTS
    assert all(
        o.probability == Fraction(1, 3) and o.masquerade and o.verdict == "ACCEPT" for o in res.outcomes
    )


def test_pod_to_itself_through_the_service_is_hairpin_masqueraded(ruleset: NftRuleset) -> None:
    res = trace(ruleset, Packet(dst=WEB, dport=80, src="10.244.1.3"))
    masq = {o.dnat: o.masquerade for o in res.outcomes}
    assert masq == {"10.244.1.2:8080": False, "10.244.1.3:8080": True, "10.244.1.4:8080": False}


def test_nodeport_reaches_the_pods(ruleset: NftRuleset) -> None:
    res = trace(ruleset, Packet(dst=NODE_IP, dport=30695, local_ips=frozenset({NODE_IP})))
    assert res.endpoints == {ep: Fraction(1, 3) for ep in ENDPOINTS}
    assert all(o.masquerade for o in res.outcomes)


def test_kube_dns_udp_two_endpoints(ruleset: NftRuleset) -> None:
    res = trace(ruleset, Packet(dst="10.96.0.10", dport=53, proto="udp", src="10.244.1.9"))
    assert res.endpoints == {"10.244.0.1:53": Fraction(1, 2), "10.244.1.1:53": Fraction(1, 2)}


def test_wrong_port_of_a_cluster_ip_is_rejected(ruleset: NftRuleset) -> None:
    res = trace(ruleset, Packet(dst=WEB, dport=81))
    assert [(o.probability, o.verdict) for o in res.outcomes] == [(Fraction(1), "REJECT")]


# --------------------------------------------------------------------------- kube-proxy's own flow tests
# Every packetFlowTest of kube-proxy v1.37.1's nftables unit tests (IPv4 and IPv6), against the very
# ruleset its fake held when the flow was checked (see tests/kube_proxy_flows.py; nothing committed).


@pytest.fixture(scope="module")
def upstream() -> list[tuple[FlowGroup, NftRuleset]]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    try:
        groups = upstream_flows()
    except FileNotFoundError as exc:
        pytest.skip(f"kube-proxy's flow tests are generated from the Go module cache: {exc}")
    out = []
    with netns.temporary("kpflows") as ns:
        for g in groups:
            ns.run(["nft", "flush", "ruleset"], timeout=30)
            ns.run(["nft", "-f", "-"], input=nft_script(g.dump).encode(), timeout=60)
            text = ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text
            out.append((g, parse_nft_json(text, source=f"kube-proxy {g.test} ({g.line.strip()})")))
    return out


def _expected(flow: Flow) -> tuple[frozenset[str], str]:
    """kube-proxy's expected output as (DNAT destinations, verdict): "" means accepted untouched."""
    if flow.output in ("", "ACCEPT"):
        return frozenset(), "ACCEPT"
    if flow.output in ("DROP", "REJECT"):
        return frozenset(), flow.output
    return frozenset(flow.output.split(", ")), "ACCEPT"


def _check(g: FlowGroup, rs: NftRuleset, flow: Flow) -> str | None:
    pkt = Packet(flow.dst, flow.port, proto=flow.proto, src=flow.src, local_ips=frozenset(g.node_ips))  # type: ignore[arg-type]
    res = trace(rs, pkt)
    dnats = frozenset(o.dnat for o in res.outcomes if o.dnat is not None)
    verdicts = {o.verdict for o in res.outcomes}
    want_dnat, want_verdict = _expected(flow)
    got = (dnats, verdicts, {o.masquerade for o in res.outcomes})
    if got != (want_dnat, {want_verdict}, {flow.masq}):
        where = f"{g.test} {flow.name!r}: {flow.src} -> {flow.dst}:{flow.port}/{flow.proto}"
        return f"{where}: want {flow.output!r} masq={flow.masq}, got {res.outcomes}"
    n = len(want_dnat)
    if n and any(o.probability != Fraction(1, n) for o in res.outcomes):
        return f"{g.test} {flow.name!r}: endpoints not evenly split: {res.outcomes}"
    return None


def test_every_kube_proxy_nftables_flow(upstream: list[tuple[FlowGroup, NftRuleset]]) -> None:
    failures = []
    counts = {4: 0, 6: 0}
    for g, rs in upstream:
        for flow in g.flows:
            counts[6 if ":" in flow.dst else 4] += 1
            err = _check(g, rs, flow)
            if err:
                failures.append(err)
    # the upstream suite as of v1.37.1: 207 IPv4 and 11 IPv6 flows
    assert counts[4] >= 150, counts
    assert counts[6] >= 10, counts
    assert not failures, f"{len(failures)} of {sum(counts.values())} flows differ:\n" + "\n".join(failures)


# --------------------------------------------------------------------------- our own flows, both families
# Cases of ours on the rulesets kube-proxy's TestOverallNFTablesRules / TestOverallNFTablesRulesIPv6
# expect (their Services: svc1 ClusterIP; svc2 LoadBalancer with ExternalTrafficPolicy Local and no local
# endpoint; svc3 NodePort; svc4 two endpoints and an external IP; svc5 LoadBalancer with source ranges
# and ClientIP affinity; svc6 no endpoints). The addresses of each family are the tests' own.

FAMILIES: dict[str, dict[str, str]] = {
    "TestOverallNFTablesRules": {
        "vip": "172.30.0.4{}",
        "ep": "10.180.0.{}:80",
        "pod": "10.0.0.2",
        "node": "192.168.0.2",
        "out_ok": "203.0.113.2",
        "out_bad": "198.51.100.9",
        "lb2": "1.2.3.4",
        "ext2": "192.168.99.22",
        "ext4": "192.168.99.33",
        "lb5": "5.6.7.8",
        "unalloc": "172.30.0.99",
        "lo": "127.0.0.1",
    },
    "TestOverallNFTablesRulesIPv6": {
        "vip": "fd00:172:30::4{}",
        "ep": "[fd00:10:180::{}]:80",
        "pod": "fd00:10::2",
        "node": "2001:db8::1",
        "out_ok": "2001:db8:203::2",
        "out_bad": "2001:db8:9::9",
        "lb2": "5555::1",
        "ext2": "2001:db8:99::22",
        "ext4": "2001:db8:99::33",
        "lb5": "5555::2",
        "unalloc": "fd00:10:96::99",
        "lo": "::1",
    },
}
# (case, source, destination, port, expected: endpoint numbers or a verdict, masqueraded); a: family table
OWN_CASES = [
    ("pod to ClusterIP", "pod", "vip:1", 80, (1,), False),
    ("outside to ClusterIP is masqueraded", "out_ok", "vip:1", 80, (1,), True),
    ("wrong port of a ClusterIP", "pod", "vip:1", 81, "REJECT", False),
    ("unallocated ClusterIP", "pod", "unalloc", 80, "DROP", False),
    ("pod to ClusterIP of an eTP:Local Service", "pod", "vip:2", 80, (2,), False),
    ("outside to LB without local endpoints", "out_ok", "lb2", 80, "DROP", False),
    ("outside to NodePort without local endpoints", "out_ok", "node", 3001, "DROP", False),
    ("pod to external IP short-circuits", "pod", "ext2", 80, (2,), False),
    ("node to external IP short-circuits, masqueraded", "node", "ext2", 80, (2,), True),
    ("outside to NodePort", "out_ok", "node", 3003, (3,), True),
    ("hairpin through the ClusterIP", "ep:3", "vip:3", 80, (3,), True),
    ("pod to a two-endpoint Service", "pod", "vip:4", 80, (4, 5), False),
    ("outside to its external IP", "out_ok", "ext4", 80, (4, 5), True),
    ("LB from an allowed source", "out_ok", "lb5", 80, (3,), True),
    ("LB from a source outside the ranges", "out_bad", "lb5", 80, "DROP", False),
    ("Service without endpoints", "pod", "vip:6", 80, "REJECT", False),
    ("localhost NodePort is rejected", "lo", "lo", 3001, "REJECT", False),
]


def _addr(fam: dict[str, str], spec: str) -> str:
    key, _, n = spec.partition(":")
    text = fam[key].format(n) if n else fam[key]
    return text.rsplit(":", 1)[0].strip("[]") if key == "ep" else text


@pytest.mark.parametrize("test", list(FAMILIES))
def test_own_flows_on_kube_proxys_expected_rulesets(
    upstream: list[tuple[FlowGroup, NftRuleset]], test: str
) -> None:
    fam = FAMILIES[test]
    (rs,) = [rs for g, rs in upstream if g.kind == "expected" and g.test == test]
    local = frozenset({fam["node"]})
    for name, src, dst, port, want, masq in OWN_CASES:
        pkt = Packet(_addr(fam, dst), port, src=_addr(fam, src), local_ips=local)
        res = trace(rs, pkt)
        if isinstance(want, str):
            expected = {(None, want, masq)}
        else:
            expected = {(fam["ep"].format(n), "ACCEPT", masq) for n in want}
        got = {(o.dnat, o.verdict, o.masquerade) for o in res.outcomes}
        assert got == expected, f"{test} {name}: {pkt}"
    # svc5's ClientIP affinity: a returning client lands on its endpoint through the affinity set
    back = trace(rs, Packet(_addr(fam, "vip:5"), 80, src=_addr(fam, "pod"), affinity="returning"))
    assert [(o.dnat, o.probability) for o in back.outcomes] == [(fam["ep"].format(3), 1)]
    table = next(iter(rs.tables.values()))
    svc5 = next(c for n, c in table.chains.items() if n.startswith("service-HVFWP5L3"))
    assert f"kube-proxy/{svc5.name}#{svc5.rules[0].handle}" in back.path_examples[0]  # the affinity rule
    first = trace(rs, Packet(_addr(fam, "vip:5"), 80, src=_addr(fam, "pod")))
    assert f"kube-proxy/{svc5.name}#{svc5.rules[1].handle}" in first.path_examples[0]  # numgen, first time
