"""A :class:`~pytest_k8sstate.report.graph.ServiceGraph` as inline SVG: one column per depth of the
path (entry chain, service chain, endpoint chains, pods), a box per chain, a curve per jump labelled with
the rule's probability and the share of connections that take it. No script, no external reference;
every text is escaped."""

from __future__ import annotations

from html import escape

from pytest_k8sstate.report.graph import Edge, GraphNode, ServiceGraph, fraction_text, percent_text

__all__ = ["graph_svg"]

CHAR_W = 7.2
"""Pixels per character of the 12px monospace labels."""
MAX_LABEL = 48
"""Characters of a box's label (the full name is its tooltip)."""
MAX_TIP = 600
"""Characters of a box's tooltip."""
BOX_H = 30
POD_H = 44
GAP_Y = 18
GAP_X = 130
PAD = 12


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _height(n: GraphNode) -> int:
    return POD_H if n.detail else BOX_H


def _edge_text(e: Edge) -> str:
    p = "1" if e.rule_probability is None else fraction_text(e.rule_probability)
    return f"p {p} · {percent_text(e.share)}"


def graph_svg(g: ServiceGraph) -> str:
    """The ``<svg>`` element of ``g`` (empty string for a graph without nodes)."""
    if not g.nodes:
        return ""
    columns: dict[int, list[GraphNode]] = {}
    for n in g.nodes:
        columns.setdefault(n.depth, []).append(n)
    widths = {
        d: max(
            len(_label(n.label)) if not n.detail else max(len(_label(n.label)), len(_label(n.detail)))
            for n in col
        )
        * CHAR_W
        + 2 * PAD
        for d, col in columns.items()
    }
    heights = {d: sum(_height(n) + GAP_Y for n in col) - GAP_Y for d, col in columns.items()}
    total_h = max(heights.values()) + 2 * PAD
    pos: dict[str, tuple[float, float, float, float]] = {}  # id → x, y, w, h
    x = float(PAD)
    for d in sorted(columns):
        y = PAD + (total_h - 2 * PAD - heights[d]) / 2
        for n in columns[d]:
            pos[n.id] = (x, y, widths[d], _height(n))
            y += _height(n) + GAP_Y
        x += widths[d] + GAP_X
    total_w = x - GAP_X + PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" role="img" '
        f'aria-label="{escape(f"kube-proxy path of {g.service} on {g.node}")}">'
    ]
    for e in g.edges:
        if e.src not in pos or e.dst not in pos:
            continue
        sx, sy, sw, sh = pos[e.src]
        dx, dy, _dw, dh = pos[e.dst]
        x1, y1, x2, y2 = sx + sw, sy + sh / 2, dx, dy + dh / 2
        mid = (x1 + x2) / 2
        lx, ly = x2 - 6, y2 - 5  # just before the box it enters: fan-outs do not overlap
        text = _edge_text(e)
        p = "1" if e.rule_probability is None else fraction_text(e.rule_probability)
        parts.append(
            f'<g class="edge" data-from="{escape(e.src)}" data-to="{escape(e.dst)}" data-p="{escape(p)}" '
            f'data-share="{escape(fraction_text(e.share))}"><title>{escape(e.rule or "")}</title>'
            f'<path d="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
            f'stroke-width="{1 + 3 * float(e.share):.2f}"/>'
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="end">{escape(text)}</text></g>'
        )
    for n in g.nodes:
        x0, y0, w, h = pos[n.id]
        tip = (n.label + (f" — pod {n.detail}" if n.detail else ""))[:MAX_TIP]
        parts.append(
            f'<g class="node {escape(n.kind)}" data-id="{escape(n.id)}"><title>{escape(tip)}</title>'
            f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{h}" rx="5"/>'
            f'<text x="{x0 + PAD:.1f}" y="{y0 + 19:.1f}">{escape(_label(n.label))}</text>'
        )
        if n.detail:
            parts.append(
                f'<text class="pod" x="{x0 + PAD:.1f}" y="{y0 + 36:.1f}">{escape(_label(n.detail))}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
