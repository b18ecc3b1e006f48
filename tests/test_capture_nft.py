"""The nf_tables fast path of the iptables capture: the same parse result as ``iptables-save -c``.

Rules are loaded with the real ``iptables-nft-restore`` into a temporary namespace; each test captures
the namespace twice — over netlink (``nft_fast=True``) and with the real ``iptables-save -c`` — and
requires identical rulesets (every table, chain, policy, counter, rule spec and line number), plus
line-for-line identical text from the translator itself.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.node import iptfast, netns, nfdump, nftomit
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse import iptnft, nfnl
from pytest_k8sstate.parse.iptnft import HEADER, Untranslatable, netlink_to_iptables_save
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing import kube_proxy_iptables, make_services

_DUMPER = Path(__file__).resolve().parents[1] / "pytest_k8sstate" / "node" / "nfdump.py"


def _nft_backend() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, netfilter)"
    for b in ("iptables-nft-restore", "ip6tables-nft-restore", "iptables-save", "ip6tables-save"):
        if shutil.which(b) is None:
            return f"{b} not found (apt-get install iptables)"
    v = subprocess.run(["iptables", "-V"], capture_output=True, text=True, timeout=10).stdout
    return None if "nf_tables" in v else f"iptables is not the nf_tables variant here ({v.strip()})"


_SKIP = _nft_backend()
needs_nft = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetnsExec]:
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 0)  # the fast path even for small rulesets
    with netns.temporary("capnft") as n:
        yield n


def _load(ns: NetnsExec, text: str, v6: bool = False) -> None:
    ns.run(["ip6tables-nft-restore" if v6 else "iptables-nft-restore"], input=text.encode(), timeout=120)


def _both(ns: NetnsExec, part: str = "iptables") -> tuple[NodeState, NodeState]:
    fast = collect_node(ns, parts=[part], nft_fast=True)
    slow = collect_node(ns, parts=[part], nft_fast=False)
    assert not fast.errors, fast.errors
    assert not slow.errors, slow.errors
    assert slow.methods == {}
    return fast, slow


def _text_matches(ns: NetnsExec, family: int) -> None:
    """The translator's own text equals iptables-save -c's, line for line (comment lines aside)."""
    raw = ns.run([sys.executable, str(_DUMPER), str(family)], timeout=120).stdout
    assert raw.startswith(HEADER)
    mine = netlink_to_iptables_save(raw).splitlines()
    save = "ip6tables-save" if family == 10 else "iptables-save"
    real = ns.run([save, "-c"], timeout=300).text.splitlines()
    assert len(mine) == len(real)
    assert [x for x in mine if not x.startswith("#")] == [x for x in real if not x.startswith("#")]


# Docker, a k3s-style firewall and kube-proxy's session affinity: the extensions real nodes carry.
ZOO = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:ZZ-LAST - [0:0]
:AA-FIRST - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 22,80,443,8000:8080 -j ACCEPT
-A INPUT -p udp -m udp --sport 53 --dport 1024:65535 -j ACCEPT
-A INPUT -p tcp -m tcp ! --dport 25 --tcp-flags SYN,RST,ACK SYN -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A INPUT -s 192.168.0.0/255.255.0.255 -j DROP
-A INPUT -m mark --mark 0x1 -j DROP
-A FORWARD -i eth+ ! -o veth12 -j RETURN
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -m conntrack ! --ctstate NEW,INVALID -j ACCEPT
-A FORWARD -p tcp -j REJECT --reject-with tcp-reset
-A FORWARD -j REJECT
-A FORWARD -p udp -m multiport ! --sports 1,2 -g DOCKER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A ZZ-LAST -j AA-FIRST
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SEP-A - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -o eth0 -p tcp -j SNAT --to-source 1.2.3.4-1.2.3.9:1000-2000 --random-fully
-A POSTROUTING -p udp -j MASQUERADE --to-ports 1000-2000 --random
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER -d 10.0.0.0/8 -j DNAT --to-destination 172.17.0.3
-A KUBE-SEP-A -p tcp -m comment --comment "ns/a:p" -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 \
--rsource -m tcp -j DNAT --to-destination 10.1.1.1:80
-A KUBE-SEP-A -m comment --comment "x y \\"q\\" 'z' \\\\ end" -m recent --rcheck --seconds 10800 --reap \
--name KUBE-SEP-A --mask 255.255.255.255 --rsource -j KUBE-SEP-A
-A KUBE-SEP-A -m comment --comment "" -m statistic --mode nth --every 3 --packet 1 -j RETURN
-A KUBE-SEP-A -m statistic --mode random ! --probability 0.25 -j RETURN
-A KUBE-SEP-A -m addrtype ! --src-type LOCAL,BROADCAST --limit-iface-in -j RETURN
-A KUBE-SEP-A -m comment --comment simple -j MARK --set-xmark 0x4000/0xffffffff
-A KUBE-SEP-A -j MARK --set-mark 0x10
-A KUBE-SEP-A -m mark ! --mark 0x4000/0x4000 -j CONNMARK --set-xmark 0x1/0x1
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
COMMIT
"""

ZOO6 = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-SERVICES -d fd00:10:96::a/128 -p tcp -m comment --comment "default/x:http has no endpoints" \
-m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable
-A KUBE-SERVICES -d 2001:db8::/32 -p tcp -m tcp --dport 53 -j REJECT --reject-with tcp-reset
-A KUBE-SERVICES ! -s 2001:db8:1:2::/64 -i eth0 -p tcp -m multiport --dports 1,2:3 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -o eth0 -p tcp -j SNAT --to-source [2001:db8::1]:1000-2000
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE \
--random-fully
-A KUBE-SERVICES -d fd00:10:96::1/128 -p tcp -m comment --comment "default/kubernetes:https cluster IP" \
-m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SERVICES -m comment --comment "nodeports" -m addrtype --dst-type LOCAL -j RETURN
-A KUBE-SVC-A ! -s fd00:10:244::/56 -d fd00:10:96::1/128 -p tcp -m comment \
--comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ
-A KUBE-SVC-A -m comment --comment "default/kubernetes:https -> [fd00:10:244::2]:6443" -m recent --rcheck \
--seconds 10800 --reap --name KUBE-SEP-A --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource \
-j KUBE-SEP-A
-A KUBE-SVC-A -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-A
-A KUBE-SEP-A -s fd00:10:244::2/128 -m comment --comment "default/kubernetes:https" -j KUBE-MARK-MASQ
-A KUBE-SEP-A -p tcp -m comment --comment "default/kubernetes:https" -m recent --set --name KUBE-SEP-A \
--mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource -m tcp -j DNAT --to-destination [fd00:10:244::2]:6443
-A KUBE-SEP-A -p udp -j DNAT --to-destination fd00:10:244::3
COMMIT
"""


@needs_nft
@pytest.mark.parametrize(
    ("n", "endpoints", "node_ports", "opts"),
    [
        (0, 0, 0, {}),
        (6, [0, 1, 2, 3, 0, 5], 3, {}),
        (300, 4, 120, {}),
        (40, 2, 10, {"masquerade_all": True}),
        (40, 3, 0, {"cluster_cidr": None}),
    ],
)
def test_kube_proxy_dumps_give_the_same_ruleset(
    ns: NetnsExec, n: int, endpoints: int | list[int], node_ports: int, opts: dict[str, object]
) -> None:
    _load(ns, kube_proxy_iptables(make_services(n, endpoints, node_ports=node_ports), **opts))  # type: ignore[arg-type]
    fast, slow = _both(ns)
    assert fast.methods == {"iptables": "nf_tables netlink"}
    assert fast.iptables == slow.iptables
    assert fast.iptables is not None
    assert fast.iptables.rule_count() == slow.iptables.rule_count() > 0  # type: ignore[union-attr]
    _text_matches(ns, 2)


@needs_nft
def test_docker_affinity_and_friends_give_the_same_ruleset(ns: NetnsExec) -> None:
    _load(ns, ZOO)
    fast, slow = _both(ns)
    assert fast.methods == {"iptables": "nf_tables netlink"}
    assert fast.iptables == slow.iptables
    _text_matches(ns, 2)


@needs_nft
def test_counters_are_the_same(ns: NetnsExec) -> None:
    _load(ns, "*filter\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n-A OUTPUT -p udp -j ACCEPT\n-A X -j DROP\nCOMMIT\n")
    code = "import socket\nfor i in range(7):\n socket.socket(2, 2).sendto(b'x' * i, ('127.0.0.1', 9))\n"
    ns.run([sys.executable, "-c", code], timeout=30)
    fast, slow = _both(ns)
    assert fast.iptables == slow.iptables
    assert fast.iptables is not None
    out = fast.iptables.chain("filter", "OUTPUT")
    assert out is not None
    assert out.rules[0].counters is not None
    assert out.rules[0].counters[0] == 7
    assert out.packets > 0


@needs_nft
def test_ip6tables_are_captured_through_the_fast_path_too(ns: NetnsExec) -> None:
    _load(ns, ZOO6, v6=True)
    _load(ns, ZOO)
    fast, slow = _both(ns, "ip6tables")
    assert fast.methods == {"ip6tables": "nf_tables netlink"}
    assert fast.ip6tables == slow.ip6tables
    assert fast.ip6tables is not None
    assert "KUBE-SVC-A" in fast.ip6tables.tables["nat"].chains
    assert fast.iptables is None  # only the part asked for
    _text_matches(ns, 10)
    whole = collect_node(ns, ipvs=False)
    assert whole.iptables == slow_v4(ns)
    assert whole.ip6tables == slow.ip6tables


def slow_v4(ns: NetnsExec) -> object:
    return collect_node(ns, parts=["iptables"], nft_fast=False).iptables


@needs_nft
@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("-A INPUT -m limit --limit 5/min -j ACCEPT", "expression 'limit'"),
        ("-A INPUT -p tcp -m tcp --dport 22 -j LOG --log-prefix x", "target extension 'LOG'"),
        ("-A INPUT -p 47 -j ACCEPT", "-p 47"),
        ("-A INPUT -m conntrack --ctstatus ASSURED -j ACCEPT", "conntrack options"),
    ],
)
def test_what_cannot_be_translated_falls_back_to_iptables_save_and_says_which_rule(
    ns: NetnsExec, rule: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    _load(ns, f"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n{rule}\nCOMMIT\n")
    with caplog.at_level("DEBUG", logger="pytest_k8sstate.node.capture"):
        fast, slow = _both(ns)
    method = fast.methods["iptables"]
    assert method.startswith("iptables-save -c (fast path not exact: table filter, chain INPUT, rule handle")
    assert why in method
    assert why in caplog.text
    assert fast.iptables == slow.iptables


@needs_nft
def test_the_fast_path_can_be_turned_off(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(ns, ZOO)
    monkeypatch.setenv("K8SSTATE_IPTABLES_FAST", "0")
    assert collect_node(ns, parts=["iptables"]).methods == {}
    monkeypatch.setenv("K8SSTATE_IPTABLES_FAST", "1")
    assert collect_node(ns, parts=["iptables"]).methods == {"iptables": "nf_tables netlink"}
    assert collect_node(ns, parts=["iptables"], batch=False).methods == {"iptables": "nf_tables netlink"}


@needs_nft
def test_snapshot_json_has_ip6tables_and_methods_and_round_trips(ns: NetnsExec, tmp_path: Path) -> None:
    _load(ns, ZOO6, v6=True)
    st = collect_node(ns, parts=["iptables", "ip6tables"])
    snap = Snapshot(label="x", taken_at=1.0, cluster={}, etcd=None, nodes={"n": st})
    d = snap.to_json()
    assert d["nodes"]["n"]["ip6tables"]["tables"]["nat"]
    assert d["nodes"]["n"]["methods"] == {"iptables": "nf_tables netlink", "ip6tables": "nf_tables netlink"}
    back = Snapshot.load(snap.save(tmp_path / "s.json"))
    assert back.nodes["n"].ip6tables == st.ip6tables
    assert back.nodes["n"].methods == st.methods


def test_old_snapshots_without_ip6tables_still_load(tmp_path: Path) -> None:
    st = NodeState("n")
    snap = Snapshot(label="x", taken_at=1.0, cluster={}, etcd=None, nodes={"n": st})
    p = snap.save(tmp_path / "old.json")
    d = json.loads(p.read_text())
    for k in ("ip6tables", "methods"):
        del d["nodes"]["n"][k]
    p.write_text(json.dumps(d))
    back = Snapshot.load(p)
    assert back.nodes["n"].ip6tables is None
    assert back.nodes["n"].methods == {}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"iptables-save output\n",
        HEADER + b"7\n",
        HEADER + b"2\n" + b"\xff" * 40,
        HEADER + b"2\n" + (100).to_bytes(4, "little") + b"\x00" * 30,
    ],
)
def test_bad_dumps_are_untranslatable_not_crashes(data: bytes) -> None:
    with pytest.raises(Untranslatable):
        netlink_to_iptables_save(data)


def test_an_empty_dump_is_an_empty_ruleset() -> None:
    assert netlink_to_iptables_save(HEADER + b"2\n") == ""


@needs_nft
def test_small_rulesets_are_left_to_iptables_save(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(ns, ZOO)
    chains = sum(1 for line in ZOO.splitlines() if line.startswith(":"))
    monkeypatch.setattr(iptfast, "MIN_CHAINS", chains + 1)
    for batch in (True, False):
        st = collect_node(ns, parts=["iptables"], batch=batch)
        assert st.methods == {}
        assert st.iptables == collect_node(ns, parts=["iptables"], nft_fast=False).iptables
    monkeypatch.setattr(iptfast, "MIN_CHAINS", chains)
    assert collect_node(ns, parts=["iptables"]).methods == {"iptables": "nf_tables netlink"}


@needs_nft
def test_nft_ip6_and_inet_tables_are_in_the_node_state_and_the_snapshot_json(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = (
        "table ip6 kube-proxy {\n chain services {\n  ip6 daddr fd00:10:96::1 tcp dport 443 accept\n }\n}\n"
        "table inet filt {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
        "  meta l4proto tcp ip6 saddr fe80::/10 counter accept\n }\n}\n"
    )
    ns.run(["nft", "-f", "-"], input=rules.encode(), timeout=30)
    _load(ns, ZOO6, v6=True)
    monkeypatch.setenv(nftomit.ENV, "0")  # every table in the nft part (tests/test_capture_nftomit.py)
    st = collect_node(ns, parts=["nft", "ip6tables"])
    assert not st.errors, st.errors
    assert st.nft is not None
    assert {("ip6", "kube-proxy"), ("inet", "filt"), ("ip6", "nat")} <= set(st.nft.tables)
    assert st.ip6tables is not None
    d = Snapshot(label="x", taken_at=1.0, cluster={}, etcd=None, nodes={"n": st}).to_json()["nodes"]["n"]
    fams = {(t["family"], t["name"]) for t in d["nft"]["tables"]}
    assert {("ip6", "kube-proxy"), ("inet", "filt")} <= fams
    assert "KUBE-SEP-A" in d["ip6tables"]["tables"]["nat"]


def _count_translations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the per-rule translation (a rule taken from a memo makes none)."""
    calls: list[int] = []
    real = iptnft.translate_rule

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(iptnft, "translate_rule", counted)
    return calls


def _udp_out(ns: NetnsExec, packets: int) -> None:
    send = "socket.socket(2, 2).sendto(b'x' * i, ('127.0.0.1', 9))"
    code = f"import socket\nfor i in range({packets}):\n {send}\n"
    ns.run([sys.executable, "-c", code], timeout=30)


@needs_nft
def test_runs_recorded_while_walking_are_found_by_the_next_dump(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first dump records each chain's run as it walks it (no look-ahead: nothing to look up); the
    next dump of the same rules finds every run by its key, so not even the per-rule memo is needed.
    (Runs are for dumps without nfdump's blocks, as an in-process read gives them: tests/test_nftblocks.py
    has the blocks.)"""
    _load(ns, kube_proxy_iptables(make_services(20, 2, node_ports=3)))
    raw = without_blocks(ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout)
    memo: dict[bytes, str] = {}
    text = netlink_to_iptables_save(raw, memo=memo)
    runs = {k: v for k, v in memo.items() if k.startswith(iptnft.RUN_PREFIX)}
    assert len(runs) > 40
    calls = _count_translations(monkeypatch)
    again: dict[bytes, str] = {}
    assert netlink_to_iptables_save(raw, previous=runs, memo=again) == text
    assert calls == []  # every rule came with its run
    assert {k for k in again if k.startswith(iptnft.RUN_PREFIX)} == set(runs)


@needs_nft
def test_dumps_translated_together_decode_each_rule_once(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(ns, kube_proxy_iptables(make_services(20, 2, node_ports=3)))
    raw = ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
    calls = _count_translations(monkeypatch)
    shared: dict[bytes, str] = {}
    text = netlink_to_iptables_save(raw, shared=shared)
    first = len(calls)
    assert first > 100
    assert netlink_to_iptables_save(raw, shared=shared) == text
    assert len(calls) == first  # the second dump took every rule from the first one's translations
    assert not any(k.startswith(iptnft.RUN_PREFIX) for k in shared)


@needs_nft
def test_a_dump_after_a_change_translates_only_the_changed_rules(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Service scaled and counters moved between two dumps: with the first dump's memo, the second
    gives the text iptables-save -c prints (fresh counters on reused rules) and translates a handful of
    rules, not the hundreds that did not change."""
    _load(ns, kube_proxy_iptables(make_services(40, 2, node_ports=5)))
    memo: dict[bytes, str] = {}
    first = netlink_to_iptables_save(
        ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout, memo=memo
    )
    _load(ns, kube_proxy_iptables(make_services(40, [2] * 39 + [3], node_ports=5)))
    _udp_out(ns, 7)
    raw = ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
    calls = _count_translations(monkeypatch)
    again: dict[bytes, str] = {}
    text = netlink_to_iptables_save(raw, previous=memo, memo=again)
    changed = len(calls)
    assert text == netlink_to_iptables_save(raw)
    real = ns.run(["iptables-save", "-c"], timeout=300).text.splitlines()
    assert [x for x in text.splitlines() if not x.startswith("#")] == [
        x for x in real if not x.startswith("#")
    ]
    rules = sum(1 for x in text.splitlines() if " -A " in x)
    assert rules > 300
    assert 0 < changed <= 8, f"{changed} of {rules} rules translated again"
    assert text != first
    assert any(x.startswith("[7:") for x in text.splitlines()), "fresh counters on rules taken from the memo"
    assert len(again) == len(set(again)) > 0


def without_blocks(raw: bytes) -> bytes:
    """An nfdump output without its block markers (node/nfdump.py): the messages alone."""
    nl = raw.index(b"\n") + 1
    out, pos = [raw[:nl]], nl
    while pos + 20 <= len(raw):
        length, kind = struct.unpack_from("=IH", raw, pos)
        if kind not in (nfdump.BLOCK_TYPE, nfdump.DECLS_TYPE):
            out.append(raw[pos : pos + ((length + 3) & ~3)])
        pos += (length + 3) & ~3
    return b"".join(out)


def _runs_taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the runs of rule messages :func:`iptnft._scan_run` found (taken whole or not)."""
    runs: list[int] = []
    scan = iptnft._scan_run

    def counted(*args: Any) -> Any:
        runs.append(1)
        return scan(*args)

    monkeypatch.setattr(iptnft, "_scan_run", counted)
    return runs


@needs_nft
def test_unchanged_chains_are_taken_whole_and_a_change_in_one_translates_only_its_new_rules(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three dumps: the second is byte-identical (every chain's run of rules taken whole, nothing
    decoded); the third changes one Service's chains and the counters of a few rules (those chains walked
    again, only their new rules decoded); each text equals a fresh translation and iptables-save -c."""
    _load(ns, kube_proxy_iptables(make_services(30, 2, node_ports=5)))

    def dump() -> bytes:  # without nfdump's blocks, as an in-process read gives it (runs are for those)
        return without_blocks(ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout)

    m1: dict[bytes, str] = {}
    raw1 = dump()
    t1 = netlink_to_iptables_save(raw1, memo=m1)
    runs_in_m1 = [k for k in m1 if k.startswith(iptnft.RUN_PREFIX)]
    assert len(runs_in_m1) > 50  # one per chain with rules

    calls = _count_translations(monkeypatch)
    m2: dict[bytes, str] = {}
    assert netlink_to_iptables_save(dump(), previous=m1, memo=m2) == t1
    assert calls == []  # nothing decoded: every chain taken whole
    assert set(runs_in_m1) <= set(m2)
    assert {k for k in m1 if not k.startswith(iptnft.RUN_PREFIX)} <= set(m2)  # rule keys kept too

    _load(ns, kube_proxy_iptables(make_services(30, [2] * 29 + [3], node_ports=5)))
    _udp_out(ns, 5)
    raw3 = dump()
    m3: dict[bytes, str] = {}
    t3 = netlink_to_iptables_save(raw3, previous=m2, memo=m3)
    decoded = len(calls)
    assert t3 == netlink_to_iptables_save(raw3)
    real = ns.run(["iptables-save", "-c"], timeout=300).text.splitlines()
    assert [x for x in t3.splitlines() if not x.startswith("#")] == [x for x in real if not x.startswith("#")]
    assert 0 < decoded <= 8, f"{decoded} rules decoded again"


def test_a_run_memo_never_hands_a_chain_another_chains_lines() -> None:
    """Runs whose bytes differ only in the chain name, a counter or the counters flag: each gets its own
    lines, never a memoised run of another."""

    def dump(chain: bytes, counter: tuple[int, int] = (3, 100)) -> bytes:
        def msg(kind: int, attrs: bytes) -> bytes:
            body = b"\0" * 4 + attrs
            return struct.pack("=IHHII", 16 + len(body), (10 << 8) | kind, 0, 0, 0) + body

        exprs = _expr(_name(b"counter\0") + _counter_data(*counter)) + _ACCEPT
        rule = msg(
            6,
            _nla(1, b"filter\0")
            + _nla(2, chain + b"\0")
            + _nla(3, struct.pack(">Q", 1))
            + _nla(4 | 0x8000, exprs),
        )
        declared = b"".join(msg(3, _nla(1, b"filter\0") + _nla(3, c + b"\0")) for c in (b"AAAA", b"BBBB"))
        return HEADER + b"2\n" + msg(0, _nla(1, b"filter\0")) + declared + rule

    memo: dict[bytes, str] = {}
    text = netlink_to_iptables_save(dump(b"AAAA"), memo=memo)
    assert "[3:100] -A AAAA -j ACCEPT" in text
    assert any(k.startswith(iptnft.RUN_PREFIX) for k in memo)
    for other in (dump(b"BBBB"), dump(b"AAAA", (4, 100))):  # another chain, another counter
        got = netlink_to_iptables_save(other, previous=memo)
        assert got == netlink_to_iptables_save(other)
        assert got != text
    assert "-A BBBB -j ACCEPT" in netlink_to_iptables_save(dump(b"BBBB"), previous=memo)
    plain = netlink_to_iptables_save(dump(b"AAAA"), counters=False, previous=memo)
    assert plain == netlink_to_iptables_save(dump(b"AAAA"), counters=False)
    assert "[3:100]" not in plain
    assert netlink_to_iptables_save(dump(b"AAAA"), previous=memo) == text


@needs_nft
def test_collect_node_translates_only_what_changed(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(ns, kube_proxy_iptables(make_services(30, 2)))
    first = collect_node(ns, parts=["iptables"])
    assert first.methods == {"iptables": "nf_tables netlink"}
    _load(ns, kube_proxy_iptables(make_services(30, [2] * 29 + [1])))
    _udp_out(ns, 3)
    calls = _count_translations(monkeypatch)
    second = collect_node(ns, parts=["iptables"])
    changed = len(calls)
    assert second.methods == {"iptables": "nf_tables netlink"}
    assert second.iptables == collect_node(ns, parts=["iptables"], nft_fast=False).iptables
    assert second.iptables is not None
    assert 0 < changed <= 4 < second.iptables.rule_count()
    assert second.iptables != first.iptables


@needs_nft
def test_a_memo_never_changes_what_a_damaged_dump_gives(ns: NetnsExec) -> None:
    """Bytes of a real dump flipped at random: with the intact dump's memo, each damaged dump gives the
    same text, or the same refusal, as without it (a memo hit is only ever an exact one)."""
    import random

    _load(ns, ZOO)
    _load(ns, kube_proxy_iptables(make_services(8, 2, node_ports=2)))
    raw = ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
    memo: dict[bytes, str] = {}
    netlink_to_iptables_save(raw, memo=memo)
    rng = random.Random(20261204)
    body = raw.index(b"\n") + 1
    outcomes = set()
    for _ in range(400):
        data = bytearray(raw)
        for _ in range(rng.choice((1, 1, 2, 4))):
            data[rng.randrange(body, len(data))] = rng.randrange(256)
        damaged = bytes(data)

        def translate(previous: dict[bytes, str] | None, d: bytes = damaged) -> str:
            try:
                return netlink_to_iptables_save(d, previous=previous)
            except Untranslatable:
                return "refused"

        plain = translate(None)
        assert translate(memo) == plain
        outcomes.add(plain == "refused")
    assert outcomes == {True, False}, "some damaged dumps are translated, others refused"


# --- hand-built netlink: counters in layouts iptables-nft does not write --------------------------


def _nla(kind: int, payload: bytes, length: int | None = None) -> bytes:
    head = struct.pack("=HH", 4 + len(payload) if length is None else length, kind)
    out = head + payload
    return out + b"\0" * (-len(out) % 4)


def _expr(attrs: bytes) -> bytes:
    return _nla(1 | 0x8000, attrs)


def _name(text: bytes) -> bytes:
    return _nla(1, text)


_ACCEPT = _expr(
    _name(b"immediate\0")
    + _nla(2 | 0x8000, _nla(1, struct.pack(">I", 0)) + _nla(2, _nla(2, _nla(1, struct.pack(">i", 1)))))
)


def _counter_data(packets: int, nbytes: int) -> bytes:
    return _nla(2 | 0x8000, _nla(1, struct.pack(">Q", nbytes)) + _nla(2, struct.pack(">Q", packets)))


def _nl_dump(*exprs: bytes) -> bytes:
    def msg(kind: int, attrs: bytes) -> bytes:
        body = b"\0" * 4 + attrs
        return struct.pack("=IHHII", 16 + len(body), (10 << 8) | kind, 0, 0, 0) + body

    rule = msg(
        6,
        _nla(1, b"filter\0")
        + _nla(2, b"INPUT\0")
        + _nla(3, struct.pack(">Q", 1))
        + _nla(4 | 0x8000, b"".join(exprs)),
    )
    return HEADER + b"2\n" + msg(0, _nla(1, b"filter\0")) + rule


@pytest.mark.parametrize(
    ("exprs", "line"),
    [
        ([_expr(_name(b"counter\0") + _counter_data(3, 100)), _ACCEPT], "[3:100] -A INPUT -j ACCEPT"),
        ([_expr(_name(b"counter") + _counter_data(3, 100)), _ACCEPT], "[3:100] -A INPUT -j ACCEPT"),
        (
            [_expr(_nla(1 | 0x4000, b"counter\0") + _counter_data(3, 100)), _ACCEPT],
            "[3:100] -A INPUT -j ACCEPT",
        ),
        ([_expr(_counter_data(5, 1) + _name(b"counter\0")), _ACCEPT], "[5:1] -A INPUT -j ACCEPT"),
        # two counters: the last one counts, whichever layout it has
        (
            [
                _expr(_counter_data(5, 1) + _name(b"counter\0")),
                _expr(_name(b"counter\0") + _counter_data(3, 100)),
                _ACCEPT,
            ],
            "[3:100] -A INPUT -j ACCEPT",
        ),
        (
            [
                _expr(_name(b"counter\0") + _counter_data(3, 100)),
                _expr(_counter_data(5, 1) + _name(b"counter\0")),
                _ACCEPT,
            ],
            "[5:1] -A INPUT -j ACCEPT",
        ),
        ([_ACCEPT], "[0:0] -A INPUT -j ACCEPT"),
    ],
)
def test_counters_in_any_layout_are_read_and_never_memoised(exprs: list[bytes], line: str) -> None:
    data = _nl_dump(*exprs)
    memo: dict[bytes, str] = {}
    first = netlink_to_iptables_save(data, memo=memo)
    assert line in first.splitlines()
    assert netlink_to_iptables_save(data, previous=memo) == first
    # the same rule with other counter values: a memo never carries the old numbers over
    other = _nl_dump(*(e.replace(struct.pack(">Q", 100), struct.pack(">Q", 7)) for e in exprs))
    assert netlink_to_iptables_save(other, previous=memo) == netlink_to_iptables_save(other)


def _fast_counter(packets: int, nbytes: int) -> bytes:
    """A counter expression as the kernel writes it (the layout the walk finds by its bytes)."""
    data = _nla(1, struct.pack(">Q", nbytes)) + _nla(2, struct.pack(">Q", packets))
    return _nla(1, _name(b"counter\0") + _nla(2, data))


def test_two_counters_in_the_kernel_s_layout_the_last_one_counts_and_no_memo_keeps_it() -> None:
    exprs = [_fast_counter(5, 1), _fast_counter(3, 100), _ACCEPT]
    assert nfnl.CNT_HEAD in exprs[0]
    memo: dict[bytes, str] = {}
    assert "[3:100] -A INPUT -j ACCEPT" in netlink_to_iptables_save(_nl_dump(*exprs), memo=memo).splitlines()
    other = _nl_dump(*(e.replace(struct.pack(">Q", 100), struct.pack(">Q", 7)) for e in exprs))
    assert "[3:7] -A INPUT -j ACCEPT" in netlink_to_iptables_save(other, previous=memo).splitlines()

    # one counter: memoised, and its values are read from each dump
    def rule_keys() -> list[bytes]:
        return [k for k in memo if not k.startswith(iptnft.RUN_PREFIX)]

    assert not rule_keys(), "a rule with two counters is not memoised"
    one = [_fast_counter(3, 100), _ACCEPT]
    netlink_to_iptables_save(_nl_dump(*one), memo=memo)
    assert len(rule_keys()) == 1
    again = _nl_dump(*(e.replace(struct.pack(">Q", 100), struct.pack(">Q", 8)) for e in one))
    assert "[3:8] -A INPUT -j ACCEPT" in netlink_to_iptables_save(again, previous=memo).splitlines()


def _rule_msg(*attrs: bytes) -> bytes:
    body = b"\0" * 4 + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (10 << 8) | 6, 0, 0, 0) + body


_T, _NAT = _nla(1, b"filter\0"), _nla(1, b"nat\0")
_INPUT, _FORWARD, _OUTPUT = _nla(2, b"INPUT\0"), _nla(2, b"FORWARD\0"), _nla(2, b"OUTPUT\0")
_HANDLE = _nla(3, struct.pack(">Q", 9))


def _hand_dump(*rules: bytes) -> bytes:
    """A family-2 dump: tables filter and nat with their built-in chains, then ``rules``."""

    def msg(kind: int, attrs: bytes) -> bytes:
        body = b"\0" * 4 + attrs
        return struct.pack("=IHHII", 16 + len(body), (10 << 8) | kind, 0, 0, 0) + body

    out = [HEADER + b"2\n"]
    for table, chains in ((_T, ("INPUT", "FORWARD", "OUTPUT")), (_NAT, ("PREROUTING", "OUTPUT"))):
        out.append(msg(0, table))
        for i, c in enumerate(chains):
            hook = _nla(4 | 0x8000, _nla(1, struct.pack(">I", i)))
            out.append(msg(3, table + _nla(3, c.encode() + b"\0") + hook))
    return b"".join(out + list(rules))


def _counted_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[")]


def test_rules_whose_names_come_in_another_order_or_twice_land_in_their_chain() -> None:
    """A rule's table and chain are read from its attributes wherever they are (the last one of a kind
    counts), also right after a rule of another chain whose attributes started the same way."""
    exprs = _nla(4 | 0x8000, _fast_counter(1, 2) + _ACCEPT)
    t, inp, fwd, out, handle = _T, _INPUT, _FORWARD, _OUTPUT, _HANDLE
    msgs = [
        _rule_msg(t, inp, handle, exprs),  # INPUT
        _rule_msg(t, inp, handle, exprs),  # INPUT, the same leading attributes
        _rule_msg(t, inp, handle, fwd, exprs),  # starts as INPUT's, a second chain attribute: FORWARD
        _rule_msg(t, inp, handle, exprs),  # INPUT again: the same start as the FORWARD rule's
        _rule_msg(t, inp, handle, _nla(1, b"nope\0"), exprs),  # a second table: not an iptables rule
        _rule_msg(t, inp, handle, exprs),  # INPUT: the same start as the left-out rule's
        _rule_msg(inp, t, handle, exprs),  # chain first: INPUT
        _rule_msg(t, out, handle, exprs),  # OUTPUT
        _rule_msg(t, handle, out, exprs),  # OUTPUT, its chain after the handle
        _rule_msg(t, out, handle, exprs),  # OUTPUT
        _rule_msg(inp, t, handle, exprs),  # INPUT, chain first
        _rule_msg(t, out, handle, exprs),  # OUTPUT: the same start as two rules ago
        _rule_msg(inp, handle, exprs),  # no table: not an iptables rule (left out)
        _rule_msg(t, inp, handle, exprs),  # INPUT
        _rule_msg(out, t, handle, exprs),  # OUTPUT, chain first
        _rule_msg(t, inp, handle, exprs),  # INPUT: the same start as two rules ago
    ]
    got = _counted_lines(netlink_to_iptables_save(_hand_dump(*msgs)))
    assert got == [
        *["[1:2] -A INPUT -j ACCEPT"] * 8,
        "[1:2] -A FORWARD -j ACCEPT",
        *["[1:2] -A OUTPUT -j ACCEPT"] * 5,
    ]


def test_a_run_taken_from_an_earlier_dump_lands_where_its_last_names_say() -> None:
    """The look-ahead over a run of one chain's rules reads their names as the walk does (the last table
    and chain attributes count): a rule whose second table attribute is nat is nat's, from a memo too."""
    exprs = _nla(4 | 0x8000, _fast_counter(1, 2) + _ACCEPT)
    data = _hand_dump(_rule_msg(_T, _OUTPUT, _HANDLE, exprs, _NAT))
    memo: dict[bytes, str] = {}
    fresh = netlink_to_iptables_save(data, memo=memo)
    assert "*nat\n" in fresh
    assert fresh.split("*nat\n", 1)[1].count("-A OUTPUT") == 1
    assert netlink_to_iptables_save(data, previous=memo) == fresh


def test_a_memo_key_never_names_two_different_expression_lists() -> None:
    """A rule without a counter is keyed apart from every rule with one, and a counter cut off by the end
    of the expressions is no counter: neither takes a memoised rule's text."""
    real = _fast_counter(3, 100) + _ACCEPT
    x = real.index(nfnl.CNT_HEAD)  # 4: the counter's head, after its element header
    # the bytes a counter rule's key covers, as one counter-less expression list would begin
    forged = b"%d:" % x + real[: x + 20] + real[x + 28 : x + 32] + real[x + 40 :]
    last = _ACCEPT + _fast_counter(3, 100)  # the counter last
    y = last.index(nfnl.CNT_HEAD)
    cut = last[: y + 32]  # the packets value is not in the expressions any more
    for victim in (
        _rule_msg(_T, _INPUT, _HANDLE, _nla(4 | 0x8000, forged)),
        _rule_msg(_T, _INPUT, _HANDLE, _nla(4 | 0x8000, cut), _nla(6, struct.pack(">Q", 1))),
    ):
        first = _rule_msg(_T, _INPUT, _HANDLE, _nla(4 | 0x8000, real if victim.count(forged) else last))
        alone = _translated_or_refused(_hand_dump(victim))
        assert alone == "refused"
        assert _translated_or_refused(_hand_dump(first, victim)) == "refused"
        memo: dict[bytes, str] = {}
        netlink_to_iptables_save(_hand_dump(first), memo=memo)
        assert _translated_or_refused(_hand_dump(victim), previous=memo) == "refused"


def _translated_or_refused(data: bytes, previous: dict[bytes, str] | None = None) -> str:
    try:
        return netlink_to_iptables_save(data, previous=previous)
    except Untranslatable:
        return "refused"


@needs_nft
def test_translations_run_one_at_a_time_so_the_nodes_of_a_snapshot_decode_each_rule_once(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes' dumps translated at once with one ``shared`` dict: the second waits for the first, then
    takes every rule from it (with both at once, the second would decode them again)."""
    import threading

    _load(ns, kube_proxy_iptables(make_services(60, 2)))
    raw = ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
    calls: list[str] = []
    first_in, second_in = threading.Event(), threading.Event()
    real = iptnft.translate_rule

    def counted(*args: Any) -> Any:
        me = threading.current_thread().name
        calls.append(me)
        if me == "first" and not first_in.is_set():
            first_in.set()
            second_in.wait(1.0)  # the other translation, if it could run now, decodes meanwhile
        elif me == "second":
            second_in.set()
        return real(*args)

    monkeypatch.setattr(iptnft, "translate_rule", counted)
    shared: dict[bytes, str] = {}
    texts: dict[str, bytes] = {}

    def translate() -> None:
        me = threading.current_thread().name
        texts[me] = iptfast.translate_or_fallback(ns, "iptables", raw, 60, shared=shared)[0]

    first = threading.Thread(target=translate, name="first")
    first.start()
    assert first_in.wait(30)
    second = threading.Thread(target=translate, name="second")
    second.start()
    first.join(60)
    second.join(60)
    assert texts["first"] == texts["second"]
    assert calls.count("first") > 100
    assert calls.count("second") == 0


def test_fast_counter_is_exactly_the_kernel_s_44_byte_layout() -> None:
    c = _fast_counter(3, 100)
    assert len(c) == 44
    data = b"xxxx" + c + _ACCEPT
    assert nfnl.fast_counter(data, 4, len(data))
    assert nfnl.fast_counter(data, 4, 48)  # ends right at the end of the expressions
    assert not nfnl.fast_counter(data, 4, 47)  # cut off by the end of the expressions
    assert not nfnl.fast_counter(data, 0, len(data))  # not at an expression's start
    longer = b"xxxx-" + c[1:]  # another length
    assert not nfnl.fast_counter(longer, 4, len(longer))
    moved = c[:32] + b"\x0c\x00\x03\x00" + c[36:]  # the packets attribute not where it belongs
    assert not nfnl.fast_counter(b"xxxx" + moved, 4, 48)
    renamed = c.replace(b"counter", b"counteR")
    assert not nfnl.fast_counter(b"xxxx" + renamed, 4, 48)
