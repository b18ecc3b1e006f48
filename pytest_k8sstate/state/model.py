"""Snapshots of a cluster (etcd + every node's network state) and the diff between two of them.

A :class:`Snapshot` is JSON round-trippable (``Snapshot.from_json(s.to_json()) == s``); ``save`` writes
atomically (temporary file in the same directory, fsync, ``os.replace``) and ``load`` raises
:class:`~pytest_k8sstate.errors.ParseError` naming the file and the line (bad JSON) or the JSON path
(``$.nodes.node-1.iptables``) of a field that does not fit the schema. A path ending in ``.gz`` is
gzip-compressed.

``before.diff(after)`` → :class:`StateDiff`:

* **etcd** — keys added / removed / modified (:class:`KeyChange` with kind, namespace, name and, where both
  values decode, ``changed_fields``: the object-level differences of ``Decoded.fields`` computed with
  ``deepdiff`` and written as dotted paths such as ``metadata.labels.app`` or ``spec.ports[0].port``;
  ``metadata.managedFields…`` is summarised as ``metadata.managedFields``). ``changed_fields`` is ``None``
  when a value does not decode (encrypted, binary, secrets without ``include_secrets``). A key counts as
  modified when its ``mod_revision`` or content hash changed.
* **per node** (:class:`NodeDiff`) — iptables chains added/removed, rules added/removed per table and chain
  with identity ``(table, chain, Rule.spec)``: independent of position and counters, with multiset
  semantics (a duplicated rule added once more shows up once); chain policy changes; nftables chains,
  rules (identity ``NftRule.text``, multiset) and set/map elements added/removed (nft tables are named
  ``"<family> <name>"``, e.g. ``"ip kube-proxy"``; the ``ip``/``ip6`` tables that the iptables-nft backend
  also shows as iptables tables are diffed once, as iptables); ipsets and their members; IPVS services; links,
  addresses and routes. A part that one side failed to capture (``NodeState.errors``) is not diffed —
  a note says so instead of reporting everything as added or removed. A node present on one side only is
  diffed against an empty node and listed in ``nodes_added`` / ``nodes_removed``.

Noise control
-------------
Heartbeats keep rewriting a few keys while a cluster is idle. They are **always recorded** in the diff
(``to_json(full=True)``, the default, keeps them as ``modified``), but the default *view*
(:meth:`StateDiff.view`, :meth:`StateDiff.summary`, ``k8sstate diff`` without ``--all``) and the helpers
(:meth:`StateDiff.etcd_added` … with ``include_ignored=False``, the ``assert_*_keys`` assertions) hide:

* :data:`DEFAULT_IGNORE` — any change (added, removed, modified) under
  ``/registry/leases/**`` (node heartbeats in ``kube-node-lease``, leader election of
  kube-controller-manager / kube-scheduler), ``/registry/masterleases/**`` (apiserver endpoint
  reconciler) and ``/registry/events/**`` (Events: written as a side effect of almost everything,
  expire after an hour);
* :data:`DEFAULT_IGNORE_MODIFIED` — only *modifications* of ``/registry/minions/*`` (Node objects: the
  kubelet refreshes their status periodically). A node added or removed stays visible.

Patterns are globs on keys: ``*`` and ``?`` stay within one ``/`` segment, ``**`` crosses segments
(``/registry/leases/**`` matches ``/registry/leases`` too). A pattern without a leading ``/`` is relative
to ``/registry/``: ``services/specs/default/*``. Pass ``ignore=()`` to ``diff`` / ``view`` to see everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pytest_k8sstate.errors import K8sStateError, ParseError

# --- the only imports of other engineers' state classes (adapt here when their API moves) -------------
from pytest_k8sstate.etcd.capture import EtcdState
from pytest_k8sstate.node.capture import NodeState

if TYPE_CHECKING:
    from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdTarget
    from pytest_k8sstate.node.exec import NodeExec

__all__ = [
    "DEFAULT_IGNORE",
    "DEFAULT_IGNORE_MODIFIED",
    "SCHEMA",
    "EtcdDiff",
    "KeyChange",
    "NodeDiff",
    "Snapshot",
    "StateDiff",
    "compile_key_pattern",
    "key_matches",
    "node_diff_lines",
]

SCHEMA = 1

DEFAULT_IGNORE: tuple[str, ...] = (
    "/registry/leases/**",
    "/registry/masterleases/**",
    "/registry/events/**",
)
"""Keys whose changes (any kind) the default view hides. See the module docstring."""

DEFAULT_IGNORE_MODIFIED: tuple[str, ...] = ("/registry/minions/*",)
"""Keys whose *modifications* the default view hides (Node status refreshes); additions stay visible."""

REGISTRY_PREFIX = "/registry/"


# --------------------------------------------------------------------------------------------------
# key patterns


@lru_cache(maxsize=1024)
def compile_key_pattern(pattern: str) -> re.Pattern[str]:
    """Glob → regex: ``*``/``?`` within a segment, ``**`` across; relative patterns start at /registry/."""
    if not pattern.startswith("/"):
        pattern = REGISTRY_PREFIX + pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("/**", i) and (i + 3 == n or pattern[i + 3] == "/"):
            out.append("(?:/.*)?")  # "/**" also matches nothing: /registry/leases/** ~ /registry/leases
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def key_matches(pattern: str, key: str) -> bool:
    return compile_key_pattern(pattern).match(key) is not None


def _matches_any(patterns: Iterable[str], key: str) -> bool:
    return any(key_matches(p, key) for p in patterns)


# --------------------------------------------------------------------------------------------------
# diff data


@dataclass
class KeyChange:
    """One etcd key that was added, removed or modified."""

    key: str
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    changed_fields: list[str] | None = None
    """Modified keys: dotted paths that differ (``[]`` = same content rewritten; ``None`` = not decodable)."""

    @property
    def identity(self) -> str:
        """``Service default/web`` (or just the key when not decoded)."""
        if not self.kind and not self.name:
            return self.key
        who = f"{self.namespace}/{self.name}" if self.namespace else (self.name or "?")
        return f"{self.kind or '?'} {who}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "changed_fields": None if self.changed_fields is None else list(self.changed_fields),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        cf = d.get("changed_fields")
        return cls(
            key=str(d["key"]),
            kind=d.get("kind"),
            namespace=d.get("namespace"),
            name=d.get("name"),
            changed_fields=None if cf is None else [str(x) for x in cf],
        )


@dataclass
class EtcdDiff:
    added: list[KeyChange] = field(default_factory=list)
    removed: list[KeyChange] = field(default_factory=list)
    modified: list[KeyChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [c.key for c in self.added],
            "removed": [c.key for c in self.removed],
            "modified": [c.key for c in self.modified],
            "details": {
                c.key: {"change": what, **{k: v for k, v in c.to_json().items() if k != "key"}}
                for what, changes in (
                    ("added", self.added),
                    ("removed", self.removed),
                    ("modified", self.modified),
                )
                for c in changes
            },
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        details: Mapping[str, Any] = d.get("details") or {}

        def build(what: str) -> list[KeyChange]:
            out = []
            for key in d.get(what) or []:
                det = details.get(key) or {}
                out.append(KeyChange.from_json({**det, "key": key}))
            return out

        return cls(added=build("added"), removed=build("removed"), modified=build("modified"))


Pair = tuple[str, str]
Triple = tuple[str, str, str]

# NodeDiff fields and their tuple width (0 = plain strings): drives to_json/from_json/summary
_NODE_FIELDS: dict[str, int] = {
    "chains_added": 2,
    "chains_removed": 2,
    "rules_added": 3,
    "rules_removed": 3,
    "policies_changed": 4,
    "nft_chains_added": 2,
    "nft_chains_removed": 2,
    "nft_rules_added": 3,
    "nft_rules_removed": 3,
    "nft_elements_added": 3,
    "nft_elements_removed": 3,
    "ipsets_added": 0,
    "ipsets_removed": 0,
    "ipset_members_added": 2,
    "ipset_members_removed": 2,
    "ipvs_added": 0,
    "ipvs_removed": 0,
    "links_added": 0,
    "links_removed": 0,
    "addrs_added": 0,
    "addrs_removed": 0,
    "routes_added": 0,
    "routes_removed": 0,
}
NETFILTER_FIELDS: tuple[str, ...] = tuple(
    k for k in _NODE_FIELDS if k.startswith(("chains", "rules", "policies", "nft", "ipset", "ipvs"))
)


@dataclass
class NodeDiff:
    """What changed on one node. iptables tables are named as in ``iptables-save`` (``nat``); nft tables
    as ``"<family> <name>"``; rules are identified by their canonical text (Rule.spec / NftRule.text)."""

    chains_added: list[Pair] = field(default_factory=list)
    chains_removed: list[Pair] = field(default_factory=list)
    rules_added: list[Triple] = field(default_factory=list)
    rules_removed: list[Triple] = field(default_factory=list)
    policies_changed: list[tuple[str, str, str, str]] = field(default_factory=list)
    """``(table, chain, before, after)`` of built-in chains whose policy changed."""
    nft_chains_added: list[Pair] = field(default_factory=list)
    nft_chains_removed: list[Pair] = field(default_factory=list)
    nft_rules_added: list[Triple] = field(default_factory=list)
    nft_rules_removed: list[Triple] = field(default_factory=list)
    nft_elements_added: list[Triple] = field(default_factory=list)
    """``(table, set or map name, element text)``."""
    nft_elements_removed: list[Triple] = field(default_factory=list)
    ipsets_added: list[str] = field(default_factory=list)
    ipsets_removed: list[str] = field(default_factory=list)
    ipset_members_added: list[Pair] = field(default_factory=list)
    ipset_members_removed: list[Pair] = field(default_factory=list)
    ipvs_added: list[str] = field(default_factory=list)
    ipvs_removed: list[str] = field(default_factory=list)
    links_added: list[str] = field(default_factory=list)
    links_removed: list[str] = field(default_factory=list)
    addrs_added: list[str] = field(default_factory=list)
    addrs_removed: list[str] = field(default_factory=list)
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Parts not compared (e.g. iptables failed to capture on one side) and why."""

    def __bool__(self) -> bool:
        return any(getattr(self, k) for k in _NODE_FIELDS)

    @property
    def netfilter_changed(self) -> bool:
        return any(getattr(self, k) for k in NETFILTER_FIELDS)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, width in _NODE_FIELDS.items():
            vals = getattr(self, k)
            out[k] = [list(v) for v in vals] if width else list(vals)
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        kwargs: dict[str, Any] = {}
        for k, width in _NODE_FIELDS.items():
            vals = d.get(k) or []
            if width:
                bad = [v for v in vals if not isinstance(v, list | tuple) or len(v) != width]
                if bad:
                    raise ValueError(f"{k}: expected lists of {width} strings, got {bad[0]!r}")
                kwargs[k] = [tuple(str(x) for x in v) for v in vals]
            else:
                kwargs[k] = [str(v) for v in vals]
        kwargs["notes"] = [str(n) for n in d.get("notes") or []]
        return cls(**kwargs)


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

    # -- ignore-aware helpers ---------------------------------------------------------------------
    def is_ignored(self, change: str, key: str) -> bool:
        """Is a ``change`` ("added"/"removed"/"modified") of ``key`` hidden from the default view?"""
        if _matches_any(self.ignore, key):
            return True
        return change == "modified" and _matches_any(self.ignore_modified, key)

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
        return bool(self.etcd or any(self.nodes.values()) or self.nodes_added or self.nodes_removed)

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
        )

    # -- text -------------------------------------------------------------------------------------
    def summary(self, full: bool = False, limit: int | None = 40) -> str:
        """Short plain text. ``full`` includes ignored keys; ``limit`` caps lines per section (None = all)."""
        lines: list[str] = []
        rev = ""
        if self.before_revision is not None or self.after_revision is not None:
            rev = f" (etcd revision {self.before_revision} → {self.after_revision})"
        lines.append(f"diff {self.before_label} → {self.after_label}{rev}")
        added = self._select("added", full)
        removed = self._select("removed", full)
        modified = self._select("modified", full)
        head = f"etcd: {len(added)} added, {len(removed)} removed, {len(modified)} modified"
        hidden = self.hidden_counts()
        if not full and any(hidden.values()):
            parts = ", ".join(f"{n} {w}" for w, n in hidden.items() if n)
            head += f" ({parts} hidden by ignore patterns; show with --all / full=True)"
        lines.append(head)
        for sign, items in (("+", added), ("-", removed), ("~", modified)):
            shown = _cap([_key_line(sign, c) for c in items], limit)
            lines.extend("  " + s for s in shown)
        for name in self.nodes_added:
            lines.append(f"node {name}: added")
        for name in self.nodes_removed:
            lines.append(f"node {name}: removed")
        for name, nd in self.nodes.items():
            if not nd and not nd.notes:
                continue
            lines.append(f"node {name}:" + ("" if nd else " no changes"))
            lines.extend(f"  note: {n}" for n in nd.notes)
            lines.extend("  " + s for s in _cap(node_diff_lines(nd), limit))
        lines.extend(f"note: {n}" for n in self.notes)
        if len(lines) == 2 and not added and not removed and not modified:
            lines.append("no changes")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _cap(lines: list[str], limit: int | None) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more"]


def _key_line(sign: str, c: KeyChange) -> str:
    s = f"{sign} {c.key}"
    if c.kind:
        s += f"  [{c.kind}]"
    if sign == "~":
        if c.changed_fields is None:
            s += "  (value not decoded)"
        elif c.changed_fields:
            shown = c.changed_fields[:6]
            more = f", +{len(c.changed_fields) - 6}" if len(c.changed_fields) > 6 else ""
            s += "  " + ", ".join(shown) + more
        else:
            s += "  (rewritten, same content)"
    return s


def _item_line(f: str, item: Any) -> tuple[str, str]:
    """(text, name the ignore globs match: chain / set / ipset name) for one NodeDiff item."""
    sign = "~" if f == "policies_changed" else ("-" if f.endswith("_removed") else "+")
    if f.startswith("chains_"):
        return f"{sign} chain {item[0]} {item[1]}", item[1]
    if f == "policies_changed":
        return f"~ policy {item[0]} {item[1]}: {item[2]} → {item[3]}", item[1]
    if f.startswith("rules_"):
        return f"{sign} rule {item[0]} -A {item[1]} {item[2]}", item[1]
    if f.startswith("nft_chains_"):
        return f"{sign} nft chain {item[0]} {item[1]}", item[1]
    if f.startswith("nft_rules_"):
        return f"{sign} nft rule {item[0]} {item[1]}: {item[2]}", item[1]
    if f.startswith("nft_elements_"):
        return f"{sign} nft element {item[0]} @{item[1]}: {item[2]}", item[1]
    if f.startswith("ipset_members_"):
        return f"{sign} ipset {item[0]} member {item[1]}", item[0]
    if f.startswith("ipsets_"):
        return f"{sign} ipset {item}", item
    label = {"ipvs": "ipvs", "links": "link", "addrs": "addr", "routes": "route"}[f.rsplit("_", 1)[0]]
    return f"{sign} {label} {item}", str(item)


def node_diff_lines(
    nd: NodeDiff, *, netfilter_only: bool = False, ignore_names: Sequence[str] = ()
) -> list[str]:
    """One line per change (``+ rule nat -A KUBE-SERVICES ...``); ``ignore_names``: fnmatch globs of
    chain / set names whose changes are left out."""
    out: list[str] = []
    for f in NETFILTER_FIELDS if netfilter_only else tuple(_NODE_FIELDS):
        for item in getattr(nd, f):
            text, name = _item_line(f, item)
            if ignore_names and any(fnmatchcase(name, p) for p in ignore_names):
                continue
            out.append(text)
    return out


# --------------------------------------------------------------------------------------------------
# etcd diff


def _field_path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and re.fullmatch(r"[A-Za-z0-9_#-]+", p):
            out += ("." if out else "") + p
        else:
            out += f"[{json.dumps(str(p))}]"
    return out or "(value)"


_COLLAPSE = ("metadata.managedFields",)


def changed_field_paths(before: Any, after: Any) -> list[str]:
    """Dotted paths where two JSON-able trees differ (deepdiff), ``metadata.managedFields…`` collapsed."""
    from deepdiff import DeepDiff

    if before == after:
        return []
    tree = DeepDiff(before, after, view="tree", verbose_level=0)
    paths: set[str] = set()
    for items in tree.values():
        for item in items:
            p = _field_path(item.path(output_format="list"))
            for c in _COLLAPSE:
                if p == c or p.startswith((c + ".", c + "[")):
                    p = c
            paths.add(p)
    return sorted(paths)


def _key_change(key: str, entry: EtcdEntry) -> KeyChange:
    d = entry.decoded
    return KeyChange(key=key, kind=d.kind, namespace=d.namespace, name=d.name)


def diff_etcd(before: EtcdState | None, after: EtcdState | None) -> EtcdDiff:
    b = before.entries if before is not None else {}
    a = after.entries if after is not None else {}
    out = EtcdDiff()
    for key in sorted(a.keys() - b.keys()):
        out.added.append(_key_change(key, a[key]))
    for key in sorted(b.keys() - a.keys()):
        out.removed.append(_key_change(key, b[key]))
    for key in sorted(a.keys() & b.keys()):
        eb, ea = b[key], a[key]
        if eb.mod_revision == ea.mod_revision and eb.sha256 == ea.sha256:
            continue
        ch = _key_change(key, ea)
        fb, fa = eb.decoded.fields, ea.decoded.fields
        if fb is not None and fa is not None:
            ch.changed_fields = changed_field_paths(fb, fa)
        elif eb.sha256 == ea.sha256:
            ch.changed_fields = []
        out.modified.append(ch)
    return out


# --------------------------------------------------------------------------------------------------
# node diff (attribute access of H1/H2's models is confined to these helpers)


def _multiset_diff(before: Iterable[Any], after: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """(added, removed) with multiplicity; order: as in ``after`` / ``before``."""
    lb, la = list(before), list(after)
    cb, ca = Counter(lb), Counter(la)
    # (item, count) pairs that differ — set operations on dict views run in C
    plus = {x: n - cb.get(x, 0) for x, n in ca.items() - cb.items() if n > cb.get(x, 0)}
    minus = {x: n - ca.get(x, 0) for x, n in cb.items() - ca.items() if n > ca.get(x, 0)}
    added: list[Any] = []
    if plus:
        for x in la:
            if plus.get(x, 0) > 0:
                added.append(x)
                plus[x] -= 1
    removed: list[Any] = []
    if minus:
        for x in lb:
            if minus.get(x, 0) > 0:
                removed.append(x)
                minus[x] -= 1
    return added, removed


def _set_diff(before: Iterable[Any], after: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    lb, la = list(dict.fromkeys(before)), list(dict.fromkeys(after))
    sb, sa = set(lb), set(la)
    return [x for x in la if x not in sb], [x for x in lb if x not in sa]


def _iptables_chains(ns: NodeState | None) -> Iterator[tuple[str, str, str | None]]:
    if ns is None or ns.iptables is None:
        return
    for tname, table in ns.iptables.tables.items():
        for cname, chain in table.chains.items():
            yield tname, cname, chain.policy


def _iptables_rule_groups(ns: NodeState | None) -> dict[Pair, list[str]]:
    if ns is None or ns.iptables is None:
        return {}
    return {
        (tname, cname): [r.spec for r in chain.rules]
        for tname, table in ns.iptables.tables.items()
        for cname, chain in table.chains.items()
    }


def _grouped_multiset_diff(
    before: dict[Pair, list[str]], after: dict[Pair, list[str]]
) -> tuple[list[Triple], list[Triple]]:
    """Per-group multiset diff; groups (chains) with equal rule lists are skipped cheaply."""
    added: list[Triple] = []
    removed_by_group: dict[Pair, list[str]] = {}
    for k, la in after.items():
        lb = before.get(k, [])
        if lb == la:
            continue
        plus, minus = _multiset_diff(lb, la)
        added.extend((k[0], k[1], x) for x in plus)
        if minus:
            removed_by_group[k] = minus
    for k, lb in before.items():
        if k not in after and lb:
            removed_by_group[k] = lb
    removed = [(k[0], k[1], x) for k in before if k in removed_by_group for x in removed_by_group[k]]
    return added, removed


def _nft_table_name(key: Any, table: Any) -> str:
    fam = getattr(table, "family", None)
    name = getattr(table, "name", None)
    if fam is not None and name is not None:
        return f"{fam} {name}"
    if isinstance(key, tuple):
        return " ".join(str(k) for k in key)
    return str(key)


IPTABLES_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})


def _nft_tables(ns: NodeState | None, skip: frozenset[str]) -> Iterator[tuple[str, Any]]:
    """nft tables except the ``ip``/``ip6`` tables named in ``skip`` (iptables-nft's, diffed as iptables)."""
    if ns is None or ns.nft is None:
        return
    for tkey, table in ns.nft.tables.items():
        if getattr(table, "family", None) in ("ip", "ip6") and getattr(table, "name", None) in skip:
            continue
        yield _nft_table_name(tkey, table), table


def _nft_chains(ns: NodeState | None, skip: frozenset[str]) -> Iterator[Pair]:
    for tn, table in _nft_tables(ns, skip):
        for cname in table.chains:
            yield tn, cname


def _nft_rule_groups(ns: NodeState | None, skip: frozenset[str]) -> dict[Pair, list[str]]:
    return {
        (tn, cname): [r.text for r in chain.rules]
        for tn, table in _nft_tables(ns, skip)
        for cname, chain in table.chains.items()
    }


def _element_text(el: Any) -> str:
    if isinstance(el, str):
        return el
    text = getattr(el, "text", None)
    if isinstance(text, str):
        return text
    return json.dumps(el, sort_keys=True, separators=(",", ":"))


def _nft_elements(ns: NodeState | None, skip: frozenset[str]) -> Iterator[Triple]:
    for tn, table in _nft_tables(ns, skip):
        for group in ("sets", "maps"):
            for sname, s in (getattr(table, group, None) or {}).items():
                for el in getattr(s, "elements", None) or ():
                    yield tn, sname, _element_text(el)


def _ipset_members(ns: NodeState | None) -> Iterator[Pair]:
    if ns is None:
        return
    for s in ns.ipsets:
        for m in s.members:
            yield s.name, m


def _as_mapping(item: Any) -> Mapping[str, Any] | None:
    if isinstance(item, Mapping):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    to_json = getattr(item, "to_json", None)
    if callable(to_json):
        d = to_json()
        if isinstance(d, Mapping):
            return d
    return None


def _label(item: Any, fmt: Callable[[Mapping[str, Any]], str | None]) -> str:
    m = _as_mapping(item)
    if m is not None:
        s = fmt(m)
        if s:
            return s
        return json.dumps(m, sort_keys=True, separators=(",", ":"), default=str)
    return str(item)


def _link_label(m: Mapping[str, Any]) -> str | None:
    name = m.get("ifname") or m.get("name")
    if not name:
        return None
    kind = m.get("kind") or (m.get("linkinfo") or {}).get("info_kind")
    s = f"{name} ({kind})" if kind else str(name)
    if m.get("mtu") is not None:
        s += f" mtu {m['mtu']}"
    if m.get("operstate"):
        s += f" {m['operstate']}"
    return s


def _addr_label(m: Mapping[str, Any]) -> str | None:
    local = m.get("local") or m.get("address") or m.get("addr")
    if not local:
        return None
    plen = m.get("prefixlen")
    dev = m.get("ifname") or m.get("dev") or m.get("label")
    s = f"{local}/{plen}" if plen is not None and "/" not in str(local) else str(local)
    return f"{s} dev {dev}" if dev else s


def _route_label(m: Mapping[str, Any]) -> str | None:
    dst = m.get("dst")
    if not dst:
        return None
    s = str(dst)
    typ, gw, dev, table = m.get("type"), m.get("gateway"), m.get("dev"), m.get("table")
    if typ and typ != "unicast":
        s = f"{typ} {s}"
    if gw:
        s += f" via {gw}"
    if dev:
        s += f" dev {dev}"
    if table not in (None, "", "main", 254, "254"):
        s += f" table {table}"
    return s


def _ipvs_labels(ns: NodeState | None) -> Iterator[str]:
    if ns is None or not ns.ipvs:
        return
    for vs in ns.ipvs:
        m = _as_mapping(vs) or {}
        proto = m.get("protocol") or m.get("proto") or ""
        addr = m.get("address") or m.get("addr") or m.get("vip") or ""
        port = m.get("port")
        base = f"{proto} {addr}:{port}".strip() if addr else _label(vs, lambda _m: None)
        reals = m.get("real_servers") or m.get("reals") or m.get("destinations") or []
        sched = m.get("scheduler")
        yield f"{base} {sched}" if sched else base
        for rs in reals:
            rm = _as_mapping(rs) or {}
            ra = rm.get("address") or rm.get("addr")
            rp = rm.get("port")
            yield f"{base} -> {ra}:{rp}" if ra else f"{base} -> {_label(rs, lambda _m: None)}"


def _errors(ns: NodeState | None) -> Mapping[str, str]:
    return (ns.errors or {}) if ns is not None else {}


def diff_nodes(before: NodeState | None, after: NodeState | None) -> NodeDiff:
    nd = NodeDiff()
    eb, ea = _errors(before), _errors(after)

    def comparable(part: str, present: Callable[[NodeState], bool]) -> bool:
        """Compare ``part`` unless a side that exists failed to capture it."""
        for side, ns, errs in (("before", before, eb), ("after", after, ea)):
            if ns is not None and (not present(ns) or part in errs):
                if part in errs:
                    nd.notes.append(f"{part} not compared: not captured {side}: {errs[part]}")
                    return False
                if not present(ns):
                    other = after if side == "before" else before
                    if other is not None and present(other):
                        nd.notes.append(f"{part} not compared: not captured {side}")
                    return False
        return True

    if comparable("iptables", lambda ns: ns.iptables is not None):
        cb = {(t, c): p for t, c, p in _iptables_chains(before)}
        ca = {(t, c): p for t, c, p in _iptables_chains(after)}
        nd.chains_added = [k for k in ca if k not in cb]
        nd.chains_removed = [k for k in cb if k not in ca]
        nd.policies_changed = [
            (t, c, str(cb[(t, c)]), str(ca[(t, c)]))
            for (t, c) in ca
            if (t, c) in cb and cb[(t, c)] != ca[(t, c)]
        ]
        nd.rules_added, nd.rules_removed = _grouped_multiset_diff(
            _iptables_rule_groups(before), _iptables_rule_groups(after)
        )
    if comparable("nft", lambda ns: ns.nft is not None):
        # iptables-nft shows iptables' tables in nft too: diff them once, as iptables
        skip: set[str] = set()
        for ns in (before, after):
            if ns is not None:
                skip |= set(ns.iptables.tables) if ns.iptables is not None else IPTABLES_TABLES
        fskip = frozenset(skip)
        nd.nft_chains_added, nd.nft_chains_removed = _set_diff(
            _nft_chains(before, fskip), _nft_chains(after, fskip)
        )
        nd.nft_rules_added, nd.nft_rules_removed = _grouped_multiset_diff(
            _nft_rule_groups(before, fskip), _nft_rule_groups(after, fskip)
        )
        nd.nft_elements_added, nd.nft_elements_removed = _set_diff(
            _nft_elements(before, fskip), _nft_elements(after, fskip)
        )
    if comparable("ipsets", lambda ns: True):
        nd.ipsets_added, nd.ipsets_removed = _set_diff(
            (s.name for s in (before.ipsets if before else [])),
            (s.name for s in (after.ipsets if after else [])),
        )
        nd.ipset_members_added, nd.ipset_members_removed = _set_diff(
            _ipset_members(before), _ipset_members(after)
        )
    if comparable("ipvs", lambda ns: ns.ipvs is not None):
        nd.ipvs_added, nd.ipvs_removed = _set_diff(_ipvs_labels(before), _ipvs_labels(after))
    for part, fmt in (("links", _link_label), ("addrs", _addr_label), ("routes", _route_label)):
        if comparable(part, lambda ns: True):
            lb = [_label(x, fmt) for x in (getattr(before, part) or [] if before else [])]
            la = [_label(x, fmt) for x in (getattr(after, part) or [] if after else [])]
            added, removed = _set_diff(lb, la)
            setattr(nd, f"{part}_added", added)
            setattr(nd, f"{part}_removed", removed)
    return nd


# --------------------------------------------------------------------------------------------------
# snapshot


@dataclass
class Snapshot:
    """The state of a cluster at one moment."""

    label: str
    taken_at: float
    """Seconds since the epoch (``time.time()``)."""
    cluster: dict[str, Any] = field(default_factory=dict)
    """Free-form facts about the cluster (name, provider, versions, proxy mode)."""
    etcd: EtcdState | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    schema: int = SCHEMA

    # -- capture ----------------------------------------------------------------------------------
    @classmethod
    def capture(
        cls,
        label: str,
        *,
        etcd: EtcdTarget | None = None,
        nodes: Sequence[NodeExec] = (),
        cluster: Mapping[str, Any] | None = None,
        include_secrets: bool = False,
        keep_raw: bool = False,
        ipvs: bool = True,
    ) -> Snapshot:
        """Capture etcd (when given a target) and every node, concurrently (I/O bound)."""
        from pytest_k8sstate.etcd.capture import collect_etcd
        from pytest_k8sstate.node.capture import collect_node

        taken_at = time.time()
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(nodes) + 1))) as pool:
            etcd_f = (
                pool.submit(collect_etcd, etcd, keep_raw=keep_raw, include_secrets=include_secrets)
                if etcd is not None
                else None
            )
            node_fs = [(ex.node, pool.submit(collect_node, ex, ipvs=ipvs)) for ex in nodes]
            state = etcd_f.result() if etcd_f is not None else None
            node_states = {name: f.result() for name, f in node_fs}
        return cls(label=label, taken_at=taken_at, cluster=dict(cluster or {}), etcd=state, nodes=node_states)

    # -- diff -------------------------------------------------------------------------------------
    def diff(
        self,
        after: Snapshot,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        ignore_modified: Sequence[str] = DEFAULT_IGNORE_MODIFIED,
    ) -> StateDiff:
        """``self`` → ``after``. ``ignore`` only shapes the default view; the data keeps everything."""
        out = StateDiff(
            etcd=diff_etcd(self.etcd, after.etcd),
            before_label=self.label,
            after_label=after.label,
            before_revision=self.etcd.revision if self.etcd is not None else None,
            after_revision=after.etcd.revision if after.etcd is not None else None,
            ignore=tuple(ignore),
            ignore_modified=tuple(ignore_modified),
        )
        if (self.etcd is None) != (after.etcd is None):
            side = self.label if self.etcd is None else after.label
            out.notes.append(f"etcd not captured in {side!r}: etcd keys not compared")
            out.etcd = EtcdDiff()
        for name in list(dict.fromkeys([*self.nodes, *after.nodes])):
            out.nodes[name] = diff_nodes(self.nodes.get(name), after.nodes.get(name))
        out.nodes_added = [n for n in after.nodes if n not in self.nodes]
        out.nodes_removed = [n for n in self.nodes if n not in after.nodes]
        return out

    # -- JSON -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "label": self.label,
            "taken_at": self.taken_at,
            "taken_at_iso": datetime.fromtimestamp(self.taken_at, UTC).isoformat(timespec="seconds"),
            "cluster": self.cluster,
            "etcd": self.etcd.to_json() if self.etcd is not None else None,
            "nodes": {name: ns.to_json() for name, ns in self.nodes.items()},
        }

    @classmethod
    def from_json(cls, d: Any, source: str = "snapshot") -> Self:
        """Build from :meth:`to_json` output; ParseError naming ``source`` and the JSON path otherwise."""

        def bad(path: str, expected: str, got: Any = None) -> ParseError:
            shown = None if got is None else (got if isinstance(got, str) else type(got).__name__)
            return ParseError(f"{source} at {path}", None, expected, shown)

        if not isinstance(d, dict):
            raise bad("$", "a JSON object (a snapshot written by Snapshot.save / k8sstate snapshot)", d)
        schema = d.get("schema")
        if schema != SCHEMA:
            raise bad("$.schema", f"schema {SCHEMA} (written by this pytest-k8sstate version)", repr(schema))
        for name, typ, what in (
            ("label", str, "a string"),
            ("taken_at", int | float, "seconds since the epoch (a number)"),
            ("cluster", dict, "an object"),
            ("nodes", dict, "an object mapping node name → node state"),
        ):
            if name not in d:
                raise bad(f"$.{name}", f"field {name!r} ({what})", "nothing")
            if not isinstance(d[name], typ) or isinstance(d[name], bool):
                raise bad(f"$.{name}", what, d[name])
        etcd: EtcdState | None = None
        if d.get("etcd") is not None:
            etcd = _wrap(lambda: EtcdState.from_json(d["etcd"]), bad, "$.etcd", "an etcd state object")
        nodes: dict[str, NodeState] = {}
        for name, nd in d["nodes"].items():
            if not isinstance(nd, dict):
                raise bad(f"$.nodes.{name}", "a node state object", nd)
            nodes[name] = _wrap(
                partial(NodeState.from_json, nd), bad, f"$.nodes.{name}", "a node state object"
            )
        return cls(
            label=d["label"],
            taken_at=float(d["taken_at"]),
            cluster=d["cluster"],
            etcd=etcd,
            nodes=nodes,
            schema=schema,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: temp file in the same directory, fsync, ``os.replace``. ``*.gz`` is gzipped."""
        p = Path(path)
        data = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
        if p.name.endswith(".gz"):
            data = gzip.compress(data, compresslevel=5, mtime=0)
        directory = p.parent if str(p.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise K8sStateError(
                f"{p}: cannot write snapshot: {exc.strerror or exc}; check the directory"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, p)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise K8sStateError(f"{p}: cannot write snapshot: {exc.strerror or exc}") from exc
            raise
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a snapshot; ParseError naming the file and the line / JSON path on bad input."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise K8sStateError(f"{p}: cannot read snapshot: {exc.strerror or exc}") from exc
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise ParseError(str(p), None, "a complete gzip file", str(exc)) from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(str(p), None, "UTF-8 JSON text", f"byte {exc.start}: {exc.reason}") from exc
        try:
            obj = json.loads(text)
        except RecursionError as exc:
            raise ParseError(
                str(p), None, "JSON nested less deeply (a snapshot written by k8sstate snapshot)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ParseError(
                str(p),
                exc.lineno,
                f"valid JSON (a snapshot written by k8sstate snapshot) at column {exc.colno}",
                exc.msg,
            ) from exc
        return cls.from_json(obj, source=str(p))

    # -- summaries --------------------------------------------------------------------------------
    def summary(self) -> str:
        """Plain text: label, time, etcd revision and key counts by resource, per-node rule/chain counts."""
        when = datetime.fromtimestamp(self.taken_at, UTC).isoformat(timespec="seconds")
        lines = [f"snapshot {self.label!r} taken {when}"]
        if self.cluster:
            lines.append("cluster: " + ", ".join(f"{k}={v}" for k, v in sorted(self.cluster.items())))
        if self.etcd is None:
            lines.append("etcd: not captured")
        else:
            lines.append(f"etcd: revision {self.etcd.revision}, {len(self.etcd.entries)} keys")
            for res, n in sorted(resource_counts(self.etcd.entries).items()):
                lines.append(f"  {res:<40} {n:>6}")
        for name, ns in self.nodes.items():
            lines.append(f"node {name}:")
            if ns.iptables is not None:
                for tname, table in ns.iptables.tables.items():
                    n_rules = sum(c.rule_count() for c in table.chains.values())
                    lines.append(f"  iptables {tname:<10} {len(table.chains):>6} chains {n_rules:>8} rules")
            if ns.nft is not None:
                for tkey, ntable in ns.nft.tables.items():
                    n_rules = sum(len(c.rules) for c in ntable.chains.values())
                    tn = _nft_table_name(tkey, ntable)
                    lines.append(f"  nft {tn:<15} {len(ntable.chains):>6} chains {n_rules:>8} rules")
            if ns.ipsets:
                lines.append(f"  ipsets {len(ns.ipsets)}, members {sum(len(s.members) for s in ns.ipsets)}")
            if ns.ipvs is not None:
                lines.append(f"  ipvs virtual servers {len(ns.ipvs)}")
            lines.append(
                f"  links {len(ns.links or [])}, addrs {len(ns.addrs or [])}, routes {len(ns.routes or [])}"
            )
            for part, err in (ns.errors or {}).items():
                lines.append(f"  not captured: {part}: {err}")
        return "\n".join(lines)


def resource_counts(keys: Iterable[str]) -> dict[str, int]:
    """``/registry/<resource>/…`` → count; CRDs as ``<group>/<plural>``, ``services/specs`` kept whole."""
    out: dict[str, int] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) < 3 or parts[1] != "registry":
            res = "(outside /registry)"
        else:
            res = parts[2]
            if (res == "services" or "." in res) and len(parts) > 4:
                res = f"{res}/{parts[3]}"
        out[res] = out.get(res, 0) + 1
    return out


def _wrap(fn: Callable[[], Any], bad: Callable[..., ParseError], path: str, expected: str) -> Any:
    try:
        return fn()
    except ParseError as exc:
        raise bad(path, f"{expected}: {exc}") from exc
    except KeyError as exc:
        raise bad(path, f"{expected} with field {exc.args[0]!r}", "nothing") from exc
    except RecursionError as exc:
        raise bad(path, f"{expected} nested less deeply") from exc
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise bad(path, f"{expected}: {exc}") from exc
