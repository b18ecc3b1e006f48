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
import math
import struct
from typing import Any

from pytest_k8sstate.etcd.decode.compiled import (
    _BOOL,
    _BYTES,
    _DOUBLE,
    _ENUM,
    _FIX32,
    _FIX64,
    _FLOAT,
    _INT,
    _MAP,
    _MSG,
    _SFIX32,
    _SFIX64,
    _SINT,
    _SPEC,
    _STR,
    _UINT,
    SPECIAL,
    Compiled,
    Msg,
)
from pytest_k8sstate.etcd.decode.wire import MAX_DEPTH, WireError, span_value

__all__ = ["SPECIAL", "Compiled", "decode_typed", "go_duration"]

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON = json.JSONDecoder(parse_constant=_no_constant)


def _raw_json(b: bytes) -> Any:
    if not b:
        return None
    try:  # UTF-8 JSON, what the apiserver stores: one decoder, not one per value
        return _JSON.decode(b.decode("utf-8"))
    except (ValueError, RecursionError):
        pass
    try:  # json.loads also reads a BOM and UTF-16/32
        return json.loads(b, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return base64.b64encode(b).decode("ascii")


#: special → {its bytes: its JSON}: the specials whose JSON is immutable (str, int, None), shared freely
_CACHED: dict[str, dict[bytes, Any]] = {
    k: {} for k in ("time", "microtime", "duration", "quantity", "intorstring")
}
_CACHE_SIZE = 4096
_MISS: Any = object()


def _special_cached(c: Compiled, sub: tuple[str, str], buf: bytes, s: int, e: int, depth: int) -> Any:
    """The JSON of a :data:`SPECIAL` message field; the immutable ones are cached by their bytes."""
    cache = _CACHED.get(sub[0])
    if cache is None or depth >= MAX_DEPTH:
        return _submessage(c, sub[1], buf, s, e, depth)
    b = buf[s:e]
    val = cache.get(b, _MISS)
    if val is _MISS:
        val = _special(c, None, sub[0], buf, s, e, depth + 1)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()
        cache[b] = val
    return val


def _special(c: Compiled, m: Msg | None, sp: str | None, buf: bytes, s: int, e: int, depth: int) -> Any:
    if sp == "time" or sp == "microtime":
        if s == e:
            return None
        if buf[s] == 0x08:  # the usual {1: seconds[, 2: nanos]}: no dict
            secs, i = _varint(buf, s + 1, e)
            nanos = 0
            if i < e and buf[i] == 0x10:
                nanos, i = _varint(buf, i + 1, e)
            if i == e:
                return _time(_signed(secs), _signed(nanos), sp == "microtime")
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
    assert m is not None  # the cached specials (above) never need the message
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
        v: Any
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


def _f32(v: int) -> float:
    x: float = struct.unpack("<f", v.to_bytes(4, "little"))[0]
    return x


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
    if kind == _DOUBLE or kind == _FLOAT:
        x = struct.unpack("<d", v.to_bytes(8, "little"))[0] if kind == _DOUBLE else _f32(v)
        return x if math.isfinite(x) else str(x)  # Go's JSON has no NaN/Inf: never stored; kept JSON-safe
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
        return _special(c, sm, sm.special, buf, s, e, depth + 1)
    if sm.slice:
        return _message(c, sm, buf, s, e, depth + 1).get(next(iter(sm.fields.values()))[0], [])
    return _message(c, sm, buf, s, e, depth + 1)


def _message(c: Compiled, m: Msg, buf: bytes, i: int, end: int, depth: int) -> dict[str, Any]:
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
                raise WireError(
                    tag_at, f"length {n} of field {tag >> 3} runs past the end ({end - s} bytes left)"
                )
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
            elif kind == _SPEC:
                val = _special_cached(c, sub, buf, s, i, depth)
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
        elif kind == _MSG or kind == _SPEC:  # Go never omits a struct, but omitzero does
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


def _other(
    c: Compiled, m: Msg, out: dict[str, Any], buf: bytes, tag: int, tag_at: int, i: int, end: int
) -> int:
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
    if kind == _STR and key_kind[0] == _STR and end - i >= 4 and buf[i] == 0x0A and buf[i + 1] < 0x80:
        # the usual map<string, string> entry {1: key, 2: value}, both shorter than 128 bytes
        ke = i + 2 + buf[i + 1]
        if ke + 2 <= end and buf[ke] == 0x12 and buf[ke + 1] < 0x80 and ke + 2 + buf[ke + 1] == end:
            try:
                return buf[i + 2 : ke].decode("utf-8"), buf[ke + 2 : end].decode("utf-8")
            except UnicodeDecodeError:
                pass  # the general path below replaces invalid bytes
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
    elif kind == _SPEC:
        if vs < 0:
            vs = ve = 0
        val = _special_cached(c, sub, buf, vs, ve, depth)
    elif kind in (_STR, _BYTES):
        val = _scalar(kind, 0, buf, vs, ve) if vs >= 0 else ""
    elif kind == _ENUM:
        val = sub.get(_signed(vv), _signed(vv))
    else:
        val = _scalar(kind, vv, buf, 0, 0)
    return str(key) if not isinstance(key, str) else key, val


def decode_typed(c: Compiled, m: Msg, raw: bytes) -> dict[str, Any]:
    """Decode ``raw`` (the object's bytes) as message ``m``; raises :class:`WireError` when malformed."""
    return _message(c, m, raw, 0, len(raw), 1)
