"""``k8sstate trace``: follow a new connection through an iptables-save dump or an ``nft -j`` ruleset."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
from fractions import Fraction
from typing import Any, cast

from pytest_k8sstate.errors import ParseError, TraceError
from pytest_k8sstate.util.inputs import read_input

__all__ = ["add_cli"]


def read_text(path: str, what: str = "rule dump") -> str:
    """The text of ``path`` (``-``: stdin), bounded (:func:`~pytest_k8sstate.util.inputs.read_input`:
    a regular file or ``-``, at most ``$K8SSTATE_MAX_INPUT_BYTES``); a ConfigError naming it otherwise."""
    return read_input(path, what).decode("utf-8", errors="replace")


_PORT = re.compile(r"[0-9]{1,5}")


def _dst(text: str) -> tuple[str, int]:
    """``--dst IPv4:PORT``, strictly: ASCII digits only, port 1–65535 (no sign, space or ``_``)."""
    from pytest_k8sstate.trace import parse_hostport

    host, sep, port = text.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise ParseError("--dst", None, "IPv4:PORT such as 10.96.0.10:53", text)
    return parse_hostport(f"{_ipv4(host, '--dst')}:{int(port)}", what="--dst")


def _check_family(dnat: str | None, packet_dst: str, source: str) -> None:
    """An IPv4 packet DNATed to an IPv6 address is a rule set error, not an outcome."""
    if dnat is not None and (dnat.startswith("[") or dnat.count(":") > 1):
        raise TraceError(
            f"{source}: the IPv4 packet to {packet_dst} is DNATed to the IPv6 destination {dnat!r}; "
            "a DNAT cannot change the address family (check the rule's --to-destination / dnat to)"
        )


def _ipv4(text: str, option: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError as exc:
        raise ParseError(option, None, "an IPv4 address such as 10.0.0.1", text) from exc


def _fmt_prob(p: Fraction) -> str:
    s = f"{float(p):.6f}".rstrip("0").rstrip(".")
    if p.denominator <= 1000 and p.denominator != 1:
        s += f" ({p.numerator}/{p.denominator})"
    return s


def _cmd_trace(args: argparse.Namespace) -> int:
    from pytest_k8sstate.trace import Packet, Proto, trace

    # validate the cheap arguments before reading (maybe large) dumps
    host, port = _dst(args.dst)
    kwargs: dict[str, Any] = {"local_ips": frozenset(_ipv4(ip, "--local-ip") for ip in args.local_ip or ())}
    if args.src is not None:
        kwargs["src"] = _ipv4(args.src, "--src")
    ruleset: Any
    if args.iptables_save is not None:
        from pytest_k8sstate.parse.iptables import parse_iptables_save

        src = "<stdin>" if args.iptables_save == "-" else args.iptables_save
        ruleset = parse_iptables_save(read_text(args.iptables_save, "iptables-save dump"), source=src)
    else:
        from pytest_k8sstate.parse.nft import parse_nft_json

        src = "<stdin>" if args.nft_json == "-" else args.nft_json
        ruleset = parse_nft_json(read_text(args.nft_json, "`nft -j list ruleset` dump"), source=src)
    packet = Packet(host, port, cast(Proto, args.proto), **kwargs)
    try:
        result = trace(ruleset, packet)
    except TraceError as exc:  # every trace error names the dump it came from
        if src in str(exc):
            raise
        raise TraceError(f"{src}: {exc}") from exc
    for o in result.outcomes:
        _check_family(o.dnat, f"{packet.dst}:{packet.dport}", src)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    start = "nat OUTPUT (node-local source)" if packet.from_local else "nat PREROUTING"
    print(
        f"packet {packet.proto} {packet.src}:{packet.sport} → {packet.dst}:{packet.dport}, starts in {start}"
    )
    rows = [("PROBABILITY", "DNAT", "MASQUERADE", "VERDICT")]
    for o in result.outcomes:
        rows.append((_fmt_prob(o.probability), o.dnat or "-", "yes" if o.masquerade else "no", o.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if args.paths:
        for o, path in zip(result.outcomes, result.path_examples, strict=False):
            print(f"{o.dnat or '-'} ({o.verdict}): " + " → ".join(path))
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``trace`` on the top-level ``k8sstate`` subparsers."""
    tr = subparsers.add_parser(
        "trace",
        help="trace a new connection through an iptables-save dump or nft -j ruleset",
        description="Follow a packet through kube-proxy-style rules; "
        "prints every outcome with its exact probability.",
    )
    src = tr.add_mutually_exclusive_group(required=True)
    src.add_argument("--iptables-save", metavar="FILE", help="iptables-save output ('-' = stdin)")
    src.add_argument("--nft-json", metavar="FILE", help="`nft -j list ruleset` output ('-' = stdin)")
    tr.add_argument("--dst", required=True, metavar="IP:PORT", help="destination, e.g. 10.96.0.10:53")
    tr.add_argument("--proto", choices=("tcp", "udp", "sctp"), default="tcp")
    tr.add_argument("--src", metavar="IP", help="source address (default: an outside client, 203.0.113.10)")
    tr.add_argument(
        "--local-ip",
        action="extend",
        nargs="+",
        metavar="IP",
        help="the node's own addresses (addrtype LOCAL; a --src among them starts in nat OUTPUT)",
    )
    tr.add_argument("--json", action="store_true", help='print {"outcomes": [...]} as JSON')
    tr.add_argument("--paths", action="store_true", help="also print one rule path per outcome")
    tr.set_defaults(func=_cmd_trace)
