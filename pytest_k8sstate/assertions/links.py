"""Assertions on what a step did to a node's links, addresses and routes (a CNI's footprint).

Each ``assert_new_*`` / ``assert_removed_*`` returns the matching ``(node, item)`` pairs so a test can look
further (``assert_new_links(diff, kind="veth")`` → the pod's host-side veth). Filters: ``name`` / ``dev`` are
``fnmatch`` globs; ``dst`` / ``address`` are an IP or CIDR (compared as networks: ``10.244.1.5`` equals
``10.244.1.5/32``), ``default``, or a glob. ``count`` requires exactly that many matches (default: at
least one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import TypeVar

from pytest_k8sstate.assertions._common import did_you_mean, fail, short
from pytest_k8sstate.state import NodeDiff, StateDiff
from pytest_k8sstate.state.labels import Addr, Link, Route, parse_addr, parse_link, parse_route

__all__ = [
    "assert_new_addresses",
    "assert_new_links",
    "assert_new_routes",
    "assert_removed_addresses",
    "assert_removed_links",
    "assert_removed_routes",
]

T = TypeVar("T", Link, Addr, Route)
_GLOB = frozenset("*?[")


def _glob(pattern: str | None, value: str | None) -> bool:
    return pattern is None or (value is not None and fnmatchcase(value, pattern))


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _where(pattern: str | None, value: str) -> bool:
    """``dst`` / ``address`` filters: ``default``, a glob, or an IP/CIDR compared as a network."""
    if pattern is None:
        return True
    if pattern == "default" or value == "default":
        return pattern == value
    if _GLOB & set(pattern):
        return fnmatchcase(value, pattern)
    want, got = _network(pattern), _network(value)
    if want is None:
        raise ValueError(f"{pattern!r} is not an IP address, a CIDR, 'default' or a glob")
    return got is not None and want == got


def _select(
    diff: StateDiff,
    field: str,
    parse: Callable[[str], T | None],
    keep: Callable[[T], bool],
    node: str | None,
) -> tuple[list[tuple[str, T]], list[str]]:
    """The parsed items of ``field`` on ``node`` (or every node) that ``keep``, and all labels seen."""
    if node is not None and node not in diff.nodes:
        near = did_you_mean(node, diff.nodes, cutoff=0.3)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        raise AssertionError(f"no node {node!r} in the diff (nodes: {', '.join(diff.nodes) or 'none'}){hint}")
    nodes: dict[str, NodeDiff] = {node: diff.nodes[node]} if node is not None else dict(diff.nodes)
    found: list[tuple[str, T]] = []
    seen: list[str] = []
    for name, nd in nodes.items():
        for label in getattr(nd, field):
            seen.append(f"{name}: {label}")
            item = parse(label)
            if item is not None and keep(item):
                found.append((name, item))
    return found, seen


def _check(
    what: str,
    filters: Iterable[tuple[str, object]],
    found: list[tuple[str, T]],
    seen: list[str],
    count: int | None,
    node: str | None,
    verbose: bool | None,
) -> list[tuple[str, T]]:
    if (count is None and found) or (count is not None and len(found) == count):
        return found
    desc = " ".join(f"{k}={v!r}" for k, v in filters if v is not None) or "any"
    on = f"node {node}" if node is not None else "any node"
    want = "at least one" if count is None else f"exactly {count}"
    msg = f"expected {want} {what} matching {desc} on {on}, found {len(found)}"
    if seen:
        msg += f"; {what} on record ({len(seen)}):\n" + short(seen)
    else:
        msg += f"; the diff has no {what} at all"
    full = "\n".join(seen) if len(seen) > 5 else None
    raise fail(msg, full, verbose, what=f"all {what}")


def _links(
    field: str,
    what: str,
    diff: StateDiff,
    name: str | None,
    kind: str | None,
    node: str | None,
    count: int | None,
    verbose: bool | None,
) -> list[tuple[str, Link]]:
    def keep(li: Link) -> bool:
        return _glob(name, li.name) and _glob(kind, li.kind)

    found, seen = _select(diff, field, parse_link, keep, node)
    return _check(what, [("name", name), ("kind", kind)], found, seen, count, node, verbose)


def assert_new_links(
    diff: StateDiff,
    name: str | None = None,
    *,
    kind: str | None = None,
    node: str | None = None,
    count: int | None = None,
    verbose: bool | None = None,
) -> list[tuple[str, Link]]:
    """Links added (``name`` glob, ``kind``: veth, bridge, vxlan, …); returns ``[(node, Link)]``."""
    __tracebackhide__ = True
    return _links("links_added", "new links", diff, name, kind, node, count, verbose)


def assert_removed_links(
    diff: StateDiff,
    name: str | None = None,
    *,
    kind: str | None = None,
    node: str | None = None,
    count: int | None = None,
    verbose: bool | None = None,
) -> list[tuple[str, Link]]:
    """Links removed; as :func:`assert_new_links`."""
    __tracebackhide__ = True
    return _links("links_removed", "removed links", diff, name, kind, node, count, verbose)


def _routes(
    field: str,
    what: str,
    diff: StateDiff,
    dst: str | None,
    via: str | None,
    dev: str | None,
    node: str | None,
    count: int | None,
    verbose: bool | None,
) -> list[tuple[str, Route]]:
    def keep(r: Route) -> bool:
        return _where(dst, r.dst) and (via is None or _where(via, r.via or "")) and _glob(dev, r.dev)

    found, seen = _select(diff, field, parse_route, keep, node)
    return _check(what, [("dst", dst), ("via", via), ("dev", dev)], found, seen, count, node, verbose)


def assert_new_routes(
    diff: StateDiff,
    dst: str | None = None,
    *,
    via: str | None = None,
    dev: str | None = None,
    node: str | None = None,
    count: int | None = None,
    verbose: bool | None = None,
) -> list[tuple[str, Route]]:
    """Routes added (``dst``: CIDR / IP / ``default`` / glob; ``via``: gateway IP; ``dev`` glob)."""
    __tracebackhide__ = True
    return _routes("routes_added", "new routes", diff, dst, via, dev, node, count, verbose)


def assert_removed_routes(
    diff: StateDiff,
    dst: str | None = None,
    *,
    via: str | None = None,
    dev: str | None = None,
    node: str | None = None,
    count: int | None = None,
    verbose: bool | None = None,
) -> list[tuple[str, Route]]:
    """Routes removed; as :func:`assert_new_routes`."""
    __tracebackhide__ = True
    return _routes("routes_removed", "removed routes", diff, dst, via, dev, node, count, verbose)


def _addrs(
    field: str,
    what: str,
    diff: StateDiff,
    address: str | None,
    dev: str | None,
    node: str | None,
    count: int | None,
    verbose: bool | None,
) -> list[tuple[str, Addr]]:
    def keep(a: Addr) -> bool:
        return _where(address, a.address) and _glob(dev, a.dev)

    found, seen = _select(diff, field, parse_addr, keep, node)
    return _check(what, [("address", address), ("dev", dev)], found, seen, count, node, verbose)


def assert_new_addresses(
    diff: StateDiff,
    address: str | None = None,
    *,
    dev: str | None = None,
    node: str | None = None,
    count: int | None = None,
    verbose: bool | None = None,
) -> list[tuple[str, Addr]]:
    """Addresses added (``address``: IP / CIDR / glob; ``dev`` glob)."""
    __tracebackhide__ = True
    return _addrs("addrs_added", "new addresses", diff, address, dev, node, count, verbose)


def assert_removed_addresses(
    diff: StateDiff,
    address: str | None = None,
    *,
    dev: str | None = None,
    node: str | None = None,
    count: int | None = None,
    verbose: bool | None = None,
) -> list[tuple[str, Addr]]:
    """Addresses removed; as :func:`assert_new_addresses`."""
    __tracebackhide__ = True
    return _addrs("addrs_removed", "removed addresses", diff, address, dev, node, count, verbose)
