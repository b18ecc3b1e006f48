"""Schema-driven decoding: a protobuf object → the JSON the apiserver would serve for it.

Built on the descriptors of :mod:`.protoschema`. Rendering rules (those of the apiserver's JSON):

* names: the Go ``json:"…"`` names (``$ref``, ``x-kubernetes-…``; otherwise the proto names);
* zero values: go-to-protobuf writes every non-pointer field, so a zero scalar on the wire is dropped when
  its Go field is ``omitempty`` and not a pointer (``nodePort: 0``), kept otherwise (``replicas: 0`` of a
  ``*int32``); messages are always shown (Go never omits a struct); absent repeated/map fields are absent;
* ``metav1.Time`` → RFC 3339 seconds (``"2026-12-03T10:00:00Z"``), ``MicroTime`` → 6 fractional digits,
  a zero time (empty message) → ``None`` (JSON ``null``); ``Duration`` → Go's ``"1h2m3s"``;
  ``IntOrString`` → int or str; ``Quantity`` → its string; ``RawExtension``, ``FieldsV1`` and
  apiextensions ``JSON`` → the embedded JSON (base64 when the bytes are not JSON); apiextensions
  ``JSONSchemaPropsOr{Bool,Array,StringArray}`` → the schema, or the bool / array; messages standing for a
  Go slice type (``ExtraValue``) → a list; bytes → base64; bool → ``True``/``False``; enums → names;
* fields the schema doesn't know, or with an unexpected wire type → ``"#N"`` with the generic value
  (:mod:`.wire`), so nothing is lost.

Known deviations: an empty non-``omitempty`` slice or map (JSON ``[]``/``null``) is absent; a float keeps
Python's representation; a non-UTF-8 string gets U+FFFD like Go's encoder.
"""

from __future__ import annotations

import base64
import datetime
import json
import struct
from typing import Any

from pytest_k8sstate.etcd.decode.wire import MAX_DEPTH, WireError, span_value

__all__ = ["Compiled", "decode_typed", "go_duration"]

# field kinds
# length-delimited kinds first (_MAP: a map field, whatever its value kind), then varints, then fixed sizes
_STR, _BYTES, _MSG, _MAP, _INT, _BOOL, _UINT, _SINT, _ENUM, _DOUBLE, _FLOAT, _FIX32, _FIX64, _SFIX32, _SFIX64 = range(
    15
)
_SCALAR_KIND = {
    "string": (_STR, 2),
    "bytes": (_BYTES, 2),
    "int32": (_INT, 0),
    "int64": (_INT, 0),
    "uint32": (_UINT, 0),
    "uint64": (_UINT, 0),
    "sint32": (_SINT, 0),
    "sint64": (_SINT, 0),
    "bool": (_BOOL, 0),
    "double": (_DOUBLE, 1),
    "float": (_FLOAT, 5),
    "fixed32": (_FIX32, 5),
    "fixed64": (_FIX64, 1),
    "sfixed32": (_SFIX32, 5),
    "sfixed64": (_SFIX64, 1),
}
_META = "k8s.io.apimachinery.pkg.apis.meta.v1."
_APIEXT = ("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.", "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.")
#: messages with their own JSON form (see module doc)
SPECIAL: dict[str, str] = {
    _META + "Time": "time",
    _META + "MicroTime": "microtime",
    _META + "Duration": "duration",
    _META + "FieldsV1": "raw",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "raw",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "quantity",
    **{p + "JSON": "raw" for p in _APIEXT},
    **{p + "JSONSchemaPropsOrBool": "orbool" for p in _APIEXT},
    **{p + "JSONSchemaPropsOrArray": "orarray" for p in _APIEXT},
    **{p + "JSONSchemaPropsOrStringArray": "orarray" for p in _APIEXT},
}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class _Msg:
    __slots__ = ("fields", "name", "nulls", "plain", "slice", "special", "tags")

    def __init__(self, name: str) -> None:
        self.name = name
        # number -> (json name, kind, wire type, sub message | enum names | None, repeated, keep zero, map key,
        # omitzero); json name "" = an embedded inline struct
        self.fields: dict[int, tuple[str, int, int, Any, bool, bool, Any, bool]] = {}
        self.special = SPECIAL.get(name)
        self.slice = False
        self.plain = False  # neither special nor a slice: decoded field by field
        self.nulls: tuple[str, ...] = ()  # JSON null when absent: nil slices/maps/pointers without omitempty
        # wire tag (number << 3 | wire type) -> (json name, kind, sub, repeated, keep zero, omitzero): the fast path
        self.tags: dict[int, tuple[str, int, Any, bool, bool, bool]] = {}


class Compiled:
    """A schema document (:func:`.protoschema.load_schema`) compiled lazily, message by message."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.version: str = doc.get("version", "")
        self.groups: dict[str, str] = doc["groups"]
        self._raw: dict[str, Any] = doc["messages"]
        self._enums: dict[str, dict[str, str]] = doc.get("enums", {})
        self._msgs: dict[str, _Msg] = {}

    def message(self, name: str) -> _Msg | None:
        m = self._msgs.get(name)
        if m is not None:
            return m
        raw = self._raw.get(name)
        if raw is None:
            return None
        m = _Msg(name)
        self._msgs[name] = m  # before the fields: recursive types
        m.slice = bool(raw.get("slice"))
        m.plain = m.special is None and not m.slice
        nulls = []
        for num, jname, typ, repeated, omitempty, pointer, map_key, omitzero in raw["f"]:
            keep = bool(pointer or not (omitempty or omitzero))
            m.fields[num] = self._field(jname, typ, repeated, keep, map_key, bool(omitzero and not pointer))
            if jname and not omitempty and not omitzero and (repeated or pointer) and not m.slice:
                nulls.append(jname)
        m.nulls = tuple(nulls)
        for num, (jname, kind, wt, sub, repeated, keep, key, oz) in m.fields.items():
            if key is not None:
                m.tags[num << 3 | 2] = (jname, _MAP, (kind, sub, key), repeated, keep, oz)
            else:
                m.tags[num << 3 | wt] = (jname, kind, sub, repeated, keep, oz)
        return m

    def _field(self, jname: str, typ: str, repeated: bool, keep: bool, map_key: str | None, oz: bool) -> Any:
        key = _SCALAR_KIND.get(map_key) if map_key else None
        if typ in _SCALAR_KIND:
            kind, wt = _SCALAR_KIND[typ]
            return (jname, kind, wt, None, repeated, keep, key, oz)
        if typ in self._enums:
            return (jname, _ENUM, 0, {int(k): v for k, v in self._enums[typ].items()}, repeated, keep, key, oz)
        return (jname, _MSG, 2, typ, repeated, keep, key, oz)

    def lookup(self, api_version: str | None, kind: str | None) -> _Msg | None:
        """The message of a stored object: ``apps/v1`` + ``Deployment`` → ``k8s.io.api.apps.v1.Deployment``."""
        pkg = self.groups.get(api_version or "")
        return self.message(f"{pkg}.{kind}") if pkg and kind else None


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    v = 0
    shift = 0
    at = i
    while True:
        if i >= end:
            raise WireError(at, "truncated varint")
        c = buf[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise WireError(at, "varint longer than 10 bytes")


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()``: ``1h2m3.5s``, ``1.5ms``, ``0s``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < size * 1000:
                whole, frac = divmod(u, size)
                f = f"{frac:0{len(str(size)) - 1}d}".rstrip("0") if size > 1 else ""
                return f"{sign}{whole}{'.' + f if f else ''}{unit}"
    secs, frac_ns = divmod(u, 1_000_000_000)
    f = f"{frac_ns:09d}".rstrip("0")
    out = f"{secs % 60}{'.' + f if f else ''}s"
    mins = secs // 60
    if mins:
        out = f"{mins % 60}m" + out
        if mins >= 60:
            out = f"{mins // 60}h" + out
    return sign + out


_TIMES: dict[tuple[int, int, bool], str] = {}


def _time(secs: int, nanos: int, micro: bool) -> str:
    key = (secs, nanos // 1000 if micro else 0, micro)
    got = _TIMES.get(key)
    if got is None:
        got = _format_time(secs, nanos, micro)
        if len(_TIMES) >= 4096:
            _TIMES.clear()
        _TIMES[key] = got
    return got


def _format_time(secs: int, nanos: int, micro: bool) -> str:
    try:
        dt = _EPOCH + datetime.timedelta(seconds=secs, microseconds=nanos // 1000)
    except OverflowError:
        return str(secs)
    if micro:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _raw_json(b: bytes) -> Any:
    if not b:
        return None
    try:
        return json.loads(b)
    except (ValueError, RecursionError):
        return base64.b64encode(b).decode("ascii")


def _special(c: Compiled, m: _Msg, buf: bytes, s: int, e: int, depth: int) -> Any:
    sp = m.special
    if sp == "time" or sp == "microtime":
        if s == e:
            return None
        f = _fields_of(buf, s, e)
        return _time(_signed(f.get(1, 0)), _signed(f.get(2, 0)), sp == "microtime")
    if sp == "duration":
        return go_duration(_signed(_fields_of(buf, s, e).get(1, 0)))
    if sp == "raw":
        f = _fields_of(buf, s, e)
        raw = f.get(1, b"")
        return _raw_json(raw if isinstance(raw, bytes) else b"")
    if sp == "quantity":
        v = _fields_of(buf, s, e).get(1, b"")
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else "0"
    if sp == "intorstring":
        f = _fields_of(buf, s, e)
        if f.get(1) == 1:
            v = f.get(3, b"")
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else ""
        return _signed(f.get(2, 0))
    d = _message(c, m, buf, s, e, depth)  # orbool / orarray: {allows|schema|jSONSchemas|property}
    if sp == "orbool":
        return d["schema"] if "schema" in d else d.get("allows", False)
    if "schema" in d:
        return d["schema"]
    for k in ("jSONSchemas", "JSONSchemas", "property", "Property"):
        if k in d:
            return d[k]
    return []


def _signed(v: Any) -> int:
    if not isinstance(v, int):
        return 0
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields_of(buf: bytes, i: int, end: int) -> dict[int, Any]:
    """The last value of each field of a small message (varint → int, bytes → bytes)."""
    out: dict[int, Any] = {}
    while i < end:
        tag, i = _varint(buf, i, end)
        wt = tag & 7
        if wt == 0:
            v, i = _varint(buf, i, end)
        elif wt == 2:
            n, i = _varint(buf, i, end)
            if n > end - i:
                raise WireError(i, "length runs past the end")
            v = buf[i : i + n]
            i += n
        elif wt == 1:
            v, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif wt == 5:
            v, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            raise WireError(i, f"unsupported wire type {wt}")
        if i > end:
            raise WireError(end, "truncated fixed-size field")
        out[tag >> 3] = v
    return out


def _scalar(kind: int, v: Any, buf: bytes, s: int, e: int) -> Any:
    if kind == _STR:
        try:
            return buf[s:e].decode("utf-8")
        except UnicodeDecodeError:
            return buf[s:e].decode("utf-8", "replace")
    if kind == _INT:
        return v - (1 << 64) if v >= 1 << 63 else v
    if kind == _BOOL:
        return v != 0
    if kind == _BYTES:
        return base64.b64encode(buf[s:e]).decode("ascii")
    if kind == _UINT:
        return v
    if kind == _SINT:
        return (v >> 1) ^ -(v & 1)
    if kind == _DOUBLE:
        return struct.unpack("<d", v.to_bytes(8, "little"))[0]
    if kind == _FLOAT:
        return struct.unpack("<f", v.to_bytes(4, "little"))[0]
    if kind == _SFIX32:
        return v - (1 << 32) if v >= 1 << 31 else v
    if kind == _SFIX64:
        return v - (1 << 64) if v >= 1 << 63 else v
    return v  # fixed32 / fixed64


def _submessage(c: Compiled, sub: str, buf: bytes, s: int, e: int, depth: int) -> Any:
    sm = c._msgs.get(sub) or c.message(sub)
    if sm is None or depth >= MAX_DEPTH:
        return span_value(buf, s, e) if e > s else {}
    if sm.special is not None:
        return _special(c, sm, buf, s, e, depth + 1)
    if sm.slice:
        return _message(c, sm, buf, s, e, depth + 1).get(next(iter(sm.fields.values()))[0], [])
    return _message(c, sm, buf, s, e, depth + 1)


def _message(c: Compiled, m: _Msg, buf: bytes, i: int, end: int, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tags = m.tags
    msgs = c._msgs
    while i < end:
        tag_at = i
        tag = buf[i]
        if tag < 0x80:
            i += 1
        elif i + 1 < end and buf[i + 1] < 0x80:  # field numbers 16..2047
            tag = (tag & 0x7F) | buf[i + 1] << 7
            i += 2
        else:
            tag, i = _varint(buf, i, end)
        f = tags.get(tag)
        if f is None:  # unknown field, unexpected wire type, packed repeated scalars
            i = _other(c, m, out, buf, tag, tag_at, i, end)
            continue
        name, kind, sub, repeated, keep, omitzero = f
        val: Any
        if kind <= _MAP:  # length-delimited
            if i >= end:
                raise WireError(tag_at, f"truncated length of field {tag >> 3}")
            n = buf[i]
            if n < 0x80:
                i += 1
            elif i + 1 < end and buf[i + 1] < 0x80:
                n = (n & 0x7F) | buf[i + 1] << 7
                i += 2
            else:
                n, i = _varint(buf, i, end)
            s = i
            i += n
            if i > end:
                raise WireError(tag_at, f"length {n} of field {tag >> 3} runs past the end ({end - s} bytes left)")
            if kind == _STR:
                try:
                    val = buf[s:i].decode("utf-8")
                except UnicodeDecodeError:
                    val = buf[s:i].decode("utf-8", "replace")
            elif kind == _MSG:
                sm = msgs.get(sub)
                if sm is not None and sm.plain and depth < MAX_DEPTH:
                    val = _message(c, sm, buf, s, i, depth + 1)
                else:
                    val = _submessage(c, sub, buf, s, i, depth)
            elif kind == _MAP:
                key, val = _map_entry(c, sub[0], sub[1], sub[2], buf, s, i, depth)
                d = out.get(name)
                if d is None:
                    out[name] = d = {}
                d[key] = val
                continue
            else:
                val = base64.b64encode(buf[s:i]).decode("ascii")
        elif kind < _DOUBLE:  # varint
            if i < end and buf[i] < 0x80:
                v = buf[i]
                i += 1
            else:
                v, i = _varint(buf, i, end)
            if kind == _INT:
                val = v - (1 << 64) if v >= 1 << 63 else v
            elif kind == _BOOL:
                val = v != 0
            elif kind == _ENUM:
                val = sub.get(_signed(v), _signed(v))
            else:
                val = _scalar(kind, v, buf, 0, 0)
        else:
            size = 8 if tag & 7 == 1 else 4
            if i + size > end:
                raise WireError(i, f"truncated fixed{size * 8} of field {tag >> 3}")
            val = _scalar(kind, int.from_bytes(buf[i : i + size], "little"), buf, 0, 0)
            i += size
        if repeated:
            lst = out.get(name)
            if lst is None:
                out[name] = [val]
            else:
                lst.append(val)
        elif kind == _MSG:  # Go never omits a struct, but omitzero does
            if not name and isinstance(val, dict):  # an embedded struct: its fields are ours
                out.update(val)
            elif omitzero and (val is None or val == {}):
                out.pop(name, None)
            else:
                out[name] = val
        elif keep or val:  # scalars: "" / 0 / False / 0.0 are the falsy ones
            out[name] = val
        else:
            out.pop(name, None)  # a later zero overrides an earlier value (last one wins)
    if m.nulls:
        for name in m.nulls:
            if name not in out:
                out[name] = None
    return out


def _other(c: Compiled, m: _Msg, out: dict[str, Any], buf: bytes, tag: int, tag_at: int, i: int, end: int) -> int:
    """A field off the fast path: packed repeated scalars, or the generic value under ``"#N"``."""
    num = tag >> 3
    wt = tag & 7
    if num == 0:
        raise WireError(tag_at, "invalid field number 0")
    v: Any = 0
    s = e = i
    if wt == 0:
        v, i = _varint(buf, i, end)
    elif wt == 2:
        n, i = _varint(buf, i, end)
        if n > end - i:
            raise WireError(tag_at, f"length {n} of field {num} runs past the end ({end - i} bytes left)")
        s = i
        i += n
        e = i
    elif wt == 1 or wt == 5:
        size = 8 if wt == 1 else 4
        if i + size > end:
            raise WireError(i, f"truncated fixed{size * 8} of field {num}")
        v = int.from_bytes(buf[i : i + size], "little")
        i += size
    else:
        raise WireError(tag_at, f"unsupported wire type {wt} (field {num})")
    f = m.fields.get(num)
    if f is not None and wt == 2 and f[4] and f[1] >= _INT and f[6] is None:  # packed repeated scalars
        out.setdefault(f[0], []).extend(_packed(f[1], buf, s, e))
        return i
    k = f"#{num}"
    gv = (span_value(buf, s, e) if e > s else "") if wt == 2 else (v - (1 << 64) if v >= 1 << 63 else v)
    if k in out:  # seen before: a list (a generic value itself is never a list)
        prev = out[k]
        if isinstance(prev, list):
            prev.append(gv)
        else:
            out[k] = [prev, gv]
    else:
        out[k] = gv
    return i


def _packed(kind: int, buf: bytes, i: int, end: int) -> list[Any]:
    out: list[Any] = []
    while i < end:
        if kind in (_DOUBLE, _FIX64, _SFIX64):
            v, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif kind in (_FLOAT, _FIX32, _SFIX32):
            v, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            v, i = _varint(buf, i, end)
        if i > end:
            raise WireError(end, "truncated packed field")
        out.append(_scalar(kind, v, buf, 0, 0))
    return out


def _map_entry(
    c: Compiled, kind: int, sub: Any, key_kind: tuple[int, int], buf: bytes, i: int, end: int, depth: int
) -> tuple[str, Any]:
    key: Any = ""
    val: Any = None
    vs = ve = -1
    vv: Any = 0
    while i < end:
        tag, i = _varint(buf, i, end)
        wt = tag & 7
        if wt == 2:
            n, i = _varint(buf, i, end)
            if n > end - i:
                raise WireError(i, "map entry length runs past the end")
            s, i = i, i + n
            if tag >> 3 == 1:
                key = _scalar(key_kind[0], 0, buf, s, i)
            else:
                vs, ve = s, i
        elif wt == 0:
            x, i = _varint(buf, i, end)
            if tag >> 3 == 1:
                key = _scalar(key_kind[0], x, buf, 0, 0)
            else:
                vv = x
        else:
            raise WireError(i, f"unexpected wire type {wt} in a map entry")
    if kind == _MSG:
        if vs < 0:
            vs = ve = 0
        val = _submessage(c, sub, buf, vs, ve, depth)
    elif kind in (_STR, _BYTES):
        val = _scalar(kind, 0, buf, vs, ve) if vs >= 0 else ""
    elif kind == _ENUM:
        val = sub.get(_signed(vv), _signed(vv))
    else:
        val = _scalar(kind, vv, buf, 0, 0)
    return str(key) if not isinstance(key, str) else key, val


def decode_typed(c: Compiled, m: _Msg, raw: bytes) -> dict[str, Any]:
    """Decode ``raw`` (the object's bytes) as message ``m``; raises :class:`WireError` when malformed."""
    return _message(c, m, raw, 0, len(raw), 1)
