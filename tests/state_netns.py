"""Helpers of the state tests that capture real network namespaces: restore rules, capture, wrap in a
snapshot, and the ``ns`` fixture (a temporary namespace; skips without root)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.state import Snapshot

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: creates network namespaces and loads netfilter rules (CAP_NET_ADMIN)",
)


def restore(ns: NetnsExec, text: str, *, counters: bool = False, noflush: bool = False) -> None:
    argv = ["iptables-restore"]
    if counters:
        argv.append("-c")
    if noflush:
        argv.append("--noflush")
    ns.run(argv, input=text.encode(), timeout=60)


def capture(ns: NetnsExec) -> NodeState:
    state = collect_node(ns, ipvs=False)
    assert not state.errors, state.errors
    return state


def snap(label: str, nodes: dict[str, NodeState], etcd: object = None) -> Snapshot:
    return Snapshot(label=label, taken_at=1_700_000_000.0, cluster={"name": "t"}, etcd=etcd, nodes=nodes)  # type: ignore[arg-type]


@pytest.fixture(name="ns")
def ns_fixture() -> Iterator[NetnsExec]:
    """A temporary network namespace; import ``ns_fixture`` to get the ``ns`` fixture."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces (CAP_NET_ADMIN)")
    with netns.temporary("h4m") as n:
        yield n
