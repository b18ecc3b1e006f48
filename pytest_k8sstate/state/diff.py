"""``before.diff(after)`` → :class:`StateDiff`: the etcd diff, one :class:`NodeDiff` per node, and the
ignore patterns of the default view.

Heartbeats are **always recorded** in the diff (``to_json(full=True)``, the default, keeps them as
``modified``), but the default *view* (:meth:`StateDiff.view`, :meth:`StateDiff.summary`, ``k8sstate diff``
without ``--all``) and the helpers (:meth:`StateDiff.etcd_added` … with ``include_ignored=False``, the
``assert_*_keys`` assertions) hide the changes matched by ``ignore`` (any change) and ``ignore_modified``
(modifications only); see :mod:`pytest_k8sstate.state.keys` for the patterns and their defaults. Pass
``ignore=()`` to ``diff`` / ``view`` to see everything. A node present on one side only is diffed against
an empty node and listed in ``nodes_added`` / ``nodes_removed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.state.etcddiff import EtcdDiff, KeyChange
from pytest_k8sstate.state.extras import render_extras
from pytest_k8sstate.state.keys import DEFAULT_IGNORE, DEFAULT_IGNORE_MODIFIED, matches_any
from pytest_k8sstate.state.logs import LogDiff
from pytest_k8sstate.state.nodediff import NodeDiff
from pytest_k8sstate.state.pods import PodsDiff
from pytest_k8sstate.state.render import diff_summary

__all__ = ["SCHEMA", "StateDiff"]

SCHEMA = 1
"""Version of the JSON written for snapshots and diffs."""


@dataclass
class StateDiff:
    """``before.diff(after)``: everything that changed, plus the ignore patterns of the default view."""

    etcd: EtcdDiff = field(default_factory=EtcdDiff)
    nodes: dict[str, NodeDiff] = field(default_factory=dict)
    nodes_added: list[str] = field(default_factory=list)
    nodes_removed: list[str] = field(default_factory=list)
    before_label: str = "before"
    after_label: str = "after"
    before_revision: int | None = None
    after_revision: int | None = None
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    ignore_modified: tuple[str, ...] = DEFAULT_IGNORE_MODIFIED
    notes: list[str] = field(default_factory=list)
    # -- optional parts (state/extras.py): None when not captured --
    logs: LogDiff | None = None
    """Component log lines written between the two snapshots, ``"<node>/<component>"`` → lines."""
    pods: PodsDiff | None = None
    """Pods' network namespaces: pods added / removed, their links, addresses and routes."""

    # -- ignore-aware helpers ---------------------------------------------------------------------
    def is_ignored(self, change: str, key: str) -> bool:
        """Is a ``change`` ("added"/"removed"/"modified") of ``key`` hidden from the default view?"""
        if matches_any(self.ignore, key):
            return True
        return change == "modified" and matches_any(self.ignore_modified, key)

    def _select(self, change: str, include_ignored: bool) -> list[KeyChange]:
        items: list[KeyChange] = getattr(self.etcd, change)
        if include_ignored:
            return list(items)
        return [c for c in items if not self.is_ignored(change, c.key)]

    def etcd_added(self, include_ignored: bool = False) -> list[KeyChange]:
        return self._select("added", include_ignored)

    def etcd_removed(self, include_ignored: bool = False) -> list[KeyChange]:
        return self._select("removed", include_ignored)

    def etcd_modified(self, include_ignored: bool = False) -> list[KeyChange]:
        return self._select("modified", include_ignored)

    def hidden_counts(self) -> dict[str, int]:
        """How many etcd changes the default view hides, per change type."""
        return {
            what: len(getattr(self.etcd, what)) - len(self._select(what, False))
            for what in ("added", "removed", "modified")
        }

    def view(
        self, ignore: Sequence[str] | None = None, ignore_modified: Sequence[str] | None = None
    ) -> StateDiff:
        """A copy without the ignored etcd changes (``None`` = this diff's patterns; ``()`` = nothing)."""
        src = dataclasses.replace(
            self,
            ignore=self.ignore if ignore is None else tuple(ignore),
            ignore_modified=self.ignore_modified if ignore_modified is None else tuple(ignore_modified),
        )
        return dataclasses.replace(
            src,
            etcd=EtcdDiff(added=src.etcd_added(), removed=src.etcd_removed(), modified=src.etcd_modified()),
        )

    def __bool__(self) -> bool:
        return bool(
            self.etcd or any(self.nodes.values()) or self.nodes_added or self.nodes_removed or self.pods
        )

    @property
    def netfilter_changed(self) -> bool:
        return any(nd.netfilter_changed for nd in self.nodes.values())

    # -- JSON -------------------------------------------------------------------------------------
    def to_json(self, full: bool = True) -> dict[str, Any]:
        """Plain JSON. ``full=True`` (default, round-trips): every change, ignored ones included;
        ``full=False``: the default view, with ``etcd.hidden`` counting what the patterns hid."""
        src = self if full else self.view()
        etcd = src.etcd.to_json()
        if not full:
            etcd["hidden"] = self.hidden_counts()
        return {
            "schema": SCHEMA,
            "before": {"label": self.before_label, "revision": self.before_revision},
            "after": {"label": self.after_label, "revision": self.after_revision},
            "ignore": list(self.ignore),
            "ignore_modified": list(self.ignore_modified),
            "etcd": etcd,
            "nodes": {name: nd.to_json() for name, nd in self.nodes.items()},
            "nodes_added": list(self.nodes_added),
            "nodes_removed": list(self.nodes_removed),
            "notes": list(self.notes),
            **({"logs": self.logs.to_json()} if self.logs is not None else {}),
            **({"pods": self.pods.to_json()} if self.pods is not None else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        before = d.get("before") or {}
        after = d.get("after") or {}
        return cls(
            etcd=EtcdDiff.from_json(d.get("etcd") or {}),
            nodes={str(n): NodeDiff.from_json(v) for n, v in (d.get("nodes") or {}).items()},
            nodes_added=[str(x) for x in d.get("nodes_added") or []],
            nodes_removed=[str(x) for x in d.get("nodes_removed") or []],
            before_label=str(before.get("label", "before")),
            after_label=str(after.get("label", "after")),
            before_revision=before.get("revision"),
            after_revision=after.get("revision"),
            ignore=tuple(d.get("ignore", DEFAULT_IGNORE)),
            ignore_modified=tuple(d.get("ignore_modified", DEFAULT_IGNORE_MODIFIED)),
            notes=[str(x) for x in d.get("notes") or []],
            logs=LogDiff.from_json(d["logs"]) if d.get("logs") is not None else None,
            pods=PodsDiff.from_json(d["pods"]) if d.get("pods") is not None else None,
        )

    # -- text -------------------------------------------------------------------------------------
    def summary(self, full: bool = False, limit: int | None = 40, *, raw_rules: bool = False) -> str:
        """Short plain text. ``full`` includes ignored keys; ``limit`` caps lines per section (None = all);
        ``raw_rules``: node changes one per line (not summarised per Service nor paired)."""
        return diff_summary(self, full=full, limit=limit, raw_rules=raw_rules) + render_extras(self, limit)

    def __str__(self) -> str:
        return self.summary()
