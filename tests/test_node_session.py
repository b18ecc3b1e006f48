"""The long-lived node shell (node/session.py) and its use by kind node captures.

The session protocol runs against a real ``sh`` on this machine (the session's argv is the only
difference from a node container's ``docker exec -i C sh``). The kind tests (``--k8sstate-provider kind``)
compare, on a real 1+2 cluster, a capture through the node shells with in-process reuse against a plain
capture (one ``docker exec`` per node, nothing reused): same content, part by part.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_k8sstate.errors import CommandError, CommandTimeout
from pytest_k8sstate.node import session
from pytest_k8sstate.node.capture import ALL_PARTS, collect_node
from pytest_k8sstate.node.exec import DockerExec, SessionExec


@pytest.fixture
def sh() -> Iterator[session.ShellSession]:
    s = session.ShellSession(["sh"], "test shell")
    yield s
    s.close()


def test_outputs_are_exact_bytes_with_exit_codes(sh: session.ShellSession) -> None:
    assert sh.run("printf abc", 5) == (0, b"abc", b"")  # no trailing newline added
    assert sh.run("printf 'a\\n\\n'; printf e >&2; exit 3", 5) == (3, b"a\n\n", b"e")
    binary = bytes(range(256)) * 4
    rc, out, _ = sh.run("printf '" + "".join(f"\\{b:03o}" for b in binary) + "'", 5)
    assert (rc, out) == (0, binary)
    big = sh.run("head -c 3000000 /dev/zero", 10)
    assert big[1] == b"\0" * 3_000_000
    # a script cannot change the session: it runs in a subshell with an empty stdin
    assert sh.run("cd /; X=1; exit 0", 5)[0] == 0
    assert sh.run('pwd; echo "x${X}x"; cat', 5)[1] == os.getcwd().encode() + b"\nxx\n"
    assert sh.run("nosuchcommand-k8ss", 5)[0] == 127


def test_timeout_kills_the_session_and_the_next_script_starts_a_new_one(sh: session.ShellSession) -> None:
    sh.run("true", 5)
    first = sh._proc
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout, match=r"test shell: script did not finish within 0\.5s"):
        sh.run("sleep 5", 0.5)
    assert time.monotonic() - t0 < 4
    assert not sh.alive
    assert sh.run("echo again", 5) == (0, b"again\n", b"")
    assert sh._proc is not first


def test_a_dead_session_raises_then_restarts(sh: session.ShellSession) -> None:
    sh.run("true", 5)
    with pytest.raises(CommandError, match="shell session ended"):
        sh.run("kill -9 $$; sleep 5", 5)  # the session's own shell ($$ in a subshell too) dies
    assert sh.run("echo ok", 5)[1] == b"ok\n"


def test_busy_session_is_not_waited_for_and_close_sessions_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["sh", "-c", "exec sh", "k8ss-test-busy"]  # a distinct argv: its own session
    assert session.run_script(argv, "t", "echo 1", 5) == (0, b"1\n", b"")
    assert session.is_alive(argv)
    started = threading.Event()
    got: list[object] = []

    def long() -> None:
        started.set()
        got.append(session.run_script(argv, "t", "sleep 1; echo long", 5))

    th = threading.Thread(target=long)
    th.start()
    started.wait(5)
    time.sleep(0.2)
    assert session.run_script(argv, "t", "echo 2", 5) is None  # busy: the caller runs its own command
    th.join(10)
    assert got == [(0, b"long\n", b"")]
    monkeypatch.setenv(session.ENV, "0")
    assert session.run_script(argv, "t", "echo 3", 5) is None
    monkeypatch.delenv(session.ENV)
    assert session.close_sessions(lambda a: "k8ss-test-busy" in a) == 1
    assert not session.is_alive(argv)


class _ShDocker(DockerExec):
    """A DockerExec whose "container" is this machine: ``command`` drops the docker prefix (the only
    boundary replaced; the session and SessionExec logic run as for a node container)."""

    def command(self, argv: list[str]) -> list[str]:  # type: ignore[override]
        return list(argv)


def test_session_exec_matches_run_and_falls_back_for_input() -> None:
    ex = SessionExec(_ShDocker("k8ss-fake-node"))
    try:
        res = ex.run(["sh", "-c", 'echo "$0 $1"; echo e >&2; exit 4', "a b", "c'd"], check=False)
        assert (res.returncode, res.stdout, res.stderr) == (4, b"a b c'd\n", b"e\n")
        with pytest.raises(CommandError, match="exited 4: e"):
            ex.run(["sh", "-c", "echo e >&2; exit 4"])
        assert ex.run(["cat"], input=b"in").stdout == b"in"  # with input: its own command
        assert ex.inner.session_alive()
    finally:
        session.close_sessions(lambda a: a == ("sh",))


# --------------------------------------------------------------------------------------------------
# a real kind cluster
# --------------------------------------------------------------------------------------------------
def test_kind_capture_through_sessions_and_reuse_equals_a_plain_capture(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.config.getoption("--k8sstate-provider", default=None) != "kind":
        pytest.skip("needs --k8sstate-provider kind (the project's Docker engine and a kind node image)")
    cluster = request.getfixturevalue("k8s_cluster")
    execs = [n.exec for n in cluster.nodes]
    assert all(isinstance(e, DockerExec) for e in execs)
    for ex in execs:
        collect_node(ex)  # sessions started, parts remembered
    fast = {ex.node: collect_node(ex) for ex in execs}  # unchanged: reused
    with monkeypatch.context() as m:
        m.setenv(session.ENV, "0")
        m.setenv("K8SSTATE_NODE_REUSE", "0")
        plain = {ex.node: collect_node(ex) for ex in execs}
    for node, a in fast.items():
        b = plain[node]
        assert not b.errors, b.errors
        assert a.errors == b.errors
        assert a.methods == b.methods
        for p in ALL_PARTS:
            va, vb = getattr(a, p), getattr(b, p)
            ja = va.to_json() if hasattr(va, "to_json") else va
            jb = vb.to_json() if hasattr(vb, "to_json") else vb
            if p in ("iptables", "ip6tables") and ja != jb:
                # counters move with traffic between the two captures: compare the rules without them
                ja, jb = _no_counters(ja), _no_counters(jb)
            if p == "nft" and ja != jb:
                ja, jb = _no_nft_counters(ja), _no_nft_counters(jb)
            assert ja == jb, f"node {node}: part {p} differs"
    # a change in a node is seen at the next capture (not a stale reused part)
    ex = execs[-1]
    ex.run(["iptables", "-t", "filter", "-N", "K8SS-SESSION-TEST"], timeout=20)
    try:
        after = collect_node(ex)
        assert after.iptables is not None
        assert "K8SS-SESSION-TEST" in after.iptables.tables["filter"].chains
    finally:
        ex.run(["iptables", "-t", "filter", "-X", "K8SS-SESSION-TEST"], timeout=20)
    assert "K8SS-SESSION-TEST" not in collect_node(ex).iptables.tables["filter"].chains  # type: ignore[union-attr]


def _no_counters(ruleset: object) -> object:
    """An iptables part's JSON without packet/byte counters (chains' and rules')."""
    assert isinstance(ruleset, dict)
    return {
        t: {
            c: {
                **{k: v for k, v in chain.items() if k not in ("packets", "bytes", "rules")},
                "rules": [r[:2] for r in chain["rules"]],
            }
            for c, chain in chains.items()
        }
        for t, chains in ruleset["tables"].items()
    }


def _no_nft_counters(obj: object) -> object:
    """nft JSON without the packet/byte values of ``counter`` statements and named counters."""
    if isinstance(obj, dict):
        return {k: _no_nft_counters(v) for k, v in obj.items() if k not in ("packets", "bytes")}
    if isinstance(obj, list):
        return [_no_nft_counters(v) for v in obj]
    return obj
