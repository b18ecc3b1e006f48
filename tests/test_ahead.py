"""A large iptables family read ahead of the node's other commands (node/ahead.py).

The slots and the error paths with plain functions in real threads; the capture itself in a real
namespace with real kube-proxy-shaped rules, against ``iptables-save -c`` of the same namespace.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_capture_nft import _load, needs_nft  # tests/ is on sys.path (rootdir-less layout)

from pytest_k8sstate.errors import CommandError, CommandTimeout
from pytest_k8sstate.node import ahead, capture, commands, iptfast, netns, netnsio, nftomit
from pytest_k8sstate.node.capture import collect_node
from pytest_k8sstate.node.commands import Raw
from pytest_k8sstate.node.exec import DockerExec, NetnsExec
from pytest_k8sstate.testing import kube_proxy_iptables, make_services


def test_reads_wait_for_a_slot_and_finishing_does_not_hold_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """One slot: the second read starts only once the first read is done, while the first is still
    finishing (its translation overlaps the next read)."""
    monkeypatch.setattr(ahead, "_SLOTS", threading.BoundedSemaphore(1))
    events: list[str] = []
    first_finishing = threading.Event()
    second_read = threading.Event()

    def read(name: str) -> str:
        events.append(f"read {name}")
        time.sleep(0.05)
        events.append(f"read {name} done")
        if name == "b":
            second_read.set()
        return name

    def finish(got: str) -> str:
        if got == "a":
            first_finishing.set()
            assert second_read.wait(10), "the second read did not run while the first was finishing"
        return got.upper()

    a = ahead.Ahead("a", lambda: read("a"), finish, timeout=10)
    assert first_finishing.wait(10)
    b = ahead.Ahead("b", lambda: read("b"), finish, timeout=10)
    assert (a.read(), a.finished(), b.read(), b.finished()) == ("a", "A", "b", "B")
    assert events == ["read a", "read a done", "read b", "read b done"]


def test_no_more_reads_at_once_than_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead, "_SLOTS", threading.BoundedSemaphore(2))
    lock = threading.Lock()
    now = [0]
    most = [0]

    def read() -> int:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
        return 1

    runs = [ahead.Ahead(str(i), read, lambda x: x, timeout=10) for i in range(5)]
    assert [r.finished() for r in runs] == [1] * 5
    assert most[0] == 2


def test_the_slots_are_the_cpus_the_process_may_use() -> None:
    """A process held to one CPU (a container's cpuset, ``taskset``) reads one family at a time, whatever
    the machine's CPU count."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from pytest_k8sstate.node import ahead; "
        "print(ahead._cpus(), ahead._SLOTS.acquire(blocking=False), ahead._SLOTS.acquire(blocking=False))"
    )
    out = subprocess.run(  # noqa: S603 - argv list, no shell
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["1", "True", "False"]


def test_errors_come_back_where_they_are_asked_for() -> None:
    def boom() -> int:
        raise CommandError("read failed")

    def bad_finish(got: int) -> int:
        raise CommandError(f"could not finish {got}")

    failed_read = ahead.Ahead("r", boom, lambda x: x, timeout=10)
    with pytest.raises(CommandError, match="read failed"):
        failed_read.read()
    with pytest.raises(CommandError, match="read failed"):
        failed_read.finished()
    failed_finish = ahead.Ahead("f", lambda: 7, bad_finish, timeout=10)
    assert failed_finish.read() == 7  # what was read is kept
    with pytest.raises(CommandError, match="could not finish 7"):
        failed_finish.finished()


def test_a_read_that_never_ends_is_a_timeout_naming_it() -> None:
    never = threading.Event()
    stuck = ahead.Ahead("node n1 iptables", lambda: never.wait(30), lambda x: x, timeout=0.05)
    with pytest.raises(CommandTimeout, match="node n1 iptables: not read within"):
        stuck.read()
    never.set()


def test_node_containers_and_the_fast_path_off_are_not_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ahead.families(DockerExec("kind-worker"), ["iptables", "nft"], 10) == []
    assert ahead.families(NetnsExec("no-such-ns"), ["nft", "routes"], 10) == []
    monkeypatch.setenv(iptfast.ENV, "0")
    assert ahead.families(NetnsExec("no-such-ns"), ["iptables"], 10) == []


@pytest.fixture
def ns() -> Iterator[NetnsExec]:
    with netns.temporary("ahead") as n:
        yield n


@needs_nft
def test_a_family_of_min_chains_is_read_ahead_before_the_nft_listing_is_planned(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At MIN_CHAINS the family is read ahead (its dump started before nftomit plans the nft listing,
    and not in the node's script) and gives what iptables-save gives; one chain fewer and it is not."""
    _load(ns, kube_proxy_iptables(make_services(40, 2)))
    monkeypatch.setenv("K8SSTATE_NODE_REUSE", "0")
    sizes = netnsio.iptables_sizes(ns)
    assert sizes is not None
    order: list[str] = []
    real_start, real_plan, real_script = ahead.start, nftomit.plan, commands.script

    def spy_start(*args: Any, **kwargs: Any) -> Any:
        order.append(f"ahead {args[1]}")
        return real_start(*args, **kwargs)

    def spy_plan(*args: Any) -> Any:
        order.append("nftomit")
        return real_plan(*args)

    def spy_script(parts: list[str], *args: Any) -> str:
        order.append("script " + " ".join(parts))
        return real_script(parts, *args)

    monkeypatch.setattr(ahead, "start", spy_start)
    monkeypatch.setattr(nftomit, "plan", spy_plan)
    monkeypatch.setattr(commands, "script", spy_script)
    monkeypatch.setattr(iptfast, "MIN_CHAINS", sizes[2])
    fast = collect_node(ns)
    assert order[:2] == ["ahead iptables", "nftomit"], order
    assert "iptables" not in order[2].split()[1:], order
    assert fast.methods.get("iptables") == iptfast.NETLINK_METHOD, fast.methods
    slow = collect_node(ns, nft_fast=False)
    assert not fast.errors, fast.errors
    assert not slow.errors, slow.errors
    assert fast.iptables == slow.iptables
    assert fast.iptables is not None
    assert fast.iptables.rule_count() > 100

    order.clear()
    monkeypatch.setattr(iptfast, "MIN_CHAINS", sizes[2] + 1)
    assert collect_node(ns, parts=["iptables"]).iptables == slow.iptables
    assert not any(o.startswith("ahead") for o in order), order
    assert "iptables" in order[-1].split(), order


@pytest.fixture
def small(ns: NetnsExec, monkeypatch: pytest.MonkeyPatch) -> NetnsExec:
    """A few Services' rules, read ahead (the threshold at one chain; reuse off, else the plan's own
    in-process dump of a small family is what gets translated)."""
    _load(ns, kube_proxy_iptables(make_services(10, 2)))
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 1)
    monkeypatch.setenv("K8SSTATE_NODE_REUSE", "0")
    return ns


@needs_nft
def test_a_failing_read_ahead_is_an_error_of_its_part_only(
    small: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:

    def failing(exec: Any, part: str, timeout: float, fast: bool = False, argv: Any = None) -> Raw:
        if part == "iptables":
            return Raw(1, b"", b"iptables-save: broken on purpose\n")
        return commands.run_single(exec, part, timeout, fast, argv)

    monkeypatch.setattr(capture, "run_single", failing)
    state = collect_node(small, parts=["iptables", "routes"])
    assert "broken on purpose" in state.errors["iptables"]
    assert state.iptables is None
    assert "routes" not in state.errors
    assert state.routes


@needs_nft
def test_a_translation_that_fails_ahead_is_an_error_not_a_traceback(
    small: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise CommandError("iptables-save -c exited 1 on purpose")

    monkeypatch.setattr(iptfast, "translate_or_fallback", refuse)
    state = collect_node(small, parts=["iptables", "routes"])
    assert "on purpose" in state.errors["iptables"]
    assert "fast path's fallback" in state.errors["iptables"]
    assert state.routes
