"""Packets a walk cannot tell apart: the iptables tracer's results reused per class of source.

The iptables tracer reads a packet's source address only through ``-s NET`` (``! -s``), ``-m addrtype
--src-type`` (is the source local, loopback, multicast), ``-m set``/``-m recent`` and whether it is one
of the node's addresses (``Packet.local_ips``: where the walk starts); its source port only through
``--sport``/``--source-port``, ``-m multiport --sports/--source-ports/--ports`` and ``-m set``. Every
such read is recorded while the packet is walked (``Matchers.src_reads``: the ``-s`` networks and the
source port ranges the rules it reached tested). The walk is a function of the answers to what it
read: another packet that agrees on every other field of :class:`~pytest_k8sstate.trace.Packet`
and gives the same answer to each recorded read takes the same branch at every rule — so it reads
the same things and has the same outcomes, probabilities and paths. :func:`source_class` turns the
recorded reads into a :class:`SourceClass` (None when a read cannot be replayed: ``-m set``,
``-m recent``, an address or port it cannot read), and :mod:`.iptables` keeps the results of the last
:data:`MAX_CLASSES` classes on the ruleset (``ruleset.cache``). A packet of a known class costs the
answers — one set lookup for all host (``/32``, ``/128``) networks together, one test per wider
network and per port range — instead of a walk (for a 10,000-endpoint Service, 10,000 paths: 0.3 to
0.7 s). Each class is walked once, by its first packet; errors are never kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from functools import lru_cache
from typing import Any

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.iptables import IptablesRuleset
from pytest_k8sstate.parse.numbers import parse_port
from pytest_k8sstate.trace import Packet, TraceResult, class_reuse
from pytest_k8sstate.trace.ipt_match import READ_OPAQUE, READ_SPORT, READ_SRC, READ_SRC_TYPE, addr, canon, net

__all__ = [
    "MAX_CLASSES",
    "MAX_OUTCOMES",
    "RESULTS_KEY",
    "SourceClass",
    "other_fields",
    "reuse_or_walk",
    "source_class",
]

MAX_CLASSES = 32
"""Results kept per ruleset (the classes used most recently)."""
MAX_OUTCOMES = 100_000
"""Outcomes kept per ruleset, over all its classes (a class of a 10,000-endpoint Service: ~6 MB); the
newest class is kept whatever its size."""

RESULTS_KEY = "trace.iptables.results"
"""``ruleset.cache[RESULTS_KEY]``: the classes kept (a packet's other fields → its walked classes)."""
_OTHER_FIELDS = tuple(f.name for f in fields(Packet) if f.name not in ("src", "sport"))


class SourceClass:
    """The reads of one walk in a form that answers them quickly for another packet."""

    __slots__ = ("hosts", "nets", "ports", "src_type")

    def __init__(self) -> None:
        self.hosts: set[tuple[int, int]] = set()  # host networks (/32, /128): (family, address int)
        self.nets: list[tuple[int, int, int]] = []  # (family, network int, mask) of wider networks
        self.ports: list[tuple[int, int]] = []  # source port ranges
        self.src_type = False

    def answers(self, pkt: Packet) -> tuple[Any, ...] | None:
        """The answers of ``pkt`` to these reads (plus its source's family and whether it is one of the
        node's addresses); None for a packet the walk would reject (it reports why)."""
        try:
            fam = pkt.family
            a = addr(pkt.src)
            local = _canon_local(frozenset(pkt.local_ips))
            where = (canon(pkt.src) in local, pkt.src in local)  # the walk reads both texts
        except (TraceError, ValueError):
            return None
        ai = int(a)
        host = ai if (fam, ai) in self.hosts else None
        nets = tuple(f == fam and ai & mask == base for f, base, mask in self.nets)
        sp = pkt.sport
        ports = tuple(lo <= sp <= hi for lo, hi in self.ports)
        src_type = (a.is_loopback, a.is_multicast) if self.src_type else None
        return fam, where, host, nets, ports, src_type


def source_class(reads: Iterable[tuple[str, str]]) -> SourceClass | None:
    """The class of the walk that made ``reads`` (see the module doc), or None: do not reuse it."""
    out = SourceClass()
    for kind, text in reads:
        if kind == READ_SRC:
            item = _network(text)
            if item is None:
                return None
            if item[2] == -1:
                out.hosts.add((item[0], item[1]))
            else:
                out.nets.append(item)
        elif kind == READ_SPORT:
            lo, sep, hi = text.partition(":")
            a = parse_port(lo) if lo or not sep else 0
            b = parse_port(hi) if hi else 65535
            if a is None or b is None:
                return None
            out.ports.append((a, a) if not sep else (a, b))
        elif kind == READ_SRC_TYPE:
            out.src_type = True
        else:
            return None
    return out


@lru_cache(maxsize=65536)
def _network(text: str) -> tuple[int, int, int] | None:
    """``-s`` text → (family, network int, mask), the mask -1 for a host network; None: unreadable."""
    try:
        n = net(text)
    except ValueError:
        return None
    if n.prefixlen == n.max_prefixlen:
        return n.version, int(n.network_address), -1
    mask = ((1 << n.prefixlen) - 1) << (n.max_prefixlen - n.prefixlen)
    return n.version, int(n.network_address), mask


def other_fields(pkt: Packet) -> tuple[Any, ...]:
    """Every field of ``pkt`` but its source address and port, as given (a class is per these)."""
    return tuple(getattr(pkt, name) for name in _OTHER_FIELDS)


@lru_cache(maxsize=8)
def _canon_local(ips: frozenset[str]) -> frozenset[str]:
    return frozenset(_canon_or_same(a) for a in ips)


def _canon_or_same(text: str) -> str:
    try:
        return canon(text)
    except ValueError:
        return text


def reuse_or_walk(
    rs: IptablesRuleset, packet: Packet, walk: Callable[[set[tuple[str, str]]], TraceResult]
) -> TraceResult:
    """The result of a known class ``packet`` belongs to (with ``packet`` in it), else ``walk(reads)``
    — which adds what it read of the source to ``reads`` — kept as a new class unless a read cannot be
    replayed (the :data:`MAX_CLASSES` walked most recently are kept; :mod:`.class_reuse`)."""
    return class_reuse.reuse_or_walk(
        rs.cache,
        RESULTS_KEY,
        other_fields(packet),
        packet,
        packet,
        walk,
        classify=source_class,
        opaque=READ_OPAQUE,
        max_classes=MAX_CLASSES,
        max_outcomes=MAX_OUTCOMES,
    )
