"""Validate a snapshot's JSON tree before any object is built from it.

:func:`validate_snapshot` checks every field :meth:`Snapshot.to_json` writes — types, ranges (non-negative
revisions and counters, ports 0–65535, ``taken_at`` between 1970 and 9999), finite numbers, and a nesting
depth of at most :data:`MAX_DEPTH` in the free-form parts (``cluster``, decoded etcd fields, nft
expressions, ``ip -j`` objects) — so a bad file fails *at load* with a :class:`ParseError` naming the file
and the field's JSON path (``snap.json at $.etcd.entries["/registry/x"].mod_revision: expected a
non-negative integer, got '1e+20'``), never later in ``show`` or ``diff``.

The walk is iterative: a deeply nested file costs time proportional to its size, never Python stack.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

from pytest_k8sstate.errors import ParseError

__all__ = ["MAX_DEPTH", "SchemaChecker", "validate_snapshot"]

MAX_DEPTH = 100
"""Deepest nesting (objects + arrays, from the document root) a snapshot may have. Real snapshots stay
below 40 (CRD schemas in etcd); the diff and render code recurse once or more per level."""

U64 = 2**64 - 1
MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z


def _show(v: Any) -> str:
    """A short description of a JSON value for an error message (never the whole value)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        if v.bit_length() > 64:
            return f"a {int(v.bit_length() * math.log10(2)) + 1}-digit integer"
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v[:60] + ("..." if len(v) > 60 else ""), ensure_ascii=False)
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,63}").fullmatch


def _key(k: str) -> str:
    """A JSON-path step for an object key: ``.name`` when plain, else ``["..."]``."""
    if _PLAIN_KEY(k):
        return "." + k
    return "[" + json.dumps(k[:60] + ("..." if len(k) > 60 else ""), ensure_ascii=False) + "]"


class SchemaChecker:
    """Type/range checks that raise :class:`ParseError` as ``{source} at {path}: expected …, got …``."""

    def __init__(self, source: str, max_depth: int = MAX_DEPTH) -> None:
        self.source = source
        self.max_depth = max_depth

    def fail(self, path: str, expected: str, got: Any = ..., *, said: str | None = None) -> NoReturn:
        """Raise for ``path``; ``got`` is described briefly (never in full), ``said`` is shown as is."""
        if len(path) > 200:  # a deeply nested or long-keyed path: keep the error one short line
            path = path[:100] + "..." + path[-80:]
        shown = said if said is not None else None if got is ... else _show(got)
        raise ParseError(f"{self.source} at {path}", None, expected, shown)

    # -- containers --
    def obj(self, v: Any, path: str, what: str = "an object") -> dict[str, Any]:
        if not isinstance(v, dict):
            self.fail(path, what, v)
        return v

    def arr(self, v: Any, path: str, what: str = "an array") -> list[Any]:
        if not isinstance(v, list):
            self.fail(path, what, v)
        return v

    def field(self, d: dict[str, Any], name: str, path: str, what: str) -> Any:
        if name not in d:
            self.fail(path + _key(name), f"field {name!r} ({what})", said="nothing")
        return d[name]

    # -- scalars --
    def string(self, v: Any, path: str, *, null: bool = False, nonempty: bool = False) -> str | None:
        if v is None and null:
            return None
        if not isinstance(v, str) or (nonempty and not v):
            what = "a non-empty string" if nonempty else "a string"
            self.fail(path, f"{what} or null" if null else what, v)
        return v

    def integer(
        self, v: Any, path: str, *, lo: int = 0, hi: int = U64, null: bool = False, what: str = ""
    ) -> int | None:
        if v is None and null:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            if not what:
                what = "a non-negative integer" if lo == 0 and hi == U64 else f"an integer in {lo}..{hi}"
            self.fail(path, f"{what} or null" if null else what, v)
        return v

    def number(self, v: Any, path: str, *, lo: float, hi: float, what: str) -> float:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if ok and isinstance(v, int) and v.bit_length() > 64:
            ok = False
        if not ok or not math.isfinite(v) or not lo <= v <= hi:
            self.fail(path, what, v)
        return float(v)

    def strings(self, v: Any, path: str) -> None:
        for i, x in enumerate(self.arr(v, path, "an array of strings")):
            self.string(x, f"{path}[{i}]")

    def str_map(self, v: Any, path: str) -> None:
        d = self.obj(v, path, "an object of strings")
        if all(type(x) is str for x in d.values()):
            return
        for k, x in d.items():  # only on failure: find the key and build its path
            self.string(x, path + _key(k))

    # -- free-form JSON --
    def free(self, v: Any, path: str | Callable[[], str], depth: int) -> None:
        """Any JSON value, nested at most :attr:`max_depth` deep (``depth``: the depth of ``v`` itself),
        with finite numbers. Iterative (no Python recursion per level); paths are built only on failure:
        each stacked container carries ``(parent's trail, key)``."""
        limit = self.max_depth
        stack: list[tuple[Any, int, Any]] = [(v, depth, None)]
        while stack:
            x, d, trail = stack.pop()
            tx = type(x)
            if tx is dict:
                children: Any = x.items()
            elif tx is list:
                children = enumerate(x)
            else:
                if tx is float and not math.isfinite(x):
                    self.fail(_trail_path(path, trail), "a finite number", x)
                if tx is int and x.bit_length() > 64:
                    self.fail(_trail_path(path, trail), "an integer of at most 64 bits", x)
                continue
            if d >= limit:
                self.fail(_trail_path(path, trail), f"JSON nested at most {limit} deep (written by k8sstate)")
            for k, y in children:
                ty = type(y)
                if ty is dict or ty is list or ty is float or (ty is int and y.bit_length() > 64):
                    stack.append((y, d + 1, (trail, k)))


def _trail_path(path: str | Callable[[], str], trail: Any) -> str:
    """The JSON path of a value :meth:`SchemaChecker.free` reached: ``path`` (maybe made on demand) + keys."""
    keys: list[str | int] = []
    while trail is not None:
        trail, k = trail
        keys.append(k)
    base = path() if callable(path) else path
    return base + "".join(f"[{k}]" if isinstance(k, int) else _key(k) for k in reversed(keys))


# --------------------------------------------------------------------------------------------------
# the snapshot schema (Snapshot.to_json and the to_json of every object in it)


def validate_snapshot(d: Any, source: str, schema: int) -> None:
    """Raise :class:`ParseError` (``{source} at $.path: …``) unless ``d`` fits the snapshot schema."""
    c = SchemaChecker(source)
    c.obj(d, "$", "a JSON object (a snapshot written by Snapshot.save / k8sstate snapshot)")
    got = d.get("schema")
    if got != schema or isinstance(got, bool):
        c.fail("$.schema", f"schema {schema} (written by this pytest-k8sstate version)", got)
    c.string(c.field(d, "label", "$", "a string"), "$.label")
    c.number(
        c.field(d, "taken_at", "$", "seconds since the epoch (a number)"),
        "$.taken_at",
        lo=0.0,
        hi=MAX_EPOCH,
        what="seconds since the epoch (a finite number from 0 to 253402300799)",
    )
    c.free(c.obj(c.field(d, "cluster", "$", "an object"), "$.cluster"), "$.cluster", 1)
    if "taken_at_iso" in d:
        c.string(d["taken_at_iso"], "$.taken_at_iso")
    if d.get("etcd") is not None:
        _etcd(c, d["etcd"], "$.etcd")
    nodes = c.obj(
        c.field(d, "nodes", "$", "an object mapping node name → node state"),
        "$.nodes",
        "an object mapping node name → node state",
    )
    for name, nd in nodes.items():
        _node(c, nd, "$.nodes" + _key(name))


def _uint(v: Any) -> bool:
    return type(v) is int and 0 <= v <= U64


def _etcd(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an etcd state object")
    c.integer(c.field(d, "revision", path, "the etcd revision"), path + ".revision")
    c.string(c.field(d, "prefix", path, "the key prefix"), path + ".prefix")
    entries = c.arr(c.field(d, "entries", path, "an array of entries"), path + ".entries")
    seen: set[str] = set()
    for i, e in enumerate(entries):
        key = e.get("key") if type(e) is dict else None
        if type(key) is str and key and key not in seen and _entry_ok(e):
            seen.add(key)  # the fast path: every scalar right; check the decoded value's trees
            _decoded_trees(c, e["decoded"], partial(_entry_path, path, key, ".decoded"))
            continue
        ep = f"{path}.entries[{i}]"  # the slow path: find what is wrong and say where
        ed = c.obj(e, ep, "an etcd entry object")
        key = c.string(c.field(ed, "key", ep, "the etcd key"), ep + ".key", nonempty=True)
        assert key is not None
        ep = _entry_path(path, key)
        if key in seen:
            c.fail(ep, "each etcd key once", said="a duplicate")
        seen.add(key)
        for name in ("mod_revision", "create_revision", "version", "size"):
            c.integer(c.field(ed, name, ep, "a non-negative integer"), f"{ep}.{name}")
        c.string(c.field(ed, "sha256", ep, "a hex digest"), ep + ".sha256")
        c.string(ed.get("raw_b64"), ep + ".raw_b64", null=True)
        _decoded(c, c.field(ed, "decoded", ep, "the decoded value"), ep + ".decoded")


def _entry_path(path: str, key: str, suffix: str = "") -> str:
    return f"{path}.entries[{json.dumps(key[:80], ensure_ascii=False)}]{suffix}"


_DECODED_STR = ("api_version", "kind", "namespace", "name", "uid", "error", "provider", "key_name")


def _entry_ok(e: dict[str, Any]) -> bool:
    """Every scalar of an entry and of its decoded value has the right type (no path built)."""
    dec = e.get("decoded")
    return (
        all(_uint(e.get(n)) for n in ("mod_revision", "create_revision", "version", "size"))
        and type(e.get("sha256")) is str
        and (e.get("raw_b64") is None or type(e["raw_b64"]) is str)
        and type(dec) is dict
        and type(dec.get("encoding")) is str
        and all(dec.get(n) is None or type(dec[n]) is str for n in _DECODED_STR)
        and (dec.get("labels") is None or (type(dec["labels"]) is dict and all(
            type(x) is str for x in dec["labels"].values())))
        and (dec.get("owner_references") is None or type(dec["owner_references"]) is list)
        and (dec.get("fields") is None or type(dec["fields"]) is dict)
    )  # fmt: skip


def _decoded_trees(c: SchemaChecker, d: dict[str, Any], where: Callable[[], str]) -> None:
    """The free-form parts of a decoded value whose scalars :func:`_entry_ok` checked."""
    refs = d.get("owner_references") or []
    fields = d.get("fields")
    if any(type(r) is not dict for r in refs):
        _decoded(c, d, where())
    if refs:
        c.free(refs, lambda: where() + ".owner_references", 5)
    if fields:
        c.free(fields, lambda: where() + ".fields", 5)


def _decoded(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "a decoded value object")
    c.string(
        c.field(d, "encoding", path, "protobuf, json, cbor, encrypted, text or binary"), path + ".encoding"
    )
    for name in _DECODED_STR:
        c.string(d.get(name), f"{path}.{name}", null=True)
    refs = d.get("owner_references")
    if refs is not None:
        for i, r in enumerate(c.arr(refs, path + ".owner_references")):
            c.free(c.obj(r, f"{path}.owner_references[{i}]"), f"{path}.owner_references[{i}]", 6)
    if d.get("labels") is not None:
        c.str_map(d["labels"], path + ".labels")
    if d.get("fields") is not None:
        c.free(c.obj(d["fields"], path + ".fields"), path + ".fields", 5)


# -- nodes --
_LINK_STR = ("ifname", "name", "kind", "operstate")
_ADDR_STR = ("local", "address", "addr", "ifname", "dev", "label", "family")
_ROUTE_STR = ("dst", "type", "gateway", "dev")


def _node(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "a node state object")
    c.string(c.field(d, "node", path, "the node name"), path + ".node")
    for fam in ("iptables", "ip6tables"):  # ip6tables: snapshots since issue 12 (absent before)
        if d.get(fam) is not None:
            _iptables(c, d[fam], f"{path}.{fam}")
    if d.get("nft") is not None:
        _nft(c, d["nft"], path + ".nft")
    for i, s in enumerate(c.arr(d.get("ipsets") or [], path + ".ipsets")):
        _ipset(c, s, f"{path}.ipsets[{i}]")
    if d.get("ipvs") is not None:
        for i, s in enumerate(c.arr(d["ipvs"], path + ".ipvs")):
            _ipvs(c, s, f"{path}.ipvs[{i}]")
    for part, strs in (("links", _LINK_STR), ("addrs", _ADDR_STR), ("routes", _ROUTE_STR)):
        for i, item in enumerate(c.arr(d.get(part) or [], f"{path}.{part}")):
            ip = f"{path}.{part}[{i}]"
            m = c.obj(item, ip, f"an `ip -j` {part[:-1]} object")
            c.free(m, ip, 4)
            for name in strs:
                c.string(m.get(name), f"{ip}.{name}", null=True)
            if part == "links":
                if m.get("linkinfo") is not None:
                    info = c.obj(m["linkinfo"], ip + ".linkinfo", "an object (ip -d link's linkinfo)")
                    c.string(info.get("info_kind"), ip + ".linkinfo.info_kind", null=True)
                c.integer(m.get("mtu"), ip + ".mtu", null=True)
            elif part == "addrs":
                c.integer(m.get("prefixlen"), ip + ".prefixlen", hi=128, null=True)
            elif m.get("table") is not None and not isinstance(m["table"], str):
                c.integer(m["table"], ip + ".table", hi=2**32 - 1, what="a routing table name or number")
    c.str_map(d.get("errors") or {}, path + ".errors")
    c.str_map(d.get("methods") or {}, path + ".methods")


def _iptables(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an iptables ruleset object")
    if "source" in d:
        c.string(d["source"], path + ".source")
    tables = c.obj(c.field(d, "tables", path, "table → chain → chain object"), path + ".tables")
    for tname, chains in tables.items():
        tp = path + ".tables" + _key(tname)
        for cname, ch in c.obj(chains, tp, "an object mapping chain name → chain").items():
            cp = tp + _key(cname)
            cd = c.obj(ch, cp, "a chain object")
            c.string(c.field(cd, "policy", cp, "ACCEPT, DROP, … or null"), cp + ".policy", null=True)
            for name in ("packets", "bytes", "line"):
                c.integer(c.field(cd, name, cp, "a non-negative integer"), f"{cp}.{name}")
            rules = c.arr(c.field(cd, "rules", cp, "an array of rules"), cp + ".rules")
            for i, r in enumerate(rules):
                if type(r) is list and (
                    (len(r) == 2 and _uint(r[0]) and type(r[1]) is str)
                    or (len(r) == 4 and _uint(r[0]) and type(r[1]) is str and _uint(r[2]) and _uint(r[3]))
                ):
                    continue
                rp = f"{cp}.rules[{i}]"  # the slow path: say what is wrong
                if not isinstance(r, list) or len(r) not in (2, 4):
                    c.fail(rp, "[line, spec] or [line, spec, packets, bytes]", r)
                c.integer(r[0], rp + "[0]")
                c.string(r[1], rp + "[1]")
                for j in range(2, len(r)):
                    c.integer(r[j], f"{rp}[{j}]")


def _nft(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an nft ruleset object")
    c.string(c.field(d, "source", path, "a string"), path + ".source")
    for i, o in enumerate(c.arr(c.field(d, "other", path, "an array"), path + ".other")):
        c.free(c.obj(o, f"{path}.other[{i}]"), f"{path}.other[{i}]", 5)
    for i, o in enumerate(c.arr(d.get("omitted", []), path + ".omitted")):
        op = f"{path}.omitted[{i}]"
        if not isinstance(o, list) or len(o) != 2:
            c.fail(op, "a [family, table] pair", o)
        c.string(o[0], op + "[0]")
        c.string(o[1], op + "[1]")
    for i, t in enumerate(c.arr(c.field(d, "tables", path, "an array of tables"), path + ".tables")):
        tp = f"{path}.tables[{i}]"
        td = c.obj(t, tp, "an nft table object")
        c.string(c.field(td, "family", tp, "ip, ip6, inet, …"), tp + ".family")
        c.string(c.field(td, "name", tp, "the table name"), tp + ".name")
        for j, ch in enumerate(c.arr(c.field(td, "chains", tp, "an array"), tp + ".chains")):
            _nft_chain(c, ch, f"{tp}.chains[{j}]")
        for part in ("sets", "maps"):
            for j, s in enumerate(c.arr(c.field(td, part, tp, "an array"), f"{tp}.{part}")):
                _nft_set(c, s, f"{tp}.{part}[{j}]")


def _nft_chain(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an nft chain object")
    c.string(c.field(d, "name", path, "the chain name"), path + ".name")
    for name in ("type", "hook", "policy"):
        c.string(c.field(d, name, path, "a string or null"), f"{path}.{name}", null=True)
    c.integer(
        c.field(d, "prio", path, "an integer or null"), path + ".prio", lo=-(2**31), hi=2**31, null=True
    )
    for i, r in enumerate(c.arr(c.field(d, "rules", path, "an array of rules"), path + ".rules")):
        rp = f"{path}.rules[{i}]"
        rd = c.obj(r, rp, "an nft rule object")
        c.string(c.field(rd, "chain", rp, "the chain name"), rp + ".chain")
        c.integer(c.field(rd, "handle", rp, "an integer or null"), rp + ".handle", null=True)
        c.free(c.arr(c.field(rd, "expr", rp, "an array of expressions"), rp + ".expr"), rp + ".expr", 10)
        c.string(c.field(rd, "comment", rp, "a string or null"), rp + ".comment", null=True)
        c.string(c.field(rd, "text", rp, "the rule's text"), rp + ".text")


def _nft_set(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an nft set object")
    c.string(c.field(d, "name", path, "the set name"), path + ".name")
    typ = c.field(d, "type", path, "a type or an array of types")
    if isinstance(typ, list):
        c.strings(typ, path + ".type")
    elif not isinstance(typ, str):
        c.fail(path + ".type", "a type name or an array of type names", typ)
    c.string(c.field(d, "map", path, "a string or null"), path + ".map", null=True)
    c.strings(c.field(d, "flags", path, "an array of strings"), path + ".flags")
    c.string(c.field(d, "comment", path, "a string or null"), path + ".comment", null=True)
    c.free(c.obj(c.field(d, "extra", path, "an object"), path + ".extra"), path + ".extra", 8)
    for i, e in enumerate(c.arr(c.field(d, "elements", path, "an array"), path + ".elements")):
        ep = f"{path}.elements[{i}]"
        ed = c.obj(e, ep, "an element object")
        c.strings(c.field(ed, "key", ep, "an array of strings"), ep + ".key")
        c.string(c.field(ed, "value", ep, "a string or null"), ep + ".value", null=True)
        c.string(c.field(ed, "comment", ep, "a string or null"), ep + ".comment", null=True)


def _ipset(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an ipset object")
    c.string(c.field(d, "name", path, "the set name"), path + ".name")
    c.string(c.field(d, "type", path, "the set type"), path + ".type")
    c.str_map(c.field(d, "options", path, "an object of strings"), path + ".options")
    c.strings(c.field(d, "members", path, "an array of strings"), path + ".members")
    c.str_map(d.get("member_comments") or {}, path + ".member_comments")


def _ipvs(c: SchemaChecker, v: Any, path: str) -> None:
    d = c.obj(v, path, "an IPVS virtual server object")
    for name in ("protocol", "address", "scheduler"):
        c.string(c.field(d, name, path, "a string"), f"{path}.{name}")
    c.integer(c.field(d, "port", path, "a port or null"), path + ".port", hi=65535, null=True)
    c.integer(c.field(d, "persistent", path, "seconds or null"), path + ".persistent", null=True)
    c.strings(c.field(d, "options", path, "an array of strings"), path + ".options")
    for i, r in enumerate(c.arr(c.field(d, "real_servers", path, "an array"), path + ".real_servers")):
        rp = f"{path}.real_servers[{i}]"
        rd = c.obj(r, rp, "a real server object")
        c.string(c.field(rd, "address", rp, "an address"), rp + ".address")
        c.string(c.field(rd, "forward", rp, "a forwarding method"), rp + ".forward")
        c.integer(c.field(rd, "port", rp, "a port"), rp + ".port", hi=65535)
        c.integer(c.field(rd, "weight", rp, "a weight"), rp + ".weight", hi=2**31)
