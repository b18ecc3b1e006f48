"""Field-level changes of a modified etcd object, with their values: ``spec.replicas: 2 → 3``.

:func:`field_changes` compares two decoded objects (``Decoded.fields``, JSON-able trees) with ``deepdiff``
and returns one :class:`FieldChange` per changed path, carrying the old and the new value (:data:`ABSENT`
where the field did not exist on that side). ``metadata.managedFields…`` is collapsed into one change
without values (it is rewritten by every apply and is noise in a diff).

Values are kept as JSON values while small; a value whose JSON is longer than :data:`MAX_VALUE_JSON`
characters is replaced by a bounded text (:class:`FieldChange` ``truncated=True``) so a diff of a 1 MB
ConfigMap stays small. :func:`format_change` renders one change on one bounded line: long strings show
only the part that differs (with a little context), other long values are cut in the middle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self

__all__ = [
    "ABSENT",
    "COLLAPSE",
    "MAX_VALUE_JSON",
    "FieldChange",
    "field_changes",
    "field_path",
    "format_change",
    "render_value",
]


class _Absent:
    """The side of a change where the field does not exist."""

    _inst: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Final = _Absent()
"""``FieldChange.before`` of an added field, ``.after`` of a removed one."""

MAX_VALUE_JSON = 2000
"""Characters of JSON a stored value may have; longer values are kept as a bounded text."""

COLLAPSE = ("metadata.managedFields",)
"""Paths whose changes are reported as one change without values."""

WIDTH = 72
"""Characters of one rendered value."""

_CONTEXT = 16


@dataclass(frozen=True)
class FieldChange:
    """One changed field of a modified object."""

    path: str
    """Dotted path (``spec.ports[0].port``, ``metadata.labels["app.kubernetes.io/name"]``)."""
    before: Any = ABSENT
    after: Any = ABSENT
    truncated: bool = False
    """A value was too large to keep: ``before``/``after`` hold a bounded text instead."""
    count: int = 1
    """Collapsed paths (managedFields): how many changes were folded into this one."""

    @property
    def collapsed(self) -> bool:
        return self.path in COLLAPSE

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path}
        if self.before is not ABSENT:
            d["before"] = self.before
        if self.after is not ABSENT:
            d["after"] = self.after
        if self.truncated:
            d["truncated"] = True
        if self.count != 1:
            d["count"] = self.count
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            path=str(d["path"]),
            before=d["before"] if "before" in d else ABSENT,
            after=d["after"] if "after" in d else ABSENT,
            truncated=bool(d.get("truncated", False)),
            count=int(d.get("count", 1)),
        )


def field_path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and re.fullmatch(r"[A-Za-z0-9_#-]+", p):
            out += ("." if out else "") + p
        else:
            out += f"[{json.dumps(str(p))}]"
    return out or "(value)"


def _compact(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "), sort_keys=False, default=str)


def _keep(v: Any) -> tuple[Any, bool]:
    """``v`` itself if its JSON is small, else its bounded rendering (and True)."""
    if v is ABSENT or isinstance(v, bool | int | float) or v is None:
        return v, False
    text = _compact(v)
    if len(text) <= MAX_VALUE_JSON:
        return v, False
    return _cut(text, WIDTH * 2), True


def field_changes(before: Any, after: Any) -> list[FieldChange]:
    """Every changed path between two JSON-able trees with its old and new value, sorted by path."""
    from deepdiff import DeepDiff
    from deepdiff.helper import NotPresent

    if before == after:
        return []
    tree = DeepDiff(before, after, view="tree", verbose_level=0)
    out: dict[str, FieldChange] = {}
    for items in tree.values():
        for item in items:
            path = field_path(item.path(output_format="list"))
            folded = next((c for c in COLLAPSE if path == c or path.startswith((c + ".", c + "["))), None)
            if folded is not None:
                prev = out.get(folded)
                out[folded] = FieldChange(folded, count=(prev.count + 1) if prev else 1)
                continue
            b = ABSENT if isinstance(item.t1, NotPresent) else item.t1
            a = ABSENT if isinstance(item.t2, NotPresent) else item.t2
            if isinstance(b, str) and isinstance(a, str) and max(len(b), len(a)) > MAX_VALUE_JSON // 2:
                db, da = _differing(b, a)  # two big texts: keep the part that differs
                out[path] = FieldChange(path, db, da, truncated=True)
                continue
            kb, tb = _keep(b)
            ka, ta = _keep(a)
            out[path] = FieldChange(path, kb, ka, truncated=tb or ta)
    return [out[p] for p in sorted(out)]


def _cut(text: str, width: int) -> str:
    """``text`` if short, else its start and end around ``…`` and the full length."""
    if len(text) <= width:
        return text
    keep = max(width - 20, 8)
    return f"{text[: keep // 2]}…{text[len(text) - keep // 2 :]} ({len(text)} chars)"


def render_value(v: Any, width: int = WIDTH) -> str:
    """One value on one bounded line: ``3``, ``"web"``, ``{"app": "web"}``, ``(none)`` when absent."""
    if v is ABSENT:
        return "(none)"
    return _cut(_compact(v), width)


def _differing(a: str, b: str) -> tuple[str, str]:
    """Two long strings reduced to the part that differs, with :data:`_CONTEXT` characters around it."""
    pre = 0
    n = min(len(a), len(b))
    while pre < n and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and a[len(a) - 1 - suf] == b[len(b) - 1 - suf]:
        suf += 1
    start = max(pre - _CONTEXT, 0)

    def piece(s: str) -> str:
        end = min(len(s) - suf + _CONTEXT, len(s))
        body = _compact(s[start:end])[1:-1]
        return ("…" if start else "") + _cut(body, WIDTH) + ("…" if end < len(s) else "")

    where = f" (line {a.count(chr(10), 0, pre) + 1})" if "\n" in a else f" (at character {pre})"
    return f'"{piece(a)}"{where}', f'"{piece(b)}"'


def format_change(c: FieldChange, width: int = WIDTH) -> str:
    """``spec.replicas: 2 → 3``; ``metadata.labels.tier: (none) → "db"``; long strings: the differing part."""
    if c.collapsed and c.before is ABSENT and c.after is ABSENT:
        return f"{c.path}: changed ({c.count} change{'' if c.count == 1 else 's'})"
    b, a = c.before, c.after
    if isinstance(b, str) and isinstance(a, str) and not c.truncated and max(len(b), len(a)) > width:
        rb, ra = _differing(b, a)
    elif c.truncated:  # already bounded texts
        rb = "(none)" if b is ABSENT else str(b)
        ra = "(none)" if a is ABSENT else str(a)
    else:
        rb, ra = render_value(b, width), render_value(a, width)
    return f"{c.path}: {rb} → {ra}"
