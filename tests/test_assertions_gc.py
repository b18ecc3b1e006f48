"""The dataplane assertions never host a cyclic garbage collection: one that a snapshot's many objects
made due lands after the assertion, not in it (with a few large snapshots in a session a full collection
takes 0.1–0.5 s, which would be timed as the assertion's)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from diff_fixtures import WEB_ENDPOINTS, iptables_node

import pytest_k8sstate.assertions as A


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations collected while the test runs, with a collection due at every allocation."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    was, threshold = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(1, 1, 1)
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*threshold)
        if not was:
            gc.disable()


NODE = iptables_node("n1")
WRONG = ["10.9.9.9:1"]
# each call allocates nothing before the assertion starts (arguments bound beforehand)
CALLS: dict[str, Callable[[], object]] = {
    "dnat_to": lambda: A.assert_dnat_to(NODE, "default/web:http", endpoints=WEB_ENDPOINTS),
    "dnat_to by dst": lambda: A.assert_dnat_to(NODE, dst="10.96.0.20:80", endpoints=WEB_ENDPOINTS),
    "masquerade": lambda: A.assert_masquerade(NODE, dst="10.96.0.20:80"),
}


@pytest.mark.parametrize("call", CALLS)
def test_the_dataplane_assertions_run_without_a_collection(collections: list[int], call: str) -> None:
    fn = CALLS[call]
    fn()  # the tracer's first use (imports, caches) aside
    collections.clear()
    fn()
    during = len(collections)  # (a list made here would be an allocation, and set one off)
    assert during == 0, f"{collections[:during]}: collection(s) of these generations ran inside it"
    assert gc.isenabled(), "the GC is on again afterwards"
    _ = [[] for _ in range(3)]
    assert collections, "the collection that was due runs after it"


def test_a_failing_assertion_turns_the_gc_back_on() -> None:
    assert gc.isenabled()
    with pytest.raises(AssertionError, match=r"expected DNAT to 10\.9\.9\.9:1"):
        A.assert_dnat_to(NODE, "default/web:http", endpoints=WRONG)
    assert gc.isenabled()
    with pytest.raises(AssertionError, match="from an outside client: expected not masqueraded"):
        A.assert_masquerade(NODE, dst="10.96.0.20:80", expected=False)
    assert gc.isenabled()


def test_a_capture_runs_without_the_cyclic_gc_and_turns_it_back_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Snapshot.capture`` makes 100k+ objects on a large cluster: no collection over the snapshots a
    session holds while it runs; the GC is back on after it, also when it raised."""
    from pytest_k8sstate.state import snapshot as S

    seen: list[bool] = []

    def extras(*_args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        seen.append(gc.isenabled())
        return {}, {}

    monkeypatch.setattr(S, "capture_extras", extras)
    assert gc.isenabled()
    S.Snapshot.capture("gc")
    assert seen == [False]
    assert gc.isenabled()

    def broken(*_args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        raise RuntimeError("extras failed")

    monkeypatch.setattr(S, "capture_extras", broken)
    with pytest.raises(RuntimeError, match="extras failed"):
        S.Snapshot.capture("gc")
    assert gc.isenabled()
