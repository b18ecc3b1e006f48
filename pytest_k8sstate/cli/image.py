"""``k8sstate image …``: the offline kind node image (:mod:`pytest_k8sstate.providers.kind.image`).

::

    k8sstate image build [--workdir DIR] [--kubernetes V] [--default-cni auto|kindnet|k8sstate-node-routes]
                         [--kindnetd PATH] [--coredns PATH] [--crictl PATH]
    k8sstate image rootfs [--workdir DIR]

Both use the engine at ``$DOCKER_HOST`` and print one JSON line on stdout (``build``: ``tag``, ``tarball``,
``seconds``, ``timings``, ``cached``; ``rootfs``: ``timings``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["add_cli"]


def _cmd_build(args: argparse.Namespace) -> int:
    from pytest_k8sstate.providers.kind.image import build
    from pytest_k8sstate.providers.kind.image.builder import stderr_progress
    from pytest_k8sstate.util.progress import progress

    with progress("kind node image", sink=stderr_progress) as live:  # a live line while steps run
        result = build(
            workdir=args.workdir,
            docker_host=os.environ.get("DOCKER_HOST"),
            kubernetes=args.kubernetes,
            kindnetd=args.kindnetd,
            coredns=args.coredns,
            crictl=args.crictl,
            default_cni=args.default_cni,
            progress=live.emit,
        )
    print(json.dumps(result.to_json()), flush=True)
    return 0


def _cmd_rootfs(args: argparse.Namespace) -> int:
    from pytest_k8sstate.providers.kind.image import NodeImageBuilder, default_workdir
    from pytest_k8sstate.providers.kind.image.builder import stderr_progress
    from pytest_k8sstate.util.progress import progress

    with progress("kind node image rootfs", sink=stderr_progress) as live:
        wd = args.workdir or default_workdir()
        b = NodeImageBuilder(wd, docker_host=os.environ.get("DOCKER_HOST"), progress=live.emit)
        b.build_rootfs()
    print(json.dumps({"timings": b.timings}), flush=True)
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``k8sstate image build|rootfs``; each sub-command sets ``func(args) -> int``."""
    from pytest_k8sstate.providers.kind.image.plan import DEFAULT_CNIS

    p = subparsers.add_parser(
        "image",
        help="the offline kind node image (build, rootfs)",
        description="Build a kind node image without a registry (Debian packages + the Go module proxy).",
    )
    sub = p.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    b = sub.add_parser("build", help="build (or load from the cache) the node image; prints its tag as JSON")
    b.add_argument("--workdir", type=Path, default=None, help="default <cache>/kind-images")
    b.add_argument("--kubernetes", default=None, metavar="VERSION", help="default: the pinned version")
    b.add_argument("--default-cni", choices=DEFAULT_CNIS, default="auto")
    for tool in ("kindnetd", "coredns", "crictl"):
        b.add_argument(f"--{tool}", type=Path, default=None, metavar="PATH", help=f"a prebuilt {tool}")
    b.set_defaults(func=_cmd_build)
    r = sub.add_parser("rootfs", help="only the Debian rootfs (debootstrap, cached)")
    r.add_argument("--workdir", type=Path, default=None, help="default <cache>/kind-images")
    r.set_defaults(func=_cmd_rootfs)
