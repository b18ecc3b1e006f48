"""The etcd half of the report: keys added / removed / modified as a tree of their path segments
(``deployments › default › web``), each modified key with its changed fields as old → new values
(:mod:`pytest_k8sstate.state.values`), each added or removed key with its object (bounded).

Output is bounded: at most :data:`MAX_KEYS` keys and :data:`MAX_FIELDS` fields per key, the rest counted
("N more"); values are :func:`~pytest_k8sstate.state.values.render_value`'s bounded text. Everything is
escaped: names and values are user data."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from pytest_k8sstate.state.etcddiff import KeyChange
from pytest_k8sstate.state.values import ABSENT, FieldChange, format_change, render_value

__all__ = ["MAX_FIELDS", "MAX_KEYS", "MAX_OBJECT", "etcd_tree_html"]

MAX_KEYS = 500
"""Keys shown (the rest are counted)."""
MAX_FIELDS = 60
"""Changed fields shown per modified key."""
MAX_OBJECT = 4000
"""Characters of an added/removed object's JSON shown."""
VALUE_WIDTH = 120
MAX_DEPTH = 8
"""Tree levels; a key with more segments keeps the rest in its leaf's name."""

_MARK = {"added": "+", "removed": "−", "modified": "~"}


@dataclass
class _Dir:
    children: dict[str, _Dir] = field(default_factory=dict)
    leaves: list[tuple[str, str, KeyChange]] = field(default_factory=list)  # (segment, change, KeyChange)

    def count(self) -> int:
        return len(self.leaves) + sum(c.count() for c in self.children.values())


def _segments(key: str) -> list[str]:
    parts = [p for p in key.split("/") if p]
    if parts and parts[0] == "registry":
        parts = parts[1:]
    if len(parts) > MAX_DEPTH:
        parts = [*parts[: MAX_DEPTH - 1], "/".join(parts[MAX_DEPTH - 1 :])]
    return parts or [key]


def _value(v: Any) -> str:
    return render_value(v, VALUE_WIDTH)


def _fields_html(values: list[FieldChange] | None, changed: list[str] | None) -> str:
    if values is None:
        if changed is None:
            return (
                '<p class="note">value not decodable (encrypted, binary or a Secret): fields not compared</p>'
            )
        return ""
    if not values:
        return '<p class="note">same content rewritten (no field changed)</p>'
    rows = []
    for c in values[:MAX_FIELDS]:
        if c.collapsed and c.before is ABSENT and c.after is ABSENT:
            text = escape(format_change(c))
            rows.append(f'<tr class="field collapsed"><td class="path" colspan="4">{text}</td></tr>')
            continue
        before = "(none)" if c.before is ABSENT else (str(c.before) if c.truncated else _value(c.before))
        after = "(none)" if c.after is ABSENT else (str(c.after) if c.truncated else _value(c.after))
        rows.append(
            f'<tr class="field"><td class="path">{escape(c.path)}</td>'
            f'<td class="old">{escape(before)}</td><td class="arrow">→</td>'
            f'<td class="new">{escape(after)}</td></tr>'
        )
    more = len(values) - MAX_FIELDS
    if more > 0:
        rows.append(f'<tr class="more"><td colspan="4">{more} more changed fields</td></tr>')
    return f'<table class="fields">{"".join(rows)}</table>'


def _object_html(obj: Any) -> str:
    if obj is None:
        return ""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_OBJECT:
        text = text[:MAX_OBJECT] + f"\n… ({len(text) - MAX_OBJECT} more characters)"
    return f'<details class="object"><summary>{{…}}</summary><pre>{escape(text)}</pre></details>'


def _leaf_html(seg: str, change: str, kc: KeyChange, obj: Any) -> str:
    kind = f' <span class="kind">{escape(kc.kind)}</span>' if kc.kind else ""
    body = _fields_html(kc.values, kc.changed_fields) if change == "modified" else _object_html(obj)
    return (
        f'<li class="key {change}" data-key="{escape(kc.key)}"><span class="mark">{_MARK[change]}</span> '
        f'<span class="name">{escape(seg)}</span>{kind}{body}</li>'
    )


def _dir_html(name: str, d: _Dir, objects: Mapping[str, Any], depth: int) -> str:
    items = [_dir_html(n, child, objects, depth + 1) for n, child in sorted(d.children.items())] + [
        _leaf_html(seg, ch, kc, objects.get(kc.key)) for seg, ch, kc in d.leaves
    ]
    inner = f"<ul>{''.join(items)}</ul>"
    if depth == 0:
        return inner
    return (
        f'<li class="dir"><details open><summary><span class="name">{escape(name)}</span> '
        f'<span class="count">{d.count()}</span></summary>{inner}</details></li>'
    )


def etcd_tree_html(
    added: list[KeyChange],
    removed: list[KeyChange],
    modified: list[KeyChange],
    objects: Mapping[str, Any] | None = None,
) -> str:
    """The ``<div class="tree">`` of the etcd changes; ``objects``: key → decoded object (``fields``) of
    the added keys (after) and removed keys (before), shown folded."""
    changes = sorted(
        [(kc.key, "added", kc) for kc in added]
        + [(kc.key, "removed", kc) for kc in removed]
        + [(kc.key, "modified", kc) for kc in modified],
        key=lambda t: t[0],
    )
    if not changes:
        return '<div class="tree empty"><p class="note">no etcd changes</p></div>'
    root = _Dir()
    for key, change, kc in changes[:MAX_KEYS]:
        segs = _segments(key)
        d = root
        for s in segs[:-1]:
            d = d.children.setdefault(s, _Dir())
        d.leaves.append((segs[-1], change, kc))
    more = len(changes) - MAX_KEYS
    tail = f'<p class="more">{more} more keys not shown</p>' if more > 0 else ""
    return f'<div class="tree">{_dir_html("", root, objects or {}, 0)}{tail}</div>'
