"""``k8sstate``: the one command-line entry point — parser assembly and one-line error handling.

Each command group lives in its own module with ``add_cli(subparsers)``: :mod:`~pytest_k8sstate.cli.trace`
(trace), :mod:`~pytest_k8sstate.cli.state` (diff, show, snapshot), then the modules in :data:`EXTENSIONS`
(binaries, cluster/node, …). Every sub-command sets ``func(args) -> int`` with ``set_defaults``;
:func:`main` runs it. A bare ``k8sstate`` prints the help (with examples); ``--version`` the version.
Any :class:`~pytest_k8sstate.errors.K8sStateError` (malformed input included) exits 2
with one line ``k8sstate: error: <message>`` on stderr and no traceback; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from pytest_k8sstate.errors import CaptureError, ConfigError, K8sStateError, ParseError

__all__ = ["build_parser", "guard", "main", "one_line", "print_error"]

PROG = "k8sstate"

# the command groups of this package, in help order
CORE = ("pytest_k8sstate.cli.trace", "pytest_k8sstate.cli.state")
# modules that add their own sub-command groups: ``add_cli(subparsers)``
EXTENSIONS = (
    "pytest_k8sstate.cli.binaries",
    "pytest_k8sstate.cli.cluster",
    "pytest_k8sstate.cli.pool",
    "pytest_k8sstate.cli.image",
    "pytest_k8sstate.cli.probe",
    "pytest_k8sstate.cli.report",
    "pytest_k8sstate.cli.findings",
)

Handler = Callable[[argparse.Namespace], int]

GROUPS = ("cluster", "node", "pool", "binaries", "image", "findings")
"""Commands that only group sub-commands: alone, they print their help."""


EXAMPLES = """examples:
  k8sstate cluster create --name dev                 # a local cluster (root), or --provider kind
  k8sstate snapshot --cluster dev -o before.json
  kubectl apply -f web.yaml
  k8sstate snapshot --cluster dev -o after.json
  k8sstate diff before.json after.json               # what the apply changed, with old → new values
  k8sstate trace --snapshot after.json --node dev-worker --service default/web
  k8sstate show after.json --key deployments/default/web
  k8sstate report before.json after.json -o diff.html  # the same diff as an HTML page with Service graphs

`k8sstate COMMAND --help` shows each command's options and examples.
"""


def version() -> str:
    """The version of the code that runs: the package's ``__version__`` (a checkout on ``PYTHONPATH``
    included), else the installed distribution's."""
    own = getattr(sys.modules.get("pytest_k8sstate"), "__version__", None)
    if isinstance(own, str):
        return own
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pytest-k8sstate")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Capture, diff and trace Kubernetes cluster state (etcd + node netfilter).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for modname in (*CORE, *EXTENSIONS):
        importlib.import_module(modname).add_cli(sub)
    return parser


MAX_ERROR_LINE = 1000
"""Characters of an error message printed (a 10 MB chain name must not make a 10 MB error line)."""


def one_line(exc: BaseException) -> str:
    """``exc`` as one bounded line (whitespace runs folded, at most :data:`MAX_ERROR_LINE` characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_ERROR_LINE:
        text = text[: MAX_ERROR_LINE - 40] + f"... ({len(text)} characters)"
    return text


def print_error(exc: BaseException) -> None:
    """The one line every command prints for an error: ``k8sstate: error: <message>``."""
    print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)


def guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command's handler: bad input (a malformed file, a bad option) or nothing captured is one error
    line and exit 2, any other :class:`~pytest_k8sstate.errors.K8sStateError` one line and exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ConfigError, ParseError, CaptureError) as exc:  # bad input / nothing captured
            print_error(exc)
            return 2
        except K8sStateError as exc:
            print_error(exc)
            return 1

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        given = sys.argv[1:] if argv is None else list(argv)
        if not given:  # a bare `k8sstate`: the help
            parser.print_help()
            return 0
        if len(given) == 1 and given[0] in GROUPS:  # `k8sstate cluster`: that group's help
            given = [given[0], "--help"]
        try:
            args = parser.parse_args(given)
        except SystemExit as exc:  # --help, usage errors (argparse already printed)
            return exc.code if isinstance(exc.code, int) else 2
        func: Handler = args.func
        return int(func(args))
    except K8sStateError as exc:
        print_error(exc)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
