"""trace/ipsets.py: ``-m set`` membership, checked against the kernel's own ``ipset test`` in a test
netns, and the ``-m set`` hook of the iptables tracer on rules that iptables-restore loads and
iptables-save prints."""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Iterator

import pytest

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.ipset import IpSet, parse_ipset_save
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.trace import Packet, trace
from pytest_k8sstate.trace.ipsets import CannotEvaluate, PacketView, SetIndex

SETS_TEXT = """\
create IPS hash:ip family inet hashsize 1024 maxelem 65536
add IPS 10.0.0.1
add IPS 10.0.0.7
create IPPORT hash:ip,port family inet hashsize 1024 maxelem 65536
add IPPORT 10.96.0.1,tcp:443
add IPPORT 10.96.0.10,udp:53
add IPPORT 10.96.0.10,tcp:53
create NETS hash:net family inet hashsize 1024 maxelem 65536
add NETS 10.0.0.0/8
add NETS 10.1.0.0/16 nomatch
add NETS 10.1.2.0/24
add NETS 192.168.1.5
create LOOP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add LOOP 10.244.1.3,tcp:8080,10.244.1.3
create SRCCIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
add SRCCIDR 1.2.3.4,tcp:80,203.0.113.0/25
add SRCCIDR 1.2.3.4,tcp:80,203.0.113.7 nomatch
create NETPORT hash:net,port family inet hashsize 1024 maxelem 65536
add NETPORT 10.244.0.0/16,tcp:8080
add NETPORT 10.244.1.0/24,udp:53
create PORTS bitmap:port range 0-65535
add PORTS 30080
add PORTS 30443
create MASKED hash:ip family inet hashsize 1024 maxelem 65536 netmask 24
add MASKED 172.16.5.0
create V6 hash:ip,port family inet6 hashsize 1024 maxelem 65536
add V6 fd00:10:96::a,tcp:443
create V6NETS hash:net family inet6 hashsize 1024 maxelem 65536
add V6NETS fd00::/64
add V6NETS fd00::1 nomatch
create BIP bitmap:ip range 10.9.0.0-10.9.0.255
add BIP 10.9.0.3
add BIP 10.9.0.16/30
create LIST list:set size 8
add LIST IPS
add LIST PORTS
create MACS hash:ip,mac family inet hashsize 1024 maxelem 65536
add MACS 10.0.0.1,02:42:ac:11:00:02
"""


def pv(
    src: str = "203.0.113.10", dst: str = "10.0.0.1", sport: int = 40000, dport: int = 80, proto: str = "tcp"
) -> PacketView:
    return PacketView(src, dst, sport, dport, proto)


@pytest.fixture(scope="module")
def index() -> SetIndex:
    return SetIndex(parse_ipset_save(SETS_TEXT))


@pytest.mark.parametrize(
    ("name", "flags", "packet", "expected"),
    [
        ("IPS", "dst", pv(dst="10.0.0.1"), True),
        ("IPS", "dst", pv(dst="10.0.0.2"), False),
        ("IPS", "src", pv(src="10.0.0.7"), True),
        ("IPS", "src", pv(src="10.0.0.8", dst="10.0.0.7"), False),
        ("IPS", "dst,src", pv(dst="10.0.0.7"), True),  # extra flags are ignored
        ("IPPORT", "dst,dst", pv(dst="10.96.0.1", dport=443), True),
        ("IPPORT", "dst,dst", pv(dst="10.96.0.1", dport=80), False),
        ("IPPORT", "dst,dst", pv(dst="10.96.0.1", dport=443, proto="udp"), False),
        ("IPPORT", "dst,dst", pv(dst="10.96.0.10", dport=53, proto="udp"), True),
        ("IPPORT", "dst", pv(dst="10.96.0.1", dport=443), False),  # fewer flags than dimensions: no match
        ("IPPORT", "src,dst", pv(src="10.96.0.1", dst="9.9.9.9", dport=443), True),
        ("IPPORT", "dst,src", pv(dst="10.96.0.1", dport=443, sport=443), True),
        ("NETS", "dst", pv(dst="10.200.0.1"), True),
        ("NETS", "dst", pv(dst="10.1.9.9"), False),  # most specific entry is nomatch
        ("NETS", "dst", pv(dst="10.1.2.9"), True),  # a more specific entry inside the nomatch one
        ("NETS", "dst", pv(dst="192.168.1.5"), True),
        ("NETS", "dst", pv(dst="192.168.1.6"), False),
        ("LOOP", "dst,dst,src", pv(src="10.244.1.3", dst="10.244.1.3", dport=8080), True),
        ("LOOP", "dst,dst,src", pv(src="10.244.1.4", dst="10.244.1.3", dport=8080), False),
        ("SRCCIDR", "dst,dst,src", pv(src="203.0.113.9", dst="1.2.3.4", dport=80), True),
        ("SRCCIDR", "dst,dst,src", pv(src="203.0.113.7", dst="1.2.3.4", dport=80), False),
        ("SRCCIDR", "dst,dst,src", pv(src="203.0.113.200", dst="1.2.3.4", dport=80), False),
        ("NETPORT", "dst,dst", pv(dst="10.244.7.7", dport=8080), True),
        ("NETPORT", "dst,dst", pv(dst="10.244.7.7", dport=53, proto="udp"), False),
        ("NETPORT", "dst,dst", pv(dst="10.244.1.7", dport=53, proto="udp"), True),
        ("PORTS", "dst", pv(dport=30080), True),
        ("PORTS", "dst", pv(dport=30081), False),
        ("PORTS", "src", pv(sport=30443), True),
        ("PORTS", "dst", pv(dst="fd00::1", dport=30080), True),  # bitmap:port has no family
        ("MASKED", "dst", pv(dst="172.16.5.77"), True),
        ("MASKED", "dst", pv(dst="172.16.6.1"), False),
        ("V6", "dst,dst", pv(src="fd00::9", dst="fd00:10:96::a", dport=443), True),
        ("V6", "dst,dst", pv(dst="10.96.0.1", dport=443), False),  # family mismatch
        ("V6NETS", "dst", pv(src="fd00::9", dst="fd00::2"), True),
        ("V6NETS", "dst", pv(src="fd00::9", dst="fd00::1"), False),
        ("IPS", "dst", pv(src="fd00::9", dst="fd00::1"), False),  # an inet set never matches IPv6
        ("BIP", "dst", pv(dst="10.9.0.3"), True),
        ("BIP", "dst", pv(dst="10.9.0.18"), True),
        ("BIP", "dst", pv(dst="10.9.0.20"), False),
        ("LIST", "dst", pv(dst="10.0.0.1"), True),
        ("LIST", "dst", pv(dst="10.5.5.5", dport=30080), True),
        ("LIST", "dst", pv(dst="10.5.5.5", dport=30081), False),
    ],
)
def test_membership(index: SetIndex, name: str, flags: str, packet: PacketView, expected: bool) -> None:
    assert index.contains(name, flags, packet) is expected


def test_return_nomatch(index: SetIndex) -> None:
    p = pv(dst="10.1.9.9")
    assert index.contains("NETS", "dst", p) is False
    assert index.contains("NETS", "dst", p, return_nomatch=True) is True


def test_unknown_type_and_missing_set(index: SetIndex) -> None:
    with pytest.raises(CannotEvaluate, match=r"set MACS \(type hash:ip,mac\)"):
        index.contains("MACS", "dst,src", pv())
    with pytest.raises(CannotEvaluate, match=r"set NOPE \(type unknown\) is not among the captured ipsets"):
        index.contains("NOPE", "dst", pv())
    with pytest.raises(CannotEvaluate, match="direction flags"):
        index.contains("IPS", "dst,up", pv())


def test_bad_member_named() -> None:
    idx = SetIndex([IpSet("B", "hash:ip,port", {"family": "inet"}, ["10.0.0.1,tcp:http-ish"])])
    with pytest.raises(CannotEvaluate, match=r"set B \(type hash:ip,port\): cannot read port 'tcp:http-ish'"):
        idx.contains("B", "dst,dst", pv())


# ---- the tracer hook ----------------------------------------------------------------------------

RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CHECK - [0:0]
-A FORWARD -m set --match-set NETS src -j CHECK
-A FORWARD -m set ! --match-set IPPORT dst,dst -j DROP
-A CHECK -p tcp -m set --match-set PORTS dst -j REJECT
COMMIT
"""


def test_tracer_set_and_negation() -> None:
    rs = parse_iptables_save(RULES)
    sets = parse_ipset_save(SETS_TEXT)
    # not in IPPORT → dropped by the negated rule
    assert {o.verdict for o in trace(rs, Packet("10.96.0.1", 80), ipsets=sets).outcomes} == {"DROP"}
    # in IPPORT, source not in NETS → accepted
    assert {o.verdict for o in trace(rs, Packet("10.96.0.1", 443), ipsets=sets).outcomes} == {"ACCEPT"}
    # from 10.200.0.1 (in NETS) → CHECK; port 30080 is not the destination port: accepted
    assert {
        o.verdict for o in trace(rs, Packet("10.96.0.1", 443, src="10.200.0.1"), ipsets=sets).outcomes
    } == {"ACCEPT"}
    rs2 = parse_iptables_save(RULES.replace("--match-set PORTS dst", "--match-set PORTS src"))
    res = trace(rs2, Packet("10.96.0.1", 443, src="10.200.0.1", sport=30080), ipsets=sets)
    assert {o.verdict for o in res.outcomes} == {"REJECT"}
    assert any("filter/CHECK#8" in step for step in res.path_examples[0])


def test_tracer_errors_name_rule_and_line() -> None:
    rs = parse_iptables_save(RULES.replace("--match-set NETS", "--match-set NOPE"))
    with pytest.raises(TraceError, match=r"at line 6: cannot evaluate -m set: set NOPE \(type unknown\)"):
        trace(rs, Packet("10.96.0.1", 443), ipsets=parse_ipset_save(SETS_TEXT))
    with pytest.raises(TraceError, match=r"at line 6: .*set NETS \(type unknown\): no ipsets were given"):
        trace(parse_iptables_save(RULES), Packet("10.96.0.1", 443))
    rs3 = parse_iptables_save(RULES.replace("--match-set NETS src", "--match-set MACS src,src"))
    with pytest.raises(TraceError, match=r"filter/FORWARD at line 6: .*set MACS \(type hash:ip,mac\)"):
        trace(rs3, Packet("10.96.0.1", 443), ipsets=parse_ipset_save(SETS_TEXT))


# ---- the kernel as the oracle ---------------------------------------------------------------------


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates a network namespace and loads ipsets"
    for prog in ("ip", "ipset", "iptables-restore", "iptables-save"):
        if shutil.which(prog) is None:
            return f"{prog} not installed (apt-get install ipset iptables iproute2)"
    return None


@pytest.fixture(scope="module")
def ns() -> Iterator[NetnsExec]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with netns.temporary("ipset") as n:
        kernel_sets = "".join(
            line + "\n" for line in SETS_TEXT.splitlines() if "MACS" not in line and "LIST" not in line
        )
        res = n.run(["ipset", "restore"], input=kernel_sets.encode(), timeout=60, check=False)
        if res.returncode != 0:
            pytest.fail(f"ipset restore refused the test sets: {res.stderr.decode(errors='replace')}")
        yield n


@pytest.mark.needs_root
def test_saved_sets_round_trip(ns: NetnsExec) -> None:
    """What the real `ipset save` prints parses into sets with the same membership."""
    saved = SetIndex(parse_ipset_save(ns.run(["ipset", "save"], timeout=60).text, source="ipset save"))
    ours = SetIndex(parse_ipset_save(SETS_TEXT))
    for name, flags, packet in [
        ("NETS", "dst", pv(dst="10.1.9.9")),
        ("NETS", "dst", pv(dst="10.1.2.9")),
        ("V6NETS", "dst", pv(src="fd00::9", dst="fd00::1")),
        ("BIP", "dst", pv(dst="10.9.0.19")),
        ("MASKED", "dst", pv(dst="172.16.5.200")),
    ]:
        assert saved.contains(name, flags, packet) == ours.contains(name, flags, packet)


def _kernel_test(ns: NetnsExec, name: str, elem: str) -> bool:
    res = ns.run(["ipset", "test", name, elem], timeout=30, check=False)
    return res.returncode == 0


@pytest.mark.needs_root
def test_membership_agrees_with_kernel(ns: NetnsExec) -> None:
    """Random addresses/ports near the members: our answer == `ipset test` in the kernel."""
    idx = SetIndex(parse_ipset_save(SETS_TEXT))
    rnd = random.Random(12)
    checked = 0
    for _ in range(30):
        a = f"10.{rnd.choice([0, 1, 2, 5])}.{rnd.choice([0, 2, 9])}.{rnd.choice([1, 7, 9])}"
        assert idx.contains("NETS", "dst", pv(dst=a)) == _kernel_test(ns, "NETS", a), a
        assert idx.contains("IPS", "dst", pv(dst=a)) == _kernel_test(ns, "IPS", a), a
        port = rnd.choice([53, 443, 8080])
        proto = rnd.choice(["tcp", "udp"])
        vip = rnd.choice(["10.96.0.1", "10.96.0.10"])
        got = idx.contains("IPPORT", "dst,dst", pv(dst=vip, dport=port, proto=proto))
        assert got == _kernel_test(ns, "IPPORT", f"{vip},{proto}:{port}"), (vip, proto, port)
        net = f"10.244.{rnd.choice([0, 1, 3])}.{rnd.choice([1, 200])}"
        got = idx.contains("NETPORT", "dst,dst", pv(dst=net, dport=port, proto=proto))
        assert got == _kernel_test(ns, "NETPORT", f"{net},{proto}:{port}"), (net, proto, port)
        src = f"203.0.113.{rnd.choice([7, 9, 127, 128, 200])}"
        got = idx.contains("SRCCIDR", "dst,dst,src", pv(src=src, dst="1.2.3.4", dport=80))
        assert got == _kernel_test(ns, "SRCCIDR", f"1.2.3.4,tcp:80,{src}"), src
        v6 = rnd.choice(["fd00::1", "fd00::2", "fd00:1::1"])
        assert idx.contains("V6NETS", "dst", pv(src="fd00::9", dst=v6)) == _kernel_test(ns, "V6NETS", v6), v6
        checked += 6
    assert checked == 180


@pytest.mark.needs_root
def test_kernel_rules_round_trip(ns: NetnsExec) -> None:
    """The rules as iptables-save prints them back (its own spelling of -m set) trace the same."""
    reset = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    res = ns.run(["iptables-restore"], input=(reset + RULES).encode(), timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    saved = parse_iptables_save(ns.run(["iptables-save"], timeout=60).text, source="iptables-save")
    sets = parse_ipset_save(ns.run(["ipset", "save"], timeout=60).text)
    for pkt in [
        Packet("10.96.0.1", 80),
        Packet("10.96.0.1", 443),
        Packet("10.96.0.1", 30080, src="10.200.0.1"),
    ]:
        a = trace(saved, pkt, ipsets=sets)
        b = trace(parse_iptables_save(RULES), pkt, ipsets=sets)
        assert [(o.verdict, o.probability) for o in a.outcomes] == [
            (o.verdict, o.probability) for o in b.outcomes
        ]


def test_hostile_sets_are_named_not_expanded_forever() -> None:
    members = [f"10.0.{i // 250}.{i % 250},tcp:0-65535" for i in range(40)]
    idx = SetIndex([IpSet("HUGE", "hash:ip,port", {"family": "inet"}, members)])
    with pytest.raises(CannotEvaluate, match=r"set HUGE \(type hash:ip,port\): more than 1000000 entries"):
        idx.contains("HUGE", "dst,dst", pv())
    for bad, why in [
        ("10.0.0.0/33", "cannot read address '10.0.0.0/33'"),
        ("fd00::1", "is not an IPv4 address"),
        ("10.0.0.1-fd00::1", "cannot read address"),
        ("10.0.0.1,tcp:1", "does not have 1 parts"),
    ]:
        idx = SetIndex([IpSet("S", "hash:net", {"family": "inet"}, [bad])])
        with pytest.raises(CannotEvaluate, match=re.escape(why)):
            idx.contains("S", "dst", pv())
    with pytest.raises(CannotEvaluate, match="unknown family 'inet7'"):
        SetIndex([IpSet("F", "hash:ip", {"family": "inet7"}, [])]).contains("F", "dst", pv())
