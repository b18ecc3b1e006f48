"""The standalone HTML report of two snapshots: one self-contained file (inline CSS and SVG, no script,
no external URL — a Content-Security-Policy of ``default-src 'none'`` says so to the browser) with

- the etcd changes as a tree (:mod:`.tree`), modified keys with old → new values;
- for each Service port whose kube-proxy rules changed, per node: the graph of its path (:mod:`.graph`,
  :mod:`.svg`) and the traced outcome distribution (after; before too when it changed);
- the text summary of the whole diff (folded).

Bounded for huge diffs: :data:`MAX_SERVICES` graphs, the tree's own caps; the rest is counted."""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.report.graph import (
    ServiceGraph,
    addr_key,
    fraction_text,
    percent_text,
    pods_by_ip,
    service_graph,
)
from pytest_k8sstate.report.style import CSS
from pytest_k8sstate.report.svg import graph_svg
from pytest_k8sstate.report.tree import etcd_tree_html
from pytest_k8sstate.util.files import atomic_write_text

if TYPE_CHECKING:
    from pytest_k8sstate.state.diff import StateDiff
    from pytest_k8sstate.state.filters import Scope
    from pytest_k8sstate.state.snapshot import Snapshot

__all__ = ["MAX_SERVICES", "render_report", "service_graphs", "write_report"]

MAX_SERVICES = 40
"""Service graphs drawn (per report); the rest are listed by their one-line summary."""
SUMMARY_LINES = 200
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def service_graphs(
    before: Snapshot, after: Snapshot, diff: StateDiff, limit: int = MAX_SERVICES
) -> tuple[list[tuple[ServiceGraph, ServiceGraph | None]], list[str]]:
    """(graph on the side where the Service exists — after, or before when it was removed —, the before
    graph when it changed) per changed Service port per node, at most ``limit``; and the one-line
    summaries of the ones past the limit."""
    pods = {"after": pods_by_ip(after.etcd), "before": pods_by_ip(before.etcd)}
    out: list[tuple[ServiceGraph, ServiceGraph | None]] = []
    rest: list[str] = []
    for node in sorted(diff.nodes):
        for sc in diff.nodes[node].services:
            if len(out) >= limit:
                rest.append(f"{node}: {sc.text()}")
                continue
            side = "before" if sc.change == "removed" else "after"
            snap = before if side == "before" else after
            ns = snap.nodes.get(node)
            if ns is None:
                continue
            g = service_graph(sc, node, ns, side=side, pods=pods[side])
            old = None
            if sc.change == "changed" and node in before.nodes:
                old = service_graph(sc, node, before.nodes[node], side="before", pods=pods["before"])
            out.append((g, old))
    return out, rest


def _outcomes_table(g: ServiceGraph, caption: str) -> str:
    if g.error:
        return f'<p class="error">{escape(caption)}: {escape(g.error)}</p>'
    rows = [
        "<tr><th>share</th><th>destination</th><th>pod</th><th>masquerade</th><th>verdict</th><th>assumes</th></tr>"
    ]
    for o in sorted(g.outcomes, key=lambda o: addr_key(o.target))[:100]:
        rows.append(
            f'<tr class="outcome" data-target="{escape(o.target)}" '
            f'data-share="{escape(fraction_text(o.share))}">'
            f"<td>{escape(percent_text(o.share))} ({escape(fraction_text(o.share))})</td>"
            f"<td>{escape(o.target)}</td><td>{escape(o.pod or '-')}</td>"
            f"<td>{'yes' if o.masquerade else 'no'}</td><td>{escape(o.verdict)}</td>"
            f"<td>{escape(', '.join(o.assumes) or '-')}</td></tr>"
        )
    if len(g.outcomes) > 100:
        rows.append(f'<tr class="more"><td colspan="6">{len(g.outcomes) - 100} more outcomes</td></tr>')
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in g.notes)
    return (
        f'<table class="outcomes"><caption>{escape(caption)}: {escape(g.packet)}</caption>'
        f"{''.join(rows)}</table>{notes}"
    )


def _service_html(g: ServiceGraph, old: ServiceGraph | None) -> str:
    more = f'<p class="note">{g.hidden_outcomes} more outcomes not drawn</p>' if g.hidden_outcomes else ""
    side = "after" if g.side == "after" else "before (removed after)"
    parts = [
        f'<section class="service" data-service="{escape(g.service)}" data-node="{escape(g.node)}">',
        f'<h3>{escape(g.service)} <span class="where">on {escape(g.node)} · {escape(g.backend)}</span></h3>',
        f'<p class="summary">{escape(g.summary)}</p>',
    ]
    svg = graph_svg(g)
    if svg:
        parts.append(f'<div class="graphbox">{svg}</div>{more}')
    parts.append(_outcomes_table(g, f"traced {side}"))
    if old is not None:
        parts.append(_outcomes_table(old, "traced before"))
    parts.append("</section>")
    return "".join(parts)


def _objects(before: Snapshot, after: Snapshot, diff: StateDiff) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for snap, changes in ((after, diff.etcd.added), (before, diff.etcd.removed)):
        if snap.etcd is None:
            continue
        for kc in changes[:500]:
            entry = snap.etcd.entries.get(kc.key)
            if entry is not None and entry.decoded.fields is not None:
                out[kc.key] = entry.decoded.fields
    return out


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def render_report(
    before: Snapshot,
    after: Snapshot,
    *,
    diff: StateDiff | None = None,
    scope: Scope | None = None,
    title: str | None = None,
) -> str:
    """The report's HTML text. ``diff``: ``before.diff(after)`` when already computed; ``scope``: the
    ``k8sstate diff`` filters (namespaces, kinds, nodes …)."""
    if diff is None:
        diff = before.diff(after)
    if scope is not None:
        from pytest_k8sstate.state.filters import filter_diff

        diff = filter_diff(diff, scope)
    view = diff.view()
    title = title or f"k8sstate: {before.label} → {after.label}"
    hidden = diff.hidden_counts()
    n_hidden = sum(hidden.values())
    counts = (
        f"{len(view.etcd.added)} added, {len(view.etcd.removed)} removed, {len(view.etcd.modified)} modified"
    )
    graphs, rest = service_graphs(before, after, diff)
    services = "".join(_service_html(g, old) for g, old in graphs)
    if rest:
        services += (
            f'<p class="more">{len(rest)} more changed Services (graphs not drawn):</p><ul class="rest">'
        )
        services += "".join(f"<li>{escape(line)}</li>" for line in rest[:500]) + "</ul>"
    if not graphs and not rest:
        services = '<p class="note">no Service\'s kube-proxy rules changed</p>'
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in diff.notes)
    summary = escape(diff.summary(limit=SUMMARY_LINES))
    hidden_note = (
        f'<p class="note">{n_hidden} changes hidden by the ignore patterns (leases, events …)</p>'
        if n_hidden
        else ""
    )
    revs = f"etcd revision {diff.before_revision} → {diff.after_revision}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<header><h1>{escape(title)}</h1>
<p class="meta">{escape(before.label)} at {_when(before.taken_at)} → {escape(after.label)} at \
{_when(after.taken_at)} · {escape(revs)} · nodes: {escape(", ".join(sorted(after.nodes)) or "none")}</p>
{notes}</header>
<section id="etcd"><h2>etcd <span class="counts">{escape(counts)}</span></h2>
{hidden_note}
{etcd_tree_html(view.etcd.added, view.etcd.removed, view.etcd.modified, _objects(before, after, view))}
</section>
<section id="services"><h2>Services: kube-proxy paths</h2>{services}</section>
<section id="text"><details><summary>the diff as text</summary><pre>{summary}</pre></details></section>
<footer>pytest-k8sstate report · self-contained: no script, no network access</footer>
</body></html>
"""


def write_report(
    path: Path,
    before: Snapshot,
    after: Snapshot,
    *,
    diff: StateDiff | None = None,
    scope: Scope | None = None,
    title: str | None = None,
) -> Path:
    """Render and write the report atomically; returns ``path``."""
    atomic_write_text(path, render_report(before, after, diff=diff, scope=scope, title=title))
    return path
