"""``diff.logs``: the component log lines written between two snapshots, per ``"<node>/<component>"``.

Snapshots taken with ``logs=...`` carry :class:`~pytest_k8sstate.node.logs.NodeLogCursors` (where each log
ended); :func:`read_log_diff` reads, on the live nodes, only the bytes between a *before* and an *after*
cursor (:func:`~pytest_k8sstate.node.logs.read_between`) into a :class:`LogDiff`, which a
:class:`~pytest_k8sstate.state.diff.StateDiff` keeps (``diff.logs``), saves (``diff.json``) and renders.

    diff.logs["kind-worker/kube-proxy"]                    # list[str]
    diff.logs.filter(component="kube-*", pattern=r"Syncing")  # a LogDiff with only the matching lines
    diff.logs.grep(r"error", node="kind-control-plane")       # list[(key, line)]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Self

from pytest_k8sstate.errors import K8sStateError, ParseError
from pytest_k8sstate.node.logs import MAX_BYTES, MAX_LINES, LogChunk, NodeLogCursors, read_between

if TYPE_CHECKING:
    from pytest_k8sstate.node.exec import NodeExec

__all__ = ["LogDiff", "read_log_diff"]


@dataclass
class LogDiff:
    """Per-source chunks keyed ``"<node>/<component>"``; ``notes``: cut, rotated or unreadable sources."""

    chunks: dict[str, list[LogChunk]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """Node → why its logs could not be read (the other nodes are kept)."""

    # -- mapping-like access ----------------------------------------------------------------------
    def __getitem__(self, key: str) -> list[str]:
        if key not in self.chunks:
            known = ", ".join(sorted(self.chunks)) or "(none)"
            raise KeyError(f"no log {key!r} in this diff; logs: {known}")
        return [ln for c in self.chunks[key] for ln in c.lines]

    def __contains__(self, key: object) -> bool:
        return key in self.chunks

    def __iter__(self) -> Iterator[str]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def keys(self) -> list[str]:
        return list(self.chunks)

    def items(self) -> list[tuple[str, list[str]]]:
        return [(k, self[k]) for k in self.chunks]

    @property
    def line_count(self) -> int:
        return sum(len(c.lines) for cs in self.chunks.values() for c in cs)

    @property
    def notes(self) -> list[str]:
        return [f"{k} ({c.source}): {c.note}" for k, cs in self.chunks.items() for c in cs if c.note]

    # -- filtering --------------------------------------------------------------------------------
    def filter(
        self, *, component: str | None = None, node: str | None = None, pattern: str | None = None
    ) -> LogDiff:
        """Only the sources whose component / node match the globs, and only the lines matching the
        regular expression ``pattern`` (searched, not anchored)."""
        try:
            rx = re.compile(pattern) if pattern is not None else None
        except re.error as exc:
            raise K8sStateError(f"log filter pattern {pattern!r} is not a regular expression: {exc}") from exc
        out = LogDiff(errors=dict(self.errors))
        for key, cs in self.chunks.items():
            n, _, comp = key.partition("/")
            if component is not None and not fnmatchcase(comp, component):
                continue
            if node is not None and not fnmatchcase(n, node):
                continue
            kept = [
                LogChunk(c.component, c.source, [ln for ln in c.lines if rx is None or rx.search(ln)], c.note)
                for c in cs
            ]
            if rx is None or any(c.lines for c in kept):
                out.chunks[key] = kept
        return out

    def grep(
        self, pattern: str, *, component: str | None = None, node: str | None = None
    ) -> list[tuple[str, str]]:
        """``(key, line)`` for every line matching ``pattern`` (regex, searched)."""
        f = self.filter(component=component, node=node, pattern=pattern)
        return [(k, ln) for k, lines in f.items() for ln in lines]

    # -- JSON / text ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "chunks": {k: [c.to_json() for c in cs] for k, cs in self.chunks.items()},
            "errors": dict(self.errors),
        }

    @classmethod
    def from_json(cls, d: Any) -> Self:
        if not isinstance(d, Mapping):
            raise ParseError("diff logs", None, "an object with 'chunks'", type(d).__name__)
        chunks = d.get("chunks") or {}
        if not isinstance(chunks, Mapping) or not all(isinstance(v, list) for v in chunks.values()):
            raise ParseError("diff logs", None, "'chunks': an object of lists")
        return cls(
            chunks={str(k): [LogChunk.from_json(c) for c in v] for k, v in chunks.items()},
            errors={str(k): str(v) for k, v in (d.get("errors") or {}).items()},
        )

    def render(self, limit: int | None = 20) -> list[str]:
        """Text lines: a header per source with its line count, then at most ``limit`` lines each."""
        out: list[str] = []
        for key, cs in self.chunks.items():
            lines = self[key]
            if not lines and not any(c.note for c in cs):
                continue
            out.append(f"  {key}: {len(lines)} line(s)")
            shown = lines if limit is None else lines[:limit]
            out += [f"    {ln[:300]}" for ln in shown]
            if len(shown) < len(lines):
                out.append(f"    … {len(lines) - len(shown)} more")
            out += [f"    ({c.source}: {c.note})" for c in cs if c.note]
        out += [f"  {n}: logs unreadable: {e}" for n, e in self.errors.items()]
        return out

    def __bool__(self) -> bool:
        return self.line_count > 0


def read_log_diff(
    before: Mapping[str, NodeLogCursors],
    after: Mapping[str, NodeLogCursors],
    execs: Sequence[NodeExec],
    *,
    max_bytes: int = MAX_BYTES,
    max_lines: int = MAX_LINES,
) -> LogDiff:
    """Read every node's log lines between its ``before`` and ``after`` cursors (nodes concurrently)."""
    out = LogDiff()
    by_name = {e.node: e for e in execs}
    todo = [(n, by_name[n]) for n in after if n in by_name]
    for n in after:
        if n not in by_name:
            out.errors[n] = "no way to run commands on this node (not in the cluster any more?)"
    for n, cur in after.items():
        if cur.errors:
            out.errors.setdefault(n, "; ".join(f"{k}: {v}" for k, v in cur.errors.items()))

    def one(item: tuple[str, NodeExec]) -> tuple[str, list[LogChunk]]:
        n, ex = item
        return n, read_between(ex, before.get(n), after[n], max_bytes=max_bytes, max_lines=max_lines)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
        for n, chunks in pool.map(one, todo):
            for c in chunks:
                out.chunks.setdefault(f"{n}/{c.component}", []).append(c)
    return out
