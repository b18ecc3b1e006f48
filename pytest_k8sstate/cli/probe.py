"""``k8sstate probe``: real connections on a cluster (:mod:`pytest_k8sstate.traffic`).

::

    k8sstate probe --cluster N --to NAMESPACE/SERVICE[:PORT]|IP:PORT [--from node/NAME|pod/NAMESPACE/NAME]
                   [--count N] [--timeout S] [--provider P] [--json]

Each connection asks the agnhost ``netexec`` that answers for ``/hostname`` and ``/clientip``; the output
is the split per backend (and refused / timeout / unreachable / error counts), the source addresses each
backend saw and the rate; ``--json`` prints the whole :class:`~pytest_k8sstate.traffic.probe.ProbeResult`.
"""

from __future__ import annotations

import argparse
import json

from pytest_k8sstate.traffic.probe import MAX_COUNT, ProbeResult

__all__ = ["add_cli", "render"]


def render(result: ProbeResult) -> list[str]:
    """Human-readable lines: one per backend/outcome with its share, then the sources seen."""
    n = len(result.connections)
    head = f"{n} connections from {result.source} to {result.target}"
    lines = [f"{head} in {result.seconds:.1f}s ({result.rate:.0f}/s)"]
    clients = result.clients_by_backend()
    for name, count in sorted(result.counts().items(), key=lambda kv: (-kv[1], kv[0])):
        ip = result.backend_ips.get(name)
        seen = clients.get(name)
        extra = (f"  ({ip})" if ip else "") + (f"  saw {', '.join(sorted(seen))}" if seen else "")
        lines.append(f"  {name:<40} {count:6d}  {count / n:7.2%}{extra}")
    return lines


def _kubectl() -> str:
    from pytest_k8sstate.binaries import find_binary

    found = find_binary("kubectl")
    return str(found) if found else "kubectl"


def _cmd_probe(args: argparse.Namespace) -> int:
    from pytest_k8sstate.cli.cluster import find_cluster
    from pytest_k8sstate.traffic.targets import parse_source, parse_target, probe

    to = parse_target(args.to)  # bad input fails before any cluster lookup
    source = parse_source(args.source) if args.source else None
    cluster = find_cluster(args.cluster, args.provider)
    result = probe(cluster, to, source=source, count=args.count, timeout=args.timeout, kubectl=_kubectl())
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    else:
        print("\n".join(render(result)), flush=True)
    return 0


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 < n <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{n} is out of range 1..{MAX_COUNT}")
    return n


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``k8sstate probe``."""
    from pytest_k8sstate.cli.cluster import PROVIDER_CHOICES

    p = subparsers.add_parser(
        "probe",
        help="send real connections to a Service / IP:PORT and report which backend answered",
        description="N real TCP connections from a node or pod; each asks agnhost netexec who answered "
        "(/hostname) and which source it saw (/clientip).",
    )
    p.add_argument("--cluster", required=True, help="cluster name (k8sstate cluster list)")
    p.add_argument("--to", required=True, metavar="NS/NAME[:PORT]|IP:PORT")
    p.add_argument(
        "--from", dest="source", default=None, metavar="node/NAME|pod/NS/NAME", help="default: the first node"
    )
    p.add_argument("--count", type=_count, default=100, metavar="N", help="connections (default 100)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="connect timeout per connection")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default=None)
    p.add_argument("--json", action="store_true", help="print the full result as one JSON line")
    p.set_defaults(func=_cmd_probe)
