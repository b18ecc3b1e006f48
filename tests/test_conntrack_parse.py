"""parse/conntrack.py: ``conntrack -L`` in both formats, both families, every protocol shape; hostile
lines give a ParseError naming the line and the field."""

from __future__ import annotations

import random

import pytest

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.parse.conntrack import ConntrackEntry, parse_conntrack

# written for these tests in the shapes conntrack-tools 1.4.7 prints (kind node, kernel 6.x)
EXTENDED = """\
ipv4     2 tcp      6 81 TIME_WAIT src=172.18.0.3 dst=10.96.31.234 sport=44902 dport=80 \
src=10.244.2.2 dst=172.18.0.3 sport=8080 dport=15879 [ASSURED] mark=0 use=1
ipv4     2 udp      17 25 src=10.244.0.3 dst=172.18.0.1 sport=54755 dport=53 [UNREPLIED] \
src=127.0.0.11 dst=10.244.0.3 sport=55852 dport=54755 mark=16384 zone=3 use=1
ipv4     2 icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=1234 src=10.0.0.2 dst=10.0.0.1 \
type=0 code=0 id=1234 mark=0 use=1 id=3735928559
ipv6     10 tcp      6 431999 ESTABLISHED src=fd00::1 dst=fd00:10:96::a sport=50000 dport=443 \
src=fd00:10:244::5 dst=fd00::1 sport=6443 dport=50000 [ASSURED] mark=0 use=2
ipv4     2 gre      47 179 src=192.0.2.1 dst=192.0.2.2 srckey=0x0 dstkey=0x0 src=192.0.2.2 \
dst=192.0.2.1 srckey=0x0 dstkey=0x0 [ASSURED] mark=0 use=1
ipv4     2 unknown  2 599 src=10.1.1.1 dst=224.0.0.1 [UNREPLIED] src=224.0.0.1 dst=10.1.1.1 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.
"""


def test_extended_format_every_shape():
    tcp, udp, icmp, v6, gre, unknown = parse_conntrack(EXTENDED.encode())
    assert (tcp.family, tcp.proto, tcp.protonum, tcp.timeout, tcp.state) == (
        "ipv4",
        "tcp",
        6,
        81,
        "TIME_WAIT",
    )
    assert (tcp.orig.src, tcp.orig.dst, tcp.orig.sport, tcp.orig.dport) == (
        "172.18.0.3",
        "10.96.31.234",
        44902,
        80,
    )
    assert (tcp.reply.src, tcp.reply.sport, tcp.reply.dport) == ("10.244.2.2", 8080, 15879)
    assert tcp.dnat
    assert tcp.snat
    assert tcp.flags == ("ASSURED",)
    assert tcp.mark == 0
    assert dict(tcp.fields) == {"use": "1"}
    assert udp.state is None
    assert udp.flags == ("UNREPLIED",)
    assert udp.mark == 16384
    assert udp.zone == 3
    assert udp.dnat
    assert not udp.snat
    assert icmp.orig.sport is None
    assert dict(icmp.orig.extra) == {"type": "8", "code": "0", "id": "1234"}
    assert dict(icmp.reply.extra)["type"] == "0"
    assert dict(icmp.fields) == {"use": "1", "id": "3735928559"}  # the conntrack id, after the tuples
    assert not icmp.dnat
    assert v6.family == "ipv6"
    assert v6.orig.dst == "fd00:10:96::a"
    assert v6.reply.sport == 6443
    assert v6.dnat
    assert str(v6).startswith("tcp ESTABLISHED [fd00::1]:50000 -> [fd00:10:96::a]:443 | reply")
    assert gre.orig.sport is None
    assert dict(gre.orig.extra) == {"srckey": "0x0", "dstkey": "0x0"}
    assert unknown.proto == "unknown"
    assert unknown.protonum == 2
    assert unknown.orig.dst == "224.0.0.1"


def test_default_format_and_round_trip():
    line = (
        "tcp      6 117 TIME_WAIT src=172.18.0.3 dst=10.96.5.7 sport=40312 dport=80 src=10.244.1.4 "
        "dst=172.18.0.3 sport=8080 dport=40312 [ASSURED] mark=0 use=1\n"
    )
    [e] = parse_conntrack(line)
    assert e.family == "ipv4"
    assert e.reply.src == "10.244.1.4"
    assert e.dnat
    assert not e.snat
    parsed = parse_conntrack(EXTENDED)
    assert [ConntrackEntry.from_json(x.to_json()) for x in parsed] == parsed


def test_empty_and_summary_only():
    assert parse_conntrack(b"") == []
    assert parse_conntrack("\nconntrack v1.4.8 (conntrack-tools): 0 flow entries have been shown.\n") == []


GOOD = (
    "ipv4 2 tcp 6 81 TIME_WAIT src=172.18.0.3 dst=10.96.31.234 sport=44902 dport=80 "
    "src=10.244.2.2 dst=172.18.0.3 sport=8080 dport=15879 [ASSURED] mark=0 use=1"
)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (GOOD.replace("ipv4 2", "ipv4 10"), "layer 3 number 2"),
        (GOOD.replace("tcp 6", "TCP 6"), "protocol name"),
        (GOOD.replace("tcp 6", "tcp 999"), "protocol number"),
        (GOOD.replace(" 81 ", " -1 "), "timeout"),
        (GOOD.replace("src=172.18.0.3", "src=172.18.0.300"), "original src="),
        (
            GOOD.replace("dst=172.18.0.3 sport=8080", "dst=fd00::1 sport=8080"),
            "reply tuple: src= and dst= of one",
        ),
        (GOOD.replace("sport=44902", "sport=70000"), "original sport="),
        (GOOD.replace("dport=15879", "dport=x"), "reply dport="),
        (GOOD.replace("sport=44902 ", ""), "both sport= and dport="),
        (GOOD.replace(" sport=44902 dport=80", ""), "protocol 6 has ports"),
        (GOOD.replace("mark=0", "mark=4294967296"), "mark="),
        (GOOD.replace("mark=0", "mark"), "KEY=VALUE or [FLAG]"),
        (GOOD.replace("[ASSURED]", "[assured"), "KEY=VALUE or [FLAG]"),
        (GOOD.split(" src=10.244")[0], "an original and a reply tuple"),
        (GOOD.replace("src=172.18.0.3 dst=10.96", "dst=10.96"), "src= (the original tuple)"),
        (GOOD.replace("dport=80 ", "dport=80 dport=81 "), "a key appears once"),
        ("ipv4 2 tcp", "PROTO PROTONUM TIMEOUT"),
        (GOOD.replace("ipv4 2", "ipv6 10"), "ipv6 addresses"),
        (GOOD + " x" * 3000, "at most 4096 characters"),
    ],
)
def test_bad_line_names_line_and_field(line, field):
    text = EXTENDED.splitlines()[0] + "\n" + line + "\n"
    with pytest.raises(ParseError) as err:
        parse_conntrack(text, source="conntrack -L (node n1)")
    assert err.value.line == 2
    assert str(err.value).startswith("conntrack -L (node n1):2: expected")
    assert field in str(err.value)


def test_binary_and_nul_are_parse_errors():
    with pytest.raises(ParseError, match="UTF-8"):
        parse_conntrack(b"ipv4 2 tcp 6 1 \xff\xfe")
    with pytest.raises(ParseError, match=":1: expected text without NUL"):
        parse_conntrack(GOOD.replace("use=1", "use=\x001"))


def test_generated_hostile_lines_raise_only_parse_errors():
    """Random mutations of real lines: each parses or raises ParseError naming its line — nothing else."""
    rng = random.Random(20261203)
    lines = [ln for ln in EXTENDED.splitlines() if not ln.startswith("conntrack v")]
    alphabet = "=[] :.0123456789abcdefxsrcdptiv\t-"
    for _ in range(3000):
        chars = list(rng.choice(lines))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(chars) + 1)
            if op < 0.4 and chars:
                del chars[min(pos, len(chars) - 1)]
            elif op < 0.8:
                chars.insert(pos, rng.choice(alphabet))
            else:
                chars[pos:pos] = list(rng.choice(lines)[: rng.randint(0, 40)])
        text = "".join(chars)
        try:
            entries = parse_conntrack(text + "\n")
        except ParseError as exc:
            failed_line = exc.line
        else:
            failed_line = None
        if failed_line is not None:
            assert failed_line == 1, text
            continue
        for e in entries:
            assert ConntrackEntry.from_json(e.to_json()) == e
