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
    from pytest_k8sstate.node.capture import NodeState
    from pytest_k8sstate.state import Snapshot
    from pytest_k8sstate.state.filters import Scope

__all__ = [
    "add_cli",
    "chain_lines",
    "check_captured",
    "decoded_object",
    "filtered_summary",
    "node_state",
    "warn_partial",
]

_NETNS_DIR = Path("/run/netns")


def _scope(args: argparse.Namespace) -> Scope:
    """The ``--namespace/--kind/--key/--node/--etcd-only/--nodes-only`` filters of diff and show."""
    from pytest_k8sstate.state.filters import Scope, parse_patterns

    return Scope(
        namespaces=parse_patterns(args.namespace),
        kinds=parse_patterns(args.kind),
        keys=parse_patterns(args.key),
        nodes=parse_patterns(args.node),
        etcd=not args.nodes_only,
        node_state=not args.etcd_only,
    )


def _limit(args: argparse.Namespace) -> int | None:
    return None if args.limit == 0 else int(args.limit)


def _emit(text: str, args: argparse.Namespace) -> None:
    from pytest_k8sstate.cli.style import colorize, use_color

    print(colorize(text) if use_color(args.color) else text)


def _cmd_diff(args: argparse.Namespace) -> int:
    from pytest_k8sstate.state import Snapshot
    from pytest_k8sstate.state.filters import filter_diff

    scope = _scope(args)
    before = Snapshot.load(args.before)
    after = Snapshot.load(args.after)
    diff = filter_diff(before.diff(after), scope)
    if args.json:
        print(json.dumps(diff.to_json(full=args.all)))
    else:
        _emit(diff.summary(full=args.all, limit=_limit(args), raw_rules=args.rules), args)
    changed = bool(diff if args.all else diff.view())
    return 1 if args.exit_code and changed else 0


_GLOB = frozenset("*?[")


def _cmd_show(args: argparse.Namespace) -> int:
    from pytest_k8sstate.state import Snapshot

    snap = Snapshot.load(args.snapshot)
    if args.chain:
        print("\n".join(chain_lines(snap, args.chain, args.node)))
        return 0
    keys = args.key or []
    if len(keys) == 1 and not _GLOB & set(keys[0]) and "," not in keys[0]:
        print(json.dumps(decoded_object(snap, keys[0]), indent=2, ensure_ascii=False))
        return 0
    scope = _scope(args)
    if scope == type(scope)():  # no filter: the summary as before
        print(snap.summary())
        return 0
    print(filtered_summary(snap, scope, _limit(args)))
    return 0


def node_state(snap: Snapshot, node: list[str] | None) -> tuple[str, NodeState]:
    """The one node ``--node`` names (or the only node of the snapshot)."""
    names = list(snap.nodes)
    wanted = [n for v in node or () for n in v.split(",") if n]
    if not wanted:
        if len(names) == 1:
            return names[0], snap.nodes[names[0]]
        raise ConfigError(
            f"the snapshot has {len(names)} nodes; pick one with --node NAME ({', '.join(names) or 'none'})"
        )
    if len(wanted) > 1 or wanted[0] not in snap.nodes:
        raise ConfigError(
            f"--node {','.join(wanted)}: not one node of the snapshot; it has {', '.join(names) or 'none'}"
        )
    return wanted[0], snap.nodes[wanted[0]]


def decoded_object(snap: Snapshot, key: str) -> dict[str, Any]:
    """``show --key K``: the decoded object of one key, as JSON (what ``kubectl get -o json`` would show,
    as far as the decoder names the fields), or a ConfigError naming near keys."""
    from pytest_k8sstate.state.keys import REGISTRY_PREFIX

    if snap.etcd is None:
        raise ConfigError(f"--key {key}: the snapshot has no etcd capture")
    full = key if key.startswith("/") else REGISTRY_PREFIX + key
    entry = snap.etcd.entries.get(full)
    if entry is None:
        import difflib

        near = []
        if len(full) <= 512:  # a near key is worth a look; a 1 MB argument is not compared with every key
            near = difflib.get_close_matches(full, list(snap.etcd.entries), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(near)}?" if near else "; list keys with --key 'GLOB*'"
        raise ConfigError(f"--key {key}: no such key in the snapshot{hint}")
    d = entry.decoded
    if d.fields is not None:
        return d.fields
    why = d.error or (
        "Secret values are not captured (snapshot --include-secrets keeps them)"
        if full.startswith("/registry/secrets/")
        else f"{d.encoding} value"
    )
    return {"key": full, "decoded": d.to_json(), "note": f"value not decoded: {why}"}


def chain_lines(snap: Snapshot, spec: str, node: list[str] | None) -> list[str]:
    """``show --chain TABLE/CHAIN``: one chain of one node, as ``iptables-save`` or ``nft list`` prints it.

    TABLE is an iptables table (``nat``) or an nft table (``kube-proxy``, ``ip6 kube-proxy``,
    ``ip6:kube-proxy``); CHAIN is everything after the first ``/`` (nft chain names contain ``/``)."""
    table, sep, chain = spec.partition("/")
    if not sep or not table or not chain:
        raise ConfigError(
            f"--chain {spec}: expected TABLE/CHAIN, e.g. nat/KUBE-SERVICES or kube-proxy/services"
        )
    name, ns = node_state(snap, node)
    fam, _, tname = table.replace(":", " ").rpartition(" ")
    part, what = ns.iptables, "iptables"
    if ns.nft is not None and (fam or "ip", tname) in ns.nft.omitted:
        # left out of the nft part (node/nftomit.py): the same rules, in that family's iptables part
        part, what, table = (ns.ip6tables, "ip6tables", tname) if fam == "ip6" else (ns.iptables, what, tname)
    if part is not None and table in part.tables:
        t = part.tables[table]
        c = t.chains.get(chain)
        if c is None:
            raise ConfigError(
                f"--chain {spec}: no chain {chain!r} in {what} table {table} of node {name} "
                f"({len(t.chains)} chains, e.g. {', '.join(list(t.chains)[:5])})"
            )
        head = f":{chain} {c.policy or '-'}"
        return [f"# node {name}, {what} table {table}", head, *(f"-A {chain} {r.spec}" for r in c.rules)]
    if ns.nft is not None:
        found = [t for (f, n), t in ns.nft.tables.items() if n == tname and (not fam or f == fam)]
        if len(found) > 1:
            fams = ", ".join(f"{t.family} {t.name}" for t in found)
            raise ConfigError(
                f"--chain {spec}: several nft tables are called {tname} ({fams}); name the family"
            )
        if found:
            nt = found[0]
            nc = nt.chains.get(chain)
            if nc is None:
                raise ConfigError(
                    f"--chain {spec}: no chain {chain!r} in nft table {nt.family} {nt.name} of node {name} "
                    f"({len(nt.chains)} chains, e.g. {', '.join(list(nt.chains)[:5])})"
                )
            return [
                f"# node {name}, nft table {nt.family} {nt.name}",
                f"chain {chain} {{",
                *(f"\t{r.text}" for r in nc.rules),
                "}",
            ]
    have = sorted(ns.iptables.tables) if ns.iptables is not None else []
    have += [f"{f} {n}" for f, n in ns.nft.tables] if ns.nft is not None else []
    raise ConfigError(
        f"--chain {spec}: node {name} has no table {table!r} (it has {', '.join(have) or 'none'})"
    )


def filtered_summary(snap: Snapshot, scope: Scope, limit: int | None) -> str:
    """``show`` with filters: the summary of the matching keys and nodes, then the keys themselves."""
    import dataclasses

    from pytest_k8sstate.state.filters import select_keys
    from pytest_k8sstate.state.render import cap

    etcd = snap.etcd
    keys: list[str] = []
    if etcd is not None and scope.etcd:
        keys = sorted(select_keys(etcd.entries, scope))
        etcd = dataclasses.replace(etcd, entries={k: etcd.entries[k] for k in keys})
    elif not scope.etcd:
        etcd = None
    nodes = {n: s for n, s in snap.nodes.items() if scope.node_state and scope.node_ok(n)}
    part = dataclasses.replace(snap, etcd=etcd, nodes=nodes)
    lines = part.summary().splitlines()
    if keys:
        lines.append("keys:")
        for k in cap(keys, limit):
            e = etcd.entries.get(k) if etcd is not None else None
            kind = e.decoded.kind if e is not None and e.decoded.kind else ""
            lines.append(f"  {k}" + (f"  [{kind}]" if kind else ""))
    elif scope.etcd and scope.narrows_etcd:
        lines.append("no etcd key matches the filters")
    return "\n".join(lines)


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


DIFF_EXAMPLES = """examples:
  k8sstate diff before.json after.json
  k8sstate diff before.json after.json --namespace default --kind Deployment,Service
  k8sstate diff before.json after.json --key 'services/**' --node kind-worker
  k8sstate diff before.json after.json --exit-code > /dev/null || echo "state changed"
  k8sstate diff before.json after.json --all --limit 0 --rules   # everything, leases and raw rules too
  k8sstate diff before.json after.json --json | jq '.etcd.modified'
"""

SHOW_EXAMPLES = """examples:
  k8sstate show after.json
  k8sstate show after.json --namespace default --kind ConfigMap,Deployment
  k8sstate show after.json --key deployments/default/web          # one decoded object as JSON
  k8sstate show after.json --chain nat/KUBE-SERVICES --node kind-worker
  k8sstate show after.json --chain kube-proxy/services --node node-1   # nft table kube-proxy
"""

SNAPSHOT_EXAMPLES = """examples:
  k8sstate snapshot --cluster dev -o before.json
  k8sstate snapshot --netns k8ss-node1 --netns k8ss-node2 -o nodes.json.gz
  k8sstate snapshot --etcd-endpoint https://127.0.0.1:2379 --etcd-ca ca.crt --etcd-cert client.crt \\
      --etcd-key client.key -o etcd.json
"""


def _add_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (repeat or comma-separate values)")
    g.add_argument("--namespace", "-n", action="append", metavar="NS", help="etcd keys / Services in NS")
    g.add_argument("--kind", action="append", metavar="KIND", help="Deployment, deployments, services, ...")
    g.add_argument(
        "--key",
        action="append",
        metavar="GLOB",
        help="etcd key glob ('*' one segment, '**' any; relative to /registry/)",
    )
    g.add_argument("--node", action="append", metavar="NAME", help="node name (glob)")
    only = g.add_mutually_exclusive_group()
    only.add_argument("--etcd-only", action="store_true", help="leave node state out")
    only.add_argument("--nodes-only", action="store_true", help="leave etcd out")
    p.add_argument(
        "--limit",
        type=_count,
        default=40,
        metavar="N",
        help="lines per section, then '... and N more' (default 40; 0 = no limit)",
    )


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of lines (0 = no limit)")
    return int(text)


def add_cli(subparsers: Any) -> None:
    """Register ``diff``, ``show`` and ``snapshot`` on the top-level ``k8sstate`` subparsers."""
    from pytest_k8sstate.cli.style import COLOR_CHOICES

    fmt = argparse.RawDescriptionHelpFormatter
    df = subparsers.add_parser(
        "diff",
        help="diff two snapshots",
        description="What changed from BEFORE to AFTER: etcd keys added/removed/modified (with old → new "
        "values), and per node kube-proxy's changes per Service (endpoints 3 → 2, ...) and other rules.",
        epilog=DIFF_EXAMPLES,
        formatter_class=fmt,
    )
    df.add_argument("before", metavar="BEFORE.json")
    df.add_argument("after", metavar="AFTER.json")
    df.add_argument("--json", action="store_true", help="machine-readable diff")
    df.add_argument(
        "--all",
        action="store_true",
        help="include keys hidden by the default ignore patterns (leases, events, ...)",
    )
    df.add_argument("--rules", action="store_true", help="every rule change on its own line (no summaries)")
    df.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when there are differences, 0 when none (like git diff)",
    )
    df.add_argument("--color", choices=COLOR_CHOICES, default="auto", help="colour (default: on a terminal)")
    _add_filters(df)
    df.set_defaults(func=_cmd_diff)

    sh = subparsers.add_parser(
        "show",
        help="summarise a snapshot, print one object or one chain",
        description="Revision, key counts, per-node rules; with filters the matching keys; --key KEY "
        "prints one decoded object as JSON; --chain TABLE/CHAIN one chain of a node.",
        epilog=SHOW_EXAMPLES,
        formatter_class=fmt,
    )
    sh.add_argument("snapshot", metavar="SNAPSHOT.json")
    sh.add_argument("--chain", metavar="TABLE/CHAIN", help="print one chain (with --node when several)")
    _add_filters(sh)
    sh.set_defaults(func=_cmd_show)

    sn = subparsers.add_parser(
        "snapshot",
        help="capture a snapshot from an etcd endpoint and/or network namespaces",
        description="Capture etcd (TLS client certificate) and/or node state of the current or named "
        "network namespaces into a JSON file (atomic write; '.gz' compresses).",
        epilog=SNAPSHOT_EXAMPLES,
        formatter_class=fmt,
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
