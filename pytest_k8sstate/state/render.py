"""Plain-text rendering of snapshots and diffs: one line per change, the ``summary()`` texts, and the
one-line failure summary (:func:`summarize_diff`) that the plugin prints above a failed test's diff.

Node changes are rendered from :data:`~pytest_k8sstate.state.nodediff.NODE_FIELDS`, the table of
:class:`NodeDiff`'s change lists, so every kind of change shows up here as soon as the model has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.state.keys import resource_counts
from pytest_k8sstate.state.kubeproxy import ServiceIndex
from pytest_k8sstate.state.nodediff import NETFILTER_PARTS, NODE_FIELDS, NodeField, nft_table_name
from pytest_k8sstate.state.pairing import pair_rules, paired_text

if TYPE_CHECKING:
    from pytest_k8sstate.state.diff import StateDiff
    from pytest_k8sstate.state.etcddiff import KeyChange
    from pytest_k8sstate.state.nodediff import NodeDiff
    from pytest_k8sstate.state.snapshot import Snapshot

__all__ = [
    "diff_summary",
    "key_block",
    "node_diff_lines",
    "node_summary_lines",
    "snapshot_summary",
    "summarize_diff",
    "value_lines",
]

# NodeField.kind → (line after the sign, index of the item part that ``ignore_names`` globs match)
_ITEM_FORMATS: dict[str, tuple[str, int]] = {
    "chains": ("chain {0} {1}", 1),
    "rules": ("rule {0} -A {1} {2}", 1),
    "policies": ("policy {0} {1}: {2} → {3}", 1),
    "nft_chains": ("nft chain {0} {1}", 1),
    "nft_policies": ("nft policy {0} {1}: {2} → {3}", 1),
    "nft_rules": ("nft rule {0} {1}: {2}", 1),
    "nft_elements": ("nft element {0} @{1}: {2}", 1),
    "ipsets": ("ipset {0}", 0),
    "ipset_members": ("ipset {0} member {1}", 0),
    "ipvs": ("ipvs {0}", 0),
    "links": ("link {0}", 0),
    "addrs": ("addr {0}", 0),
    "routes": ("route {0}", 0),
}
_SIGNS = {"added": "+", "removed": "-", "changed": "~"}

# the one-line summary names rule changes first: they are what a test most often causes
_SUMMARY_FIRST = ("rules", "nft_rules")


def _item_line(f: NodeField, item: Any) -> tuple[str, str]:
    """(text, name the ignore globs match: chain / set / ipset name) for one NodeDiff item."""
    fmt, name_at = _ITEM_FORMATS[f.kind]
    parts = tuple(item) if f.width else (item,)
    return f"{_SIGNS[f.change]} {fmt.format(*parts)}", str(parts[name_at])


def node_diff_lines(
    nd: NodeDiff, *, netfilter_only: bool = False, ignore_names: Sequence[str] = ()
) -> list[str]:
    """One line per change (``+ rule nat -A KUBE-SERVICES ...``); ``ignore_names``: fnmatch globs of
    chain / set names whose changes are left out."""
    out: list[str] = []
    for f in NODE_FIELDS:
        if netfilter_only and f.part not in NETFILTER_PARTS:
            continue
        for item in getattr(nd, f.name):
            text, name = _item_line(f, item)
            if ignore_names and any(fnmatchcase(name, p) for p in ignore_names):
                continue
            out.append(text)
    return out


_PAIRED = {"rules": "~ rule {0} -A {1} {2}", "nft_rules": "~ nft rule {0} {1}: {2}"}


def node_summary_lines(nd: NodeDiff, *, raw: bool = False) -> list[str]:
    """The node part of :func:`diff_summary`: one line per Service port whose kube-proxy rules changed
    (``service default/web:http: endpoints 3 → 2, removed 10.244.1.4:8080 (iptables, 4 changes)``),
    then the changes no summary stands for, a removed rule and the added rule that replaced it paired
    on one ``~`` line. ``raw``: every change as its own line after the summaries (nothing folded)."""
    out = [f"service {sc.text()}" for sc in nd.services]
    if raw:
        return out + node_diff_lines(nd)
    index = ServiceIndex(nd.services)

    def left(f: NodeField) -> list[Any]:
        items: list[Any] = getattr(nd, f.name)
        return [i for i in items if index.owner(f.kind, i) is None] if index else items

    unpaired: dict[str, list[Any]] = {}
    for f in NODE_FIELDS:
        if f.kind in _PAIRED and f.change == "added":
            removed_f = next(g for g in NODE_FIELDS if g.kind == f.kind and g.change == "removed")
            pairs, rest_removed, rest_added = pair_rules(left(removed_f), left(f))
            out.extend(_PAIRED[f.kind].format(b[0], b[1], paired_text(b[2], a[2])) for b, a in pairs)
            unpaired[removed_f.name] = rest_removed
            items = rest_added
        else:
            items = unpaired.pop(f.name) if f.name in unpaired else left(f)
        out.extend(_item_line(f, item)[0] for item in items)
    return out


def cap(lines: list[str], limit: int | None) -> list[str]:
    """At most ``limit`` lines (None = all), then ``... and N more``."""
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more"]


def key_line(sign: str, c: KeyChange) -> str:
    """``~ /registry/services/specs/default/web  [Service]  spec.ports[0].port``."""
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


MAX_VALUE_LINES = 8
"""Field changes shown under one modified key (the rest are counted)."""


def value_lines(c: KeyChange, max_lines: int | None = MAX_VALUE_LINES) -> list[str]:
    """``spec.replicas: 2 → 3`` per changed field of a modified key (bounded, then ``… and N more``)."""
    from pytest_k8sstate.state.values import format_change

    vals = c.values or []
    shown = vals if max_lines is None else vals[:max_lines]
    out = [format_change(v) for v in shown]
    if len(vals) > len(shown):
        out.append(f"… and {len(vals) - len(shown)} more fields")
    return out


def key_block(sign: str, c: KeyChange, *, values: bool = True) -> list[str]:
    """:func:`key_line` and, for a modified key with values, one indented line per changed field."""
    head = key_line(sign, c)
    if sign != "~" or not values or not c.values:
        return [head]
    return [head, *("    " + v for v in value_lines(c))]


def diff_summary(
    diff: StateDiff, full: bool = False, limit: int | None = 40, *, raw_rules: bool = False
) -> str:
    """:meth:`StateDiff.summary`: ``full`` includes ignored keys; ``limit`` caps lines per section;
    ``raw_rules``: node changes one per line, not folded into per-Service summaries and pairs."""
    lines: list[str] = []
    rev = ""
    if diff.before_revision is not None or diff.after_revision is not None:
        rev = f" (etcd revision {diff.before_revision} → {diff.after_revision})"
    lines.append(f"diff {diff.before_label} → {diff.after_label}{rev}")
    added = diff.etcd_added(full)
    removed = diff.etcd_removed(full)
    modified = diff.etcd_modified(full)
    head = f"etcd: {len(added)} added, {len(removed)} removed, {len(modified)} modified"
    if diff.before_revision is None and diff.after_revision is None and not diff.etcd:
        head = "etcd: not compared (not captured, or left out of this view)"
    hidden = diff.hidden_counts()
    if not full and any(hidden.values()):
        parts = ", ".join(f"{n} {w}" for w, n in hidden.items() if n)
        head += f" ({parts} hidden by ignore patterns; show with --all / full=True)"
    lines.append(head)
    for sign, items in (("+", added), ("-", removed), ("~", modified)):
        blocks = [key_block(sign, c) for c in items]
        shown = blocks if limit is None or len(blocks) <= limit else blocks[:limit]
        lines.extend("  " + s for b in shown for s in b)
        if len(blocks) > len(shown):
            lines.append(f"  ... and {len(blocks) - len(shown)} more")
    for name in diff.nodes_added:
        lines.append(f"node {name}: added")
    for name in diff.nodes_removed:
        lines.append(f"node {name}: removed")
    for name, nd in diff.nodes.items():
        if not nd and not nd.notes:
            continue
        lines.append(f"node {name}:" + ("" if nd else " no changes"))
        lines.extend(f"  note: {n}" for n in nd.notes)
        lines.extend("  " + s for s in cap(node_summary_lines(nd, raw=raw_rules), limit))
    lines.extend(f"note: {n}" for n in diff.notes)
    if len(lines) == 2 and not added and not removed and not modified:
        lines.append("no changes")
    return "\n".join(lines)


def summarize_diff(diff: StateDiff) -> str:
    """One line, default view: ``3 etcd keys added, 1 modified; 12 rules added on 3 nodes``.

    The node half counts every change list of :class:`NodeDiff` (rules first), e.g.
    ``1 ipset members added on 1 node``; ``no node state changed`` only when no list has an item.
    """
    counts = [
        (len(diff.etcd_added()), "added"),
        (len(diff.etcd_removed()), "removed"),
        (len(diff.etcd_modified()), "modified"),
    ]
    etcd_parts = [f"{n} {label}" for n, label in counts if n]
    if etcd_parts:
        first_n = next(n for n, _ in counts if n)
        etcd_parts[0] = etcd_parts[0].replace(" ", " etcd key " if first_n == 1 else " etcd keys ", 1)
        etcd_text = ", ".join(etcd_parts)
    else:
        etcd_text = "no etcd key changed"
    hidden = sum(diff.hidden_counts().values())
    if hidden:
        etcd_text += f" ({hidden} more hidden by ignore patterns)"
    node_parts: list[str] = []
    for f in sorted(NODE_FIELDS, key=lambda f: f.kind not in _SUMMARY_FIRST):
        per_node = [len(getattr(nd, f.name)) for nd in diff.nodes.values()]
        total = sum(per_node)
        if total:
            changed = sum(1 for n in per_node if n)
            node_parts.append(f"{total} {f.noun} {f.change} on {changed} node{'s' if changed != 1 else ''}")
    return f"{etcd_text}; " + (", ".join(node_parts) if node_parts else "no node state changed")


def snapshot_summary(snap: Snapshot) -> str:
    """:meth:`Snapshot.summary`: label, time, etcd revision and key counts by resource, per-node counts."""
    when = datetime.fromtimestamp(snap.taken_at, UTC).isoformat(timespec="seconds")
    lines = [f"snapshot {snap.label!r} taken {when}"]
    if snap.cluster:
        lines.append("cluster: " + ", ".join(f"{k}={v}" for k, v in sorted(snap.cluster.items())))
    if snap.etcd is None:
        lines.append("etcd: not captured")
    else:
        lines.append(f"etcd: revision {snap.etcd.revision}, {len(snap.etcd.entries)} keys")
        for res, n in sorted(resource_counts(snap.etcd.entries).items()):
            lines.append(f"  {res:<40} {n:>6}")
    for name, ns in snap.nodes.items():
        lines.append(f"node {name}:")
        if ns.iptables is not None:
            for tname, table in ns.iptables.tables.items():
                n_rules = sum(c.rule_count() for c in table.chains.values())
                lines.append(f"  iptables {tname:<10} {len(table.chains):>6} chains {n_rules:>8} rules")
        if ns.nft is not None:
            for tkey, ntable in ns.nft.tables.items():
                n_rules = sum(len(c.rules) for c in ntable.chains.values())
                tn = nft_table_name(tkey, ntable)
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
