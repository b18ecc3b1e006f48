"""What every assertion module shares: verbosity, the failure message shape, "did you mean", node lookup."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence

from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.state import Snapshot

__all__ = [
    "SHORT_LIST",
    "as_list",
    "did_you_mean",
    "fail",
    "get_verbosity",
    "nodes_of",
    "set_verbosity",
    "short",
]

_verbosity = 0
try:
    _verbosity = int(os.environ.get("K8SSTATE_VERBOSITY", "0"))
except ValueError:
    _verbosity = 0

SHORT_LIST = 5


def set_verbosity(level: int) -> None:
    """Set the global verbosity (the plugin passes pytest's ``-v`` count); ≥ 1 appends full diffs."""
    global _verbosity
    _verbosity = int(level)


def get_verbosity() -> int:
    return _verbosity


def _verbose(verbose: bool | None) -> bool:
    return _verbosity >= 1 if verbose is None else verbose


def fail(message: str, full: str | None, verbose: bool | None, what: str = "the full diff") -> AssertionError:
    if full:
        if _verbose(verbose):
            message += "\n\n" + full
        else:
            message += f"\n(run pytest -v for {what})"
    return AssertionError(message)


def as_list(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def short(items: Sequence[str], n: int = SHORT_LIST) -> str:
    shown = [f"  {x}" for x in items[:n]]
    if len(items) > n:
        shown.append(f"  ... and {len(items) - n} more")
    return "\n".join(shown)


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` candidates close to ``word``: the best, and others nearly as close (within 0.1)."""
    cands = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(word, cands, n=n, cutoff=cutoff)
    if not close:
        return []
    ratios = {c: difflib.SequenceMatcher(None, word, c).ratio() for c in close}
    best = max(ratios.values())
    return [c for c in close if ratios[c] >= best - 0.1]


def nodes_of(state: Snapshot | NodeState, node: str | None) -> dict[str, NodeState]:
    if isinstance(state, Snapshot):
        if node is None:
            if not state.nodes:
                raise AssertionError(f"snapshot {state.label!r} has no node state (were nodes captured?)")
            return dict(state.nodes)
        if node not in state.nodes:
            near = did_you_mean(node, state.nodes, cutoff=0.3)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            known = ", ".join(state.nodes) or "none"
            raise AssertionError(f"no node {node!r} in snapshot {state.label!r} (nodes: {known}){hint}")
        return {node: state.nodes[node]}
    if node is not None and node != state.node:
        raise AssertionError(f"node state is for {state.node!r}, not {node!r}")
    return {state.node: state}
