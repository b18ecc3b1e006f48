"""``k8sstate trace``: follow a new connection through an iptables-save dump or an ``nft -j`` ruleset."""

from __future__ import annotations

import argparse
import ipaddress
import json
from fractions import Fraction
from typing import Any, cast

from pytest_k8sstate.errors import ConfigError, ParseError, TraceError
from pytest_k8sstate.util.inputs import read_input

__all__ = ["add_cli"]


def read_text(path: str, what: str = "rule dump") -> str:
    """The text of ``path`` (``-``: stdin), bounded (:func:`~pytest_k8sstate.util.inputs.read_input`:
    a regular file or ``-``, at most ``$K8SSTATE_MAX_INPUT_BYTES``); a ConfigError naming it otherwise."""
    return read_input(path, what).decode("utf-8", errors="replace")


def _dst(text: str) -> tuple[str, int]:
    """``--dst IP:PORT`` (IPv6: ``[addr]:port``), checked by :func:`pytest_k8sstate.trace.parse_hostport`."""
    from pytest_k8sstate.trace import parse_hostport

    return parse_hostport(text, what="--dst")


def _family(addr: str) -> int:
    host = addr.rsplit(":", 1)[0] if addr.startswith("[") or addr.count(":") == 1 else addr
    try:
        return ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return 6 if addr.count(":") > 1 else 4


def _check_family(dnat: str | None, packet_dst: str, source: str) -> None:
    """A packet DNATed to the other address family is a rule set error, not an outcome."""
    if dnat is None:
        return
    want, got = _family(packet_dst), _family(dnat)
    if got != want:
        raise TraceError(
            f"{source}: the IPv{want} packet to {packet_dst} is DNATed to the IPv{got} destination {dnat!r}; "
            "a DNAT cannot change the address family (check the rule's --to-destination / dnat to)"
        )


def _ip(text: str, option: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError as exc:
        raise ParseError(option, None, "an IP address such as 10.0.0.1 or fd00::1", text) from exc


def _fmt_prob(p: Fraction) -> str:
    s = f"{float(p):.6f}".rstrip("0").rstrip(".")
    if p.denominator <= 1000 and p.denominator != 1:
        s += f" ({p.numerator}/{p.denominator})"
    return s


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _from_snapshot(
    args: argparse.Namespace, dst: tuple[str, int] | None
) -> tuple[str, Any, set[str], tuple[str, int]]:
    """(source name, the node's kube-proxy ruleset, the node's own addresses, destination) from
    ``--snapshot F [--node N] [--service ns/name[:port]]``."""
    from pytest_k8sstate.assertions.services import KUBE_PROXY_NFT, resolve_service
    from pytest_k8sstate.cli.state import node_state
    from pytest_k8sstate.state import Snapshot

    snap = Snapshot.load(args.snapshot)
    name, ns = node_state(snap, [args.node] if args.node else None)
    source = f"{args.snapshot} node {name}"
    ruleset: Any
    if ns.nft is not None and any(name == KUBE_PROXY_NFT[1] for _fam, name in ns.nft.tables):
        # kube-proxy's nftables mode: `ip kube-proxy`, `ip6 kube-proxy` or both (dual-stack)
        ruleset = ns.nft
    elif ns.iptables is not None:
        ruleset = ns.iptables
    elif ns.nft is not None:
        ruleset = ns.nft
    else:
        errs = "; ".join(f"{k}: {v}" for k, v in (ns.errors or {}).items()) or "not in the snapshot"
        raise ConfigError(f"{source}: neither iptables nor nft rules were captured ({errs})")
    if args.service is not None:
        try:
            vip = resolve_service(snap, args.service, args.proto, name)
        except ValueError as exc:
            raise ConfigError(f"--service {args.service}: {exc}") from None
        except AssertionError as exc:
            raise ConfigError(f"--service {args.service}: {exc}") from None
        dst = (vip.ip, vip.port)
    assert dst is not None
    return source, ruleset, set(ns.local_ips), dst


def _cmd_trace(args: argparse.Namespace) -> int:
    from pytest_k8sstate.trace import Packet, Proto, trace

    # validate the cheap arguments before reading (maybe large) dumps
    if (args.dst is None) == (args.service is None):
        raise ConfigError("trace: give exactly one of --dst IP:PORT or --service NAMESPACE/NAME[:PORT]")
    if args.service is not None and args.snapshot is None:
        raise ConfigError(
            "trace --service needs --snapshot FILE (the Service is looked up in its rules/etcd)"
        )
    if args.node is not None and args.snapshot is None:
        raise ConfigError("trace --node needs --snapshot FILE")
    dst = _dst(args.dst) if args.dst is not None else None
    local = {_ip(ip, "--local-ip") for ip in args.local_ip or ()}
    kwargs: dict[str, Any] = {}
    if args.src is not None:
        kwargs["src"] = _ip(args.src, "--src")
    ruleset: Any
    if args.snapshot is not None:
        src, ruleset, node_ips, dst = _from_snapshot(args, dst)
        local |= node_ips
    elif args.iptables_save is not None:
        from pytest_k8sstate.parse.iptables import parse_iptables_save

        src = "<stdin>" if args.iptables_save == "-" else args.iptables_save
        ruleset = parse_iptables_save(read_text(args.iptables_save, "iptables-save dump"), source=src)
    else:
        from pytest_k8sstate.parse.nft import parse_nft_json

        src = "<stdin>" if args.nft_json == "-" else args.nft_json
        ruleset = parse_nft_json(read_text(args.nft_json, "`nft -j list ruleset` dump"), source=src)
    assert dst is not None
    packet = Packet(dst[0], dst[1], cast(Proto, args.proto), local_ips=frozenset(local), **kwargs)
    try:
        result = trace(ruleset, packet)
    except TraceError as exc:  # every trace error names the dump it came from
        if src in str(exc):
            raise
        raise TraceError(f"{src}: {exc}") from exc
    shown = _hostport(packet.dst, packet.dport)
    for o in result.outcomes:
        _check_family(o.dnat, shown, src)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    start = "nat OUTPUT (node-local source)" if packet.from_local else "nat PREROUTING"
    print(f"packet {packet.proto} {_hostport(packet.src, packet.sport)} → {shown}, starts in {start}")
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


EXAMPLES = """examples:
  k8sstate trace --snapshot after.json --node kind-worker --service default/web:http
  k8sstate trace --snapshot after.json --node kind-worker --dst 10.96.0.10:80 --json
  k8sstate trace --iptables-save dump.txt --dst 10.96.0.10:80 --paths
  k8sstate trace --iptables-save dump.txt --dst 10.96.0.20:80 --src 10.244.1.2
  iptables-save | k8sstate trace --iptables-save - --dst 10.96.0.1:443
"""


def add_cli(subparsers: Any) -> None:
    """Register ``trace`` on the top-level ``k8sstate`` subparsers."""
    tr = subparsers.add_parser(
        "trace",
        help="trace a new connection through a snapshot's node, an iptables-save dump or nft -j ruleset",
        description="Follow a packet through kube-proxy-style rules; "
        "prints every outcome with its exact probability.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = tr.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--snapshot", metavar="FILE", help="a snapshot (k8sstate snapshot / the plugin's artifacts)"
    )
    src.add_argument("--iptables-save", metavar="FILE", help="iptables-save output ('-' = stdin)")
    src.add_argument("--nft-json", metavar="FILE", help="`nft -j list ruleset` output ('-' = stdin)")
    tr.add_argument("--node", metavar="NAME", help="the snapshot's node (needed when it has several)")
    tr.add_argument("--dst", metavar="IP:PORT", help="destination, e.g. 10.96.0.10:53 or [fd00:10:96::a]:53")
    tr.add_argument(
        "--service",
        metavar="NS/NAME[:PORT]",
        help="destination by Service (with --snapshot): its ClusterIP and port; PORT is a name or number",
    )
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
