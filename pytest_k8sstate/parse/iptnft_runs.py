"""The translation memo's entries for more than one rule (:mod:`pytest_k8sstate.parse.iptnft`): runs of
one chain's rule messages and nfdump's blocks (a chain's rules; every chain declaration), and the
look-ahead that finds a run.

A rule's own key is a bare 16-byte digest (see
:func:`~pytest_k8sstate.parse.iptnft.netlink_to_iptables_save`); these keys have a prefix, so the three
kinds share one memo.
"""

from __future__ import annotations

import struct
from hashlib import blake2b

from pytest_k8sstate.parse.iptnft_render import ChainInfo

__all__ = [
    "BLOCK_PREFIX",
    "RUN_PREFIX",
    "declare",
    "decls_text",
    "lead",
    "record_block",
    "record_run",
    "scan_run",
]

_HDR = struct.Struct("=IH")
_ATTR = struct.Struct("=HH")
_MSG_NEWRULE = 6

RUN_PREFIX = b"run:"
"""Memo keys of whole runs of one chain's rule messages (rule keys are bare 16-byte digests)."""
BLOCK_PREFIX = b"blk:"
"""Memo keys of nfdump's blocks (one chain's rule messages, ids zeroed: node/nfdump.py): a digest of the
family, the counters flag and every byte of the block; the value is the chain's table and name and its
lines, separated by NULs (which no name holds). A block whose bytes were walked before (on this node,
in this or an earlier process: the handles are in it) is not walked again."""


def record_block(
    memo: dict[bytes, str],
    shared: dict[bytes, str],
    key: bytes,
    at: tuple[str, str],
    lines: list[str],
    first: int,
) -> None:
    """A block walked to its end, all of it rule messages of chain ``at``: its lines from ``first`` on,
    in ``memo`` and ``shared``."""
    memo[key] = shared[key] = f"{at[0]}\0{at[1]}\0" + "\n".join(lines[first:])


def record_run(memo: dict[bytes, str], digest: blake2b, lines: list[str], first: int) -> None:
    """A run recorded as it was walked: its chain's lines from ``first`` on, under ``digest`` (the
    running BLAKE2b of its messages, as :func:`scan_run` computes it)."""
    memo[RUN_PREFIX + digest.digest()] = "\n".join(lines[first:])


def scan_run(
    data: bytes, view: memoryview, pos: int, end: int, seed: bytes
) -> tuple[int, bytes, bytes, bytes]:
    """The run of rule messages from ``pos`` that name the same table and chain: where it ends, the
    table and chain, and a digest of ``seed`` and every message's bytes after its headers (rule handle,
    expressions, counters: all the text of the run depends on, the netlink header's sequence number and
    port aside). A message that is not a well-formed rule of that chain ends the run."""
    hdr = _HDR.unpack_from
    attr = _ATTR.unpack_from
    first: tuple[bytes, bytes] | None = None
    h = blake2b(seed, digest_size=16)
    p = pos
    while p + 20 <= end:
        length, mtype = hdr(data, p)
        if length < 20 or p + length > end or mtype & 0xFF != _MSG_NEWRULE:
            break
        q, mend = p + 20, p + length
        tb = cb = None
        while q + 4 <= mend:  # every attribute: the last table and chain count, as in the walk
            n, k = attr(data, q)
            if n < 4 or q + n > mend:
                break
            k &= 0x3FFF
            if k == 1:
                tb = data[q + 4 : q + n]
            elif k == 2:
                cb = data[q + 4 : q + n]
            q += (n + 3) & ~3
        if tb is None or cb is None or (first is not None and first != (tb, cb)):
            break
        first = (tb, cb)
        h.update(b"%d:" % (length - 20))
        h.update(view[p + 20 : mend])
        p += (length + 3) & ~3
    if first is None:
        return pos, b"", b"", b""
    return p, first[0], first[1], h.digest()


def lead(data: bytes, p: int, mend: int) -> bytes:
    """A rule message's table and chain attributes when they are its first two (the prefix the next
    rule of the same chain starts with), else empty."""
    if p + 4 > mend:
        return b""
    n1, k1 = _ATTR.unpack_from(data, p)
    q = p + ((n1 + 3) & ~3)
    if k1 & 0x3FFF != 1 or n1 < 4 or q + 4 > mend:
        return b""
    n2, k2 = _ATTR.unpack_from(data, q)
    r = q + ((n2 + 3) & ~3)
    if k2 & 0x3FFF != 2 or n2 < 4 or r > mend:
        return b""
    return data[p:r]


def decls_text(decls: list[tuple[str, str, ChainInfo]]) -> str:
    """A block of chain declarations as the memo keeps it: table, chain, policy, packets and bytes of
    each, separated by NULs (which no name holds)."""
    return "\0".join(f"{t}\0{c}\0{p or '-'}\0{pk}\0{by}" for t, c, (p, pk, by) in decls)


def declare(tables: dict[str, dict[str, ChainInfo]], text: str) -> None:
    """Declare a block's chains again (:func:`decls_text`); each of its messages declared its chain the
    same way when the block was walked, its table present (and a table absent now skips it, as then)."""
    f = text.split("\0")
    user: ChainInfo = (None, 0, 0)
    get = tables.get
    for i in range(0, len(f) - 4, 5):
        chains = get(f[i])
        if chains is not None:
            p, pk, by = f[i + 2], f[i + 3], f[i + 4]
            if p == "-" and pk == "0" and by == "0":
                chains[f[i + 1]] = user
            else:
                chains[f[i + 1]] = (None if p == "-" else p, int(pk), int(by))
