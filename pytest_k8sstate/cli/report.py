"""``k8sstate report BEFORE AFTER -o diff.html``: the standalone HTML report of two snapshots
(:mod:`pytest_k8sstate.report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ConfigError

__all__ = ["add_cli"]

EXAMPLES = """examples:
  k8sstate report before.json after.json -o diff.html
  k8sstate report before.json after.json -o diff.html --namespace default
  k8sstate report before.json after.json -o - --node kind-worker --title "scale web to 3" > diff.html

The file is self-contained (inline CSS and SVG, no script, no network access when opened): etcd keys
added/removed/modified as a tree with old → new values, and per changed Service its kube-proxy path per
node (chains, rule probabilities, shares) with the traced outcome distribution.
"""


def _cmd_report(args: argparse.Namespace) -> int:
    from pytest_k8sstate.report import render_report
    from pytest_k8sstate.state import Snapshot
    from pytest_k8sstate.state.filters import Scope, parse_patterns
    from pytest_k8sstate.util.files import atomic_write_text

    out = str(args.output)
    if out != "-" and Path(out).is_dir():
        raise ConfigError(f"-o {out}: is a directory; give a file name such as {Path(out) / 'diff.html'}")
    if out != "-" and not Path(out).parent.is_dir():
        raise ConfigError(f"-o {out}: the directory {Path(out).parent} does not exist; create it first")
    scope = Scope(
        namespaces=parse_patterns(args.namespace),
        kinds=parse_patterns(args.kind),
        nodes=parse_patterns(args.node),
    )
    before = Snapshot.load(args.before)
    after = Snapshot.load(args.after)
    text = render_report(before, after, scope=scope, title=args.title)
    if out == "-":
        sys.stdout.write(text)
        return 0
    try:
        atomic_write_text(Path(out), text)
    except OSError as exc:
        raise ConfigError(f"-o {out}: cannot write the report: {exc.strerror or exc}") from None
    print(f"wrote {out}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``report`` on the top-level ``k8sstate`` subparsers."""
    rp = subparsers.add_parser(
        "report",
        help="write a standalone HTML report of two snapshots",
        description="An HTML page of what changed from BEFORE to AFTER: the etcd changes as a tree with "
        "old → new values, and for each changed Service a graph of its kube-proxy path per node with the "
        "traced outcome distribution.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("before", metavar="BEFORE.json")
    rp.add_argument("after", metavar="AFTER.json")
    rp.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file ('-' = stdout)")
    rp.add_argument("--title", metavar="TEXT", help="the page title (default: 'k8sstate: BEFORE → AFTER')")
    g = rp.add_argument_group("filters (repeat or comma-separate values)")
    g.add_argument("--namespace", "-n", action="append", metavar="NS", help="etcd keys / Services in NS")
    g.add_argument("--kind", action="append", metavar="KIND", help="Deployment, deployments, services, ...")
    g.add_argument("--node", action="append", metavar="NAME", help="node name (glob)")
    rp.set_defaults(func=_cmd_report)
