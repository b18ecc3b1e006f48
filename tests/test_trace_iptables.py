"""trace/iptables.py on rules iptables-restore loads into a test netns, read back with iptables-save -c."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from fractions import Fraction

import pytest

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.iptables import BUILTIN_CHAINS, IptablesRuleset, parse_iptables_save
from pytest_k8sstate.testing import KubeService, kube_proxy_iptables, make_services
from pytest_k8sstate.trace import Packet, TraceResult, trace
from pytest_k8sstate.trace import iptables as trace_mod
from pytest_k8sstate.trace.iptables import trace_iptables

NODE_IP = "192.168.50.2"
LOCAL = frozenset({NODE_IP})
OUTSIDE = "203.0.113.10"

# What iptables-save prints for kube-proxy's "%0.10f" probabilities (xt_statistic keeps p·2³¹):
P_HALF = Fraction(1, 2)  # 0.5000000000 → 0.50000000000
P_THIRD = Fraction("0.33333333349")  # 0.3333333333 → 0.33333333349
P_QUARTER = Fraction(1, 4)  # 0.2500000000 → 0.25000000000
P_FIFTH = Fraction("0.20000000019")  # 0.2000000000 → 0.20000000019
# first-match-wins chain of probabilistic jumps: endpoint i gets Π(1-p_j, j<i)·p_i, the last the rest
EXPECTED: dict[int, list[Fraction]] = {
    1: [Fraction(1)],
    2: [P_HALF, P_HALF],
    3: [
        Fraction(33333333349, 100000000000),
        Fraction(66666666651, 200000000000),
        Fraction(66666666651, 200000000000),
    ],
    4: [
        P_QUARTER,
        (1 - P_QUARTER) * P_THIRD,
        (1 - P_QUARTER) * (1 - P_THIRD) / 2,
        (1 - P_QUARTER) * (1 - P_THIRD) / 2,
    ],
    5: [
        P_FIFTH,
        (1 - P_FIFTH) * P_QUARTER,
        (1 - P_FIFTH) * (1 - P_QUARTER) * P_THIRD,
        (1 - P_FIFTH) * (1 - P_QUARTER) * (1 - P_THIRD) / 2,
        (1 - P_FIFTH) * (1 - P_QUARTER) * (1 - P_THIRD) / 2,
    ],
}


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates a network namespace and loads rules with iptables-restore"
    for prog in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(prog) is None:
            return f"{prog} not installed (apt-get install iptables iproute2)"
    return None


needs_iptables = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="module")
def ns() -> Iterator[NetnsExec]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with netns.temporary("iptr") as n:
        yield n


_RESET = "".join(
    f"*{t}\n" + "".join(f":{c} ACCEPT [0:0]\n" for c in chains) + "COMMIT\n"
    for t, chains in BUILTIN_CHAINS.items()
    if t in ("filter", "nat", "mangle", "raw")
)


def load_and_capture(ns: NetnsExec, text: str) -> IptablesRuleset:
    """Reset filter/nat/mangle/raw, load ``text`` and parse what the real iptables-save -c prints."""
    res = ns.run(["iptables-restore"], input=(_RESET + text).encode(), timeout=120, check=False)
    if res.returncode != 0:
        pytest.fail(f"iptables-restore refused the test rules: {res.stderr.decode(errors='replace')}")
    rs = parse_iptables_save(ns.run(["iptables-save", "-c"], timeout=120).text, source="iptables-save -c")
    return rs


SERVICES = make_services(9, [1, 2, 3, 4, 5, 0, 3, 0, 2], node_ports=8)


@pytest.fixture(scope="module")
def kube(ns: NetnsExec) -> IptablesRuleset:
    return load_and_capture(ns, kube_proxy_iptables(SERVICES))


def _dist(res: TraceResult) -> dict[tuple[str | None, bool, str], Fraction]:
    return {(o.dnat, o.masquerade, o.verdict): o.probability for o in res.outcomes}


@pytest.mark.needs_root
@needs_iptables
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_cluster_ip_exact_distribution(kube: IptablesRuleset, n: int) -> None:
    svc = SERVICES[n - 1]
    res = trace_iptables(kube, Packet(svc.cluster_ip, 80))
    # from outside the cluster CIDR: KUBE-MARK-MASQ, then masquerade in KUBE-POSTROUTING
    assert _dist(res) == {(ep, True, "ACCEPT"): p for ep, p in zip(svc.endpoints, EXPECTED[n], strict=True)}
    assert sum(res.endpoints.values()) == 1
    for p in res.endpoints.values():
        assert abs(p - Fraction(1, n)) < Fraction(1, 10**9)
    assert trace(kube, Packet(svc.cluster_ip, 80)) == res


@pytest.mark.needs_root
@needs_iptables
def test_three_endpoints_exact_fractions(kube: IptablesRuleset) -> None:
    svc = SERVICES[2]
    res = trace_iptables(kube, Packet(svc.cluster_ip, 80))
    assert res.endpoints == {
        svc.endpoints[0]: Fraction(33333333349, 100000000000),
        svc.endpoints[1]: Fraction(66666666651, 200000000000),
        svc.endpoints[2]: Fraction(66666666651, 200000000000),
    }
    # one example path per outcome: PREROUTING → KUBE-SERVICES → KUBE-SVC → KUBE-SEP, then the masquerade
    path = res.path_examples[res.outcomes.index(next(o for o in res.outcomes if o.dnat == svc.endpoints[0]))]
    assert [p.split("#")[0] for p in path[:4]] == [
        "nat/PREROUTING",
        "nat/KUBE-SERVICES",
        "nat/KUBE-SVC-" + svc.svc_chain[9:],
        "nat/KUBE-MARK-MASQ",
    ]
    assert path[-1].startswith("nat/KUBE-POSTROUTING#")


@pytest.mark.needs_root
@needs_iptables
def test_pod_source_is_not_masqueraded(kube: IptablesRuleset) -> None:
    svc = SERVICES[1]
    res = trace_iptables(kube, Packet(svc.cluster_ip, 80, src="10.244.200.7"))
    assert _dist(res) == {
        (svc.endpoints[0], False, "ACCEPT"): P_HALF,
        (svc.endpoints[1], False, "ACCEPT"): P_HALF,
    }


@pytest.mark.needs_root
@needs_iptables
def test_hairpin_masquerades_only_the_own_endpoint(kube: IptablesRuleset) -> None:
    svc = SERVICES[2]
    me = svc.endpoints[1].split(":")[0]
    res = trace_iptables(kube, Packet(svc.cluster_ip, 80, src=me))
    masq = {o.dnat: o.masquerade for o in res.outcomes}
    assert masq == {svc.endpoints[0]: False, svc.endpoints[1]: True, svc.endpoints[2]: False}


@pytest.mark.needs_root
@needs_iptables
def test_nodeport_from_outside(kube: IptablesRuleset) -> None:
    svc = SERVICES[3]
    assert svc.node_port is not None
    res = trace_iptables(kube, Packet(NODE_IP, svc.node_port, local_ips=LOCAL))
    assert _dist(res) == {(ep, True, "ACCEPT"): p for ep, p in zip(svc.endpoints, EXPECTED[4], strict=True)}
    assert any(step.startswith("nat/KUBE-NODEPORTS#") for step in res.path_examples[0])
    assert any(step.startswith("nat/" + svc.ext_chain + "#") for step in res.path_examples[0])


@pytest.mark.needs_root
@needs_iptables
def test_nodeport_locally_originated_uses_nat_output(kube: IptablesRuleset) -> None:
    svc = SERVICES[0]
    assert svc.node_port is not None
    res = trace_iptables(kube, Packet(NODE_IP, svc.node_port, src=NODE_IP, local_ips=LOCAL))
    assert _dist(res) == {(svc.endpoints[0], True, "ACCEPT"): Fraction(1)}
    assert res.path_examples[0][0].startswith("nat/OUTPUT#")


@pytest.mark.needs_root
@needs_iptables
def test_service_without_endpoints_is_rejected(kube: IptablesRuleset) -> None:
    svc = SERVICES[5]
    assert svc.endpoints == ()
    res = trace_iptables(kube, Packet(svc.cluster_ip, 80))
    assert _dist(res) == {(None, False, "REJECT"): Fraction(1)}
    assert any(s.startswith("filter/KUBE-SERVICES#") for s in res.path_examples[0])
    assert svc.node_port is not None
    res = trace_iptables(kube, Packet(NODE_IP, svc.node_port, local_ips=LOCAL))
    assert _dist(res) == {(None, False, "REJECT"): Fraction(1)}
    assert any(s.startswith("filter/KUBE-EXTERNAL-SERVICES#") for s in res.path_examples[0])


@pytest.mark.needs_root
@needs_iptables
def test_other_port_protocol_and_address_are_untouched(kube: IptablesRuleset) -> None:
    svc = SERVICES[2]
    for pkt in (
        Packet(svc.cluster_ip, 81),
        Packet(svc.cluster_ip, 80, proto="udp"),
        Packet("10.96.99.99", 80),
        Packet(NODE_IP, 31999, local_ips=LOCAL),
    ):
        assert _dist(trace_iptables(kube, pkt)) == {(None, False, "ACCEPT"): Fraction(1)}, pkt


@pytest.mark.needs_root
@needs_iptables
def test_udp_service(ns: NetnsExec) -> None:
    svcs = make_services(2, [2, 0], protocol="udp", node_ports=2)
    rs = load_and_capture(ns, kube_proxy_iptables(svcs))
    res = trace_iptables(rs, Packet(svcs[0].cluster_ip, 80, proto="udp", src="10.244.9.9"))
    assert _dist(res) == {(ep, False, "ACCEPT"): P_HALF for ep in svcs[0].endpoints}
    assert _dist(trace_iptables(rs, Packet(svcs[0].cluster_ip, 80))) == {(None, False, "ACCEPT"): 1}
    assert _dist(trace_iptables(rs, Packet(svcs[1].cluster_ip, 80, proto="udp"))) == {
        (None, False, "REJECT"): 1
    }


MARKS_AND_RETURNS = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:T-SVC - [0:0]
:T-MARK - [0:0]
:T-GOTO - [0:0]
:T-POST - [0:0]
:T-SEP-A - [0:0]
:T-SEP-B - [0:0]
-A PREROUTING -d 10.96.0.50/32 -p tcp -m tcp --dport 8443 -j T-SVC
-A PREROUTING -d 10.96.0.51/32 -p tcp -m multiport --dports 1000:2000,3000 -j T-GOTO
-A T-SVC -j T-MARK
-A T-SVC -m mark --mark 0x10/0x10 -m statistic --mode random --probability 0.25 -j T-SEP-A
-A T-SVC -p tcp -m mark ! --mark 0x10/0x10 -j DNAT --to-destination 10.1.0.99:1
-A T-SVC -j T-SEP-B
-A T-MARK -m comment --comment "set 0x10, keep other bits" -j MARK --set-xmark 0x10/0x10
-A T-MARK -j RETURN
-A T-MARK -j MARK --set-xmark 0x0/0xffffffff
-A T-GOTO -s 203.0.113.0/24 -g T-MARK
-A T-GOTO -p tcp -j DNAT --to-destination 10.1.0.98:2
-A T-SEP-A -j MARK --or-mark 0x4000
-A T-SEP-A -p tcp -j DNAT --to-destination 10.1.0.1:443
-A T-SEP-B -p tcp -j DNAT --to-destination 10.1.0.2:443
-A POSTROUTING -j T-POST
-A T-POST -m mark ! --mark 0x4000/0x4000 -j RETURN
-A T-POST -j MARK --xor-mark 0x4000
-A T-POST -m mark --mark 0x4000/0x4000 -j RETURN
-A T-POST -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -d 10.1.0.98/32 -j LOG --log-prefix "goto path "
-A FORWARD -d 10.1.0.98/32 -j ACCEPT
-A FORWARD -m conntrack --ctstate INVALID -j ACCEPT
-A FORWARD -m conntrack ! --ctstate NEW -j ACCEPT
-A FORWARD -d 10.1.0.0/24 -p tcp -m tcp --dport 443 -j ACCEPT
COMMIT
"""


@pytest.mark.needs_root
@needs_iptables
def test_mark_return_goto_paths(ns: NetnsExec) -> None:
    rs = load_and_capture(ns, MARKS_AND_RETURNS)
    res = trace_iptables(rs, Packet("10.96.0.50", 8443))
    # T-MARK sets 0x10 and RETURNs (the reset after RETURN is never reached); 1/4 → SEP-A, which
    # also sets 0x4000: the KUBE-POSTROUTING-style RETURN is skipped, --xor-mark clears the bit so
    # the second mark RETURN does not match either: MASQUERADE; 3/4 → SEP-B (the mark check
    # RETURNs, no masquerade). The DNAT to 10.1.0.99 needs the mark unset and is never taken.
    assert _dist(res) == {
        ("10.1.0.1:443", True, "ACCEPT"): Fraction(1, 4),
        ("10.1.0.2:443", False, "ACCEPT"): Fraction(3, 4),
    }
    # goto: T-MARK's RETURN goes back to PREROUTING (T-GOTO's caller), skipping T-GOTO's DNAT;
    # the un-NATed packet then hits the FORWARD policy DROP
    assert _dist(trace_iptables(rs, Packet("10.96.0.51", 1500))) == {(None, False, "DROP"): 1}
    assert _dist(trace_iptables(rs, Packet("10.96.0.51", 3000, src="198.51.100.1"))) == {
        ("10.1.0.98:2", False, "ACCEPT"): 1
    }
    assert _dist(trace_iptables(rs, Packet("10.96.0.51", 2001, src="198.51.100.1"))) == {
        (None, False, "DROP"): 1
    }


@pytest.mark.needs_root
@needs_iptables
def test_unsupported_match_reached_is_a_trace_error(ns: NetnsExec) -> None:
    rules = """*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SVC-XYZ - [0:0]
-A PREROUTING -d 10.96.0.60/32 -j KUBE-SVC-XYZ
-A PREROUTING -d 10.96.0.61/32 -j NETMAP --to 10.1.0.0/24
-A KUBE-SVC-XYZ -p tcp -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.1.0.1:80
-A KUBE-SVC-XYZ -p tcp -m time --timestart 01:00 -j DNAT --to-destination 10.1.0.2:80
COMMIT
"""
    rs = load_and_capture(ns, rules)
    with pytest.raises(TraceError) as ei:
        trace_iptables(rs, Packet("10.96.0.60", 80))
    msg = str(ei.value)
    assert msg.startswith("cannot evaluate rule '-p tcp -m statistic --mode nth")
    assert "in nat/KUBE-SVC-XYZ at line " in msg
    assert "only --mode random" in msg
    rule = rs.tables["nat"].chains["KUBE-SVC-XYZ"].rules[0]
    assert f"at line {rule.line}: unsupported statistic match" in msg
    assert msg.endswith("(source: iptables-save -c)")
    with pytest.raises(TraceError, match=r"unsupported target -j NETMAP"):
        trace_iptables(rs, Packet("10.96.0.61", 80))
    # rules the packet never reaches don't matter
    assert _dist(trace_iptables(rs, Packet("10.96.0.62", 80))) == {(None, False, "ACCEPT"): 1}
    # an unknown match module
    time_rule = rs.tables["nat"].chains["KUBE-SVC-XYZ"].rules[1]
    del rs.tables["nat"].chains["KUBE-SVC-XYZ"].rules[0]
    rs.cache.clear()
    with pytest.raises(TraceError, match=rf"at line {time_rule.line}: unsupported match -m time "):
        trace_iptables(rs, Packet("10.96.0.60", 80))


# ---------------------------------------------------------------- not loadable into the kernel


def test_jump_loop_is_a_trace_error() -> None:
    # FAKE INPUT, named so: the kernel refuses chain loops, so this dump cannot come from iptables-save;
    # the tracer must still stop instead of recursing forever.
    text = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n"
        "-A PREROUTING -j A\n-A A -j B\n-A B -j A\nCOMMIT\n"
    )
    with pytest.raises(TraceError, match="jump depth"):
        trace_iptables(parse_iptables_save(text), Packet("10.0.0.1", 80))


def test_big_chain_index_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    svcs = make_services(300, [(i % 5) for i in range(300)], node_ports=40)
    rs = parse_iptables_save(kube_proxy_iptables(svcs, saved=True))
    pkts = [Packet(s.cluster_ip, 80) for s in svcs[:60]] + [
        Packet(NODE_IP, s.node_port, local_ips=LOCAL) for s in svcs[:40] if s.node_port
    ]
    indexed = [trace_iptables(rs, p) for p in pkts]
    assert rs.cache  # the KUBE-SERVICES index is cached on the ruleset
    monkeypatch.setattr(trace_mod, "INDEX_MIN_RULES", 10**9)
    rs2 = parse_iptables_save(kube_proxy_iptables(svcs, saved=True))
    assert [trace_iptables(rs2, p) for p in pkts] == indexed
    for s, res in zip(svcs[:60], indexed[:60], strict=True):
        want: dict[str | None, Fraction] = {None: Fraction(1)}
        if s.endpoints:
            want = {ep: Fraction(1, len(s.endpoints)) for ep in s.endpoints}
        for k, p in res.endpoints.items():
            assert abs(p - want[k]) < Fraction(1, 10**9)


def test_masquerade_all_and_no_cluster_cidr() -> None:
    svc = KubeService("ns", "web", "10.96.0.7", 80, ("10.244.1.1:80",), port_name="http")
    no_cidr = parse_iptables_save(kube_proxy_iptables([svc], cluster_cidr=None))
    assert _dist(trace_iptables(no_cidr, Packet("10.96.0.7", 80))) == {("10.244.1.1:80", False, "ACCEPT"): 1}
    allm = parse_iptables_save(kube_proxy_iptables([svc], masquerade_all=True))
    assert _dist(trace_iptables(allm, Packet("10.96.0.7", 80, src="10.244.5.5"))) == {
        ("10.244.1.1:80", True, "ACCEPT"): 1
    }


KUBELET_FIREWALL = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 127.0.0.1:9090
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
"""  # noqa: E501


@pytest.mark.needs_root
@needs_iptables
def test_conntrack_dnat_state_and_local_delivery(ns: NetnsExec) -> None:
    rs = load_and_capture(ns, KUBELET_FIREWALL)
    # locally originated, DNATed in nat OUTPUT, delivered locally: filter INPUT sees ctstate DNAT
    res = trace_iptables(rs, Packet("127.0.0.1", 8080, src=NODE_IP, local_ips=LOCAL))
    assert _dist(res) == {("127.0.0.1:9090", False, "ACCEPT"): 1}
    assert res.path_examples[0][0].startswith("nat/OUTPUT#")
    # not DNATed: kubelet's localnet rule drops it
    res = trace_iptables(rs, Packet("127.0.0.1", 7070, src=NODE_IP, local_ips=LOCAL))
    assert _dist(res) == {(None, False, "DROP"): 1}
    assert res.path_examples[0][-1].startswith("filter/KUBE-FIREWALL#")
