"""Conntrack evidence: the kernel's connection tracking entries (the optional ``conntrack`` node part,
see :mod:`pytest_k8sstate.node.conntrack`) show which backend a connection to a Service was DNATed to.

``assert_conntrack_dnat(snapshot, "10.96.5.7", 80, to="10.244.1.4:8080")``: some node has an entry whose
original tuple goes to ``10.96.5.7:80`` and whose reply comes from ``10.244.1.4:8080`` — the DNAT tuple.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_k8sstate.assertions._common import SHORT_LIST, nodes_of
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.conntrack import ConntrackEntry
from pytest_k8sstate.state import Snapshot

__all__ = ["assert_conntrack_dnat", "conntrack_entries"]


def _hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise ValueError(f"to={text!r}: expected IP or IP:PORT")
        return host, int(port)
    return text, None


def conntrack_entries(
    state: Snapshot | NodeState, node: str | None = None
) -> dict[str, list[ConntrackEntry]]:
    """Node → its captured conntrack entries; AssertionError naming how to capture them when none were."""
    out: dict[str, list[ConntrackEntry]] = {}
    missing: list[str] = []
    for name, ns in nodes_of(state, node).items():
        if ns.conntrack is None:
            why = ns.errors.get("conntrack")
            missing.append(f"{name}{f' ({why})' if why else ''}")
        else:
            out[name] = ns.conntrack
    if not out:
        raise AssertionError(
            f"no conntrack entries captured on {', '.join(missing)}: capture with --k8sstate-conntrack, "
            "@pytest.mark.k8sstate_conntrack or K8SSTATE_CONNTRACK=1"
        )
    return out


def assert_conntrack_dnat(
    state: Snapshot | NodeState,
    service_ip: str,
    port: int,
    *,
    to: str | Iterable[str],
    node: str | None = None,
    src: str | None = None,
    proto: str = "tcp",
) -> list[ConntrackEntry]:
    """Some entry (on ``node``, default any node) of a ``proto`` connection to ``service_ip:port`` (from
    ``src`` when given) was DNATed to ``to`` (``IP`` or ``IP:PORT``, or several: each must appear).

    Returns the matching entries. The failure message lists the entries to the Service that were found,
    with their reply tuples (where they were DNATed to)."""
    targets = [to] if isinstance(to, str) else list(to)
    wanted = [_hostport(t) for t in targets]
    per_node = conntrack_entries(state, node)
    to_service = [
        (name, e)
        for name, entries in per_node.items()
        for e in entries
        if e.proto == proto
        and e.orig.dst == service_ip
        and e.orig.dport == port
        and (src is None or e.orig.src == src)
    ]
    found: list[ConntrackEntry] = []
    missing: list[str] = []
    for target, (ip, tport) in zip(targets, wanted, strict=True):
        hits = [e for _, e in to_service if e.reply.src == ip and (tport is None or e.reply.sport == tport)]
        if hits:
            found.extend(hits)
        else:
            missing.append(target)
    if missing:
        total = sum(len(v) for v in per_node.values())
        shown = [f"  {name}: {e}" for name, e in to_service[:SHORT_LIST]]
        more = len(to_service) - len(shown)
        origin = f" from {src}" if src else ""
        lines = [
            f"no conntrack entry of {proto} {service_ip}:{port}{origin} DNATed to {', '.join(missing)} "
            f"(nodes {', '.join(per_node)}: {total} entries, {len(to_service)} to {service_ip}:{port})",
            *shown,
            *([f"  … and {more} more"] if more > 0 else []),
        ]
        raise AssertionError("\n".join(lines))
    return found
