"""Parse ``nft -j list ruleset`` into tables → chains → rules, sets and maps.

Rules keep their ``expr`` list exactly as nft gave it (unknown expressions such as ``xt`` from the
iptables-nft backend included) plus :attr:`NftRule.text`, a canonical one-line rendering close to
``nft list`` syntax. ``text`` is the rule's identity for diffs: handles and counter values are left
out, the rule comment is included (``... comment "x"``).

Set and map elements are normalised to :class:`NftElement` (``key``: one canonical text per
concatenated part, e.g. ``("172.30.0.10", "tcp", "80")``; ``value``: the map's data as text, e.g.
``"goto service-…"``) so that lookups and diffs don't depend on nft's JSON shape for elements.

Malformed input raises :class:`~pytest_k8sstate.errors.ParseError` naming the JSON path
(``nftables[12].rule.expr[3]``); so does JSON nested deeper than :data:`MAX_NESTING` (64) levels in a
rule, a set/map type or an element (raise the constant to lift the cap). :meth:`NftRuleset.from_json`
checks every field's type and names its path (``tables[0].sets[1].elements[3].key``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.parse.gcpause import gc_paused
from pytest_k8sstate.parse.nftcheck import MAX_NESTING, JsonContext, check_ruleset_json
from pytest_k8sstate.parse.nftmemo import RuleIndex, RuleKey, previous_rules, remember_rules

__all__ = [
    "MAX_NESTING",
    "NftChain",
    "NftElement",
    "NftRule",
    "NftRuleset",
    "NftSet",
    "NftTable",
    "parse_nft_json",
    "render_expr",
    "render_rule",
]

_VERDICTS = ("accept", "drop", "continue", "return", "queue")
_BINOPS = ("&", "|", "^", "<<", ">>")


@dataclass
class NftRule:
    chain: str
    handle: int | None
    expr: list[Any]
    comment: str | None
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "handle": self.handle,
            "expr": self.expr,
            "comment": self.comment,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(d["chain"], d["handle"], d["expr"], d["comment"], d["text"])


@dataclass
class NftChain:
    name: str
    type: str | None = None
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None
    rules: list[NftRule] = field(default_factory=list)

    @property
    def is_base(self) -> bool:
        return self.hook is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "hook": self.hook,
            "prio": self.prio,
            "policy": self.policy,
            "rules": [r.to_json() for r in self.rules],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(
            d["name"],
            d["type"],
            d["hook"],
            d["prio"],
            d["policy"],
            [NftRule.from_json(r) for r in d["rules"]],
        )


@dataclass(frozen=True)
class NftElement:
    key: tuple[str, ...]
    value: str | None = None  # maps only
    comment: str | None = None

    @property
    def text(self) -> str:
        s = " . ".join(self.key)
        if self.comment is not None:
            s += f" comment {json.dumps(self.comment)}"
        if self.value is not None:
            s += f" : {self.value}"
        return s

    def to_json(self) -> dict[str, Any]:
        return {"key": list(self.key), "value": self.value, "comment": self.comment}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(tuple(d["key"]), d["value"], d["comment"])


@dataclass
class NftSet:
    """A named set, or (``map`` not None) a map; ``map == "verdict"`` for verdict maps."""

    name: str
    type: str | list[str]
    map: str | None = None
    flags: list[str] = field(default_factory=list)
    comment: str | None = None
    elements: list[NftElement] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # timeout, size, policy, ... as given
    _index: dict[tuple[str, ...], NftElement] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _nonexact: list[NftElement] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_map(self) -> bool:
        return self.map is not None

    def exact_index(self) -> dict[tuple[str, ...], NftElement]:
        """Elements by exact key (built once; used by the tracer for O(1) lookups)."""
        if self._index is None:
            self._index = {}
            for e in self.elements:
                self._index.setdefault(e.key, e)
        return self._index

    def nonexact(self) -> list[NftElement]:
        """Elements with a prefix or range part (``10.0.0.0/8``, ``1000-2000``): matched by scanning."""
        if self._nonexact is None:
            self._nonexact = [e for e in self.elements if any(("/" in p or "-" in p) for p in e.key)]
        return self._nonexact

    def invalidate(self) -> None:
        """Forget the lookup caches (call after changing ``elements``)."""
        self._index = None
        self._nonexact = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "map": self.map,
            "flags": self.flags,
            "comment": self.comment,
            "elements": [e.to_json() for e in self.elements],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(
            d["name"],
            d["type"],
            d["map"],
            list(d["flags"]),
            d["comment"],
            [NftElement.from_json(e) for e in d["elements"]],
            dict(d["extra"]),
        )


@dataclass
class NftTable:
    family: str
    name: str
    chains: dict[str, NftChain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    maps: dict[str, NftSet] = field(default_factory=dict)

    def lookup_set(self, name: str) -> NftSet | None:
        return self.sets.get(name) or self.maps.get(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "name": self.name,
            "chains": [c.to_json() for c in self.chains.values()],
            "sets": [s.to_json() for s in self.sets.values()],
            "maps": [s.to_json() for s in self.maps.values()],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        t = cls(d["family"], d["name"])
        for c in d["chains"]:
            ch = NftChain.from_json(c)
            t.chains[ch.name] = ch
        for s in d["sets"]:
            st = NftSet.from_json(s)
            t.sets[st.name] = st
        for s in d["maps"]:
            st = NftSet.from_json(s)
            t.maps[st.name] = st
        return t


@dataclass
class NftRuleset:
    tables: dict[tuple[str, str], NftTable] = field(default_factory=dict)
    source: str = "nft -j list ruleset"
    other: list[dict[str, Any]] = field(default_factory=list)
    """Top-level objects other than tables/chains/rules/sets/maps/elements (flowtables, counters, ...)."""
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Scratch space for derived indexes (the tracer caches base chains by hook here)."""
    omitted: tuple[tuple[str, str], ...] = ()
    """``(family, name)`` of tables the capture left out: a node's iptables-nft tables of a family whose
    iptables part was read exactly over netlink (large rulesets; see :mod:`pytest_k8sstate.node.capture`)."""

    def table(self, family: str, name: str) -> NftTable | None:
        return self.tables.get((family, name))

    def rule_texts(self) -> list[tuple[str, str, str, str]]:
        """``(family, table, chain, text)`` for every rule (the diff identity)."""
        return [
            (t.family, t.name, c.name, r.text)
            for t in self.tables.values()
            for c in t.chains.values()
            for r in c.rules
        ]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "tables": [t.to_json() for t in self.tables.values()],
            "other": self.other,
        }
        if self.omitted:
            out["omitted"] = [list(t) for t in self.omitted]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any], *, source: str = "nft JSON") -> Self:
        """Load :meth:`to_json` output; every field's type is checked here (ParseError naming its
        path, e.g. ``tables[0].sets[1].elements[3].key[0]``), so a bad file never fails later."""
        check_ruleset_json(d, source)
        rs = cls(source=d["source"], other=list(d["other"]))
        rs.omitted = tuple((f, n) for f, n in d.get("omitted", ()))
        for td in d["tables"]:
            t = NftTable.from_json(td)
            rs.tables[(t.family, t.name)] = t
        return rs


# --------------------------------------------------------------------------- rendering


def _s(x: Any) -> str:
    """Fallback rendering: deterministic JSON."""
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def _num(x: Any, hexa: bool = False) -> str:
    if isinstance(x, bool):
        return _s(x)
    if isinstance(x, int):
        return hex(x) if hexa else str(x)
    return render_expr(x)


_CACHE: dict[Any, str] = {}
_CACHE_MAX = 200_000


def render_expr(e: Any, *, hexa: bool = False) -> str:
    """Render one nft JSON expression or statement as nft-like text (total: never raises for JSON input)."""
    if type(e) is dict and len(e) == 1 and not hexa:
        # flat expressions (payload, meta, jump/goto targets, dnat, ...) repeat a lot: memoise them
        ((k0, v),) = e.items()
        if type(v) is dict:
            try:
                key: Any = (k0, *v.items(), *map(type, v.values()))  # 1 == True: keep types apart
                return _CACHE[key]
            except KeyError:
                text = _render(e, False)
                if len(_CACHE) >= _CACHE_MAX:
                    _CACHE.clear()
                _CACHE[key] = text
                return text
            except TypeError:  # a nested (unhashable) value: not cacheable
                pass
    return _render(e, hexa)


def _render(e: Any, hexa: bool) -> str:
    if isinstance(e, str):
        return e
    if isinstance(e, bool) or e is None:
        return _s(e)
    if isinstance(e, int):
        return hex(e) if hexa else str(e)
    if isinstance(e, float):
        return _s(e)
    if isinstance(e, list):
        return "{ " + ", ".join(render_expr(x, hexa=hexa) for x in e) + " }"
    if not isinstance(e, dict) or len(e) != 1:
        return _s(e)
    ((k0, v),) = e.items()
    k = str(k0)
    if k in _VERDICTS and v is None:
        return k
    if isinstance(v, dict):
        r = _render_keyed(k, v, hexa)
        if r is not None:
            return r
    if k in ("concat",) and isinstance(v, list):
        return " . ".join(render_expr(x, hexa=hexa) for x in v)
    if k == "set" and isinstance(v, list):
        return "{ " + ", ".join(_render_set_item(x) for x in v) + " }"
    if k == "range" and isinstance(v, list) and len(v) == 2:
        return f"{render_expr(v[0], hexa=hexa)}-{render_expr(v[1], hexa=hexa)}"
    if k in _BINOPS and isinstance(v, list) and len(v) == 2:
        return f"{render_expr(v[0])} {k} {_num(v[1], hexa=True)}"
    if k in ("drop", "accept") and v is None:
        return k
    return f"{k} {_s(v)}" if v is not None else k


def _render_set_item(x: Any) -> str:
    if isinstance(x, list) and len(x) == 2:  # map element [key, value]
        return f"{render_expr(x[0])} : {render_expr(x[1])}"
    return render_expr(x)


def _render_keyed(k: str, v: dict[str, Any], hexa: bool) -> str | None:
    g = v.get
    if k == "match" and "left" in v and "right" in v:
        op = g("op", "==")
        left = render_expr(v["left"])
        bitwise = isinstance(v["left"], dict) and _is_bitwise(v["left"])
        right = render_expr(v["right"], hexa=bitwise)
        if op == "in" or (op == "==" and not bitwise):
            return f"{left} {right}"
        return f"{left} {op} {right}"
    if k == "payload" and isinstance(g("protocol"), str) and isinstance(g("field"), str):
        return f"{v['protocol']} {v['field']}"
    if k == "payload" and "base" in v:
        return f"@{g('base')},{g('offset')},{g('len')}"
    if k == "meta" and isinstance(g("key"), str) and len(v) == 1:
        return f"meta {v['key']}"
    if k == "ct" and isinstance(g("key"), str):
        extra = "".join(f" {x}" for x in (g("dir"), g("family")) if isinstance(x, str))
        return f"ct{extra} {v['key']}"
    if k == "fib" and isinstance(g("result"), str):
        flags = g("flags", [])
        if isinstance(flags, str):
            flags = [flags]
        return f"fib {' . '.join(str(f) for f in flags)} {v['result']}"
    if k == "numgen" and isinstance(g("mode"), str):
        off = g("offset", 0)
        return f"numgen {v['mode']} mod {_num(g('mod'))}" + (f" offset {_num(off)}" if off else "")
    if k in ("vmap", "map") and "key" in v and "data" in v:
        return f"{render_expr(v['key'])} {k} {render_expr(v['data'])}"
    if k in ("jump", "goto") and isinstance(g("target"), str):
        return f"{k} {v['target']}"
    if k == "prefix" and "addr" in v and "len" in v:
        return f"{render_expr(v['addr'])}/{_num(v['len'])}"
    if k == "elem" and "val" in v:
        return render_expr(v["val"])
    if k == "counter" and set(v) <= {"packets", "bytes"}:
        return "counter"  # counter values are volatile: not part of the identity
    if k == "mangle" and "key" in v and "value" in v:
        return f"{render_expr(v['key'])} set {render_expr(v['value'])}"
    if k in ("dnat", "snat"):
        s = k
        fam = g("family")
        if isinstance(fam, str):
            s += f" {fam}"
        addr, port = g("addr"), g("port")
        if addr is not None or port is not None:
            s += (
                " to "
                + (render_expr(addr) if addr is not None else "")
                + (f":{_num(port)}" if port is not None else "")
            )
        return s + _flags(g("flags"))
    if k in ("masquerade", "redirect"):
        s = k
        if g("port") is not None:
            s += f" to :{_num(g('port'))}"
        return s + _flags(g("flags"))
    if k == "reject":
        typ, ex = g("type"), g("expr")
        if (typ in (None, "icmp") and ex in (None, "port-unreachable")) or (
            typ == "tcp reset" and ex is None
        ):
            return "reject" if typ != "tcp reset" else "reject with tcp reset"
        return f"reject with {typ} {render_expr(ex)}" if ex is not None else f"reject with {typ}"
    if k == "xt":
        return f"xt {g('type')} {json.dumps(g('name'))}"
    if k == "set" and "op" in v and "elem" in v:
        return f"{g('op')} {g('set')} {{ {render_expr(v['elem'])} }}"
    if k == "log":
        return "log" + "".join(f" {kk} {render_expr(vv)}" for kk, vv in sorted(v.items()))
    return None


def _flags(f: Any) -> str:
    if isinstance(f, str):
        return f" {f}"
    if isinstance(f, list):
        return " " + ",".join(str(x) for x in f)
    return ""


def _is_bitwise(left: dict[str, Any]) -> bool:
    return len(left) == 1 and next(iter(left)) in _BINOPS


def render_rule(expr: list[Any], comment: str | None) -> str:
    text = " ".join(render_expr(x) for x in expr)
    if comment is not None:
        text += f" comment {json.dumps(comment)}"
    return text


# --------------------------------------------------------------------------- parsing


def _elem_key_parts(k: Any) -> tuple[str, ...]:
    if isinstance(k, dict) and len(k) == 1 and "concat" in k and isinstance(k["concat"], list):
        return tuple(render_expr(x) for x in k["concat"])
    return (render_expr(k),)


def _parse_element(raw: Any, is_map: bool) -> NftElement:
    comment: str | None = None
    value: str | None = None
    key = raw
    if is_map:
        if not (isinstance(raw, list) and len(raw) == 2):
            raise ValueError("a map element [key, value]")
        key, val = raw
        value = render_expr(val)
    if isinstance(key, dict) and len(key) == 1 and "elem" in key:
        inner = key["elem"]
        if not isinstance(inner, dict) or "val" not in inner:
            raise ValueError('{"elem": {"val": ...}}')
        c = inner.get("comment")
        comment = c if isinstance(c, str) else None
        key = inner["val"]
    return NftElement(_elem_key_parts(key), value, comment)


class _Ctx(JsonContext):
    def str_field(self, d: dict[str, Any], key: str, path: str) -> str:
        v = d.get(key)
        if not isinstance(v, str):
            raise self.err(f"{path}.{key}", "a string", v)
        return v

    def opt_str(self, d: dict[str, Any], key: str, path: str) -> str | None:
        v = d.get(key)
        if v is not None and not isinstance(v, str):
            raise self.err(f"{path}.{key}", "a string", v)
        return v

    def opt_int(self, d: dict[str, Any], key: str, path: str) -> int | None:
        v = d.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise self.err(f"{path}.{key}", "an integer", v)
        return v


_SET_KNOWN = {"family", "name", "table", "type", "handle", "map", "flags", "comment", "elem"}


def parse_nft_json(
    text_or_obj: str | bytes | dict[str, Any],
    source: str = "nft -j list ruleset",
    *,
    previous: NftRuleset | None = None,
    index: bool = False,
) -> NftRuleset:
    """Parse ``nft -j list ruleset`` output (text, bytes or the already-loaded dict).

    ``index`` (bytes only): key every rule by its bytes, so that the next capture's parse can take the
    unchanged ones from this one; ``previous``: that earlier ruleset of the same node (see
    :mod:`pytest_k8sstate.parse.nftmemo`)."""
    with gc_paused():  # hundreds of thousands of small acyclic objects (parse/gcpause.py)
        return _parse_nft_json(text_or_obj, source, previous, index)


def _parse_nft_json(
    text_or_obj: str | bytes | dict[str, Any], source: str, previous: NftRuleset | None, index: bool
) -> NftRuleset:
    ctx = _Ctx(source)
    obj: Any
    if isinstance(text_or_obj, (str, bytes)):
        try:
            obj = json.loads(text_or_obj)
        except json.JSONDecodeError as exc:
            raise ParseError(source, exc.lineno, f"valid JSON ({exc.msg}, column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:  # bad UTF-8, absurd nesting
            raise ParseError(source, None, "valid UTF-8 JSON", str(exc)) from exc
    else:
        obj = text_or_obj
    if not isinstance(obj, dict) or not isinstance(obj.get("nftables"), list):
        raise ctx.err(
            "top level", 'an object {"nftables": [...]}', obj if not isinstance(obj, dict) else list(obj)
        )
    rs = NftRuleset(source=source)
    items = obj["nftables"]
    rules_index: RuleIndex | None = None
    if index and isinstance(text_or_obj, bytes):
        count = sum(1 for item in items if isinstance(item, dict) and "rule" in item)
        rules_index = RuleIndex(text_or_obj, count)
    known = previous_rules(previous) if rules_index is not None else {}
    keyed: dict[RuleKey, NftRule] = {}
    fresh: list[NftRule] = []
    rule_no = 0
    for i, item in enumerate(items):
        path = f"nftables[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise ctx.err(path, "an object with exactly one key (table, chain, rule, set, map, ...)", item)
        ((kind, body),) = item.items()
        if kind == "metainfo":
            continue
        if kind in ("table", "chain", "rule", "set", "map", "element") and not isinstance(body, dict):
            raise ctx.err(f"{path}.{kind}", "an object", body)
        path = f"{path}.{kind}"
        if kind == "table":
            fam = ctx.str_field(body, "family", path)
            name = ctx.str_field(body, "name", path)
            rs.tables.setdefault((fam, name), NftTable(fam, name))
        elif kind == "chain":
            t = _table_of(rs, ctx, body, path)
            name = ctx.str_field(body, "name", path)
            prio = body.get("prio")
            if prio is not None and (not isinstance(prio, int) or isinstance(prio, bool)):
                raise ctx.err(f"{path}.prio", "an integer priority", prio)
            t.chains[name] = NftChain(
                name,
                ctx.opt_str(body, "type", path),
                ctx.opt_str(body, "hook", path),
                prio,
                ctx.opt_str(body, "policy", path),
            )
        elif kind == "rule":
            t = _table_of(rs, ctx, body, path)
            cname = ctx.str_field(body, "chain", path)
            ch = t.chains.get(cname)
            if ch is None:
                raise ctx.err(
                    f"{path}.chain", f"a chain listed before its rules in {t.family} {t.name}", cname
                )
            key = (
                rules_index.key(rule_no, t.family, t.name, cname, body.get("handle"))
                if rules_index is not None
                else None
            )
            rule_no += 1
            seen = known.get(key) if key is not None else None
            if seen is not None and (seen.expr != body.get("expr") or seen.comment != body.get("comment")):
                seen = None  # cannot happen with nft's output (see nftmemo): parse it
            if seen is not None:  # the same bytes as in the previous capture: the same rule
                rule = NftRule(cname, body["handle"], seen.expr, seen.comment, seen.text)
            else:
                rule = _parse_rule(ctx, body, cname, path)
                fresh.append(rule)
            if key is not None:
                keyed[key] = rule
            ch.rules.append(rule)
        elif kind in ("set", "map"):
            t = _table_of(rs, ctx, body, path)
            name = ctx.str_field(body, "name", path)
            typ = body.get("type")
            if not (isinstance(typ, str) or (isinstance(typ, list) and all(isinstance(x, str) for x in typ))):
                raise ctx.err(f"{path}.type", "a type name or a list of type names", typ)
            mtype = body.get("map")
            ctx.check_depth(mtype, f"{path}.map")
            if kind == "map" and mtype is None:
                raise ctx.err(f"{path}.map", "the map's data type")
            mstr = None if mtype is None else (mtype if isinstance(mtype, str) else render_expr(mtype))
            flags = body.get("flags", [])
            if isinstance(flags, str):
                flags = [flags]
            if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
                raise ctx.err(f"{path}.flags", "a list of flag names", flags)
            st = NftSet(
                name,
                list(typ) if isinstance(typ, list) else typ,
                mstr,
                list(flags),
                ctx.opt_str(body, "comment", path),
                _elements(ctx, body.get("elem", []), mstr is not None, f"{path}.elem"),
                {k: v for k, v in body.items() if k not in _SET_KNOWN},
            )
            (t.maps if st.is_map else t.sets)[name] = st
        elif kind == "element":
            t = _table_of(rs, ctx, body, path)
            name = ctx.str_field(body, "name", path)
            st2 = t.lookup_set(name)
            if st2 is None:
                raise ctx.err(f"{path}.name", f"a set or map defined earlier in {t.family} {t.name}", name)
            st2.elements.extend(_elements(ctx, body.get("elem", []), st2.is_map, f"{path}.elem"))
            st2.invalidate()
        else:
            ctx.check_depth(item, path)
            rs.other.append(item)
    if rules_index is not None:
        remember_rules(rs, keyed, fresh)
    return rs


def _parse_rule(ctx: _Ctx, body: dict[str, Any], cname: str, path: str) -> NftRule:
    expr = body.get("expr")
    if not isinstance(expr, list):
        raise ctx.err(f"{path}.expr", "a list of expressions", expr)
    for j, x in enumerate(expr):
        if not isinstance(x, dict) or len(x) != 1:
            raise ctx.err(f"{path}.expr[{j}]", "an object with exactly one key", x)
    ctx.check_depth(expr, f"{path}.expr")
    comment = ctx.opt_str(body, "comment", path)
    text = render_rule(expr, comment)
    return NftRule(cname, ctx.opt_int(body, "handle", path), expr, comment, text)


def _elements(ctx: _Ctx, raw: Any, is_map: bool, path: str) -> list[NftElement]:
    if not isinstance(raw, list):
        raise ctx.err(path, "a list of elements", raw)
    out = []
    for k, e in enumerate(raw):
        ctx.check_depth(e, f"{path}[{k}]")
        try:
            out.append(_parse_element(e, is_map))
        except ValueError as exc:
            raise ctx.err(f"{path}[{k}]", str(exc), e) from exc
    return out


def _table_of(rs: NftRuleset, ctx: _Ctx, body: dict[str, Any], path: str) -> NftTable:
    fam = ctx.str_field(body, "family", path)
    name = ctx.str_field(body, "table", path)
    t = rs.tables.get((fam, name))
    if t is None:
        raise ctx.err(f"{path}.table", "a table listed before its contents", f"{fam} {name}")
    return t
