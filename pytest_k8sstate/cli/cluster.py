"""``k8sstate cluster …`` / ``k8sstate node exec …`` subcommands and the provider side of ``snapshot``.

The CLI module calls :func:`add_cli(subparsers)`; every subcommand sets ``func(args) -> int``.
Contract spellings::

    k8sstate cluster create --provider local --name N [--nodes K] [--proxy-mode iptables|nftables|ipvs]
        [--ip-family ipv4|ipv6|dual] [--cni ptp|bridge|kindnet]
                            [--kubeconfig PATH] [--version V]
    k8sstate cluster delete --name N [--provider P]
    k8sstate cluster list [--provider P] [--reap]
    k8sstate node exec --cluster N --node NODE [--provider P] -- CMD...
    k8sstate snapshot --cluster N -o FILE        (the ``snapshot`` command calls snapshot_cluster(args))

Errors print one line (``k8sstate: error: …``) and exit 2 for bad input (a malformed file, a bad option)
or a snapshot that captured nothing, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from pytest_k8sstate.cli.main import guard
from pytest_k8sstate.errors import ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.providers.base import CNIS, IP_FAMILIES, PROXY_MODES, Cluster, ClusterSpec, Provider
from pytest_k8sstate.providers.registry import get_provider

__all__ = ["add_cli", "find_cluster", "snapshot_cluster"]

PROVIDER_CHOICES = ("local", "kind", "minikube")
DEFAULT_PROVIDER = "local"


def _providers(name: str | None) -> list[Provider]:
    """The named provider, or every provider that loads here (local first)."""
    if name:
        return [get_provider(name)]
    out: list[Provider] = []
    for n in PROVIDER_CHOICES:
        with contextlib.suppress(K8sStateError, ImportError):
            out.append(get_provider(n))
    return out


def find_cluster(name: str, provider: str | None = None) -> Cluster:
    """Attach to cluster ``name`` of ``provider`` (default: whichever provider has it)."""
    provs = _providers(provider)
    for p in provs:
        try:
            names = p.list()
        except K8sStateError:
            continue
        if name in names:
            return p.get(name)
    where = provider or ", ".join(p.name for p in provs)
    raise ProviderError(
        f"no cluster {name!r} (providers checked: {where}); "
        f"see `k8sstate cluster list` or create it with `k8sstate cluster create --name {name}`"
    )


@guard
def cluster_create(args: argparse.Namespace) -> int:
    spec = ClusterSpec(
        name=args.name,
        nodes=args.nodes,
        proxy_mode=args.proxy_mode,
        ip_family=args.ip_family,
        cni=args.cni,
        version=args.version,
        kubeconfig_out=Path(args.kubeconfig) if args.kubeconfig else None,
        persistent=True,
    )
    prov = get_provider(args.provider, **_provider_options(args))
    prov.check_cni(spec.cni)
    prov.check_ip_family(spec.ip_family)
    cluster = prov.create(spec)
    kubeconfig = spec.kubeconfig_out or cluster.kubeconfig
    print(
        f"cluster {cluster.name!r} ({prov.name}, {len(cluster.nodes)} nodes, kube-proxy {cluster.proxy_mode}"
        f"{'' if spec.ip_family == 'ipv4' else ', ' + spec.ip_family})"
    )
    print(f"  export KUBECONFIG={kubeconfig}")
    print(f"  k8sstate node exec --cluster {cluster.name} --node {cluster.nodes[0].name} -- ip -br addr")
    print(f"  k8sstate cluster delete --name {cluster.name}")
    return 0


def _provider_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--kind-*`` / ``--minikube-*`` as keyword options of the provider (an error for another one)."""
    given = {
        ("kind", "config_file"): Path(args.kind_config) if args.kind_config else None,
        ("kind", "image"): args.kind_image,
        ("minikube", "driver"): args.minikube_driver,
        ("minikube", "cni"): args.minikube_cni,
        ("minikube", "cpus"): args.minikube_cpus,
        ("minikube", "memory"): args.minikube_memory,
    }
    out: dict[str, Any] = {}
    for (provider, name), value in given.items():
        if value is None:
            continue
        flag = f"--{provider}-{'config' if name == 'config_file' else name}"
        if provider != args.provider:
            raise ConfigError(f"{flag} is an option of --provider {provider}, not {args.provider}")
        if name == "config_file" and not value.is_file():
            raise ConfigError(f"{flag} {value}: no such file; give a kind Cluster config (YAML)")
        out[name] = value
    return out


@guard
def cluster_delete(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    for p in _providers(args.provider):
        try:
            names = p.list()
        except K8sStateError:
            continue
        if args.name in names:
            p.delete(args.name)
            print(f"deleted cluster {args.name!r} ({p.name}, {time.monotonic() - t0:.1f}s)")
            return 0
    print(f"no cluster {args.name!r}; nothing to delete", file=sys.stderr)
    return 0


def _names(p: Provider) -> list[str]:
    """The provider's clusters, without side effects: ``local``'s ``list()`` reaps leftovers of dead
    sessions first, so its state directory is read directly."""
    if p.name == "local":
        from pytest_k8sstate.providers.local import state as local_state

        return [st.name for st in local_state.all_states()]
    return p.list()


def _reap(p: Provider) -> list[str]:
    """Delete the clusters of ``p`` left behind by test sessions that are gone; their names."""
    if p.name == "local":
        from pytest_k8sstate.providers.local.reaper import reap

        return reap()
    reap_method = getattr(p, "reap", None)
    return list(reap_method()) if callable(reap_method) else []


@guard
def cluster_list(args: argparse.Namespace) -> int:
    rows: list[tuple[str, str]] = []
    for p in _providers(args.provider):
        try:
            if args.reap:
                for name in _reap(p):
                    print(f"reaped {name!r} ({p.name}): its test session is gone", file=sys.stderr)
            names = _names(p)
        except K8sStateError as exc:
            if args.provider:  # asked for explicitly: say why it cannot list
                print(f"k8sstate: {p.name}: {exc}", file=sys.stderr)
            continue
        rows.extend((n, p.name) for n in names)
    if not rows:
        where = args.provider or ", ".join(PROVIDER_CHOICES)
        print(f"no clusters ({where})")
        return 0
    width = max(len(n) for n, _ in rows)
    for n, prov in rows:
        print(f"{n:<{width}}  {prov}")
    return 0


@guard
def node_exec(args: argparse.Namespace) -> int:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError(
            "node exec: no command given; usage: k8sstate node exec --cluster N --node NODE -- CMD..."
        )
    cluster = find_cluster(args.cluster, args.provider)
    node = cluster.node(args.node)
    res = node.exec.run(cmd, timeout=args.timeout, check=False)
    sys.stdout.buffer.write(res.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(res.stderr)
    sys.stderr.flush()
    return res.returncode


def snapshot_cluster(args: argparse.Namespace) -> int:
    """``k8sstate snapshot --cluster N -o FILE [--label L] [--include-secrets] [--provider P]``."""

    from pytest_k8sstate.cli.state import check_captured, warn_partial

    @guard
    def run(a: argparse.Namespace) -> int:
        out = getattr(a, "output", None) or getattr(a, "o", None)
        if not out:
            raise ConfigError("snapshot --cluster needs -o FILE")
        cluster = find_cluster(a.cluster, getattr(a, "provider", None))
        t0 = time.monotonic()
        snap = cluster.snapshot(
            getattr(a, "label", None) or "snapshot",
            include_secrets=bool(getattr(a, "include_secrets", False)),
        )
        check_captured(snap)
        snap.save(Path(out))
        warn_partial(snap)
        keys = len(snap.etcd.entries) if snap.etcd is not None else 0
        print(
            f"snapshot of {cluster.name!r}: {keys} etcd keys, {len(snap.nodes)} nodes "
            f"({time.monotonic() - t0:.2f}s) -> {out}"
        )
        return 0

    return run(args)


def add_cli(subparsers: Any) -> None:
    """Register ``cluster`` and ``node`` on the top-level ``k8sstate`` subparsers."""
    cl = subparsers.add_parser("cluster", help="create, delete and list test clusters")
    csub = cl.add_subparsers(dest="cluster_command", metavar="{create,delete,list}")
    csub.required = True

    c = csub.add_parser(
        "create",
        help="create a cluster and wait until it is ready",
        epilog="examples:\n"
        "  k8sstate cluster create --name dev                       # local: root, real control plane\n"
        "  k8sstate cluster create --name dev --nodes 1 --proxy-mode nftables\n"
        "  k8sstate cluster create --provider kind --name kdev --cni ptp\n"
        "  k8sstate cluster create --name dual --nodes 1 --ip-family dual   # IPv4 + IPv6 Services and pods\n"
        "  k8sstate cluster create --provider kind --name kdev --kind-config kind.yaml "
        "--kind-image kindest/node:v1.37.1\n"
        "  k8sstate cluster create --provider minikube --name mk --minikube-cpus 2 --minikube-memory 4g",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--provider", choices=PROVIDER_CHOICES, default=DEFAULT_PROVIDER)
    c.add_argument("--name", required=True, help="cluster name (1-32 of a-z, 0-9, '-')")
    c.add_argument("--nodes", type=int, default=2, help="worker nodes besides the control plane (default 2)")
    c.add_argument("--proxy-mode", choices=PROXY_MODES, default="iptables", help="kube-proxy mode")
    c.add_argument(
        "--ip-family",
        choices=IP_FAMILIES,
        default="ipv4",
        help="ipv4, ipv6 (IPv6 only) or dual (dual-stack, IPv4 primary); local and kind (default ipv4)",
    )
    c.add_argument(
        "--cni",
        choices=CNIS,
        default=None,
        help="pod network (kind: ptp, bridge or kindnet; default: the node image's own; local has none)",
    )
    c.add_argument("--kubeconfig", help="also write the admin kubeconfig to PATH")
    c.add_argument("--version", help="Kubernetes version (default: the pinned one)")
    c.add_argument("--kind-config", metavar="FILE", help="kind: your kind Cluster config, merged in")
    c.add_argument("--kind-image", metavar="TAG", help="kind: node image (default $K8SSTATE_KIND_IMAGE)")
    c.add_argument("--minikube-driver", metavar="DRIVER", help="minikube: --driver (default docker)")
    c.add_argument("--minikube-cni", metavar="CNI", help="minikube: --cni")
    c.add_argument("--minikube-cpus", metavar="N", type=int, help="minikube: --cpus")
    c.add_argument("--minikube-memory", metavar="SIZE", help="minikube: --memory (e.g. 4g)")
    c.set_defaults(func=cluster_create)

    d = csub.add_parser(
        "delete",
        help="delete a cluster and everything it left",
        epilog="examples:\n  k8sstate cluster delete --name dev",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--name", required=True)
    d.add_argument("--provider", choices=PROVIDER_CHOICES, default=None)
    d.set_defaults(func=cluster_delete)

    ls = csub.add_parser(
        "list",
        help="list clusters",
        epilog="examples:\n  k8sstate cluster list\n  k8sstate cluster list --provider kind --reap",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("--provider", choices=PROVIDER_CHOICES, default=None)
    ls.add_argument(
        "--reap", action="store_true", help="first delete clusters left behind by test sessions that are gone"
    )
    ls.set_defaults(func=cluster_list)

    nd = subparsers.add_parser("node", help="run commands on a cluster node")
    nsub = nd.add_subparsers(dest="node_command", metavar="{exec}")
    nsub.required = True
    e = nsub.add_parser(
        "exec",
        help="run CMD in the node's context (local: its network namespace)",
        epilog="examples:\n"
        "  k8sstate node exec --cluster dev --node dev-worker -- iptables-save -t nat\n"
        "  k8sstate node exec --cluster dev --node dev-control-plane -- ip -br addr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--cluster", required=True)
    e.add_argument("--node", required=True)
    e.add_argument("--provider", choices=PROVIDER_CHOICES, default=None)
    e.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    e.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    e.set_defaults(func=node_exec)
