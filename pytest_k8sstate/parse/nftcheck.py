"""Type checks for :meth:`pytest_k8sstate.parse.nft.NftRuleset.from_json` input (a saved snapshot's
nft part) and the nesting cap shared with the ``nft -j`` parser.

Every field's type is checked at load, with its path in the ParseError
(``tables[0].chains[2].rules[5].text``), so a bad file never fails later in ``show``/``diff``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pytest_k8sstate.errors import ParseError

__all__ = ["MAX_NESTING", "JsonContext", "check_ruleset_json", "shown_value", "too_deep"]

MAX_NESTING = 64
"""Deepest JSON nesting accepted inside one rule's expressions, a set/map type or an element (nft
itself writes under 10 levels). Deeper input is a ParseError; raise this constant to lift the cap."""


def too_deep(obj: Any) -> bool:
    """Whether ``obj`` nests dicts/lists deeper than MAX_NESTING (iterative: no recursion)."""
    if not isinstance(obj, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        x, d = stack.pop()
        if d > MAX_NESTING:
            return True
        for y in x.values() if isinstance(x, dict) else x:
            if isinstance(y, (dict, list)):
                stack.append((y, d + 1))
    return False


def shown_value(got: Any) -> str | None:
    """``got`` as JSON text for an error message (cut by ParseError); never recurses deeply."""
    if got is None or isinstance(got, str):
        return got
    if too_deep(got):
        return "(JSON nested too deeply to show)"
    return json.dumps(got, sort_keys=True, separators=(",", ":"), default=repr)


class JsonContext:
    """Errors naming a JSON path in ``source`` (shared with the ``nft -j`` parser)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, path: str, expected: str, got: Any = None) -> ParseError:
        shown = shown_value(got)
        return ParseError(self.source, None, f"{expected} at {path}", shown)

    def check_depth(self, obj: Any, path: str) -> None:
        if too_deep(obj):
            raise self.err(path, f"JSON nested at most {MAX_NESTING} levels deep (MAX_NESTING)")


def check_ruleset_json(d: Any, source: str) -> None:
    """ParseError naming the first field of ``d`` (NftRuleset.to_json output) with a wrong type."""
    _check(JsonContext(source), d)


_STR = (str,)
_OPT_STR = (str, type(None))


def _check_fields(ctx: JsonContext, d: Any, path: str, fields: Mapping[str, tuple[type, ...]]) -> None:
    if not isinstance(d, dict):
        raise ctx.err(path, "an object", d)
    for k, types in fields.items():
        if k not in d:
            raise ctx.err(f"{path}.{k}", "a field (missing)")
        v = d[k]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ctx.err(f"{path}.{k}", " or ".join(_TYPE_NAMES[t] for t in types), v)


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object", type(None): "null"}


_TABLE = {"family": _STR, "name": _STR, "chains": (list,), "sets": (list,), "maps": (list,)}
_CHAIN = {
    "name": _STR,
    "type": _OPT_STR,
    "hook": _OPT_STR,
    "prio": (int, type(None)),
    "policy": _OPT_STR,
    "rules": (list,),
}
_RULE = {"chain": _STR, "handle": (int, type(None)), "expr": (list,), "comment": _OPT_STR, "text": _STR}
_SET = {
    "name": _STR,
    "type": (str, list),
    "map": _OPT_STR,
    "flags": (list,),
    "comment": _OPT_STR,
    "elements": (list,),
    "extra": (dict,),
}
_ELEMENT = {"key": (list,), "value": _OPT_STR, "comment": _OPT_STR}


def _check(ctx: JsonContext, d: Any) -> None:
    _check_fields(ctx, d, "top level", {"source": _STR, "tables": (list,), "other": (list,)})
    omitted = d.get("omitted", [])
    if not isinstance(omitted, list):
        raise ctx.err("omitted", "a list of [family, table] pairs", omitted)
    for i, o in enumerate(omitted):
        if not (isinstance(o, list) and len(o) == 2 and all(isinstance(x, str) for x in o)):
            raise ctx.err(f"omitted[{i}]", "a [family, table] pair of strings", o)
    for i, o in enumerate(d["other"]):
        if not isinstance(o, dict):
            raise ctx.err(f"other[{i}]", "an object", o)
        ctx.check_depth(o, f"other[{i}]")
    for i, t in enumerate(d["tables"]):
        tp = f"tables[{i}]"
        _check_fields(ctx, t, tp, _TABLE)
        for j, c in enumerate(t["chains"]):
            cp = f"{tp}.chains[{j}]"
            _check_fields(ctx, c, cp, _CHAIN)
            for k, r in enumerate(c["rules"]):
                rp = f"{cp}.rules[{k}]"
                _check_fields(ctx, r, rp, _RULE)
                for m, x in enumerate(r["expr"]):
                    if not isinstance(x, dict) or len(x) != 1:
                        raise ctx.err(f"{rp}.expr[{m}]", "an object with exactly one key", x)
                ctx.check_depth(r["expr"], f"{rp}.expr")
        for kind in ("sets", "maps"):
            for j, st in enumerate(t[kind]):
                sp = f"{tp}.{kind}[{j}]"
                _check_fields(ctx, st, sp, _SET)
                for name in ("type", "flags"):
                    if isinstance(st[name], list) and not all(isinstance(x, str) for x in st[name]):
                        raise ctx.err(f"{sp}.{name}", "a list of strings", st[name])
                ctx.check_depth(st["extra"], f"{sp}.extra")
                for k, e in enumerate(st["elements"]):
                    ep = f"{sp}.elements[{k}]"
                    _check_fields(ctx, e, ep, _ELEMENT)
                    if not e["key"] or not all(isinstance(x, str) for x in e["key"]):
                        raise ctx.err(f"{ep}.key", "a non-empty list of strings", e["key"])
