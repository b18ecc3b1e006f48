"""Packets an nftables walk cannot tell apart: :mod:`.nft`'s results reused per class of source.

The nftables tracer reads a packet's source address only through ``ip saddr``/``ip6 saddr`` (compared
with addresses, prefixes, ranges, anonymous sets, named sets and maps, concatenations), ``fib saddr
type``, its family and whether it is loopback or one of the node's addresses (``Packet.local_ips``:
where the walk starts, which interface it has); its source port only through ``th|tcp|udp|sctp
sport``. The walk records each such test (``_Tracer.src_reads``): ``(READ_ADDR, text)`` and
``(READ_PORT, text)`` — the address/port compared with one rendered literal, prefix or range
(``part_matches``), ``(READ_PORT_CMP, "<=80")``, ``(READ_FIB, "")``. A read whose answer it cannot
replay exactly — a named set or map keyed by (a concatenation with) the source, a set update with
it — is ``(READ_OPAQUE, why)``, and such a walk is never reused.

The walk is a function of those answers and of the packet's other fields: another packet with the
same other fields (and the same ``tables``) that gives the same answer to every recorded test takes
the same branch at every rule, so its outcomes and paths are the same (they never hold the source:
DNAT targets come from the rules). A known class costs one set lookup for all the host addresses
tested together plus one test per prefix, range and port test — not a walk (a 10,000-endpoint
Service: 10,000 paths). Each class is walked once, by its first packet; errors are never kept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable
from dataclasses import fields
from functools import lru_cache
from typing import Any

from pytest_k8sstate.parse.numbers import parse_uint
from pytest_k8sstate.trace import Packet, TraceResult, class_reuse
from pytest_k8sstate.trace.nftvalues import fib_type, ip

__all__ = [
    "MAX_CLASSES",
    "MAX_OUTCOMES",
    "READ_ADDR",
    "READ_FIB",
    "READ_OPAQUE",
    "READ_PORT",
    "READ_PORT_CMP",
    "RESULTS_KEY",
    "NftSourceClass",
    "reuse_or_walk",
    "source_class",
]

READ_ADDR = "addr"
READ_PORT = "port"
READ_PORT_CMP = "port-cmp"
READ_FIB = "fib"
READ_OPAQUE = "opaque"

MAX_CLASSES = 32
"""Classes kept per ruleset (those used most recently)."""
MAX_OUTCOMES = 100_000
"""Outcomes kept per ruleset over all its classes; the newest class is kept whatever its size."""
RESULTS_KEY = "trace.nft.results"
"""``ruleset.cache[RESULTS_KEY]``: the classes kept."""

_OTHER_FIELDS = tuple(f.name for f in fields(Packet) if f.name not in ("src", "sport"))
_CMP = {
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


class NftSourceClass:
    """The recorded reads of one walk, in a form that answers them quickly for another packet."""

    __slots__ = ("fib", "hosts", "nets", "port_cmps", "ports", "ranges")

    def __init__(self) -> None:
        self.hosts: set[tuple[int, int]] = set()  # (version, address int) compared for equality
        self.nets: list[tuple[int, int, int]] = []  # (version, network int, mask)
        self.ranges: list[tuple[int, int, int]] = []  # (version, low int, high int)
        self.ports: list[tuple[int, int]] = []  # port ranges (a single port: (p, p))
        self.port_cmps: list[tuple[str, int]] = []
        self.fib = False

    def answers(self, pkt: Packet) -> tuple[Any, ...] | None:
        """``pkt``'s answers to these reads (``pkt`` checked: canonical addresses); None: unreadable."""
        try:
            a = ip(pkt.src)
        except ValueError:
            return None
        ver, ai = a.version, int(a)
        local = pkt.src in pkt.local_ips
        host = ai if (ver, ai) in self.hosts else None
        nets = tuple(v == ver and ai & mask == base for v, base, mask in self.nets)
        ranges = tuple(v == ver and lo <= ai <= hi for v, lo, hi in self.ranges)
        sp = pkt.sport
        ports = tuple(lo <= sp <= hi for lo, hi in self.ports)
        cmps = tuple(_CMP[op](sp, n) for op, n in self.port_cmps)
        fib = fib_type(pkt.src, local or a.is_loopback) if self.fib else None
        return ver, local, a.is_loopback, host, nets, ranges, ports, cmps, fib


def source_class(reads: Iterable[tuple[str, str]]) -> NftSourceClass | None:
    """The class of the walk that made ``reads`` (see the module doc), or None: never reuse it."""
    out = NftSourceClass()
    for kind, text in reads:
        if kind == READ_ADDR:
            if not _add_addr(out, text):
                return None
        elif kind == READ_PORT:
            lo, sep, hi = text.partition("-")
            a = parse_uint(lo)
            b = parse_uint(hi) if sep else a
            if a is None or b is None:
                return None
            out.ports.append((a, b))
        elif kind == READ_PORT_CMP:
            op = text.rstrip("0123456789")
            n = parse_uint(text[len(op) :], hex_ok=False)
            if op not in _CMP or n is None:
                return None
            out.port_cmps.append((op, n))
        elif kind == READ_FIB:
            out.fib = True
        else:
            return None
    return out


def _add_addr(out: NftSourceClass, text: str) -> bool:
    """Add one address literal/prefix/range as ``part_matches`` reads it; False: not readable."""
    got = _addr_item(text)
    if got is None:
        return False
    kind, item = got
    if kind == "host":
        out.hosts.add((item[0], item[1]))
    elif kind == "net":
        out.nets.append((item[0], item[1], item[2]))
    elif kind == "range":
        out.ranges.append((item[0], item[1], item[2]))
    # "none": a range across families matches no address (part_matches: False whatever the source)
    return True


@lru_cache(maxsize=65536)
def _addr_item(text: str) -> tuple[str, tuple[int, ...]] | None:
    """``(kind, item)`` of one address text (every class of a ruleset meets the same texts); None:
    not an address, prefix or range."""
    try:
        if "/" in text:
            n = ipaddress.ip_network(text, strict=False)
            mask = ((1 << n.prefixlen) - 1) << (n.max_prefixlen - n.prefixlen)
            return "net", (n.version, int(n.network_address), mask)
        if "-" in text:
            lo_t, hi_t = text.split("-", 1)
            lo, hi = ip(lo_t), ip(hi_t)
            return ("range", (lo.version, int(lo), int(hi))) if lo.version == hi.version else ("none", ())
        a = ip(text)
        return "host", (a.version, int(a))
    except ValueError:
        return None


def reuse_or_walk(
    cache: dict[str, Any],
    checked: Packet,
    given: Packet,
    extra: Hashable,
    walk: Callable[[set[tuple[str, str]]], TraceResult],
) -> TraceResult:
    """The result of the known class ``checked`` (the canonical packet) belongs to, with ``given`` in
    it; else ``walk(reads)`` — which adds each test of the source to ``reads`` — kept as a new class
    unless a read cannot be replayed. ``extra``: whatever else the walk depends on (the tables)."""
    return class_reuse.reuse_or_walk(
        cache,
        RESULTS_KEY,
        (extra, *(getattr(checked, name) for name in _OTHER_FIELDS)),
        checked,
        given,
        walk,
        classify=source_class,
        opaque=READ_OPAQUE,
        max_classes=MAX_CLASSES,
        max_outcomes=MAX_OUTCOMES,
    )


def rhs_texts(right: Any) -> list[str] | None:
    """The rendered literals/prefixes/ranges ``_rhs_matches`` compares a single value with (it matches
    when any does); None when ``right`` is something else (a concatenation, a named set)."""
    from pytest_k8sstate.parse.nft import render_expr

    if isinstance(right, dict) and len(right) == 1 and isinstance(right.get("set"), list):
        items: list[Any] = right["set"]
    elif isinstance(right, list):
        items = right
    else:
        if isinstance(right, dict) and not (len(right) == 1 and next(iter(right)) in ("prefix", "range")):
            return None
        if isinstance(right, str) and right.startswith("@"):
            return None
        return [render_expr(right)]
    out: list[str] = []
    for x in items:
        got = rhs_texts(x)
        if got is None:
            return None
        out.extend(got)
    return out
