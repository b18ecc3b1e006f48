"""trace/ipvs.py on node state shaped exactly like kube-proxy's IPVS mode (testing/ipvs_gen.py): iptables
and ipsets loaded into a test netns and read back with iptables-save / ipset save (the kernel here has
no ip_vs, so the virtual servers are ``ipvsadm -Sn`` text)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import pytest

from pytest_k8sstate.assertions.dataplane import assert_dnat_to, assert_masquerade
from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.ipset import IpSet, parse_ipset_save
from pytest_k8sstate.parse.iptables import IptablesRuleset, parse_iptables_save
from pytest_k8sstate.parse.ipvs import RealServer, VirtualServer, parse_ipvsadm
from pytest_k8sstate.testing.ipvs_gen import IpvsService, kube_proxy_ipvs
from pytest_k8sstate.trace import Packet, TraceResult, trace
from pytest_k8sstate.trace.affinity import is_sticky, trace_affinity
from pytest_k8sstate.trace.ipvs import schedule, trace_ipvs

NODE_IP = "192.168.50.2"
LOCAL = frozenset({NODE_IP})
OUTSIDE = "203.0.113.10"
POD = "10.244.7.7"  # a pod on another node, inside the cluster CIDR

DNS = IpvsService("10.96.0.10", 53, ("10.244.1.2:53", "10.244.2.3:53"), node_port=30053)
WEB = IpvsService(
    "10.96.100.5",
    80,
    ("10.244.1.2:8080", "10.244.2.3:8080", "10.244.3.4:8080"),
    affinity_timeout=10800,
    local_endpoints=("10.244.1.2:8080",),
)
LOCALNP = IpvsService(
    "10.96.7.7",
    80,
    ("10.244.1.9:80", "10.244.2.9:80"),
    node_port=30077,
    local_endpoints=("10.244.1.9:80",),
    external_local=True,
    load_balancer_ips=("198.51.100.7",),
)
LB = IpvsService("10.96.8.8", 443, ("10.244.2.8:8443",), load_balancer_ips=("198.51.100.8",))
UDP = IpvsService("10.96.0.10", 53, ("10.244.1.2:53", "10.244.2.3:53"), protocol="udp", node_port=30053)
SERVICES = [DNS, WEB, LOCALNP, LB, UDP]


@dataclass
class Node:
    iptables: IptablesRuleset
    ipsets: list[IpSet]
    ipvs: list[VirtualServer]

    def trace(self, pkt: Packet) -> TraceResult:
        return trace(self.iptables, pkt, ipsets=self.ipsets, ipvs=self.ipvs)


def _node(**kw: object) -> Node:
    gen = kube_proxy_ipvs(SERVICES, node_ips=(NODE_IP,), **kw)  # type: ignore[arg-type]
    return Node(parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs))


GENERATED = _node()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates a network namespace, loads rules and ipsets"
    for prog in ("ip", "ipset", "iptables-restore", "iptables-save"):
        if shutil.which(prog) is None:
            return f"{prog} not installed (apt-get install ipset iptables iproute2)"
    return None


@pytest.fixture(scope="module")
def captured() -> Iterator[Node]:
    """The generated state loaded into a netns and captured back the way node capture reads a node."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    gen = kube_proxy_ipvs(SERVICES, node_ips=(NODE_IP,))
    with netns.temporary("ipvs") as ns:
        for argv, text in ((["ipset", "restore"], gen.ipsets), (["iptables-restore"], gen.iptables)):
            res = ns.run(argv, input=text.encode(), timeout=60, check=False)
            if res.returncode != 0:
                pytest.fail(f"{argv[0]} refused the IPVS-mode state: {res.stderr.decode(errors='replace')}")
        yield Node(
            parse_iptables_save(ns.run(["iptables-save"], timeout=60).text, source="iptables-save"),
            parse_ipset_save(ns.run(["ipset", "save"], timeout=60).text, source="ipset save"),
            parse_ipvsadm(gen.ipvs, source="ipvsadm -Sn"),
        )


@pytest.fixture(params=["generated", "captured"])
def node(request: pytest.FixtureRequest) -> Node:
    if request.param == "generated":
        return GENERATED
    n: Node = request.getfixturevalue("captured")
    return n


def dist(res: TraceResult) -> dict[tuple[str | None, bool, str], Fraction]:
    return {(o.dnat, o.masquerade, o.verdict): o.probability for o in res.outcomes}


def test_cluster_ip_rr_from_outside_is_masqueraded(node: Node) -> None:
    res = node.trace(Packet("10.96.0.10", 53, src=OUTSIDE, local_ips=LOCAL))
    assert dist(res) == {
        ("10.244.1.2:53", True, "ACCEPT"): Fraction(1, 2),
        ("10.244.2.3:53", True, "ACCEPT"): Fraction(1, 2),
    }
    steps = res.path_examples[0]
    assert "ipvs/TCP 10.96.0.10:53 rr -> 10.244.1.2:53" in steps
    # filter INPUT (KUBE-IPVS-FILTER) before IPVS, KUBE-POSTROUTING after it
    assert steps.index("ipvs/TCP 10.96.0.10:53 rr -> 10.244.1.2:53") > max(
        i for i, s in enumerate(steps) if s.startswith("filter/KUBE-IPVS-FILTER")
    )
    assert any(
        s.startswith("nat/KUBE-POSTROUTING")
        for s in steps[steps.index("ipvs/TCP 10.96.0.10:53 rr -> 10.244.1.2:53") :]
    )
    assert res.notes == ()


def test_cluster_ip_from_a_pod_is_not_masqueraded(node: Node) -> None:
    res = node.trace(Packet("10.96.0.10", 53, src=POD, local_ips=LOCAL))
    assert dist(res) == {
        ("10.244.1.2:53", False, "ACCEPT"): Fraction(1, 2),
        ("10.244.2.3:53", False, "ACCEPT"): Fraction(1, 2),
    }
    udp = node.trace(Packet("10.96.0.10", 53, proto="udp", src=POD, local_ips=LOCAL))
    assert set(udp.endpoints) == {"10.244.1.2:53", "10.244.2.3:53"}


def test_hairpin_masqueraded_by_loop_back_set(node: Node) -> None:
    res = node.trace(Packet("10.96.100.5", 80, src="10.244.1.2", local_ips=LOCAL))
    third = Fraction(1, 3)
    assert dist(res) == {
        ("10.244.1.2:8080", True, "ACCEPT"): third,  # back to itself: KUBE-LOOP-BACK dst,dst,src
        ("10.244.2.3:8080", False, "ACCEPT"): third,
        ("10.244.3.4:8080", False, "ACCEPT"): third,
    }


def test_other_port_of_a_vip_is_rejected(node: Node) -> None:
    res = node.trace(Packet("10.96.0.10", 54, src=POD, local_ips=LOCAL))
    assert dist(res) == {(None, False, "REJECT"): Fraction(1)}
    assert res.path_examples[0][-1].startswith("filter/KUBE-IPVS-FILTER#")


def test_node_port(node: Node) -> None:
    res = node.trace(Packet(NODE_IP, 30053, src=OUTSIDE, local_ips=LOCAL))
    assert dist(res) == {
        ("10.244.1.2:53", True, "ACCEPT"): Fraction(1, 2),
        ("10.244.2.3:53", True, "ACCEPT"): Fraction(1, 2),
    }
    # externalTrafficPolicy: Local → KUBE-NODE-PORT-LOCAL-TCP RETURN (no masquerade), local endpoints only
    res = node.trace(Packet(NODE_IP, 30077, src=OUTSIDE, local_ips=LOCAL))
    assert dist(res) == {("10.244.1.9:80", False, "ACCEPT"): Fraction(1)}
    # a port no Service uses: delivered to the node itself
    assert dist(node.trace(Packet(NODE_IP, 22, src=OUTSIDE, local_ips=LOCAL))) == {(None, False, "ACCEPT"): 1}


def test_load_balancer_ip(node: Node) -> None:
    res = node.trace(Packet("198.51.100.8", 443, src=OUTSIDE, local_ips=LOCAL))
    assert dist(res) == {("10.244.2.8:8443", True, "ACCEPT"): Fraction(1)}  # KUBE-LOAD-BALANCER marks
    res = node.trace(Packet("198.51.100.7", 80, src=OUTSIDE, local_ips=LOCAL))
    assert dist(res) == {("10.244.1.9:80", False, "ACCEPT"): Fraction(1)}  # -LOCAL set: RETURN first


def test_from_the_node_itself(node: Node) -> None:
    # nat OUTPUT → KUBE-MARK-MASQ (the node is outside the cluster CIDR) → POSTROUTING on the lo leg
    res = node.trace(Packet("10.96.0.10", 53, src=NODE_IP, local_ips=LOCAL))
    assert dist(res) == {
        ("10.244.1.2:53", True, "ACCEPT"): Fraction(1, 2),
        ("10.244.2.3:53", True, "ACCEPT"): Fraction(1, 2),
    }
    steps = res.path_examples[0]
    assert steps[0].startswith("nat/OUTPUT#")
    assert steps[-1].startswith("ipvs/") or steps[-1].startswith("filter/OUTPUT")


def test_persistence_keeps_a_returning_client(node: Node) -> None:
    base = Packet("10.96.100.5", 80, src=POD, local_ips=LOCAL)
    res = node.trace(base)
    assert res.endpoints == {ep: Fraction(1, 3) for ep in WEB.endpoints}
    assert any("persistent 10800s" in n for n in res.notes)
    cases = trace(node.iptables, base, ipsets=node.ipsets, ipvs=node.ipvs)  # same via trace()
    assert cases == res
    aff = trace_affinity(node.iptables, base, ipsets=node.ipsets, ipvs=node.ipvs)
    assert set(aff) == set(WEB.endpoints)
    assert is_sticky(aff)
    # without persistence a returning client is scheduled anew
    dns = trace_affinity(
        node.iptables, Packet("10.96.0.10", 53, src=POD, local_ips=LOCAL), ipsets=node.ipsets, ipvs=node.ipvs
    )
    assert not is_sticky(dns)
    assert dns["10.244.1.2:53"].returning.endpoints == {
        "10.244.1.2:53": Fraction(1, 2),
        "10.244.2.3:53": Fraction(1, 2),
    }


# ---- schedulers -----------------------------------------------------------------------------------


def _vs(sched: str, *weights: int, persistent: int | None = None) -> VirtualServer:
    rss = [RealServer(f"10.244.0.{i + 1}", 80, "Masq", w) for i, w in enumerate(weights)]
    return VirtualServer("TCP", "10.96.0.50", 80, sched, persistent, [], rss)


def _shares(vs: VirtualServer) -> dict[str, Fraction]:
    choices, _ = schedule(vs)
    return {r.address: p for r, p in choices}


def test_rr_and_wrr_as_probabilities() -> None:
    # rr ignores weights except 0; wrr is proportional to weight; weight 0 gets nothing
    assert _shares(_vs("rr", 1, 5, 0)) == {"10.244.0.1": Fraction(1, 2), "10.244.0.2": Fraction(1, 2)}
    assert _shares(_vs("wrr", 1, 2, 3, 0)) == {
        "10.244.0.1": Fraction(1, 6),
        "10.244.0.2": Fraction(2, 6),
        "10.244.0.3": Fraction(3, 6),
    }
    assert _shares(_vs("fo", 1, 3, 3)) == {"10.244.0.2": Fraction(1)}
    assert schedule(_vs("rr", 0, 0)) == ([], None)


@pytest.mark.parametrize(
    ("sched", "why"),
    [
        ("lc", "depends on load"),
        ("wlc", "depends on load"),
        ("sh", "hash of the client"),
        ("dh", "hash of the destination"),
        ("mh", "hash"),
    ],
)
def test_load_and_hash_schedulers_say_so(sched: str, why: str) -> None:
    shares, note = schedule(_vs(sched, 1, 3))
    assert {r.address: p for r, p in shares} == {"10.244.0.1": Fraction(1, 4), "10.244.0.2": Fraction(3, 4)}
    assert note is not None
    assert why in note
    assert "not an exact probability" in note
    gen = kube_proxy_ipvs([DNS], scheduler=sched)
    res = trace(
        parse_iptables_save(gen.iptables),
        Packet("10.96.0.10", 53, src=POD, local_ips=LOCAL),
        ipsets=parse_ipset_save(gen.ipsets),
        ipvs=parse_ipvsadm(gen.ipvs),
    )
    assert any(f"scheduler {sched} " in n for n in res.notes)
    assert "notes" in res.to_json()


def test_weights_and_no_real_server() -> None:
    svc = IpvsService(
        "10.96.0.60",
        80,
        ("10.244.1.1:80", "10.244.1.2:80", "10.244.1.3:80"),
        weights={"10.244.1.1:80": 2, "10.244.1.3:80": 0},
    )
    gen = kube_proxy_ipvs([svc], scheduler="wrr")
    sets, vss = parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    rs = parse_iptables_save(gen.iptables)
    res = trace(rs, Packet("10.96.0.60", 80, src=POD, local_ips=LOCAL), ipsets=sets, ipvs=vss)
    assert res.endpoints == {"10.244.1.1:80": Fraction(2, 3), "10.244.1.2:80": Fraction(1, 3)}
    for r in vss[0].real_servers:
        r.weight = 0
    res = trace(rs, Packet("10.96.0.60", 80, src=POD, local_ips=LOCAL), ipsets=sets, ipvs=vss)
    assert dist(res) == {(None, False, "REJECT"): Fraction(1)}
    assert any("no real server with weight > 0" in n for n in res.notes)


def test_route_forwarding_cannot_be_traced() -> None:
    vss = parse_ipvsadm("-A -t 10.96.0.10:53 -s rr\n-a -t 10.96.0.10:53 -r 10.244.1.2:53 -g -w 1\n")
    with pytest.raises(TraceError, match="forward method Route"):
        trace(
            GENERATED.iptables,
            Packet("10.96.0.10", 53, src=POD, local_ips=LOCAL),
            ipsets=GENERATED.ipsets,
            ipvs=vss,
        )


def test_fwmark_service() -> None:
    text = """*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.50.0.1/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x64/0xffffffff
COMMIT
"""
    vss = parse_ipvsadm(
        "-A -f 100 -s rr\n-a -f 100 -r 10.244.1.5:8080 -m -w 1\n-a -f 100 -r 10.244.1.6:8080 -m -w 1\n"
    )
    res = trace_ipvs(
        parse_iptables_save(text), Packet("10.50.0.1", 80, local_ips=LOCAL), ipvs=vss, bound=["10.50.0.1"]
    )
    assert res.endpoints == {"10.244.1.5:8080": Fraction(1, 2), "10.244.1.6:8080": Fraction(1, 2)}
    # not bound on kube-ipvs0 and not a node address: forwarded, IPVS never sees it
    res = trace_ipvs(parse_iptables_save(text), Packet("10.50.0.1", 80, local_ips=LOCAL), ipvs=vss)
    assert res.endpoints == {None: 1}


def test_ipv6_service() -> None:
    svc = IpvsService("fd00:10:96::a", 53, ("[fd00:10:244:1::2]:53", "[fd00:10:244:2::3]:53"))
    gen = kube_proxy_ipvs([svc], node_ips=("fd00:50::2",), cluster_cidr="fd00:10:244::/56")
    assert "create KUBE-6-CLUSTER-IP hash:ip,port family inet6" in gen.ipsets
    assert "-A KUBE-SERVICES -s ::1/128 -j RETURN" in gen.iptables
    rs, sets, vss = parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    local6 = frozenset({"fd00:50::2"})
    res = trace(rs, Packet("fd00:10:96::a", 53, src="2001:db8::1", local_ips=local6), ipsets=sets, ipvs=vss)
    half = Fraction(1, 2)
    assert dist(res) == {
        ("[fd00:10:244:1::2]:53", True, "ACCEPT"): half,
        ("[fd00:10:244:2::3]:53", True, "ACCEPT"): half,
    }
    res = trace(
        rs, Packet("fd00:10:96::a", 53, src="fd00:10:244:9::9", local_ips=local6), ipsets=sets, ipvs=vss
    )
    assert {o.masquerade for o in res.outcomes} == {False}
    res = trace(
        rs, Packet("fd00:10:96::a", 54, src="fd00:10:244:9::9", local_ips=local6), ipsets=sets, ipvs=vss
    )
    assert {o.verdict for o in res.outcomes} == {"REJECT"}


def test_masquerade_all_and_no_local_detector() -> None:
    gen = kube_proxy_ipvs([DNS], masquerade_all=True)
    rs, sets, vss = parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    res = trace(rs, Packet("10.96.0.10", 53, src=POD, local_ips=LOCAL), ipsets=sets, ipvs=vss)
    assert {o.masquerade for o in res.outcomes} == {True}
    gen = kube_proxy_ipvs([DNS], cluster_cidr=None)  # src,dst: only traffic *from* a VIP:port is marked
    rs, sets, vss = parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    assert {
        o.masquerade
        for o in trace(
            rs, Packet("10.96.0.10", 53, src=OUTSIDE, local_ips=LOCAL), ipsets=sets, ipvs=vss
        ).outcomes
    } == {False}
    from_vip = Packet("10.96.0.10", 53, src="10.96.0.10", sport=53, local_ips=LOCAL | {"10.96.0.10"})
    assert {o.masquerade for o in trace(rs, from_vip, ipsets=sets, ipvs=vss).outcomes} == {True}


# ---- the assertion layer ----------------------------------------------------------------------------


def _node_state() -> NodeState:
    gen = kube_proxy_ipvs(SERVICES, node_ips=(NODE_IP,))
    return NodeState(
        "node-1",
        iptables=parse_iptables_save(gen.iptables),
        ipsets=parse_ipset_save(gen.ipsets),
        ipvs=parse_ipvsadm(gen.ipvs),
        addrs=[{"family": "inet", "local": NODE_IP}],
    )


def test_assert_dnat_to_on_ipvs_state() -> None:
    ns = _node_state()
    assert_dnat_to(ns, dst="10.96.0.10:53", endpoints=["10.244.1.2:53", "10.244.2.3:53"])
    assert_masquerade(ns, dst="10.96.0.10:53")
    assert_masquerade(ns, dst="10.96.0.10:53", src=POD, expected=False)
    with pytest.raises(AssertionError, match=r"missing 10\.244\.9\.9:53"):
        assert_dnat_to(ns, dst="10.96.0.10:53", endpoints=["10.244.1.2:53", "10.244.9.9:53"])


def test_load_balancer_source_ranges() -> None:
    fw = IpvsService(
        "10.96.9.9",
        80,
        ("10.244.2.9:80",),
        load_balancer_ips=("198.51.100.9",),
        source_ranges=("203.0.113.0/25",),
    )
    gen = kube_proxy_ipvs([fw], node_ips=(NODE_IP,))
    assert "add KUBE-LOAD-BALANCER-SOURCE-CIDR 198.51.100.9,tcp:80,203.0.113.0/25" in gen.ipsets
    rs, sets, vss = parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    allowed = trace(
        rs, Packet("198.51.100.9", 80, src="203.0.113.10", local_ips=LOCAL), ipsets=sets, ipvs=vss
    )
    assert dist(allowed) == {("10.244.2.9:80", True, "ACCEPT"): Fraction(1)}
    denied = trace(
        rs, Packet("198.51.100.9", 80, src="203.0.113.200", local_ips=LOCAL), ipsets=sets, ipvs=vss
    )
    assert dist(denied) == {(None, False, "DROP"): Fraction(1)}  # dropped in filter INPUT, before IPVS
    assert denied.path_examples[0][-1].startswith("filter/KUBE-SOURCE-RANGES-FIREWALL#")
    # the ClusterIP is not behind the source ranges
    assert trace(
        rs, Packet("10.96.9.9", 80, src="203.0.113.200", local_ips=LOCAL), ipsets=sets, ipvs=vss
    ).endpoints == {"10.244.2.9:80": 1}
    # the node is outside the ranges: kube-proxy also writes a -m ipvs rule, which only a packet from the
    # LB IP itself reaches — and the tracer cannot evaluate (it names the rule, never guesses)
    assert "-A KUBE-IPVS-OUT-FILTER -s 198.51.100.9 -m ipvs --vaddr 198.51.100.9" in gen.iptables
    from_lb = Packet("198.51.100.9", 80, src="198.51.100.9", local_ips=LOCAL | {"198.51.100.9"})
    with pytest.raises(TraceError, match=r"KUBE-IPVS-OUT-FILTER at line \d+: unsupported match -m ipvs"):
        trace(rs, from_lb, ipsets=sets, ipvs=vss)


def test_without_virtual_servers_the_walk_is_the_iptables_one() -> None:
    """An iptables-mode node traced through the IPVS walk (no virtual server) gives the same outcomes
    and paths as the iptables tracer: the stages around the IPVS hook are the kernel's order."""
    from pytest_k8sstate.testing import kube_proxy_iptables, make_services

    svcs = make_services(6, [1, 2, 3, 0, 2, 3], node_ports=3)
    rs = parse_iptables_save(kube_proxy_iptables(svcs))
    pkts = [
        Packet(s.cluster_ip, 80, src=src, local_ips=LOCAL) for s in svcs for src in (OUTSIDE, POD, NODE_IP)
    ]
    pkts += [Packet(NODE_IP, s.node_port, local_ips=LOCAL) for s in svcs if s.node_port]
    for pkt in pkts:
        assert trace(rs, pkt, ipvs=[]) == trace(rs, pkt), pkt


def _jumps(rs: IptablesRuleset, table: str, chain: str) -> list[tuple[str | None, str]]:
    """(target, matched set or source) per rule, the shape kube-proxy's own IPVS tests compare."""
    ch = rs.chain(table, chain)
    assert ch is not None, chain
    out: list[tuple[str | None, str]] = []
    for r in ch.rules:
        ms = r.spec.split("--match-set ", 1)
        src = r.basic("-s")
        out.append((r.target, ms[1].split()[0] if len(ms) > 1 else (src.value or "") if src else ""))
    return out


def test_rule_order_is_kube_proxys() -> None:
    """The chains in the order pkg/proxy/ipvs's tests expect for a LoadBalancer with source ranges and
    an externalTrafficPolicy=Local NodePort (written from reading those expectations)."""
    fw = IpvsService(
        "10.96.9.9", 80, ("10.244.2.9:80",), load_balancer_ips=("1.2.3.4",), source_ranges=("203.0.113.0/25",)
    )
    rs = parse_iptables_save(kube_proxy_ipvs([fw]).iptables)
    assert _jumps(rs, "nat", "KUBE-SERVICES") == [
        ("RETURN", "127.0.0.0/8"),
        ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER"),
        ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP"),
        ("KUBE-NODE-PORT", ""),
        ("ACCEPT", "KUBE-CLUSTER-IP"),
        ("ACCEPT", "KUBE-LOAD-BALANCER"),
    ]
    assert _jumps(rs, "filter", "KUBE-PROXY-FIREWALL") == [
        ("KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-FW")
    ]
    assert _jumps(rs, "filter", "KUBE-SOURCE-RANGES-FIREWALL") == [
        ("RETURN", "KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        ("DROP", ""),
    ]
    loc = IpvsService(
        "10.96.7.7",
        80,
        ("10.244.1.9:80",),
        node_port=30077,
        local_endpoints=("10.244.1.9:80",),
        external_local=True,
    )
    rs = parse_iptables_save(kube_proxy_ipvs([loc]).iptables)
    assert _jumps(rs, "nat", "KUBE-NODE-PORT") == [
        ("RETURN", "KUBE-NODE-PORT-LOCAL-TCP"),
        ("KUBE-MARK-MASQ", "KUBE-NODE-PORT-TCP"),
    ]
    assert _jumps(rs, "filter", "KUBE-NODE-PORT") == [("ACCEPT", "KUBE-HEALTH-CHECK-NODE-PORT")]
    assert _jumps(rs, "nat", "KUBE-POSTROUTING")[0] == ("MASQUERADE", "KUBE-LOOP-BACK")


def test_real_server_on_the_node_itself() -> None:
    """The kubernetes Service's endpoint is the node's own apiserver: IPVS hands the packet to the local
    stack (no POSTROUTING, so no masquerade even though KUBE-MARK-MASQ marked it)."""
    api = IpvsService("10.96.0.1", 443, (f"{NODE_IP}:6443",))
    gen = kube_proxy_ipvs([api], node_ips=(NODE_IP,))
    rs, sets, vss = parse_iptables_save(gen.iptables), parse_ipset_save(gen.ipsets), parse_ipvsadm(gen.ipvs)
    for src in (POD, OUTSIDE):
        res = trace(rs, Packet("10.96.0.1", 443, src=src, local_ips=LOCAL), ipsets=sets, ipvs=vss)
        assert dist(res) == {(f"{NODE_IP}:6443", False, "ACCEPT"): Fraction(1)}
        assert not any(s.startswith("nat/POSTROUTING") for s in res.path_examples[0])
        assert res.path_examples[0][-1].startswith("ipvs/") or res.path_examples[0][-1].startswith(
            "nat/INPUT"
        )


def test_established_is_refused_and_interfaces_are_assumed() -> None:
    """IPVS keeps its own connection table: only a NEW packet is traced. Interfaces the rules name and
    the packet leaves unknown are followed both ways (the iptables tracer's branching), weights sum to 1."""
    with pytest.raises(TraceError, match="IPVS-mode tracing follows a connection's first packet"):
        GENERATED.trace(Packet("10.96.0.10", 53, src=OUTSIDE, local_ips=LOCAL, ctstate="ESTABLISHED"))
    res = GENERATED.trace(Packet("10.96.0.10", 53, src=OUTSIDE, local_ips=LOCAL))
    assert sum(res.shares) == 1
    known = GENERATED.trace(Packet("10.96.0.10", 53, src=OUTSIDE, local_ips=LOCAL, in_iface="eth0"))
    assert (
        known.endpoints == res.endpoints == {"10.244.1.2:53": Fraction(1, 2), "10.244.2.3:53": Fraction(1, 2)}
    )
