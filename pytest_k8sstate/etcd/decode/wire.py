"""A generic protobuf wire-format reader: any message → a ``{"#N": value}`` tree (no schema needed).

Heuristics (the package doc has the whole contract): varint → int (int64 two's complement); fixed32/64 →
unsigned int; length-delimited → a nested message when the bytes contain a control byte and parse *exactly*
as wire format, else UTF-8 text, else ``"base64:…"``; empty → ``""``; a field seen twice → a list. Nesting
deeper than :data:`MAX_DEPTH` is not expanded. Malformed input raises :class:`WireError` with the offset.
"""

from __future__ import annotations

import base64
import re
from typing import Any

__all__ = ["MAX_DEPTH", "Span", "WireError", "b64_text", "parse_message", "span_value", "wire_tree"]

MAX_DEPTH = 64


class WireError(Exception):
    """Malformed wire format at ``offset`` (relative to the buffer given to the parser)."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"{what} at byte offset {offset}")
        self.offset = offset
        self.what = what


def b64_text(b: bytes) -> str:
    return "base64:" + base64.b64encode(b).decode("ascii")


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_search_control = _CONTROL.search
_KEYS = [f"#{n}" for n in range(256)]


def _varint(buf: bytes, i: int, end: int, what: str) -> tuple[int, int]:
    """Decode a varint starting at ``i`` → (value, next index)."""
    at = i
    v = 0
    shift = 0
    while True:
        if i >= end:
            raise WireError(at, f"truncated {what}")
        c = buf[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise WireError(at, f"{what} varint longer than 10 bytes")


class Span:
    """A length-delimited field left unexpanded (``lazy=`` of :func:`parse_message`)."""

    __slots__ = ("end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end


def span_value(buf: bytes, s: int, e: int) -> Any:
    """What :func:`parse_message` makes of the length-delimited bytes ``buf[s:e]`` (see module doc)."""
    if s == e:
        return ""
    if _search_control(buf, s, e) is not None:
        try:
            return parse_message(buf, s, e, 2)
        except WireError:
            pass
    chunk = buf[s:e]
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return b64_text(chunk)


def parse_message(buf: bytes, i: int, end: int, depth: int, lazy: int = 0) -> dict[str, Any]:
    """Parse ``buf[i:end]`` as one message into a ``{"#N": value}`` tree (see module doc).

    Field number ``lazy`` (length-delimited) is not expanded but returned as a :class:`Span`.
    Raises :class:`WireError` (offset relative to ``buf``) unless the bytes are exact wire format.
    """
    out: dict[str, Any] = {}
    repeated: set[str] | None = None
    while i < end:
        tag_at = i
        c = buf[i]
        if c < 0x80:
            tag = c
            i += 1
        else:
            tag, i = _varint(buf, i, end, "field tag")
        num = tag >> 3
        wt = tag & 7
        if num == 0 or num > 0x1FFFFFFF:
            raise WireError(tag_at, f"invalid field number {num}")
        val: Any
        if wt == 0 or wt == 2:  # a varint: the value, or the length of what follows
            if i < end and buf[i] < 0x80:
                v = buf[i]
                i += 1
            else:
                v, i = _varint(buf, i, end, f"{'varint' if wt == 0 else 'length'} of field {num}")
        if wt == 2:
            n = v
            if n > end - i:
                raise WireError(tag_at, f"length {n} of field {num} runs past the end ({end - i} bytes left)")
            s = i
            i += n
            if num == lazy:
                val = Span(s, i)
            elif n == 0:
                val = ""
            else:
                val = None
                if depth < MAX_DEPTH and _search_control(buf, s, i) is not None:
                    try:
                        val = parse_message(buf, s, i, depth + 1)
                    except WireError:
                        val = None
                if val is None:
                    chunk = buf[s:i]
                    try:
                        val = chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        val = b64_text(chunk)
        elif wt == 0:
            val = v - (1 << 64) if v >= 1 << 63 else v  # int64 stored as two's complement
        elif wt == 1:
            if i + 8 > end:
                raise WireError(i, f"truncated fixed64 of field {num}")
            val = int.from_bytes(buf[i : i + 8], "little")
            i += 8
        elif wt == 5:
            if i + 4 > end:
                raise WireError(i, f"truncated fixed32 of field {num}")
            val = int.from_bytes(buf[i : i + 4], "little")
            i += 4
        else:
            raise WireError(tag_at, f"unsupported wire type {wt} (field {num})")
        k = _KEYS[num] if num < 256 else f"#{num}"
        if k in out:
            if repeated is not None and k in repeated:
                out[k].append(val)
            else:
                out[k] = [out[k], val]
                if repeated is None:
                    repeated = set()
                repeated.add(k)
        else:
            out[k] = val
    return out


def wire_tree(data: bytes) -> dict[str, Any]:
    """Generic ``{"#N": value}`` tree of a protobuf message; raises :class:`WireError` when malformed."""
    return parse_message(data, 0, len(data), 1)
