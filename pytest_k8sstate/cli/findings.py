"""``k8sstate findings cni-table JUNIT.xml… [--write docs/findings.md]``: the side-by-side CNI table of
finding runs (:mod:`pytest_k8sstate.report.cnitable`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ConfigError

__all__ = ["add_cli"]

EXAMPLES = """examples:
  pytest tests/findings/test_f02_pod.py tests/findings/test_f26_cni_footprint.py -k "f02 or bridge" \\
      --k8sstate-provider kind --k8sstate-cni bridge --k8sstate-nodes 1 --junitxml bridge.xml
  k8sstate findings cni-table ptp.xml bridge.xml flannel.xml              # the Markdown on stdout
  k8sstate findings cni-table ptp.xml bridge.xml flannel.xml --write docs/findings.md

One column per CNI × kube-proxy mode, one row per finding that recorded a footprint (the JUnit property
k8sstate_footprint: what the test changed on each node — links, addresses, routes, chains, rules — with
addresses replaced by their role, e.g. <pod IP>, and generated names by patterns, e.g. veth*, CNI-…), then
per column the cluster's create → ready time and the findings passed / skipped / failed. --write replaces
only the text between <!-- cni-table:start --> and <!-- cni-table:end --> in the file.
"""


def _cmd_cni_table(args: argparse.Namespace) -> int:
    from pytest_k8sstate.report.cnitable import read_runs, render_table, replace_between_markers
    from pytest_k8sstate.util.files import atomic_write_text

    table = render_table(read_runs(args.junit))
    if args.write is None:
        sys.stdout.write(table)
        return 0
    path = Path(args.write)
    try:
        document = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--write {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    updated = replace_between_markers(document, table, where=f"--write {path}")
    try:
        atomic_write_text(path, updated)
    except OSError as exc:
        raise ConfigError(f"--write {path}: cannot write it: {exc.strerror or exc}") from None
    print(f"wrote the CNI table of {len(args.junit)} run(s) into {path}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``findings`` (group) with ``cni-table`` on the top-level ``k8sstate`` subparsers."""
    fp = subparsers.add_parser(
        "findings",
        help="tables generated from finding runs (cni-table)",
        description="Tables generated from the JUnit XML of finding runs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = fp.add_subparsers(dest="findings_command", metavar="COMMAND", required=True)
    ct = sub.add_parser(
        "cni-table",
        help="the side-by-side CNI table of runs with different --k8sstate-cni / --k8sstate-proxy-mode",
        description="Read the JUnit XML of finding runs (each with a CNI and proxy mode) and write a "
        "Markdown table: columns CNI × proxy mode, rows the findings whose tests recorded a footprint.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ct.add_argument("junit", nargs="+", metavar="JUNIT.xml", help="pytest --junitxml files ('-' = stdin)")
    ct.add_argument(
        "--write",
        metavar="FILE",
        help="replace the text between <!-- cni-table:start --> and <!-- cni-table:end --> in FILE "
        "(default: print the table)",
    )
    ct.set_defaults(func=_cmd_cni_table)
