"""nf_tables netlink messages: attributes and expressions (for :mod:`pytest_k8sstate.parse.iptnft`).

:func:`decode_expr`: one raw expression → an operation tuple (the caller caches it per raw bytes;
``cmp`` and ``immediate`` have fast paths at their fixed kernel layout, ``counter`` in the caller).
"""

from __future__ import annotations

import struct
from typing import Any

from pytest_k8sstate.errors import K8sStateError

__all__ = [
    "CNT_HEAD",
    "PKTS_HEAD",
    "Op",
    "Untranslatable",
    "attrs",
    "decode_expr",
    "fast_counter",
    "host_u32",
    "nl_str",
    "u32",
    "u64",
]


class Untranslatable(K8sStateError):
    """The netlink dump holds something this translator cannot print exactly as iptables-save would."""


# --- netlink attribute helpers -----------------------------------------------------------------


_NLA = struct.Struct("=HH").unpack_from  # an attribute's length and type


def attrs(buf: bytes, pos: int = 0, end: int | None = None) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    end = len(buf) if end is None else end
    unpack = _NLA
    while pos + 4 <= end:
        n, kind = unpack(buf, pos)
        if n < 4 or pos + n > end:
            raise Untranslatable(f"malformed netlink attribute at offset {pos}")
        out[kind & 0x3FFF] = buf[pos + 4 : pos + n]
        pos += (n + 3) & ~3
    return out


def _list(buf: bytes) -> list[bytes]:
    """The payloads of a nested NFTA_LIST_ELEM list."""
    out = []
    pos, end = 0, len(buf)
    unpack = _NLA
    while pos + 4 <= end:
        n, _ = unpack(buf, pos)
        if n < 4 or pos + n > end:
            raise Untranslatable(f"malformed netlink list at offset {pos}")
        out.append(buf[pos + 4 : pos + n])
        pos += (n + 3) & ~3
    return out


def nl_str(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def u32(b: bytes) -> int:
    return int(struct.unpack(">I", b[:4])[0])


def host_u32(data: bytes, at: int) -> int:
    """The host-order u32 at ``at`` (a netlink header field)."""
    return int(struct.unpack_from("=I", data, at)[0])


def u64(b: bytes) -> int:
    return int(struct.unpack(">Q", b[:8])[0])


def _data(b: bytes) -> bytes:
    """NFTA_DATA_VALUE of a nested nft_data."""
    a = attrs(b)
    if 1 not in a:
        raise Untranslatable("a data attribute without a value")
    return a[1]


# --- expressions → operations (cached per raw expression) ---------------------------------------

Op = tuple[Any, ...]  # ("load", reg, what) | ("cmp", reg, op, data) | ...
_VERDICTS = {1: "ACCEPT", 0: "DROP", -5: "RETURN"}  # NF_ACCEPT, NF_DROP, NFT_RETURN
_META_KEYS = {3: "mark", 6: "iifname", 7: "oifname", 16: "l4proto"}


CNT_HEAD = b"\x0c\x00\x01\x00counter\x00\x1c\x00\x02\x00\x0c\x00\x01\x00"
PKTS_HEAD = b"\x0c\x00\x02\x00"
"""A counter expression's packets attribute header (see :func:`fast_counter`)."""


def fast_counter(data: bytes, at: int, end: int) -> bool:
    """Whether the expression at ``at`` (its attribute header; the expressions end at ``end``) is a counter
    as iptables-nft writes it and the kernel dumps it: 44 bytes, :data:`CNT_HEAD` after its header, then
    its bytes (u64, big endian, at ``at + 24``) and its packets attribute (header at ``at + 32``, value at
    ``at + 36``). Its values are then read at those fixed places; nothing else about the rule depends on
    them (a rule's memo key leaves them out)."""
    return (
        data[at : at + 2] == b",\x00"
        and at + 44 <= end
        and data.startswith(CNT_HEAD, at + 4)
        and data[at + 32 : at + 36] == PKTS_HEAD
    )


_CMP_HEAD = b"\x08\x00\x01\x00cmp\x00"
_IMM_HEAD = b"\x0e\x00\x01\x00immediate\x00\x00\x00"


def _fast_expr(raw: bytes) -> Op | None:
    """The two commonest expressions at their fixed kernel layout (None: use the generic decoder)."""
    if raw.startswith(_CMP_HEAD):
        if raw[12:16] == b"\x08\x00\x01\x00" and raw[20:24] == b"\x08\x00\x02\x00" and raw[30] & 0x7F == 3:
            if raw[34:36] == b"\x01\x00":
                vlen = int.from_bytes(raw[32:34], "little") - 4
                if 0 <= vlen <= 64 and 36 + vlen <= len(raw):
                    sreg, cop = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[24:28], "big")
                    return ("cmp", sreg, cop, raw[36 : 36 + vlen])
    elif raw.startswith(_IMM_HEAD) and raw[20:28] == b"\x08\x00\x01\x00\x00\x00\x00\x00":
        if raw[30] & 0x7F == 2 and raw[34] & 0x7F == 2 and raw[36:40] == b"\x08\x00\x01\x00":
            code = int.from_bytes(raw[40:44], "big", signed=True)
            if code in _VERDICTS and len(raw) == 44:
                return ("verdict", " -j " + _VERDICTS[code])
            if code in (-3, -4) and raw[46:48] == b"\x02\x00":
                n = int.from_bytes(raw[44:46], "little")
                if 48 < 44 + n <= len(raw) and raw[44 + n - 1] == 0:
                    target = raw[48 : 44 + n - 1].decode("utf-8", "surrogateescape")
                    if "\0" not in target:
                        return ("verdict", (" -g " if code == -4 else " -j ") + target)
    return None


def decode_expr(raw: bytes, fam: int) -> Op:
    fast = _fast_expr(raw)
    if fast is not None:
        return fast
    a = attrs(raw)
    name = nl_str(a.get(1, b""))
    d = attrs(a[2]) if 2 in a else {}
    if name == "counter":
        return ("counter", u64(d.get(2, b"\0" * 8)), u64(d.get(1, b"\0" * 8)))
    if name == "immediate":
        if u32(d.get(1, b"\xff" * 4)) != 0 or 2 not in d:
            raise Untranslatable("an immediate into a data register")
        v = attrs(attrs(d[2]).get(2, b""))
        code = struct.unpack(">i", v.get(1, b"\0\0\0\0")[:4])[0]
        if code in (-3, -4):  # NFT_JUMP, NFT_GOTO
            return ("verdict", (" -g " if code == -4 else " -j ") + nl_str(v.get(2, b"")))
        if code in _VERDICTS:
            return ("verdict", " -j " + _VERDICTS[code])
        raise Untranslatable(f"verdict code {code}")
    if name == "payload":
        if 5 in d:
            raise Untranslatable("a payload write")
        return ("load", u32(d[1]), ("payload", u32(d[2]), u32(d[3]), u32(d[4])))
    if name == "meta":
        if 3 in d or 1 not in d:
            raise Untranslatable("a meta set (not from iptables)")
        key = u32(d[2])
        if key not in _META_KEYS:
            raise Untranslatable(f"meta key {key}")
        return ("load", u32(d[1]), ("meta", _META_KEYS[key]))
    if name == "cmp":
        return ("cmp", u32(d[1]), u32(d[2]), _data(d[3]))
    if name == "bitwise":
        if 6 in d and u32(d[6]) != 0:
            raise Untranslatable("a bitwise shift")
        xor = _data(d[5]) if 5 in d else b""
        if any(xor):
            raise Untranslatable("a bitwise xor")
        return ("bitwise", u32(d[1]), u32(d[2]), _data(d[4]))
    if name == "range":
        return ("range", u32(d[1]), u32(d[2]), _data(d[3]), _data(d[4]))
    if name in ("match", "target"):  # an xt compat extension: rendered by the caller
        return ("xt", name, nl_str(d.get(1, b"")), u32(d.get(2, b"\0\0\0\0")), d.get(3, b""))
    raise Untranslatable(f"expression {name!r}")
