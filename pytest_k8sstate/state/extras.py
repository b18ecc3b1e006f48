"""The optional parts of a snapshot beyond etcd and node rules: log cursors and pods' network namespaces.

Kept here so :mod:`pytest_k8sstate.state.snapshot` only calls four functions. Both parts are absent from a
snapshot captured without them (and from snapshots written before they existed), and their JSON keys
(``"logs"``, ``"pods"``) are only written when captured, so older readers ignore nothing they'd need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.node.logs import KIND_SOURCES, LogSource, NodeLogCursors, capture_cursors
from pytest_k8sstate.node.pods import collect_pods
from pytest_k8sstate.state.logs import LogDiff, read_log_diff
from pytest_k8sstate.state.pods import NodePods, PodsDiff, diff_pods

if TYPE_CHECKING:
    from pytest_k8sstate.node.exec import NodeExec

__all__ = [
    "LogsOption",
    "PodsOption",
    "capture_extras",
    "diff_extras",
    "extras_from_json",
    "extras_to_json",
    "render_extras",
]

LogsOption = bool | Sequence[LogSource] | Mapping[str, Sequence[LogSource]]
"""``True``: :data:`~pytest_k8sstate.node.logs.KIND_SOURCES` on every node; a list: those sources on every
node; a mapping: node → its sources (a node not named: none)."""
PodsOption = bool | Mapping[str, Mapping[str, str]]
"""``True``: every node's pods found with crictl; a mapping: node → ``{"ns/name": netns}``."""


def _sources(logs: LogsOption, node: str) -> Sequence[LogSource]:
    if logs is True:
        return KIND_SOURCES
    if isinstance(logs, Mapping):
        return logs.get(node, ())
    if isinstance(logs, bool):
        return ()
    return logs


def capture_extras(
    nodes: Sequence[NodeExec], logs: LogsOption, pods: PodsOption, conntrack: bool
) -> tuple[dict[str, NodeLogCursors], dict[str, NodePods]]:
    """Log cursors and pod namespaces of every node (concurrently); never raises for a node."""
    if not logs and not pods:
        return {}, {}

    def one(ex: NodeExec) -> tuple[NodeLogCursors | None, NodePods | None]:
        cur = capture_cursors(ex, _sources(logs, ex.node)) if logs else None
        np: NodePods | None = None
        if pods is True or (isinstance(pods, Mapping) and ex.node in pods):
            given = pods.get(ex.node) if isinstance(pods, Mapping) else None
            got, errors = collect_pods(ex, given, conntrack=conntrack)
            np = NodePods(ex.node, got, errors)
        return cur, np

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes)))) as pool:
        results = list(pool.map(one, nodes))
    cursors = {ex.node: c for ex, (c, _) in zip(nodes, results, strict=True) if c is not None}
    pod_states = {ex.node: p for ex, (_, p) in zip(nodes, results, strict=True) if p is not None}
    return cursors, pod_states


def extras_to_json(logs: Mapping[str, NodeLogCursors], pods: Mapping[str, NodePods]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if logs:
        out["logs"] = {n: c.to_json() for n, c in logs.items()}
    if pods:
        out["pods"] = {n: p.to_json() for n, p in pods.items()}
    return out


def extras_from_json(
    d: Mapping[str, Any], source: str
) -> tuple[dict[str, NodeLogCursors], dict[str, NodePods]]:
    """The ``logs`` / ``pods`` parts of a snapshot's JSON (absent: empty); ParseError naming the path."""
    logs: dict[str, NodeLogCursors] = {}
    pods: dict[str, NodePods] = {}
    for part in ("logs", "pods"):
        v = d.get(part)
        if v is None:
            continue
        if not isinstance(v, dict):
            raise ParseError(
                f"{source} at $.{part}", None, "an object mapping node name → state", type(v).__name__
            )
        for n, item in v.items():
            try:
                if part == "logs":
                    logs[str(n)] = NodeLogCursors.from_json(item)
                else:
                    pods[str(n)] = NodePods.from_json(item)
            except ParseError as exc:
                raise ParseError(f"{source} at $.{part}.{n}", None, str(exc)) from exc
    return logs, pods


def diff_extras(
    before_logs: Mapping[str, NodeLogCursors],
    after_logs: Mapping[str, NodeLogCursors],
    before_pods: Mapping[str, NodePods],
    after_pods: Mapping[str, NodePods],
    execs: Sequence[NodeExec],
) -> tuple[LogDiff | None, PodsDiff | None, list[str]]:
    """``diff.logs`` (read from the nodes through ``execs``), ``diff.pods``, notes on what is missing."""
    notes: list[str] = []
    log_diff: LogDiff | None = None
    if after_logs and execs:
        log_diff = read_log_diff(before_logs, after_logs, execs)
    elif after_logs or before_logs:
        notes.append("logs: cursors captured but not read (no node access; pass logs_from= to diff)")
    pods_diff = diff_pods(before_pods, after_pods) if (before_pods and after_pods) else None
    if (before_pods or after_pods) and not (before_pods and after_pods):
        notes.append("pods: network namespaces captured on one side only")
    return log_diff, pods_diff, notes


def render_extras(diff: Any, limit: int | None) -> str:
    """The ``pods`` and ``logs`` sections of a diff's text (empty when neither was captured / changed)."""
    out: list[str] = []
    pods: PodsDiff | None = getattr(diff, "pods", None)
    if pods:
        out += ["pods (network namespaces):", *pods.render(limit)]
    logs: LogDiff | None = getattr(diff, "logs", None)
    if logs is not None and (logs or logs.notes or logs.errors):
        out += [f"logs ({logs.line_count} new line(s)):", *logs.render(10 if limit is not None else None)]
    return "\n" + "\n".join(out) if out else ""
