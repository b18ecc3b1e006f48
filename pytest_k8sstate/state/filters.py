"""Narrow a diff or a snapshot to what one looks at: namespaces, kinds, key globs, nodes, etcd or nodes only.

:class:`Scope` holds the filters; :func:`filter_diff` returns a :class:`StateDiff` with only the matching
changes (the same object shape, so its summary, JSON and ``bool`` follow), :func:`select_keys` the matching
etcd keys of a snapshot.

- ``namespaces``: etcd keys of objects in these namespaces (the decoded namespace, else the key's
  ``/registry/<resource>/<namespace>/<name>`` segment); on nodes, the per-Service summaries of Services in
  these namespaces and the raw changes they stand for are kept, the rule changes of other Services dropped
  (node changes that belong to no Service — a CNI's chains, routes, links — are kept: not namespaced).
- ``kinds``: ``Deployment``, ``deployment``, ``deployments`` or the key's resource segment
  (``services/specs`` → ``services``), case-insensitive.
- ``keys``: key globs of :mod:`pytest_k8sstate.state.keys` (``services/specs/default/*``).
- ``nodes``: node names (fnmatch globs); ``etcd=False`` / ``node_state=False``: leave that half out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.state.etcddiff import EtcdDiff, KeyChange
from pytest_k8sstate.state.keys import REGISTRY_PREFIX, matches_any
from pytest_k8sstate.state.kubeproxy import RAW_KINDS, ServiceChange, ServiceIndex

if TYPE_CHECKING:
    from pytest_k8sstate.state.diff import StateDiff
    from pytest_k8sstate.state.nodediff import NodeDiff

__all__ = ["Scope", "filter_diff", "key_resource", "parse_patterns", "select_keys"]


def key_resource(key: str) -> str:
    """``/registry/services/specs/default/web`` → ``services``; ``/registry/apps/...`` style keys too."""
    rest = key[len(REGISTRY_PREFIX) :] if key.startswith(REGISTRY_PREFIX) else key.lstrip("/")
    return rest.split("/", 1)[0]


def _key_namespace(key: str) -> str | None:
    """The namespace segment of a namespaced key (``/registry/<res>[/specs]/<ns>/<name>``), guessed."""
    parts = key[len(REGISTRY_PREFIX) :].split("/") if key.startswith(REGISTRY_PREFIX) else []
    if parts[:2] in (["services", "specs"], ["services", "endpoints"]):
        parts = parts[1:]
    return parts[1] if len(parts) == 3 else None


@dataclass(frozen=True)
class Scope:
    """What to keep; empty tuples keep everything."""

    namespaces: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    etcd: bool = True
    node_state: bool = True

    @property
    def narrows_etcd(self) -> bool:
        return bool(self.namespaces or self.kinds or self.keys)

    def key_ok(self, key: str, kind: str | None = None, namespace: str | None = None) -> bool:
        if self.keys and not matches_any(self.keys, key):
            return False
        if self.namespaces:
            ns = namespace if namespace is not None else _key_namespace(key)
            if ns not in self.namespaces:
                return False
        if self.kinds:
            wanted = {k.lower() for k in self.kinds}
            names = {key_resource(key).lower()}
            if kind:
                names |= {kind.lower(), kind.lower() + "s", kind.lower() + "es"}
            if not wanted & names:
                return False
        return True

    def node_ok(self, name: str) -> bool:
        return not self.nodes or any(fnmatchcase(name, p) for p in self.nodes)

    def service_ok(self, sc: ServiceChange) -> bool:
        return not self.namespaces or sc.service.split("/", 1)[0] in self.namespaces


def _change_ok(scope: Scope, c: KeyChange) -> bool:
    return scope.key_ok(c.key, c.kind, c.namespace)


def _filter_node(scope: Scope, nd: NodeDiff) -> NodeDiff:
    if not scope.namespaces or not nd.services:
        return nd
    drop = [sc for sc in nd.services if not scope.service_ok(sc)]
    if not drop:
        return nd
    index = ServiceIndex(drop)
    changes: dict[str, Any] = {"services": [sc for sc in nd.services if scope.service_ok(sc)]}
    for names in RAW_KINDS.values():
        for name in names:
            kind = name.rsplit("_", 1)[0]
            changes[name] = [i for i in getattr(nd, name) if index.owner(kind, i) is None]
    return dataclasses.replace(nd, **changes)


def filter_diff(diff: StateDiff, scope: Scope) -> StateDiff:
    """``diff`` with only the changes ``scope`` keeps (ignore patterns unchanged)."""
    if scope.etcd:
        etcd = EtcdDiff(
            added=[c for c in diff.etcd.added if _change_ok(scope, c)],
            removed=[c for c in diff.etcd.removed if _change_ok(scope, c)],
            modified=[c for c in diff.etcd.modified if _change_ok(scope, c)],
        )
    else:
        etcd = EtcdDiff()
        diff = dataclasses.replace(diff, before_revision=None, after_revision=None)
    if scope.node_state:
        nodes = {n: _filter_node(scope, nd) for n, nd in diff.nodes.items() if scope.node_ok(n)}
        added = [n for n in diff.nodes_added if scope.node_ok(n)]
        removed = [n for n in diff.nodes_removed if scope.node_ok(n)]
    else:
        nodes, added, removed = {}, [], []
    return dataclasses.replace(diff, etcd=etcd, nodes=nodes, nodes_added=added, nodes_removed=removed)


def select_keys(entries: Any, scope: Scope) -> list[str]:
    """The keys of ``entries`` (``EtcdState.entries``: key → EtcdEntry) that ``scope`` keeps, in order."""
    out = []
    for key, e in entries.items():
        d = getattr(e, "decoded", None)
        if scope.key_ok(key, getattr(d, "kind", None), getattr(d, "namespace", None)):
            out.append(key)
    return out


def parse_patterns(values: Sequence[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated option values → one tuple (``--kind Service,Deployment``)."""
    return tuple(p.strip() for v in values or () for p in v.split(",") if p.strip())
