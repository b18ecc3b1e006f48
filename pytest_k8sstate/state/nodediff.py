"""The node half of a diff: what changed in one node's network state (:class:`NodeDiff`).

iptables chains added/removed, rules added/removed per table and chain with identity
``(table, chain, Rule.spec)``: independent of position and counters, with multiset semantics (a duplicated
rule added once more shows up once); chain policy changes; nftables chains, rules (identity
``NftRule.text``, multiset) and set/map elements added/removed (nft tables are named ``"<family> <name>"``,
e.g. ``"ip kube-proxy"``; the ``ip``/``ip6`` tables that the iptables-nft backend also shows as iptables
tables are diffed once, as iptables); ipsets and their members; IPVS services; links, addresses and routes.
A part that one side failed to capture (``NodeState.errors``) is not diffed — a note says so instead of
reporting everything as added or removed.

:data:`NODE_FIELDS` is the table of :class:`NodeDiff`'s change lists, read from the dataclass itself: JSON,
truthiness, the text lines and the one-line failure summary all iterate it, so a new list cannot be left out.
Attribute access of the captured node models is confined to the helpers of :func:`diff_nodes`.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from pytest_k8sstate.node import nftomit
from pytest_k8sstate.state.kubeproxy import ServiceChange, summarize_services
from pytest_k8sstate.state.labels import addr_label, link_label, route_label

if TYPE_CHECKING:
    from pytest_k8sstate.node.capture import NodeState

__all__ = [
    "IPTABLES_TABLES",
    "NETFILTER_FIELDS",
    "NETFILTER_PARTS",
    "NODE_FIELDS",
    "NodeDiff",
    "NodeField",
    "diff_nodes",
    "nft_table_name",
]

Pair = tuple[str, str]
Triple = tuple[str, str, str]

NETFILTER_PARTS = ("iptables", "nft", "ipsets", "ipvs")
"""The captured parts (``NodeState.errors`` keys) that make up the node's packet filtering."""


@dataclass(frozen=True)
class NodeField:
    """One change list of :class:`NodeDiff`."""

    name: str
    """Attribute name: ``<kind>_added`` / ``<kind>_removed`` / ``policies_changed``."""
    width: int
    """Items are tuples of this many strings; 0 = plain strings."""
    part: str
    """The captured part it is diffed from (a ``NodeState.errors`` key): iptables, nft, ipsets, …"""
    noun: str
    """What the one-line summary calls its items: ``rules`` in ``3 rules added on 2 nodes``."""

    @property
    def kind(self) -> str:
        """``rules`` for ``rules_added``; ``nft_elements`` for ``nft_elements_removed``."""
        return self.name.rsplit("_", 1)[0]

    @property
    def change(self) -> str:
        """``added``, ``removed`` or ``changed``."""
        return self.name.rsplit("_", 1)[1]


def _row(width: int, part: str, noun: str) -> dict[str, Any]:
    """The metadata of a :class:`NodeDiff` change list: its row of :data:`NODE_FIELDS`."""
    return {"width": width, "part": part, "noun": noun}


@dataclass
class NodeDiff:
    """What changed on one node. iptables tables are named as in ``iptables-save`` (``nat``); nft tables
    as ``"<family> <name>"``; rules are identified by their canonical text (Rule.spec / NftRule.text)."""

    chains_added: list[Pair] = field(default_factory=list, metadata=_row(2, "iptables", "chains"))
    chains_removed: list[Pair] = field(default_factory=list, metadata=_row(2, "iptables", "chains"))
    rules_added: list[Triple] = field(default_factory=list, metadata=_row(3, "iptables", "rules"))
    rules_removed: list[Triple] = field(default_factory=list, metadata=_row(3, "iptables", "rules"))
    policies_changed: list[tuple[str, str, str, str]] = field(
        default_factory=list, metadata=_row(4, "iptables", "chain policies")
    )
    """``(table, chain, before, after)`` of built-in chains whose policy changed."""
    nft_chains_added: list[Pair] = field(default_factory=list, metadata=_row(2, "nft", "nft chains"))
    nft_chains_removed: list[Pair] = field(default_factory=list, metadata=_row(2, "nft", "nft chains"))
    nft_policies_changed: list[tuple[str, str, str, str]] = field(
        default_factory=list, metadata=_row(4, "nft", "nft chain policies")
    )
    """``(table, chain, before, after)`` of nft base chains whose policy changed."""
    nft_rules_added: list[Triple] = field(default_factory=list, metadata=_row(3, "nft", "nft rules"))
    nft_rules_removed: list[Triple] = field(default_factory=list, metadata=_row(3, "nft", "nft rules"))
    nft_elements_added: list[Triple] = field(
        default_factory=list, metadata=_row(3, "nft", "nft set/map elements")
    )
    """``(table, set or map name, element text)``."""
    nft_elements_removed: list[Triple] = field(
        default_factory=list, metadata=_row(3, "nft", "nft set/map elements")
    )
    ipsets_added: list[str] = field(default_factory=list, metadata=_row(0, "ipsets", "ipsets"))
    ipsets_removed: list[str] = field(default_factory=list, metadata=_row(0, "ipsets", "ipsets"))
    ipset_members_added: list[Pair] = field(default_factory=list, metadata=_row(2, "ipsets", "ipset members"))
    ipset_members_removed: list[Pair] = field(
        default_factory=list, metadata=_row(2, "ipsets", "ipset members")
    )
    ipvs_added: list[str] = field(default_factory=list, metadata=_row(0, "ipvs", "IPVS services"))
    ipvs_removed: list[str] = field(default_factory=list, metadata=_row(0, "ipvs", "IPVS services"))
    links_added: list[str] = field(default_factory=list, metadata=_row(0, "links", "links"))
    links_removed: list[str] = field(default_factory=list, metadata=_row(0, "links", "links"))
    addrs_added: list[str] = field(default_factory=list, metadata=_row(0, "addrs", "addresses"))
    addrs_removed: list[str] = field(default_factory=list, metadata=_row(0, "addrs", "addresses"))
    routes_added: list[str] = field(default_factory=list, metadata=_row(0, "routes", "routes"))
    routes_removed: list[str] = field(default_factory=list, metadata=_row(0, "routes", "routes"))
    notes: list[str] = field(default_factory=list)
    """Parts not compared (e.g. iptables failed to capture on one side) and why."""
    services: list[ServiceChange] = field(default_factory=list)
    """kube-proxy's rule changes summarised per Service port (:mod:`~pytest_k8sstate.state.kubeproxy`);
    the raw changes stay in the lists above."""

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in NODE_FIELDS)

    @property
    def netfilter_changed(self) -> bool:
        return any(getattr(self, k) for k in NETFILTER_FIELDS)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in NODE_FIELDS:
            vals = getattr(self, f.name)
            out[f.name] = [list(v) for v in vals] if f.width else list(vals)
        out["notes"] = list(self.notes)
        out["services"] = [sc.to_json() for sc in self.services]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        kwargs: dict[str, Any] = {}
        for f in NODE_FIELDS:
            vals = d.get(f.name) or []
            if f.width:
                bad = [v for v in vals if not isinstance(v, list | tuple) or len(v) != f.width]
                if bad:
                    raise ValueError(f"{f.name}: expected lists of {f.width} strings, got {bad[0]!r}")
                kwargs[f.name] = [tuple(str(x) for x in v) for v in vals]
            else:
                kwargs[f.name] = [str(v) for v in vals]
        kwargs["notes"] = [str(n) for n in d.get("notes") or []]
        kwargs["services"] = [ServiceChange.from_json(x) for x in d.get("services") or []]
        return cls(**kwargs)


NODE_FIELDS: tuple[NodeField, ...] = tuple(
    NodeField(f.name, **f.metadata)
    for f in dataclasses.fields(NodeDiff)
    if f.name not in ("notes", "services")
)
"""Every change list of :class:`NodeDiff`, in declaration order (the order of JSON and text lines)."""

NETFILTER_FIELDS: tuple[str, ...] = tuple(f.name for f in NODE_FIELDS if f.part in NETFILTER_PARTS)


def _multiset_diff(before: Iterable[Any], after: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """(added, removed) with multiplicity; order: as in ``after`` / ``before``."""
    lb, la = list(before), list(after)
    cb, ca = Counter(lb), Counter(la)
    return _excess(la, ca, cb), _excess(lb, cb, ca)


def _excess(items: list[Any], counts: Counter[Any], other: Counter[Any]) -> list[Any]:
    """The items that occur more often in ``items`` (counted in ``counts``) than in ``other``: as many of
    each as the difference, first occurrences first."""
    # (item, count) pairs that differ — set operations on dict views run in C
    left = {x: n - other.get(x, 0) for x, n in counts.items() - other.items() if n > other.get(x, 0)}
    out: list[Any] = []
    if left:
        for x in items:
            if left.get(x, 0) > 0:
                out.append(x)
                left[x] -= 1
    return out


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


class _RuleGroups(Mapping[Pair, list[str]]):
    """``(table, chain) → [Rule.spec]`` of a node's iptables, each list built on first access (a chain's
    rules are parsed only when a diff or the service summary reads them)."""

    def __init__(self, ns: NodeState | None) -> None:
        self.chains: dict[Pair, Any] = {}
        if ns is not None and ns.iptables is not None:
            for tname, table in ns.iptables.tables.items():
                for cname, chain in table.chains.items():
                    self.chains[(tname, cname)] = chain
        self._specs: dict[Pair, list[str]] = {}

    def __getitem__(self, key: Pair) -> list[str]:
        got = self._specs.get(key)
        if got is None:
            got = self._specs[key] = [r.spec for r in self.chains[key].rules]
        return got

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.chains)

    def __len__(self) -> int:
        return len(self.chains)

    def __contains__(self, key: object) -> bool:
        return key in self.chains


def _same_rules(a: Any, b: Any) -> bool:
    """Cheaply known to hold the same rules: the same chain object, or the same unparsed dump text."""
    if a is b:
        return True
    ta, tb = a.rules_text(), b.rules_text()
    return ta is not None and ta == tb


def _iptables_grouped_diff(before: _RuleGroups, after: _RuleGroups) -> tuple[list[Triple], list[Triple]]:
    """:func:`_grouped_multiset_diff` of two nodes' iptables, skipping chains with the same dump text
    without parsing their rules."""
    added: list[Triple] = []
    removed_by_group: dict[Pair, list[str]] = {}
    for k, ca in after.chains.items():
        cb = before.chains.get(k)
        if cb is not None and _same_rules(cb, ca):
            continue
        lb, la = (before[k] if cb is not None else []), after[k]
        if lb == la:
            continue
        plus, minus = _multiset_diff(lb, la)
        added.extend((k[0], k[1], x) for x in plus)
        if minus:
            removed_by_group[k] = minus
    for k, cb in before.chains.items():
        if k not in after.chains and cb.rule_count():
            removed_by_group[k] = before[k]
    removed = [(k[0], k[1], x) for k in before.chains if k in removed_by_group for x in removed_by_group[k]]
    return added, removed


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


def nft_table_name(key: Any, table: Any) -> str:
    fam = getattr(table, "family", None)
    name = getattr(table, "name", None)
    if fam is not None and name is not None:
        return f"{fam} {name}"
    if isinstance(key, tuple):
        return " ".join(str(k) for k in key)
    return str(key)


IPTABLES_TABLES = nftomit.IPTABLES_TABLES


def _nft_tables(ns: NodeState | None, skip: frozenset[Any]) -> Iterator[tuple[str, Any]]:
    """nft tables except the ``ip``/``ip6`` tables named in ``skip`` (iptables-nft's, diffed as iptables)
    and the ``(family, name)`` pairs in it (tables a capture left out of the nft part, node/nftomit.py)."""
    if ns is None or ns.nft is None:
        return
    for tkey, table in ns.nft.tables.items():
        family, name = getattr(table, "family", None), getattr(table, "name", None)
        if (family in ("ip", "ip6") and name in skip) or (family, name) in skip:
            continue
        yield nft_table_name(tkey, table), table


def _nft_chains(ns: NodeState | None, skip: frozenset[Any]) -> Iterator[Pair]:
    for tn, table in _nft_tables(ns, skip):
        for cname in table.chains:
            yield tn, cname


def _nft_policies(ns: NodeState | None, skip: frozenset[Any]) -> dict[Pair, str]:
    """``(table, chain) -> policy`` of the base chains that declare one."""
    return {
        (tn, cname): str(chain.policy)
        for tn, table in _nft_tables(ns, skip)
        for cname, chain in table.chains.items()
        if getattr(chain, "policy", None) is not None
    }


def _nft_rule_groups(ns: NodeState | None, skip: frozenset[Any]) -> dict[Pair, list[str]]:
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


def _nft_elements(ns: NodeState | None, skip: frozenset[Any]) -> Iterator[Triple]:
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

    def same(part: str) -> bool:
        """The very same captured object on both sides (a part reused by the capture because its
        fingerprint did not change, see ``node/reuse.py``): nothing to compare."""
        if before is None or after is None or part in eb or part in ea:
            return False
        value = getattr(before, part)
        return value is not None and value is getattr(after, part)

    if same("iptables"):
        pass
    elif comparable("iptables", lambda ns: ns.iptables is not None):
        cb = {(t, c): p for t, c, p in _iptables_chains(before)}
        ca = {(t, c): p for t, c, p in _iptables_chains(after)}
        nd.chains_added = [k for k in ca if k not in cb]
        nd.chains_removed = [k for k in cb if k not in ca]
        nd.policies_changed = [
            (t, c, str(cb[(t, c)]), str(ca[(t, c)]))
            for (t, c) in ca
            if (t, c) in cb and cb[(t, c)] != ca[(t, c)]
        ]
        ipt = (_RuleGroups(before), _RuleGroups(after))
        nd.rules_added, nd.rules_removed = _iptables_grouped_diff(*ipt)
        nd.services.extend(summarize_services(nd, ipt=ipt))
    if same("nft") and same("iptables"):  # the nft diff leaves iptables' tables out: needs both
        pass
    elif comparable("nft", lambda ns: ns.nft is not None):
        # iptables-nft shows iptables' tables in nft too: diff them once, as iptables
        skip: set[Any] = set()
        for ns in (before, after):
            if ns is not None:
                skip |= set(ns.iptables.tables) if ns.iptables is not None else IPTABLES_TABLES
                # a table one capture left out (it is in that capture's iptables part) on both sides
                skip |= set(getattr(ns.nft, "omitted", ()))
        fskip = frozenset(skip)
        nd.nft_chains_added, nd.nft_chains_removed = _set_diff(
            _nft_chains(before, fskip), _nft_chains(after, fskip)
        )
        pb, pa = _nft_policies(before, fskip), _nft_policies(after, fskip)
        nd.nft_policies_changed = [
            (t, c, pb[(t, c)], p) for (t, c), p in pa.items() if pb.get((t, c), p) != p
        ]
        gb, ga = _nft_rule_groups(before, fskip), _nft_rule_groups(after, fskip)
        nd.nft_rules_added, nd.nft_rules_removed = _grouped_multiset_diff(gb, ga)
        eb_, ea_ = list(_nft_elements(before, fskip)), list(_nft_elements(after, fskip))
        nd.nft_elements_added, nd.nft_elements_removed = _set_diff(eb_, ea_)
        nd.services.extend(summarize_services(nd, nft=(gb, ga, eb_, ea_)))
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
    for part, fmt in (("links", link_label), ("addrs", addr_label), ("routes", route_label)):
        if comparable(part, lambda ns: True):
            lb = [_label(x, fmt) for x in (getattr(before, part) or [] if before else [])]
            la = [_label(x, fmt) for x in (getattr(after, part) or [] if after else [])]
            added, removed = _set_diff(lb, la)
            setattr(nd, f"{part}_added", added)
            setattr(nd, f"{part}_removed", removed)
    return nd
