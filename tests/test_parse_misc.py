"""ipset, IPVS and ``ip -j`` parsers.

ipsets and links/addresses/routes are created for real in a network namespace of our own and read back
with the real tools. IPVS is the exception: this kernel has no ``ip_vs``, so ``ipvsadm`` cannot list
anything here — ``tests/data/ipvsadm-*.txt`` are FAKES of that boundary, written in the exact format
``ipvsadm -Ln`` / ``ipvsadm -Sn`` print (kube-proxy IPVS mode on a kind node).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.iproute import ADDR_FIELDS, LINK_FIELDS, ROUTE_FIELDS, parse_ip_json
from pytest_k8sstate.parse.ipset import IpSet, parse_ipset_save
from pytest_k8sstate.parse.ipvs import RealServer, VirtualServer, parse_ipvsadm

DATA = Path(__file__).parent / "data"


def _need(*binaries: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    for b in binaries:
        if shutil.which(b) is None:
            pytest.skip(f"{b} not installed (apt-get install ipset iproute2)")


# --------------------------------------------------------------------------- ipset

KUBE_IPSETS = """\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443 comment "default/kubernetes:https"
add KUBE-CLUSTER-IP 10.96.0.10,udp:53
add KUBE-CLUSTER-IP 10.96.0.10,tcp:53
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.244.0.3,tcp:53,10.244.0.3
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
create KUBE-LB-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536 timeout 300 counters
add KUBE-LB-SOURCE-CIDR 1.2.3.4,tcp:80,203.0.113.0/25 timeout 250
create KUBE-EXCLUDE hash:net family inet hashsize 1024 maxelem 65536
add KUBE-EXCLUDE 10.0.0.0/8
add KUBE-EXCLUDE 10.1.0.0/16 nomatch
"""


def test_ipset_real_restore_and_save() -> None:
    _need("ipset")
    with netns.temporary("ipset") as ns:
        ns.run(["ipset", "restore"], input=KUBE_IPSETS.encode(), timeout=30)
        saved = ns.run(["ipset", "save"], timeout=30).text
    sets = {s.name: s for s in parse_ipset_save(saved, source="ipset save (netns)")}
    assert list(sets) == [
        "KUBE-CLUSTER-IP",
        "KUBE-LOOP-BACK",
        "KUBE-NODE-PORT-TCP",
        "KUBE-LB-SOURCE-CIDR",
        "KUBE-EXCLUDE",
    ]
    cip = sets["KUBE-CLUSTER-IP"]
    assert cip.type == "hash:ip,port"
    assert sorted(cip.members) == ["10.96.0.1,tcp:443", "10.96.0.10,tcp:53", "10.96.0.10,udp:53"]
    assert cip.member_comments == {"10.96.0.1,tcp:443": "default/kubernetes:https"}
    assert cip.options["family"] == "inet"
    assert cip.options["comment"] == ""
    assert "initval" not in cip.stable_options()
    assert sets["KUBE-NODE-PORT-TCP"].members == ["30080"]
    assert sets["KUBE-NODE-PORT-TCP"].options["range"] == "0-65535"
    lb = sets["KUBE-LB-SOURCE-CIDR"]
    assert lb.members == ["1.2.3.4,tcp:80,203.0.113.0/25"]  # remaining timeout / counters are not identity
    assert sorted(sets["KUBE-EXCLUDE"].members) == ["10.0.0.0/8", "10.1.0.0/16 nomatch"]
    for s in sets.values():
        assert IpSet.from_json(json.loads(json.dumps(s.to_json()))) == s


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("create X\n", 1, "create NAME TYPE"),
        ("add X 1.2.3.4\n", 1, "'create X"),
        ("create X hash:ip\nflush X\n", 2, "'create' or 'add'"),
        ("create X hash:ip hashsize\n", 1, "value after option"),
        ("create X hash:ip\ncreate X hash:ip\n", 2, "created only once"),
        ("create X notatype\n", 1, "set type"),
    ],
)
def test_ipset_errors_name_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(ParseError, match=what) as ei:
        parse_ipset_save(text, source="dump")
    assert ei.value.line == line
    assert ei.value.source == "dump"


_IPSET_LINES = st.lists(
    st.sampled_from(["create", "add", "flush", "", "#"]).flatmap(
        lambda verb: st.lists(
            st.sampled_from(["S", "hash:ip", "1.2.3.4", "comment", '"a b"', "timeout", "5", "nomatch", '"'])
            | st.text(max_size=6),
            max_size=6,
        ).map(lambda toks: " ".join([verb, *toks]))
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(_IPSET_LINES.map("\n".join) | st.text(max_size=80))
def test_ipset_fuzz_raises_only_parse_error(text: str) -> None:
    try:
        for s in parse_ipset_save(text):
            assert IpSet.from_json(s.to_json()) == s
    except ParseError:
        pass


# --------------------------------------------------------------------------- IPVS (fake boundary)

EXPECTED_IPVS = [
    VirtualServer("TCP", "10.96.0.1", 443, "rr", real_servers=[RealServer("172.18.0.3", 6443, "Masq", 1)]),
    VirtualServer(
        "TCP",
        "10.96.0.10",
        53,
        "rr",
        real_servers=[RealServer("10.244.0.3", 53, "Masq", 1), RealServer("10.244.0.4", 53, "Masq", 1)],
    ),
    VirtualServer(
        "TCP",
        "10.96.0.10",
        9153,
        "rr",
        real_servers=[RealServer("10.244.0.3", 9153, "Masq", 1), RealServer("10.244.0.4", 9153, "Masq", 1)],
    ),
    VirtualServer(
        "TCP", "10.96.100.5", 80, "rr", 10800, real_servers=[RealServer("10.244.1.2", 8080, "Masq", 1)]
    ),
    VirtualServer("TCP", "172.18.0.3", 30080, "rr", real_servers=[RealServer("10.244.1.2", 8080, "Masq", 1)]),
    VirtualServer(
        "UDP",
        "10.96.0.10",
        53,
        "rr",
        real_servers=[RealServer("10.244.0.3", 53, "Masq", 1), RealServer("10.244.0.4", 53, "Masq", 1)],
    ),
    VirtualServer("TCP", "192.168.50.1", 80, "wrr", real_servers=[RealServer("10.1.1.5", 80, "Tunnel", 3)]),
    VirtualServer("FWM", "100", None, "wlc", real_servers=[RealServer("192.168.1.10", 0, "Route", 1)]),
    VirtualServer(
        "TCP", "fd00:10:96::1", 443, "rr", real_servers=[RealServer("fc00:f853:ccd:e793::3", 6443, "Masq", 1)]
    ),
]


def _key(v: VirtualServer) -> tuple[str, str, int | None]:
    return (v.protocol, v.address, v.port)


def test_ipvsadm_list_format() -> None:
    got = parse_ipvsadm((DATA / "ipvsadm-Ln.txt").read_text(), source="ipvsadm-Ln.txt")
    assert sorted(got, key=_key) == sorted(EXPECTED_IPVS, key=_key)


def test_ipvsadm_save_format_gives_the_same_services() -> None:
    got = parse_ipvsadm((DATA / "ipvsadm-Sn.txt").read_bytes(), source="ipvsadm-Sn.txt")
    assert sorted(got, key=_key) == sorted(EXPECTED_IPVS, key=_key)
    for v in got:
        assert VirtualServer.from_json(json.loads(json.dumps(v.to_json()))) == v
    assert got[0].key == "TCP 10.96.0.1:443"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("  -> 1.2.3.4:80 Masq 1 0 0\n", "virtual server line before"),
        ("TCP 10.96.0.1 rr\n", "ADDRESS:PORT"),
        ("TCP 10.96.0.1:80 rr\n  -> 1.2.3.4:80 Bogus 1 0 0\n", "forward method"),
        ("TCP 10.96.0.1:80 rr\n  -> 1.2.3.4:80 Masq x 0 0\n", "weight"),
        ("-a -t 10.96.0.1:443 -r 1.2.3.4:80 -m -w 1\n", "-A line"),
        ("-A -s rr\n", "-t, -u"),
        ("-X foo\n", "-A \\(service\\)"),
        ("FWM abc rr\n", "firewall mark"),
    ],
)
def test_ipvsadm_errors(text: str, what: str) -> None:
    with pytest.raises(ParseError, match=what) as ei:
        parse_ipvsadm(text, source="ipvs.txt")
    assert ei.value.line is not None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["TCP", "UDP", "FWM", "->", "-A", "-a", "-t", "-r", "-m", "-w", "-p", "rr", "Masq", "1"]
        )
        | st.sampled_from(["10.0.0.1:80", "[fd00::1]:443", "1.2.3.4", ":", "99999", "persistent"])
        | st.text(max_size=5),
        max_size=7,
    ).map(" ".join),
    st.integers(0, 3),
)
def test_ipvsadm_fuzz_raises_only_parse_error(line: str, repeat: int) -> None:
    for text in (
        line,
        "TCP 10.0.0.1:80 rr\n" + line * repeat,
        "-A -t 10.0.0.1:80 -s rr\n" + (line + "\n") * repeat,
    ):
        try:
            parse_ipvsadm(text)
        except ParseError:
            pass


# --------------------------------------------------------------------------- ip -j


def test_ip_json_real_links_addrs_routes() -> None:
    _need("ip")
    with netns.temporary("ipj") as ns:
        for argv in (
            ["ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b"],
            ["ip", "link", "add", "kube-ipvs0", "type", "bridge"],  # this kernel has no "dummy" module
            ["ip", "addr", "add", "192.168.7.2/24", "dev", "veth-a"],
            ["ip", "addr", "add", "10.96.0.1/32", "dev", "kube-ipvs0"],
            ["ip", "link", "set", "veth-a", "up"],
            ["ip", "link", "set", "veth-b", "up"],
            ["ip", "link", "set", "kube-ipvs0", "up"],
            ["ip", "route", "add", "10.244.1.0/24", "via", "192.168.7.3", "dev", "veth-a"],
            ["ip", "route", "add", "10.244.2.0/24", "via", "192.168.7.4", "dev", "veth-a", "table", "100"],
        ):
            ns.run(argv, timeout=10)
        links = parse_ip_json(ns.run(["ip", "-j", "-d", "link", "show"]).stdout, "link")
        addrs = parse_ip_json(ns.run(["ip", "-j", "addr", "show"]).stdout, "addr")
        routes = parse_ip_json(ns.run(["ip", "-j", "route", "show", "table", "all"]).stdout, "route")
        again = parse_ip_json(ns.run(["ip", "-j", "-d", "link", "show"]).stdout, "link")
    by_name = {link["ifname"]: link for link in links}
    assert by_name["veth-a"]["kind"] == "veth"
    assert by_name["kube-ipvs0"]["kind"] == "bridge"
    assert by_name["lo"]["link_type"] == "loopback"
    assert all(tuple(link) == LINK_FIELDS for link in links)
    assert links == again  # nothing volatile kept
    assert {(a["ifname"], a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"} >= {
        ("veth-a", "192.168.7.2", 24),
        ("kube-ipvs0", "10.96.0.1", 32),
        ("lo", "127.0.0.1", 8),
    }
    assert all(tuple(a) == ADDR_FIELDS for a in addrs)
    rk = {(r["table"], r["type"], r["dst"], r["gateway"]) for r in routes}
    assert ("main", "unicast", "10.244.1.0/24", "192.168.7.3") in rk
    assert ("100", "unicast", "10.244.2.0/24", "192.168.7.4") in rk
    assert ("local", "local", "10.96.0.1", None) in rk
    assert all(tuple(r) == ROUTE_FIELDS for r in routes)


def test_ip_json_drops_volatile_fields() -> None:
    raw = [
        {
            "ifindex": 7,
            "ifname": "eth0",
            "flags": ["UP", "BROADCAST"],
            "mtu": 1500,
            "qdisc": "noqueue",
            "operstate": "UP",
            "link_index": 8,
            "link_netnsid": 0,
            "stats64": {"rx": {"bytes": 1}},
            "addr_info": [
                {
                    "family": "inet6",
                    "local": "fe80::1",
                    "prefixlen": 64,
                    "scope": "link",
                    "valid_life_time": 4294967295,
                    "preferred_life_time": 100,
                },
                {},
            ],
        }
    ]
    (link,) = parse_ip_json(json.dumps(raw), "link")
    assert link["flags"] == ["BROADCAST", "UP"]
    assert "ifindex" not in link
    assert "stats64" not in link
    (addr,) = parse_ip_json(json.dumps(raw), "addr")
    assert addr == {
        "ifname": "eth0",
        "family": "inet6",
        "local": "fe80::1",
        "prefixlen": 64,
        "scope": "link",
        "broadcast": None,
        "label": None,
        "peer": None,
    }
    assert parse_ip_json("", "route") == []


@pytest.mark.parametrize(
    ("text", "kind", "what"),
    [
        ("{", "link", "valid JSON"),
        ("{}", "link", "JSON list"),
        ("[1]", "addr", r"object at \[0\]"),
        ('[{"mtu": 1}]', "link", "ifname"),
        ('[{"ifname": "x", "addr_info": [{"family": "inet"}]}]', "addr", "local"),
        ('[{"table": "main"}]', "route", "dst"),
        ('[{"dst": "default", "metric": [1]}]', "route", r"\[0\]\.metric"),
        ("[]", "neigh", "kind"),
    ],
)
def test_ip_json_errors(text: str, kind: Any, what: str) -> None:
    with pytest.raises(ParseError, match=what):
        parse_ip_json(text, kind)


_j = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda k: (
        st.lists(k, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["ifname", "dst", "addr_info", "local", "flags", "linkinfo", "info_kind", "table", "x"]
            ),
            k,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_j, st.sampled_from(["link", "addr", "route"]))
def test_ip_json_fuzz_raises_only_parse_error(data: Any, kind: Any) -> None:
    for text in (json.dumps(data), json.dumps([data])):
        try:
            parse_ip_json(text, kind)
        except ParseError:
            pass
