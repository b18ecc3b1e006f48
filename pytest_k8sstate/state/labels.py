"""The text labels of links, addresses and routes in a :class:`~pytest_k8sstate.state.NodeDiff`, both ways.

``NodeDiff.links_added`` & co. hold one stable line per item (``veth1a2b (veth) mtu 1500 UP``,
``10.244.1.5/32 dev veth1a2b``, ``10.244.2.0/24 via 172.18.0.3 dev eth0``): readable in a diff and cheap to
compare. The formatters below make them from ``ip -j`` objects; the parsers read them back into fields for the
link/route assertions. An item the formatter could not label is kept as compact JSON and parses as None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Addr",
    "Link",
    "Route",
    "addr_label",
    "link_label",
    "parse_addr",
    "parse_link",
    "parse_route",
    "route_label",
]

ROUTE_TYPES = (
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "nat",
)


@dataclass(frozen=True)
class Link:
    name: str
    kind: str | None
    mtu: int | None
    state: str | None


@dataclass(frozen=True)
class Addr:
    address: str
    """``IP/prefixlen`` (or a bare IP when the prefix length was not captured)."""
    dev: str | None


@dataclass(frozen=True)
class Route:
    dst: str
    """``default``, ``IP/prefixlen`` or a bare IP (a host route)."""
    type: str
    via: str | None
    dev: str | None
    table: str | None


def link_label(m: Mapping[str, Any]) -> str | None:
    name = m.get("ifname") or m.get("name")
    if not name:
        return None
    kind = m.get("kind") or (m.get("linkinfo") or {}).get("info_kind")
    s = f"{name} ({kind})" if kind else str(name)
    if m.get("mtu") is not None:
        s += f" mtu {m['mtu']}"
    if m.get("operstate"):
        s += f" {m['operstate']}"
    return s


def addr_label(m: Mapping[str, Any]) -> str | None:
    local = m.get("local") or m.get("address") or m.get("addr")
    if not local:
        return None
    plen = m.get("prefixlen")
    dev = m.get("ifname") or m.get("dev") or m.get("label")
    s = f"{local}/{plen}" if plen is not None and "/" not in str(local) else str(local)
    return f"{s} dev {dev}" if dev else s


def route_label(m: Mapping[str, Any]) -> str | None:
    dst = m.get("dst")
    if not dst:
        return None
    s = str(dst)
    typ, gw, dev, table = m.get("type"), m.get("gateway"), m.get("dev"), m.get("table")
    if typ and typ != "unicast":
        s = f"{typ} {s}"
    if gw:
        s += f" via {gw}"
    if dev:
        s += f" dev {dev}"
    if table not in (None, "", "main", 254, "254"):
        s += f" table {table}"
    return s


_LINK_RE = re.compile(
    r"^(?P<name>[^\s{\[\"]+)(?: \((?P<kind>[^)]*)\))?(?: mtu (?P<mtu>\d+))?(?: (?P<state>\S+))?$"
)
_ADDR_RE = re.compile(r"^(?P<address>[0-9A-Fa-f:.]+(?:/\d+)?)(?: dev (?P<dev>\S+))?$")
_ROUTE_RE = re.compile(
    rf"^(?:(?P<type>{'|'.join(ROUTE_TYPES)}) )?(?P<dst>\S+)(?: via (?P<via>\S+))?(?: dev (?P<dev>\S+))?"
    r"(?: table (?P<table>\S+))?$"
)


def parse_link(label: str) -> Link | None:
    m = _LINK_RE.match(label)
    if m is None:
        return None
    mtu = m["mtu"]
    return Link(m["name"], m["kind"], int(mtu) if mtu is not None else None, m["state"])


def parse_addr(label: str) -> Addr | None:
    m = _ADDR_RE.match(label)
    return Addr(m["address"], m["dev"]) if m is not None else None


def parse_route(label: str) -> Route | None:
    m = _ROUTE_RE.match(label)
    if m is None or m["dst"].startswith(("{", "[")):
        return None
    return Route(m["dst"], m["type"] or "unicast", m["via"], m["dev"], m["table"])
