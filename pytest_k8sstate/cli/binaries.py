"""``k8sstate binaries install|list|path``: the pinned binaries from the command line.

The CLI module calls :func:`add_cli(subparsers)`; every subcommand sets ``func(args) -> int``. Errors print
one line ``k8sstate: error: …`` and exit 2 (bad input, or a binary that is missing and could not be
installed — as the README promises).
"""

from __future__ import annotations

import argparse
import sys
import time

from pytest_k8sstate.binaries import (
    ALL_BINARIES,
    BINARY_COMPONENT,
    COMPONENT_BINARIES,
    DEFAULT_BINARIES,
    Versions,
    ensure_binaries,
    find_binary,
    kwok_stages,
    list_cached,
    normalize_version,
)
from pytest_k8sstate.cli.main import print_error
from pytest_k8sstate.errors import BinaryError, ConfigError
from pytest_k8sstate.util.files import cache_dir

__all__ = ["add_cli"]


def _version_arg(value: str) -> str:
    try:
        return normalize_version(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_version_args(p: argparse.ArgumentParser) -> None:
    for comp in COMPONENT_BINARIES:
        p.add_argument(
            f"--{comp}",
            type=_version_arg,
            default=None,
            metavar="X.Y.Z",
            help=f"{comp} version (default: ${Versions.env_var(comp)} or {getattr(Versions(), comp)})",
        )


def _versions_from(args: argparse.Namespace) -> Versions:
    return Versions.resolve(**{c: getattr(args, c, None) for c in COMPONENT_BINARIES})


def _fail(exc: Exception) -> int:
    print_error(exc)
    return 2


def _cmd_install(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        result = ensure_binaries(
            args.components,
            _versions_from(args),
            progress=lambda line: print(f"[k8sstate] {line}", flush=True),
            download=not args.no_download,
            build=not args.no_build,
        )
        if "kwok" in result.paths:  # the local provider's kwok stages, from the same module
            kwok_stages(_versions_from(args).kwok)
    except (BinaryError, ConfigError) as exc:
        print(f"[k8sstate] failed after {time.monotonic() - t0:.1f}s", flush=True)
        return _fail(exc)
    for name, path in result.paths.items():
        print(f"{name:<24} {path}")
    if "kube-apiserver" in result.paths:  # descriptors for full decoding of etcd values (issue 12)
        from pytest_k8sstate.binaries.versions import staging_version
        from pytest_k8sstate.errors import K8sStateError
        from pytest_k8sstate.etcd.decode.protoschema import ensure_descriptors

        try:
            found = ensure_descriptors(staging_version(_versions_from(args).kubernetes))
            print(f"{'etcd value descriptors':<24} {found}")
        except K8sStateError as exc:
            print(f"[k8sstate] etcd values will be decoded with field numbers: {exc}", flush=True)
    print(f"[k8sstate] {len(result.paths)} binaries ready in {time.monotonic() - t0:.1f}s")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        pinned = _versions_from(args)
    except ConfigError as exc:
        return _fail(exc)
    root = cache_dir()
    print(f"cache: {root}")
    rows = list_cached(root)
    have = {(name, version) for name, _, version, _, _ in rows}
    for name, component, version, path, entry in rows:
        mark = "pinned" if pinned.of(component) == version else ""
        size = path.stat().st_size / 1e6
        print(f"{name:<24} {version:<10} {entry.get('source', '?'):<9} {size:7.1f} MB {mark:<7} {path}")
    for name in DEFAULT_BINARIES:
        version = pinned.of(BINARY_COMPONENT[name])
        if (name, version) not in have:
            print(f"{name:<24} {version:<10} {'missing':<9} {'':>10} pinned  (k8sstate binaries install)")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    try:
        found = find_binary(args.name, _versions_from(args))
    except ConfigError as exc:
        return _fail(exc)
    if found is None:
        print(
            f"k8sstate: error: {args.name} is not in the cache ({cache_dir()}); "
            f"run `k8sstate binaries install --components {args.name}`",
            file=sys.stderr,
        )
        return 2
    print(found)
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``k8sstate binaries install|list|path``; each sub-command sets ``func(args) -> int``."""
    p = subparsers.add_parser(
        "binaries",
        help="pinned Kubernetes, etcd, kwok and kind binaries (install, list, path)",
        description="Install (cache → official download → build via the Go module proxy) or locate binaries.",
    )
    sub = p.add_subparsers(dest="binaries_command", metavar="COMMAND", required=True)

    inst = sub.add_parser("install", help="install the pinned binaries (on demand it happens automatically)")
    _add_version_args(inst)
    inst.add_argument(
        "--components",
        action="append",
        default=None,
        metavar="NAMES",
        help=f"comma-separated binaries or groups ({', '.join(COMPONENT_BINARIES)}, all); "
        f"default: {', '.join(DEFAULT_BINARIES)}",
    )
    inst.add_argument(
        "--no-build", action="store_true", help="fail instead of building from the Go module proxy"
    )
    inst.add_argument("--no-download", action="store_true", help="skip the official downloads")
    inst.set_defaults(func=_cmd_install)

    lst = sub.add_parser("list", help="list cached binaries and which pinned ones are missing")
    _add_version_args(lst)
    lst.set_defaults(func=_cmd_list)

    path = sub.add_parser("path", help="print the cached path of a binary (exit 2 when not installed)")
    path.add_argument("name", choices=ALL_BINARIES, metavar="NAME", help=", ".join(ALL_BINARIES))
    _add_version_args(path)
    path.set_defaults(func=_cmd_path)
