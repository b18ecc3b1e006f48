"""``k8sstate`` command line: trace, diff, show, snapshot (+ the sub-commands other modules add).

Every sub-command sets ``func(args) -> int`` with ``set_defaults``; :func:`main` runs it. Any
:class:`~pytest_k8sstate.errors.K8sStateError` (malformed input included) exits 2 with one line
``k8sstate: error: <message>`` on stderr and no traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

from pytest_k8sstate.errors import ConfigError, K8sStateError, ParseError

__all__ = ["build_parser", "main"]

PROG = "k8sstate"

# modules that add their own sub-command groups: ``add_cli(subparsers)``
EXTENSIONS = ("pytest_k8sstate.binaries.install", "pytest_k8sstate.cli.cluster")

Handler = Callable[[argparse.Namespace], int]


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _ipv4(text: str, option: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError as exc:
        raise ParseError(option, None, "an IPv4 address such as 10.0.0.1", text) from exc


# --------------------------------------------------------------------------------------------------
# trace


def _fmt_prob(p: Fraction) -> str:
    s = f"{float(p):.6f}".rstrip("0").rstrip(".")
    if p.denominator <= 1000 and p.denominator != 1:
        s += f" ({p.numerator}/{p.denominator})"
    return s


def _cmd_trace(args: argparse.Namespace) -> int:
    from pytest_k8sstate.trace import Packet, Proto, parse_hostport, trace

    # validate the cheap arguments before reading (maybe large) dumps
    host, port = parse_hostport(args.dst, what="--dst")
    kwargs: dict[str, Any] = {"local_ips": frozenset(_ipv4(ip, "--local-ip") for ip in args.local_ip or ())}
    if args.src is not None:
        kwargs["src"] = _ipv4(args.src, "--src")
    ruleset: Any
    if args.iptables_save is not None:
        from pytest_k8sstate.parse.iptables import parse_iptables_save

        src = "<stdin>" if args.iptables_save == "-" else args.iptables_save
        ruleset = parse_iptables_save(_read_text(args.iptables_save), source=src)
    else:
        from pytest_k8sstate.parse.nft import parse_nft_json

        src = "<stdin>" if args.nft_json == "-" else args.nft_json
        ruleset = parse_nft_json(_read_text(args.nft_json), source=src)
    packet = Packet(host, port, cast(Proto, args.proto), **kwargs)
    result = trace(ruleset, packet)
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


# --------------------------------------------------------------------------------------------------
# diff / show / snapshot


def _cmd_diff(args: argparse.Namespace) -> int:
    from pytest_k8sstate.state.model import Snapshot

    before = Snapshot.load(args.before)
    after = Snapshot.load(args.after)
    diff = before.diff(after)
    if args.json:
        print(json.dumps(diff.to_json(full=args.all)))
    else:
        print(diff.summary(full=args.all, limit=None if args.all else 40))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from pytest_k8sstate.state.model import Snapshot

    print(Snapshot.load(args.snapshot).summary())
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from pytest_k8sstate.etcd.capture import EtcdTarget
    from pytest_k8sstate.node.exec import LocalExec, NetnsExec, NodeExec
    from pytest_k8sstate.state.model import Snapshot

    if args.cluster:
        from pytest_k8sstate.cli.cluster import snapshot_cluster

        return snapshot_cluster(args)
    target = None
    if args.etcd_endpoint:
        tls = [args.etcd_ca, args.etcd_cert, args.etcd_key]
        if any(tls) and not all(tls):
            raise ConfigError(
                "--etcd-ca, --etcd-cert and --etcd-key go together (kubeadm: /etc/kubernetes/pki/...)"
            )
        for f in tls:
            if f and not Path(f).is_file():
                raise ConfigError(f"{f}: no such file (given as an etcd TLS file)")
        target = EtcdTarget(
            endpoints=tuple(args.etcd_endpoint),
            ca=Path(args.etcd_ca) if args.etcd_ca else None,
            cert=Path(args.etcd_cert) if args.etcd_cert else None,
            key=Path(args.etcd_key) if args.etcd_key else None,
        )
    nodes: list[NodeExec] = [NetnsExec(name) for name in args.netns or ()]
    if args.local_node:
        nodes.append(LocalExec())
    if target is None and not nodes:
        raise ConfigError(
            "nothing to capture: pass --etcd-endpoint URL (with --etcd-ca/--etcd-cert/--etcd-key) "
            "and/or --netns NAME / --local-node"
        )
    snap = Snapshot.capture(
        args.label,
        etcd=target,
        nodes=nodes,
        cluster={"source": "k8sstate snapshot"},
        include_secrets=args.include_secrets,
        ipvs=not args.no_ipvs,
    )
    path = snap.save(args.output)
    n_keys = len(snap.etcd.entries) if snap.etcd is not None else 0
    print(f"wrote {path}: {n_keys} etcd keys, {len(snap.nodes)} node(s)")
    for name, ns in snap.nodes.items():
        for part, err in (ns.errors or {}).items():
            print(f"warning: node {name}: {part} not captured: {err}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Capture, diff and trace Kubernetes cluster state (etcd + node netfilter).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tr = sub.add_parser(
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

    df = sub.add_parser("diff", help="diff two snapshots", description="What changed from BEFORE to AFTER.")
    df.add_argument("before", metavar="BEFORE.json")
    df.add_argument("after", metavar="AFTER.json")
    df.add_argument("--json", action="store_true", help="machine-readable diff")
    df.add_argument(
        "--all",
        action="store_true",
        help="include keys hidden by the default ignore patterns (leases, events, ...)",
    )
    df.set_defaults(func=_cmd_diff)

    sh = sub.add_parser(
        "show", help="summarise a snapshot", description="Revision, key counts, per-node rules."
    )
    sh.add_argument("snapshot", metavar="SNAPSHOT.json")
    sh.set_defaults(func=_cmd_show)

    sn = sub.add_parser(
        "snapshot",
        help="capture a snapshot from an etcd endpoint and/or network namespaces",
        description="Capture etcd (TLS client certificate) and/or node state of the current or named "
        "network namespaces into a JSON file (atomic write; '.gz' compresses).",
    )
    sn.add_argument("-o", "--output", required=True, metavar="FILE")
    sn.add_argument("--label", default="snapshot")
    sn.add_argument(
        "--cluster", metavar="NAME", help="a cluster made by `k8sstate cluster create` (etcd + every node)"
    )
    sn.add_argument(
        "--provider", choices=("local", "kind", "minikube"), help="the cluster's provider (default: found)"
    )
    sn.add_argument("--etcd-endpoint", action="append", metavar="URL", help="e.g. https://127.0.0.1:2379")
    sn.add_argument("--etcd-ca", metavar="FILE")
    sn.add_argument("--etcd-cert", metavar="FILE")
    sn.add_argument("--etcd-key", metavar="FILE")
    sn.add_argument("--include-secrets", action="store_true", help="keep Secret values (off by default)")
    nodes = sn.add_mutually_exclusive_group()
    nodes.add_argument("--netns", action="extend", nargs="+", metavar="NAME", help="named network namespaces")
    nodes.add_argument("--local-node", action="store_true", help="the current network namespace")
    sn.add_argument("--no-ipvs", action="store_true", help="skip ipvsadm")
    sn.set_defaults(func=_cmd_snapshot)

    for modname in EXTENSIONS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name is not None and modname.startswith(exc.name):
                continue  # that part is not installed / not written yet
            raise
        add_cli = getattr(mod, "add_cli", None)
        if callable(add_cli):
            add_cli(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, usage errors (argparse already printed)
            return exc.code if isinstance(exc.code, int) else 2
        func: Handler = args.func
        return int(func(args))
    except K8sStateError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
