"""Value helpers of the nftables tracer: addresses of both families, interface names, fib types.

Kept apart from :mod:`pytest_k8sstate.trace.nft` (the interpreter) because they are pure functions
of text: comparing a packet field with one rendered set element or literal, naming the interface
"worlds" a trace must be repeated in when the packet's interface is unknown, and formatting a DNAT
destination (``10.0.0.1:80``, ``[fd00::1]:80``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pytest_k8sstate.parse.numbers import parse_uint

__all__ = [
    "OTHER_IFACE",
    "Unsupported",
    "describe_iface",
    "fib_type",
    "hostport",
    "iface_matches",
    "iface_witnesses",
    "ip",
    "part_matches",
]

OTHER_IFACE = "\x01"
"""Marks a made-up interface name: ``"\\x01"`` matches no named interface, ``"eth\\x01"`` matches
``eth*`` and none of the literal names (see :func:`iface_witnesses`)."""

_PROTO_NUM = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}


class Unsupported(Exception):
    """A rule the tracer cannot evaluate (the caller turns it into a TraceError naming the rule)."""


def hostport(addr: str, port: int) -> str:
    """``10.0.0.1:80``, ``[fd00::1]:80`` (IPv6 in brackets, as ``net.JoinHostPort`` writes it)."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _uint(text: str) -> int:
    """ASCII decimal or 0x hex (what nft prints); ValueError otherwise (no "+80", "8_0", "٨٠")."""
    v = parse_uint(text)
    if v is None:
        raise ValueError(text)
    return v


Addr = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=1 << 16)
def ip(text: str) -> Addr:
    """``ipaddress.ip_address``, memoised (the same few addresses are parsed again for every rule)."""
    return ipaddress.ip_address(text)


@lru_cache(maxsize=1 << 16)
def _net(text: str) -> Net:
    return ipaddress.ip_network(text, strict=False)


def _addr_matches(val: str, text: str) -> bool:
    if "/" in text:
        a, net = ip(val), _net(text)
        return net.version == a.version and a in net
    if "-" in text:
        a = ip(val)
        lo_t, hi_t = text.split("-", 1)
        lo, hi = ip(lo_t), ip(hi_t)
        if not (lo.version == hi.version == a.version):
            return False
        return lo <= a <= hi  # type: ignore[operator]
    if val == text:
        return True
    a, other = ip(val), ip(text)
    return other.version == a.version and other == a


def part_matches(v: tuple[str, Any], text: str) -> bool:
    """Whether packet value ``v`` (``(kind, value)``) matches one rendered literal/element part."""
    kind, val = v
    try:
        if kind == "addr":
            return _addr_matches(val, text)
        if kind in ("port", "int"):
            lo, sep, hi = text.partition("-")
            a, b = _uint(lo), (_uint(hi) if sep else None)
            return bool(a <= val <= b) if b is not None else bool(val == a)
        if kind == "proto":
            return bool(text == val or text == str(_PROTO_NUM.get(val, -1)))
        if kind in ("ctstate", "fibtype", "name"):
            return bool(text == val)
        if kind == "ctstatus":
            return text in val
        if kind == "iface":
            if text.isascii() and text.isdigit():
                raise Unsupported(
                    f"interface index {text}: the rules name no interface, the trace knows names only"
                )
            return iface_matches(val, text)
    except ValueError:
        raise Unsupported(f"cannot compare {kind} {val!r} with {text!r}") from None
    raise Unsupported(f"cannot compare {kind} with {text!r}")


def iface_matches(name: str, pattern: str) -> bool:
    """nft's interface-name match: ``eth0`` exactly, ``eth*`` any name starting with ``eth``."""
    if pattern.endswith("*") and not pattern.endswith("\\*"):
        return name.startswith(pattern[:-1])
    return name == pattern.replace("\\*", "*")


def iface_witnesses(patterns: Iterable[str]) -> list[str]:
    """One interface name per distinguishable case of ``patterns``: each literal name, for each
    wildcard ``p*`` a made-up name matching it but no literal, and a made-up name matching none."""
    out: set[str] = {OTHER_IFACE}
    for p in patterns:
        if p.endswith("*") and not p.endswith("\\*"):
            out.add(p[:-1] + OTHER_IFACE)
        else:
            out.add(p.replace("\\*", "*"))
    return sorted(out)


def describe_iface(name: str) -> str:
    """A witness as text: ``eth0``, ``an interface matching eth* (none of the named ones)``, …"""
    if name == OTHER_IFACE:
        return "any other interface"
    if name.endswith(OTHER_IFACE):
        return f"another interface matching {name[:-1]}*"
    return name


def fib_type(addr: str, local: bool) -> str:
    """The route type ``fib ... type`` reports for ``addr``: local, multicast, broadcast or unicast."""
    if local:
        return "local"
    a = ip(addr)
    if a.is_multicast:
        return "multicast"
    if a.version == 4 and addr == "255.255.255.255":
        return "broadcast"
    return "unicast"
