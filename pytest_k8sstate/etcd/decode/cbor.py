"""A small CBOR reader (RFC 8949 subset: everything the apiserver's CBOR serializer writes)."""

from __future__ import annotations

import json
import struct
from typing import Any

from pytest_k8sstate.etcd.decode.result import Decoded, identity_from_mapping
from pytest_k8sstate.etcd.decode.wire import MAX_DEPTH, b64_text

__all__ = ["CBOR_PREFIX", "CborError", "decode_cbor"]

CBOR_PREFIX = b"\xd9\xd9\xf7"


def decode_cbor(key: str, value: bytes) -> Decoded:
    """A ``0xd9d9f7``-tagged value: identity and the map as ``fields``; malformed → ``error`` + offset."""
    reader = _CborReader(value, len(CBOR_PREFIX))
    try:
        obj = reader.item(0)
        if reader.i != len(value):
            raise CborError(reader.i, f"{len(value) - reader.i} trailing bytes after the CBOR item")
        if obj is _BREAK:
            raise CborError(len(CBOR_PREFIX), "a break code where a value was expected")
    except CborError as exc:
        return Decoded("cbor", error=f"{key}: malformed CBOR: {exc.what} at byte offset {exc.offset}")
    if not isinstance(obj, dict):
        return Decoded("cbor", fields={"value": obj}, error=f"{key}: CBOR value is not a map")
    return Decoded("cbor", fields=obj, **identity_from_mapping(obj))


class CborError(Exception):
    """Malformed CBOR at ``offset`` (into the whole value)."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"{what} at byte offset {offset}")
        self.offset = offset
        self.what = what


_BREAK = object()


class _CborReader:
    def __init__(self, data: bytes, start: int) -> None:
        self.d = data
        self.i = start

    def _need(self, n: int, at: int) -> bytes:
        if self.i + n > len(self.d):
            raise CborError(at, f"truncated CBOR item (needs {n} more bytes)")
        b = self.d[self.i : self.i + n]
        self.i += n
        return b

    def _arg(self, ai: int, at: int) -> int:
        if ai < 24:
            return ai
        if ai == 24:
            return self._need(1, at)[0]
        if ai == 25:
            return int.from_bytes(self._need(2, at), "big")
        if ai == 26:
            return int.from_bytes(self._need(4, at), "big")
        if ai == 27:
            return int.from_bytes(self._need(8, at), "big")
        raise CborError(at, f"reserved additional information {ai}")

    def _string_chunks(self, major: int, ai: int, at: int, depth: int) -> bytes:
        if ai == 31:
            chunks: list[bytes] = []
            while True:
                chunk_at = self.i
                c = self._need(1, chunk_at)[0]
                if c == 0xFF:
                    return b"".join(chunks)
                if c >> 5 != major or (c & 31) == 31:
                    raise CborError(chunk_at, "bad chunk in an indefinite-length string")
                n = self._arg(c & 31, chunk_at)
                chunks.append(self._need(n, chunk_at))
        n = self._arg(ai, at)
        return self._need(n, at)

    def item(self, depth: int) -> Any:
        at = self.i
        if depth > MAX_DEPTH:
            raise CborError(at, f"nesting deeper than {MAX_DEPTH}")
        ib = self._need(1, at)[0]
        major, ai = ib >> 5, ib & 31
        if major == 0:
            return self._arg(ai, at)
        if major == 1:
            return -1 - self._arg(ai, at)
        if major in (2, 3):
            raw = self._string_chunks(major, ai, at, depth)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                if major == 3:
                    raise CborError(at, "text string is not valid UTF-8") from None
                return b64_text(raw)
        if major == 4:
            out: list[Any] = []
            if ai == 31:
                while (v := self.item(depth + 1)) is not _BREAK:
                    out.append(v)
                return out
            for _ in range(self._arg(ai, at)):
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise CborError(at, "unexpected break in an array")
                out.append(v)
            return out
        if major == 5:
            m: dict[str, Any] = {}
            count = None if ai == 31 else self._arg(ai, at)
            n = 0
            while count is None or n < count:
                k = self.item(depth + 1)
                if k is _BREAK:
                    if count is None:
                        return m
                    raise CborError(at, "unexpected break in a map")
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise CborError(at, "map key without a value")
                m[k if isinstance(k, str) else json.dumps(k)] = v
                n += 1
            return m
        if major == 6:
            self._arg(ai, at)  # tag number: ignored (self-describe, timestamps, ...)
            v = self.item(depth + 1)
            if v is _BREAK:
                raise CborError(at, "tag without an item")
            return v
        # major 7
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai in (22, 23):
            return None
        if ai == 24:
            return self._need(1, at)[0] and None
        if ai == 25:
            return struct.unpack(">e", self._need(2, at))[0]
        if ai == 26:
            return struct.unpack(">f", self._need(4, at))[0]
        if ai == 27:
            return struct.unpack(">d", self._need(8, at))[0]
        if ai == 31:
            return _BREAK
        if ai < 20:
            return None  # unassigned simple value
        raise CborError(at, f"reserved simple value {ai}")
