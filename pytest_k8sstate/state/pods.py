"""Pods' own network namespaces in a snapshot (``snapshot.pods[node]["default/web-1"]``) and their diff.

A snapshot captured with ``pods=True`` holds a :class:`NodePods` per node (see
:mod:`pytest_k8sstate.node.pods`); ``before.diff(after)`` compares them into ``diff.pods``: pods whose
namespace appeared or went away, and per pod the interfaces, addresses and routes added or removed, with
the same identities as the node's own (``ifname kind``, ``local/prefixlen dev``, ``dst via gw dev``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.node.pods import PodNet

__all__ = ["NodePods", "PodChange", "PodsDiff", "diff_pods", "route_text"]


@dataclass
class NodePods:
    node: str
    pods: dict[str, PodNet] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> PodNet:
        if key not in self.pods:
            known = ", ".join(self.pods) or "(none)"
            raise KeyError(f"no pod {key!r} captured on node {self.node}; pods: {known}")
        return self.pods[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pods": {k: p.to_json() for k, p in self.pods.items()},
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, d: Any) -> Self:
        if (
            not isinstance(d, dict)
            or not isinstance(d.get("node"), str)
            or not isinstance(d.get("pods"), dict)
        ):
            raise ParseError("pods of a node", None, "an object with 'node' and 'pods'", repr(d)[:120])
        errors = d.get("errors") or {}
        if not isinstance(errors, dict):
            raise ParseError(f"pods of node {d['node']}", None, "'errors': an object")
        return cls(
            node=d["node"],
            pods={str(k): PodNet.from_json(v) for k, v in d["pods"].items()},
            errors={str(k): str(v) for k, v in errors.items()},
        )


def link_text(li: Mapping[str, Any]) -> str:
    return f"{li.get('ifname')}" + (f" ({li['kind']})" if li.get("kind") else "")


def addr_text(a: Mapping[str, Any]) -> str:
    return f"{a.get('local')}/{a.get('prefixlen')} dev {a.get('ifname')}"


def route_text(r: Mapping[str, Any]) -> str:
    parts = [str(r.get("dst"))]
    if r.get("gateway"):
        parts.append(f"via {r['gateway']}")
    if r.get("dev"):
        parts.append(f"dev {r['dev']}")
    if r.get("table") not in (None, "main"):
        parts.append(f"table {r['table']}")
    return " ".join(parts)


@dataclass
class PodChange:
    """What changed inside one pod's network namespace (lists of ``*_text`` strings)."""

    links_added: list[str] = field(default_factory=list)
    links_removed: list[str] = field(default_factory=list)
    addrs_added: list[str] = field(default_factory=list)
    addrs_removed: list[str] = field(default_factory=list)
    routes_added: list[str] = field(default_factory=list)
    routes_removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in self.__dataclass_fields__)

    def to_json(self) -> dict[str, Any]:
        return {f: list(getattr(self, f)) for f in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        return cls(**{f: [str(x) for x in d.get(f) or []] for f in cls.__dataclass_fields__})


@dataclass
class PodsDiff:
    """Per node: pods added / removed and the changes inside the pods present on both sides."""

    added: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, dict[str, PodChange]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.added.values()) or any(self.removed.values()) or any(self.changed.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": {n: {p: c.to_json() for p, c in cs.items()} for n, cs in self.changed.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            added={str(n): [str(p) for p in v] for n, v in (d.get("added") or {}).items()},
            removed={str(n): [str(p) for p in v] for n, v in (d.get("removed") or {}).items()},
            changed={
                str(n): {str(p): PodChange.from_json(c) for p, c in cs.items()}
                for n, cs in (d.get("changed") or {}).items()
            },
        )

    def render(self, limit: int | None = 20) -> list[str]:
        out: list[str] = []
        for n in dict.fromkeys([*self.added, *self.removed, *self.changed]):
            out += [f"  {n}: + pod {p}" for p in self.added.get(n, [])]
            out += [f"  {n}: - pod {p}" for p in self.removed.get(n, [])]
            for p, c in self.changed.get(n, {}).items():
                items = [
                    f"{sign} {what} {x}"
                    for what in ("links", "addrs", "routes")
                    for sign, side in (("+", "added"), ("-", "removed"))
                    for x in getattr(c, f"{what}_{side}")
                ]
                shown = items if limit is None else items[:limit]
                out += [f"  {n}: pod {p}: {x}" for x in shown]
                if len(shown) < len(items):
                    out.append(f"  {n}: pod {p}: … {len(items) - len(shown)} more")
        return out


def _diff_one(a: PodNet, b: PodNet) -> PodChange:
    c = PodChange()
    for what, fn, key in (
        ("links", link_text, "links"),
        ("addrs", addr_text, "addrs"),
        ("routes", route_text, "routes"),
    ):
        before = [fn(x) for x in getattr(a, key)]
        after = [fn(x) for x in getattr(b, key)]
        setattr(c, f"{what}_added", [x for x in after if x not in before])
        setattr(c, f"{what}_removed", [x for x in before if x not in after])
    return c


def diff_pods(before: Mapping[str, NodePods], after: Mapping[str, NodePods]) -> PodsDiff:
    """Compare the pods of every node captured on both sides (a node captured on one side only: all of
    its pods are added / removed)."""
    out = PodsDiff()
    for n in dict.fromkeys([*before, *after]):
        a = before[n].pods if n in before else {}
        b = after[n].pods if n in after else {}
        if added := [p for p in b if p not in a]:
            out.added[n] = added
        if removed := [p for p in a if p not in b]:
            out.removed[n] = removed
        changed = {p: c for p in a if p in b and (c := _diff_one(a[p], b[p]))}
        if changed:
            out.changed[n] = changed
    return out
