"""The optional conntrack part of a node capture, on a real kernel: a network namespace of this test with
a DNAT rule, a real TCP connection through it, then ``collect_node`` with and without the part, the
snapshot round trip and ``assert_conntrack_dnat``."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_k8sstate.assertions import assert_conntrack_dnat
from pytest_k8sstate.node import conntrack
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import CommandResult, NetnsExec, run_command
from pytest_k8sstate.state.snapshot import Snapshot

BUSYBOX = "/bin/busybox"
VIP, BACKEND = "10.96.7.7", "127.0.0.1"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not shutil.which("conntrack")
    or not shutil.which("nft")
    or not Path(BUSYBOX).exists(),
    reason="needs root, conntrack, nft and busybox-static (network namespaces)",
)


def _ns(name: str, *argv: str, input: bytes | None = None) -> CommandResult:
    return run_command(["ip", "netns", "exec", name, *argv], timeout=20, input=input, where=f"netns {name}")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"k8ss-ct-{secrets.token_hex(4)}"
    run_command(["ip", "netns", "add", name], timeout=20)
    server = None
    try:
        _ns(name, "ip", "link", "set", "lo", "up")
        _ns(name, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        rules = (
            "table ip k8ss { chain out { type nat hook output priority -100; "
            f"ip daddr {VIP} tcp dport 80 dnat to {BACKEND}:8080; }}; }}"
        )
        _ns(name, "nft", "-f", "-", input=rules.encode())
        server = subprocess.Popen(  # noqa: S603 - argv of our own, no shell
            ["ip", "netns", "exec", name, BUSYBOX, "nc", "-l", "-p", "8080", "-e", BUSYBOX, "echo", "hi"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while b":1F90" not in _ns(name, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout:
            if time.monotonic() > deadline:
                raise TimeoutError("the test's listener on 127.0.0.1:8080 did not start within 10 s")
            time.sleep(0.05)
        yield name
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        run_command(["ip", "netns", "del", name], timeout=20, check=False)


def test_conntrack_part_captures_the_dnat_tuple(netns):
    out = _ns(netns, BUSYBOX, "timeout", "5", BUSYBOX, "nc", VIP, "80").stdout
    assert out.strip() == b"hi"
    exec = NetnsExec(netns, node="n1")

    assert conntrack.set_enabled(False) is None
    try:
        plain = collect_node(exec, parts=["routes"])
        assert plain.conntrack is None
        assert "conntrack" not in plain.to_json()
        conntrack.set_enabled(True)
        state = collect_node(exec, parts=["routes", "addrs"])
        assert state.conntrack is None  # explicit parts: only those
        state = collect_node(exec, parts=None, ipvs=False)  # default parts + the enabled optional one
    finally:
        conntrack.set_enabled(None)
    assert state.conntrack is not None, state.errors
    assert "conntrack" not in state.errors
    [entry] = [e for e in state.conntrack if e.orig.dst == VIP]
    assert (entry.orig.dport, entry.reply.src, entry.reply.sport) == (80, BACKEND, 8080)
    assert entry.dnat
    assert entry.proto == "tcp"
    assert entry.family == "ipv4"

    snap = Snapshot("probed", 0.0, nodes={"n1": state})
    again = Snapshot.from_json(snap.to_json())
    assert again.nodes["n1"].conntrack == state.conntrack
    assert assert_conntrack_dnat(again, VIP, 80, to=f"{BACKEND}:8080") == [entry]
    with pytest.raises(AssertionError, match=r"DNATed to 127\.0\.0\.2:8080.*\n  n1: tcp .*10\.96\.7\.7:80"):
        assert_conntrack_dnat(again, VIP, 80, to=["127.0.0.2:8080"])
    with pytest.raises(AssertionError, match="--k8sstate-conntrack"):
        assert_conntrack_dnat(NodeState("n1"), VIP, 80, to=BACKEND)


def test_missing_conntrack_program_is_a_named_error(netns, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without conntrack (sh is found by absolute name)
    exec = NetnsExec(netns, node="n1")
    monkeypatch.setattr(exec, "command", lambda argv: ["ip", "netns", "exec", netns, "/bin/sh", *argv[1:]])
    state = collect_node(exec, parts=["conntrack"])
    assert state.conntrack is None
    assert (
        state.errors["conntrack"] == "conntrack not found on node n1; install conntrack in the node (image)"
    )
