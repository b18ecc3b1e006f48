"""A large iptables ruleset captured again after a change: only the chains the kernel announced are read
(node/nfmon.py), and the result is what a full read gives.

Real ``iptables-nft-restore`` and ``nft`` in a temporary namespace; ``iptfast.MIN_CHAINS`` and
``reuse.LARGE_CHAINS`` are lowered so a ruleset of about 50 chains takes the large-ruleset paths. No
traffic passes through the namespace, so every counter is zero and a patched capture must equal a full
read exactly (counters and line numbers included).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from test_capture_nft import ZOO6, _load, needs_nft  # tests/ is on sys.path (rootdir-less layout)

from pytest_k8sstate.errors import CommandTimeout
from pytest_k8sstate.node import iptfast, netns, netnsio, nfmon, reuse
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec, run_command
from pytest_k8sstate.testing import kube_proxy_iptables, make_services


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetnsExec]:
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 40)  # the fast path from 40 chains
    monkeypatch.setattr(reuse, "LARGE_CHAINS", 30)  # fingerprinted by the generation alone from 30
    with netns.temporary("nfmon") as n:
        n.run(["nft", "add", "table", "inet", "k8ss-other"], timeout=30)
        _load(n, kube_proxy_iptables(make_services(12, 2)))  # ~50 chains: large
        _load(n, ZOO6, v6=True)  # a few chains: small
        yield n


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[set[tuple[str, str]]]:
    """The chains each partial read asked for."""
    seen: list[set[tuple[str, str]]] = []
    real = nfmon.read_chains

    def spy(exec: Any, family: int, chains: set[tuple[str, str]], gen: int, timeout: float) -> Any:
        seen.append(set(chains))
        return real(exec, family, chains, gen, timeout)

    monkeypatch.setattr(nfmon, "read_chains", spy)
    return seen


def _capture(ns: NetnsExec) -> NodeState:
    st = collect_node(ns, ipvs=False)
    assert not st.errors, st.errors
    return st


def _full(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> NodeState:
    with monkeypatch.context() as m:
        m.setenv(reuse.ENV, "0")
        return _capture(ns)


def _restore(ns: NetnsExec, text: str) -> None:
    ns.run(["iptables-nft-restore", "--noflush"], input=text.encode(), timeout=60)


def _svc_chain(st: NodeState) -> str:
    assert st.iptables is not None
    return next(c for c in st.iptables.tables["nat"].chains if c.startswith("KUBE-SVC-"))


def _sep_chains(st: NodeState, svc: str) -> list[str]:
    assert st.iptables is not None
    chain = st.iptables.chain("nat", svc)
    assert chain is not None
    return [r.target for r in chain.rules if r.target and r.target.startswith("KUBE-SEP-")]


@needs_nft
def test_changed_chains_are_read_alone_and_give_what_a_full_read_gives(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    first = _capture(ns)
    assert first.methods["iptables"] == iptfast.NETLINK_METHOD
    svc = _svc_chain(first)
    gone = _sep_chains(first, svc)[0]
    # what kube-proxy does when an endpoint is replaced: a new SEP chain, the SVC chain rewritten, the
    # old SEP chain flushed and deleted; and a policy change on a built-in chain of another table
    _restore(
        ns,
        "*nat\n:KUBE-SEP-K8SSNEW - [0:0]\n"
        "-A KUBE-SEP-K8SSNEW -p tcp -m tcp -j DNAT --to-destination 10.244.9.9:8080\n"
        f"-F {svc}\n-A {svc} -j KUBE-SEP-K8SSNEW\n-F {gone}\n-X {gone}\nCOMMIT\n"
        "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n",
    )
    second = _capture(ns)
    assert reads == [{("nat", "KUBE-SEP-K8SSNEW"), ("nat", svc), ("nat", gone), ("filter", "FORWARD")}]
    assert second.methods["iptables"] == iptfast.NETLINK_METHOD
    full = _full(ns, monkeypatch)
    assert second.iptables == full.iptables
    assert second.iptables != first.iptables
    assert second.iptables is not None
    assert second.iptables.chain("nat", gone) is None
    assert second.ip6tables is first.ip6tables  # small, unchanged: reused as before
    # and once more from the patched translation
    _restore(ns, f"*nat\n-A {svc} -j RETURN\nCOMMIT\n")
    third = _capture(ns)
    assert reads[1:] == [{("nat", svc)}]
    assert third.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_a_first_capture_reads_a_large_family_on_the_node(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    """A node's first capture knows a family is large from its tables' chain counts: its rules are read by
    the dumper on the node (its own interpreter), not in this process for a digest, and neither are they
    for the nft part's digest; a small family still is."""
    dumped: list[tuple[set[str], bool]] = []
    real = netnsio.fingerprints

    def spy(exec: Any, timeout: float = 10.0, families: dict[str, int] | None = None, **kw: Any) -> Any:
        dumped.append((set(families or {}), kw.get("nft_exact", True)))
        return real(exec, timeout, families, **kw)

    monkeypatch.setattr(netnsio, "fingerprints", spy)
    first = _capture(ns)
    # iptables (about 50 chains) is large: not read in-process; the nft part goes by the generation
    assert dumped == [(set(), False), ({"ip6tables"}, False)]
    assert first.methods["iptables"] == iptfast.NETLINK_METHOD
    assert first.iptables == _full(ns, monkeypatch).iptables
    assert _capture(ns).iptables is first.iptables  # fingerprinted by the generation: reused
    svc = _svc_chain(first)
    _restore(ns, f"*nat\n-A {svc} -j RETURN\nCOMMIT\n")
    third = _capture(ns)
    assert reads == [{("nat", svc)}]  # the monitor the first capture opened was kept: patched
    assert third.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_a_family_known_small_is_not_given_to_the_dumper(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first capture read ip6tables (a few chains) in-process and found it small: the node runs its plain
    ip6tables-save, not an interpreter that would find it small and run that; iptables goes to the dumper."""
    from pytest_k8sstate.node import ahead, commands

    monkeypatch.setattr(ahead, "families", lambda *_args: [])  # iptables in the script, not read ahead
    scripts: list[str] = []
    real = commands.script

    def spy(parts: list[str], marker: str, *args: Any) -> str:
        scripts.append(real(parts, marker, *args))
        return scripts[-1]

    monkeypatch.setattr(commands, "script", spy)
    first = _capture(ns)
    assert first.methods == {"iptables": iptfast.NETLINK_METHOD}  # ip6tables by its plain command
    (script,) = scripts
    marker = script.split("'")[1].split()[0]
    by_part = {s.split("'")[0]: s for s in script.split(f"echo '{marker} ")[1:]}  # the last one: the command
    assert "K8SS-NFTNL" in by_part["iptables"]
    assert "K8SS-NFTNL" not in by_part["ip6tables"]
    assert "ip6tables-save -c" in by_part["ip6tables"]
    assert first.ip6tables == _full(ns, monkeypatch).ip6tables


@needs_nft
def test_a_change_elsewhere_keeps_the_parsed_ruleset(
    ns: NetnsExec, reads: list[set[tuple[str, str]]]
) -> None:
    first = _capture(ns)
    ns.run(["nft", "add", "chain", "inet", "k8ss-other", "c"], timeout=30)  # the generation moves
    ns.run(["ip6tables-nft", "-A", "FORWARD", "-j", "ACCEPT"], timeout=30)  # another family
    second = _capture(ns)
    assert reads == []
    assert second.iptables is first.iptables
    assert second.nft is not None
    assert ("inet", "k8ss-other") in second.nft.tables
    assert second.ip6tables != first.ip6tables


@needs_nft
def test_lost_announcements_mean_a_full_read_then_patching_again(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    _capture(ns)
    mon = nfmon._monitors[f"/run/netns/{ns.netns}"]
    mon.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)  # the kernel's minimum: a few messages
    lines = "".join(f":K8SS-MANY-{i} - [0:0]\n-A K8SS-MANY-{i} -j RETURN\n" for i in range(200))
    _restore(ns, f"*nat\n{lines}COMMIT\n")  # more announcements than the buffer holds: ENOBUFS
    mon.drain()  # what is left of them (as a capture would)
    mon.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    _restore(ns, "*nat\n-A K8SS-MANY-3 -j ACCEPT\nCOMMIT\n")  # announced in full, generation too
    second = _capture(ns)
    assert reads == []  # read in full
    assert second.iptables == _full(ns, monkeypatch).iptables
    assert second.iptables is not None
    assert second.iptables.chain("nat", "K8SS-MANY-199") is not None
    _restore(ns, "*nat\n-A K8SS-MANY-7 -j ACCEPT\nCOMMIT\n")
    third = _capture(ns)
    assert reads == [{("nat", "K8SS-MANY-7")}]
    assert third.iptables == _full(ns, monkeypatch).iptables


@needs_nft
@pytest.mark.parametrize("how", ["a rule", "nothing"])
def test_a_new_table_means_a_full_read(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A new iptables table, with a rule (its chain is announced too) or empty (only the table is):
    iptables-save prints it either way."""
    _capture(ns)
    if how == "a rule":
        ns.run(["iptables-nft", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"], timeout=30)
    else:
        ns.run(["nft", "add", "table", "ip", "mangle"], timeout=30)
    second = _capture(ns)
    assert second.iptables is not None
    assert "mangle" in second.iptables.tables
    assert second.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_switched_off(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    monkeypatch.setenv(nfmon.ENV, "0")
    first = _capture(ns)
    _restore(ns, f"*nat\n-A {_svc_chain(first)} -j RETURN\nCOMMIT\n")
    second = _capture(ns)
    assert reads == []
    assert second.iptables == _full(ns, monkeypatch).iptables
    assert f"/run/netns/{ns.netns}" not in nfmon._monitors


@needs_nft
def test_the_monitor_is_closed_with_its_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 1)
    monkeypatch.setattr(reuse, "LARGE_CHAINS", 1)
    rules = kube_proxy_iptables(make_services(2, 1))
    with netns.temporary("nfmon") as n:
        _load(n, rules)
        _capture(n)
        path = f"/run/netns/{n.netns}"
        mon = nfmon._monitors[path]
        assert mon.sock.fileno() >= 0
    assert path not in nfmon._monitors  # netns.delete closed it first
    assert mon.sock.fileno() == -1
    # a namespace deleted behind the project's back: the next monitor opened closes the stale one
    gone = netns.create(f"{netns.PREFIX}nfmon-gone")
    try:
        _load(gone, rules)
        _capture(gone)
        stale = nfmon._monitors[f"/run/netns/{gone.netns}"]
    finally:
        run_command(["ip", "netns", "delete", gone.netns], timeout=10)
    with netns.temporary("nfmon") as other:
        _load(other, rules)
        _capture(other)
        assert stale.sock.fileno() == -1
        assert f"/run/netns/{gone.netns}" not in nfmon._monitors
    assert netnsio.netns_id(gone) is None


@needs_nft
def test_a_capture_from_an_earlier_record_still_sees_every_change(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    """Announcements are not used up by the capture that read them: a capture that planned from the
    record before it (another thread capturing the same node) gets the chains changed since that one."""
    first = _capture(ns)
    key = next(k for k in reuse._memos if k[1] == ns.node)
    earlier = reuse._memos[key]
    svc = _svc_chain(first)
    _restore(ns, f"*nat\n-A {svc} -j RETURN\nCOMMIT\n")
    second = _capture(ns)
    _restore(ns, "*filter\n:K8SS-LATER - [0:0]\nCOMMIT\n")
    reuse._memos[key] = earlier
    third = _capture(ns)
    assert reads == [{("nat", svc)}, {("nat", svc), ("filter", "K8SS-LATER")}]
    assert second.iptables != third.iptables
    assert third.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_a_change_the_monitor_forgot_means_a_full_read(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    """Transactions forgotten (more than the monitor keeps) before a translation's: its floor moved past
    the translation, which is read in full again."""
    first = _capture(ns)
    mon = nfmon._monitors[f"/run/netns/{ns.netns}"]
    _restore(ns, f"*nat\n-A {_svc_chain(first)} -j RETURN\nCOMMIT\n")
    ns.run(["nft", "add", "chain", "inet", "k8ss-other", "c"], timeout=30)  # nothing of the family
    with mon.lock:
        mon.drain()
        assert mon.last_gen is not None
        monkeypatch.setattr(nfmon, "_MAX_BATCHES", 1)
        mon._close_batch(mon.last_gen)  # as if one more transaction came: the first two are forgotten
    assert mon.floor_partial
    second = _capture(ns)
    assert reads == []
    assert second.iptables != first.iptables
    assert second.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_a_renamed_chain_means_a_full_read(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    """``iptables -E`` announces the chain under its new name only, and not the rules that jump to it
    (their text changes): nothing to patch chain by chain."""
    first = _capture(ns)
    svc = _svc_chain(first)
    sep = _sep_chains(first, svc)[0]
    ns.run(["iptables-nft", "-t", "nat", "-E", sep, "K8SS-RENAMED"], timeout=30)
    second = _capture(ns)
    assert reads == []
    assert second.iptables is not None
    assert second.iptables.chain("nat", sep) is None
    assert "K8SS-RENAMED" in _sep_chains(second, svc) or any(
        r.target == "K8SS-RENAMED" for r in second.iptables.tables["nat"].chains[svc].rules
    )
    assert second.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_a_change_to_most_chains_is_read_in_full(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    first = _capture(ns)
    assert first.iptables is not None
    nat = first.iptables.tables["nat"].chains
    _restore(ns, "*nat\n" + "".join(f"-A {c} -j RETURN\n" for c in nat if c.startswith("KUBE-")) + "COMMIT\n")
    second = _capture(ns)
    assert reads == []
    assert second.iptables == _full(ns, monkeypatch).iptables


def test_changed_chains_counts_the_transactions_after_the_translation() -> None:
    """Which recorded transactions count, on a monitor with a made-up record (its socket has nothing)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        m = nfmon.Monitor("/run/netns/none", (0, 0), a, floor=4)
        nat = {2: {("nat", "A")}}
        m.batches.extend(
            [(5, nat), (6, {2: {("nat", "B")}, 10: {("nat", "V6")}}), (7, {2: {("filter", "C")}})]
        )
        m.last_gen = 7
        assert nfmon.changed_chains(m, 2, 5, 6, exact=True) == {("nat", "B")}
        # a translation read right after generation 5 was bumped may miss part of transaction 5
        assert nfmon.changed_chains(m, 2, 5, 6, exact=False) == {("nat", "A"), ("nat", "B")}
        assert nfmon.changed_chains(m, 10, 4, 7, exact=True) == {("nat", "V6")}
        assert nfmon.changed_chains(m, 2, 3, 7, exact=True) is None  # before the monitor knew
        assert nfmon.changed_chains(m, 2, 8, 7, exact=True) is None  # after now: another namespace
        assert nfmon.changed_chains(m, 2, 4, 9, exact=True, wait=0.05) is None  # 9 not announced
        assert nfmon.changed_chains(m, 2, 4, 7, exact=False) is not None  # 4: the monitor's opening
        m.floor_partial = True  # 4 ended a loss: what a translation read at 4 may lack is not recorded
        assert nfmon.changed_chains(m, 2, 4, 7, exact=False) is None
        assert nfmon.changed_chains(m, 2, 4, 7, exact=True) is not None
        m.batches.append((8, {2: {("nat", "")}}))
        m.last_gen = 8
        assert nfmon.changed_chains(m, 2, 7, 8, exact=True) == {("nat", "")}
        top = 1 << 32
        w = nfmon.Monitor("/run/netns/none", (0, 0), a, floor=top - 4)  # generations wrap around
        w.batches.extend(
            [(top - 3, {2: {("nat", "C")}}), (top - 1, {2: {("nat", "D")}}), (1, {2: {("nat", "E")}})]
        )
        w.last_gen = 1
        assert nfmon.changed_chains(w, 2, top - 3, 1, exact=True) == {("nat", "D"), ("nat", "E")}
    finally:
        a.close()
        b.close()


@needs_nft
def test_a_translation_another_monitor_followed_is_not_patched(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch, reads: list[set[tuple[str, str]]]
) -> None:
    """A namespace recreated under the same name can get the same inode (the memo's key): only the
    monitor that was open when a translation was read may patch it."""
    first = _capture(ns)
    key = next(k for k in reuse._memos if k[1] == ns.node)
    base = reuse._memos[key].bases["iptables"]
    reuse._memos[key].bases["iptables"] = base._replace(monitor=base.monitor + 1000)
    _restore(ns, f"*nat\n-A {_svc_chain(first)} -j RETURN\nCOMMIT\n")
    second = _capture(ns)
    assert reads == []
    assert second.iptables == _full(ns, monkeypatch).iptables


@needs_nft
def test_a_small_node_keeps_no_monitor() -> None:
    with netns.temporary("nfmon") as n:
        _load(n, kube_proxy_iptables(make_services(3, 1)))  # far fewer chains than reuse.LARGE_CHAINS
        _capture(n)
        _capture(n)
        assert f"/run/netns/{n.netns}" not in nfmon._monitors


def test_a_closed_socket_ends_the_drain() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.close()
    m = nfmon.Monitor("/run/netns/none", (0, 0), a, floor=1)
    m.last_gen = 1
    a.close()  # as a sweep in another thread would: recv now fails with EBADF every time
    m.drain()
    assert m.lost
    assert not m.announced(1)


def test_a_monitor_opened_after_its_caller_gave_up_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """in_node's timeout is a fake here (the boundary: a netns join that never returns): the socket the
    late thread opened is closed, not left holding the namespace."""
    opened: list[socket.socket] = []

    def fake_open() -> tuple[socket.socket, int]:
        s, other = socket.socketpair()
        other.close()
        opened.append(s)
        return s, 1

    def slow_in_node(exec: Any, fn: Any, timeout: float) -> Any:
        fn()  # the thread finished its work...
        raise CommandTimeout("netlink read did not finish")  # ...after the caller stopped waiting

    monkeypatch.setattr(nfmon, "_open", fake_open)
    monkeypatch.setattr(netnsio, "in_node", slow_in_node)
    monkeypatch.setattr(netnsio, "netns_id", lambda exec: (1, 2))
    with pytest.raises(CommandTimeout):
        nfmon.monitor_for(NetnsExec("k8ss-nfmon-none"), 1)
    assert [s.fileno() for s in opened] == [-1]
    assert "/run/netns/k8ss-nfmon-none" not in nfmon._monitors


@needs_nft
def test_a_node_that_became_small_loses_its_monitor(ns: NetnsExec) -> None:
    _capture(ns)
    path = f"/run/netns/{ns.netns}"
    assert path in nfmon._monitors
    for table in ("nat", "filter"):
        ns.run(["iptables-nft", "-t", table, "-F"], timeout=30)
        ns.run(["iptables-nft", "-t", table, "-X"], timeout=30)
    small = _capture(ns)  # read in full: the record now says small
    assert small.iptables is not None
    assert small.iptables.rule_count() == 0
    _capture(ns)
    assert path not in nfmon._monitors
