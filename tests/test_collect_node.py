"""Node collector against real network namespaces ("nodes") with real netfilter, ipset and routing state."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import pytest

from pytest_k8sstate.errors import CommandError, CommandNotFound, CommandTimeout, K8sStateError, ParseError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import ALL_PARTS, NodeState, collect_node, collect_nodes
from pytest_k8sstate.node.exec import DEFAULT_TIMEOUT, CommandResult, NetnsExec
from pytest_k8sstate.testing.nft_gen import GenService, render_ruleset
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.nft import trace_nft

_TOOLS = ("nft", "iptables-save", "iptables-restore", "ipset", "ip")
_NO_NETNS = (
    "needs root (network namespaces) and nft, iptables, ipset, iproute2 (apt-get install nftables "
    "iptables ipset iproute2)"
    if os.geteuid() != 0 or any(shutil.which(b) is None for b in _TOOLS)
    else None
)

IPTABLES = """\
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 192.168.0.2:6443
COMMIT
"""
IPSETS = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n"


def _setup_node(ns: NetnsExec, i: int) -> None:
    node_ip = f"192.168.0.{i + 2}"
    eps = [(f"10.244.{i}.{j + 1}", 8080) for j in range(i + 1)]
    svc = GenService("default", f"web{i}", f"172.30.0.{10 + i}", 80, endpoints=eps)
    ns.run(["nft", "-f", "-"], input=render_ruleset([svc], nodeport_ips=[node_ip]).encode(), timeout=30)
    ns.run(["iptables-restore"], input=IPTABLES.encode(), timeout=30)
    ns.run(["ipset", "restore"], input=(IPSETS + f"add KUBE-CLUSTER-IP 10.96.0.{i + 1},tcp:443\n").encode())
    ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"])
    ns.run(["ip", "addr", "add", f"{node_ip}/24", "dev", "eth0"])
    ns.run(["ip", "link", "set", "eth0", "up"])
    ns.run(["ip", "link", "set", "eth0-peer", "up"])
    ns.run(["ip", "route", "add", f"10.244.{i + 10}.0/24", "via", "192.168.0.100", "dev", "eth0"])
    # the veth's carrier and IPv6 link-local addresses (and their local routes) come up asynchronously:
    # wait for them, since tests compare captures of the same node taken one after the other
    deadline = time.monotonic() + 10
    while True:
        routes = ns.run(["ip", "-j", "route", "show", "table", "all"]).stdout
        local6 = ns.run(["ip", "-6", "route", "show", "table", "local"]).stdout
        tentative = ns.run(["ip", "-6", "addr", "show", "tentative"]).stdout
        if b"linkdown" not in routes and local6.count(b"fe80::") >= 2 and not tentative.strip():
            break
        assert time.monotonic() < deadline, "veth carrier / IPv6 link-local did not come up within 10 s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[NetnsExec]]:
    if _NO_NETNS is not None:
        pytest.skip(_NO_NETNS)
    with ExitStack() as stack:
        out = []
        for i in range(3):
            ns = stack.enter_context(netns.temporary("node"))
            _setup_node(ns, i)
            out.append(ns)
        yield out


def test_three_nodes_captured_concurrently(nodes: list[NetnsExec]) -> None:
    states = collect_nodes(nodes)
    assert list(states) == [n.node for n in nodes]
    for i, n in enumerate(nodes):
        s = states[n.node]
        assert s.errors == {}
        assert s.ipvs is None  # no ip_vs in this kernel: normal, not an error
        assert s.iptables is not None
        kube = s.iptables.tables["nat"].chains["KUBE-SERVICES"]
        assert [r.spec for r in kube.rules] == [
            "-d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 192.168.0.2:6443"
        ]
        assert s.nft is not None
        assert ("ip", "kube-proxy") in s.nft.tables
        assert ("ip", "nat") in s.nft.tables  # iptables-nft backend: the same rules as xt expressions
        assert [(x.name, x.members) for x in s.ipsets] == [("KUBE-CLUSTER-IP", [f"10.96.0.{i + 1},tcp:443"])]
        assert {link["ifname"]: link["kind"] for link in s.links} == {
            "lo": None,
            "eth0": "veth",
            "eth0-peer": "veth",
        }
        assert f"192.168.0.{i + 2}" in s.local_ips
        assert "127.0.0.1" in s.local_ips
        assert any(r["dst"] == f"10.244.{i + 10}.0/24" and r["gateway"] == "192.168.0.100" for r in s.routes)
        # the captured nft rules trace: node i's service has i+1 endpoints
        r = trace_nft(s.nft, Packet(f"172.30.0.{10 + i}", 80, src="10.1.2.3", local_ips=s.local_ips))
        assert r.endpoints == {f"10.244.{i}.{j + 1}:8080": Fraction(1, i + 1) for j in range(i + 1)}


def test_round_trip_through_json(nodes: list[NetnsExec]) -> None:
    s = collect_node(nodes[0])
    back = NodeState.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s
    with pytest.raises(ParseError, match="NodeState"):
        NodeState.from_json({"links": []})


def test_one_command_per_part_gives_the_same_state(nodes: list[NetnsExec]) -> None:
    assert collect_node(nodes[1], batch=False) == collect_node(nodes[1])


def test_parts_and_ipvs_switch(nodes: list[NetnsExec]) -> None:
    s = collect_node(nodes[0], parts=["addrs", "ipvs"], ipvs=False)
    assert s.addrs
    assert s.nft is None
    assert s.iptables is None
    assert s.links == []
    assert s.errors == {}
    with pytest.raises(K8sStateError, match="unknown node state part"):
        collect_node(nodes[0], parts=["bogus"])
    assert set(ALL_PARTS) == {"iptables", "ip6tables", "nft", "ipsets", "ipvs", "links", "addrs", "routes"}


class _PathExec(NetnsExec):
    """The node's commands run with PATH = one directory we fill: lets a test leave binaries out."""

    def __init__(self, netns_name: str, path_dir: Path) -> None:
        super().__init__(netns_name, node="node-x")
        self.path_dir = path_dir

    def command(self, argv: Sequence[str]) -> list[str]:
        return super().command(["env", f"PATH={self.path_dir}", *argv])


def _bin_dir(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for n in names:
        real = shutil.which(n)
        assert real is not None
        (d / n).symlink_to(real)
    return d


@pytest.mark.parametrize("batch", [True, False])
def test_missing_binaries_are_recorded_and_the_rest_captured(
    nodes: list[NetnsExec], tmp_path: Path, batch: bool
) -> None:
    d = _bin_dir(tmp_path, ["sh", "ip", "test"])
    s = collect_node(_PathExec(nodes[2].netns, d), batch=batch)
    assert set(s.errors) == {"iptables", "ip6tables", "nft", "ipsets"}
    assert s.errors["nft"] == "nft not found on node node-x; install nftables in the node (image)"
    assert "iptables-save not found on node node-x" in s.errors["iptables"]
    assert s.iptables is None
    assert s.nft is None
    assert s.ipsets == []
    assert s.ipvs is None
    assert {a["local"] for a in s.addrs} == {"127.0.0.1", "192.168.0.4"} | {
        a["local"] for a in s.addrs if a["family"] == "inet6"
    }
    assert s.links
    assert s.routes


def test_no_sh_on_the_node_falls_back_to_one_command_per_part(nodes: list[NetnsExec], tmp_path: Path) -> None:
    d = _bin_dir(tmp_path, ["ip", "nft"])
    s = collect_node(_PathExec(nodes[0].netns, d))
    assert s.nft is not None
    assert s.links
    assert s.routes
    # and ipvs: no `test` binary → treated as absent
    assert set(s.errors) == {"iptables", "ip6tables", "ipsets"}


def test_failing_and_garbled_parts(nodes: list[NetnsExec], tmp_path: Path) -> None:
    d = _bin_dir(tmp_path, ["sh", "ip", "test", "iptables-save"])
    # FAKE binaries standing in for a broken node: nft fails, ipset prints garbage
    (d / "nft").write_text("#!/bin/sh\necho 'Error: boom (netlink)' >&2\nexit 1\n")
    (d / "ipset").write_text("#!/bin/sh\necho 'this is not ipset save output'\n")
    for f in ("nft", "ipset"):
        (d / f).chmod(0o755)
    s = collect_node(_PathExec(nodes[0].netns, d))
    assert set(s.errors) == {"nft", "ipsets", "ip6tables"}  # no ip6tables-save in the bin dir
    assert s.errors["nft"].startswith("`nft -j list ruleset` exited 1 on node node-x: Error: boom (netlink)")
    assert s.errors["ipsets"].startswith("could not parse `ipset save` output from node node-x:")
    assert ":1: expected a line starting with 'create' or 'add'" in s.errors["ipsets"]
    assert s.iptables is not None
    assert s.links


def test_timeout_is_recorded_not_retried(nodes: list[NetnsExec], tmp_path: Path) -> None:
    d = _bin_dir(tmp_path, ["sh", "ip", "test", "sleep"])
    (d / "nft").write_text("#!/bin/sh\nsleep 4\n")  # FAKE: an nft that hangs (longer than the timeout)
    (d / "nft").chmod(0o755)
    s = collect_node(_PathExec(nodes[0].netns, d), parts=["nft", "routes"], timeout=1.5)
    assert set(s.errors) == {"nft", "routes"}
    assert "did not finish within 1.5s" in s.errors["nft"]


class _FailingExec:
    """A node whose every command raises ``error`` (no namespace needed); counts the attempts."""

    node = "node-f"

    def __init__(self, error: CommandError) -> None:
        self.error = error
        self.calls = 0

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        self.calls += 1
        raise self.error

    def which(self, program: str) -> bool:
        return False


@pytest.mark.parametrize("batch", [True, False])
def test_command_errors_are_told_apart_by_type_not_by_text(batch: bool) -> None:
    """A failure whose text happens to say "not found" is not a missing binary; a missing one is."""
    gone = _FailingExec(CommandError("node node-f: container 'node-f' not found"))
    s = collect_node(gone, parts=["nft"], batch=batch)
    assert s.errors["nft"].startswith(
        "`nft -j list ruleset` exited -1 on node node-f: node node-f: container 'node-f' not found"
    )
    assert "install nftables" not in s.errors["nft"]
    missing = _FailingExec(CommandNotFound("node node-f: no such program"))
    s = collect_node(missing, parts=["nft"], batch=batch)
    assert s.errors == {"nft": "nft not found on node node-f; install nftables in the node (image)"}


def test_a_timeout_is_known_by_its_type_and_not_retried() -> None:
    slow = _FailingExec(CommandTimeout("node node-f: gave up after 2s"))
    s = collect_node(slow, parts=["nft", "routes"], timeout=2)
    assert slow.calls == 1  # the batched capture timed out: no second try command by command
    assert set(s.errors) == {"nft", "routes"}
    assert "gave up after 2s" in s.errors["nft"]


def test_a_parser_failure_of_one_part_is_recorded_and_the_rest_kept(
    nodes: list[NetnsExec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part whose output no parser survives (too deep, or a parser bug) loses that part only."""
    from pytest_k8sstate.node import capture

    d = _bin_dir(tmp_path, ["sh", "ip", "test", "iptables-save", "ipset"])
    # FAKE nft standing in for a hostile node: JSON nested 100,000 deep (RecursionError in json.loads)
    (d / "nft").write_text("#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' '['\n")
    (d / "nft").chmod(0o755)
    d.joinpath("head").symlink_to(shutil.which("head") or "/usr/bin/head")
    d.joinpath("tr").symlink_to(shutil.which("tr") or "/usr/bin/tr")

    def parser_bug(
        data: bytes, source: str
    ) -> object:  # FAULT INJECTION: a parser raising a non-K8sStateError
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(capture._PARSERS, "ipsets", parser_bug)
    s = collect_node(_PathExec(nodes[0].netns, d))
    assert set(s.errors) == {"nft", "ipsets", "ip6tables"}  # no ip6tables-save in the bin dir
    assert s.errors["nft"].startswith("could not parse `nft -j list ruleset` output from node node-x:")
    assert s.errors["ipsets"] == (
        "could not parse `ipset save` output from node node-x: ZeroDivisionError: division by zero "
        "(a pytest-k8sstate parser bug: please report it with the output)"
    )
    assert s.iptables is not None
    assert s.links
    assert s.routes
    assert not s.captured_nothing()


def test_error_lines_are_bounded(nodes: list[NetnsExec], tmp_path: Path) -> None:
    d = _bin_dir(tmp_path, ["sh", "ip", "test", "head", "tr"])
    # FAKE nft failing with a 10 MB error line
    (d / "nft").write_text("#!/bin/sh\nhead -c 10000000 /dev/zero | tr '\\0' 'x' >&2\nexit 1\n")
    (d / "nft").chmod(0o755)
    s = collect_node(_PathExec(nodes[0].netns, d), parts=["nft", "links"])
    assert s.errors["nft"].startswith("`nft -j list ruleset` exited 1 on node node-x: xxx")
    assert len(s.errors["nft"]) <= 2000
    assert s.errors["nft"].endswith("...")


@pytest.mark.parametrize("batch", [True, False])
def test_captured_nothing_when_every_part_failed(batch: bool) -> None:
    missing = _FailingExec(CommandNotFound("node node-f: no such program"))
    s = collect_node(missing, batch=batch)
    assert set(s.errors) >= set(ALL_PARTS) - {"ipvs"}
    assert s.captured_nothing()
    assert not NodeState("n").captured_nothing()  # nothing failed: an empty node is not an error
    assert not NodeState("n", errors={"nft": "x"}).captured_nothing()
