"""``k8sstate diff|show|snapshot``: snapshots as files — capture one, summarise one, diff two.

``snapshot --cluster NAME`` captures a cluster made by ``k8sstate cluster create`` (see
:func:`pytest_k8sstate.cli.cluster.snapshot_cluster`); otherwise an etcd endpoint and/or network namespaces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.errors import CaptureError, ConfigError

if TYPE_CHECKING:
    from pytest_k8sstate.state import Snapshot

__all__ = ["add_cli", "check_captured", "warn_partial"]

_NETNS_DIR = Path("/run/netns")


def _cmd_diff(args: argparse.Namespace) -> int:
    from pytest_k8sstate.state import Snapshot

    before = Snapshot.load(args.before)
    after = Snapshot.load(args.after)
    diff = before.diff(after)
    if args.json:
        print(json.dumps(diff.to_json(full=args.all)))
    else:
        print(diff.summary(full=args.all, limit=None if args.all else 40))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from pytest_k8sstate.state import Snapshot

    print(Snapshot.load(args.snapshot).summary())
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from pytest_k8sstate.etcd.target import EtcdTarget
    from pytest_k8sstate.node.exec import LocalExec, NetnsExec, NodeExec
    from pytest_k8sstate.state import Snapshot

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
    for name in args.netns or ():
        if not _netns_exists(name):
            raise ConfigError(
                f"--netns {name}: no such network namespace (not in {_NETNS_DIR}); `ip netns list` shows them"
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
    check_captured(snap)
    path = snap.save(args.output)
    n_keys = len(snap.etcd.entries) if snap.etcd is not None else 0
    print(f"wrote {path}: {n_keys} etcd keys, {len(snap.nodes)} node(s)")
    warn_partial(snap)
    return 0


def _netns_exists(name: str) -> bool:
    """``ip netns add NAME`` made ``/run/netns/NAME`` (a plain file name: no ``/``, at most 255 bytes)."""
    if (
        not name
        or "/" in name
        or name in (".", "..")
        or "\0" in name
        or len(name.encode(errors="replace")) > 255
    ):
        return False
    try:
        return (_NETNS_DIR / name).exists()
    except OSError:
        return False


def check_captured(snap: Snapshot) -> None:
    """A node of which every part failed is an error (nothing is written): one line naming the node."""
    for name, ns in snap.nodes.items():
        if ns.captured_nothing():
            first = next(iter(ns.errors.values()))
            raise CaptureError(f"node {name}: nothing captured (every part failed); first error: {first}")


def warn_partial(snap: Snapshot) -> None:
    """One warning line per part that failed on a node whose other parts were captured."""
    for name, ns in snap.nodes.items():
        for part, err in (ns.errors or {}).items():
            print(f"warning: node {name}: {part} not captured: {err}", file=sys.stderr)


def add_cli(subparsers: Any) -> None:
    """Register ``diff``, ``show`` and ``snapshot`` on the top-level ``k8sstate`` subparsers."""
    df = subparsers.add_parser(
        "diff", help="diff two snapshots", description="What changed from BEFORE to AFTER."
    )
    df.add_argument("before", metavar="BEFORE.json")
    df.add_argument("after", metavar="AFTER.json")
    df.add_argument("--json", action="store_true", help="machine-readable diff")
    df.add_argument(
        "--all",
        action="store_true",
        help="include keys hidden by the default ignore patterns (leases, events, ...)",
    )
    df.set_defaults(func=_cmd_diff)

    sh = subparsers.add_parser(
        "show", help="summarise a snapshot", description="Revision, key counts, per-node rules."
    )
    sh.add_argument("snapshot", metavar="SNAPSHOT.json")
    sh.set_defaults(func=_cmd_show)

    sn = subparsers.add_parser(
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
