"""``k8sstate pool …``: the warm pool of ready ``local`` clusters (:mod:`.providers.local.warm`).

Contract spellings::

    k8sstate pool start [--size N] [--nodes K] [--proxy-mode M] [--ip-family F] [--version V] [--idle S]
                        [--wait]
    k8sstate pool status
    k8sstate pool stop
    k8sstate pool serve ...       (the server itself, in the foreground; ``start`` runs it in the background)

Errors print one line (``k8sstate: error: …``): exit 2 for a bad option, 1 otherwise.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from pytest_k8sstate.cli.main import guard
from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.providers.base import IP_FAMILIES, PROXY_MODES

__all__ = ["add_cli"]

START_WAIT = 180.0  # ``start --wait``: the first cluster of a cold pool


def _spec(args: argparse.Namespace) -> Any:
    from pytest_k8sstate.providers.local.warm import MAX_SIZE, WarmSpec

    if not 0 <= args.nodes <= 64:
        raise ConfigError(f"--nodes {args.nodes}: expected 0 to 64 worker nodes")
    if not 1 <= args.size <= MAX_SIZE:
        raise ConfigError(f"--size {args.size}: expected 1 to {MAX_SIZE} clusters")
    if args.idle is not None and not 1 <= args.idle <= 7 * 86400:
        raise ConfigError(f"--idle {args.idle:g}: expected seconds from 1 to 604800")
    version = args.version.removeprefix("v") if args.version else None
    return WarmSpec(args.nodes, args.proxy_mode, args.ip_family, version)


def _require_root(what: str) -> None:
    import os

    if os.geteuid() != 0:
        raise ConfigError(f"{what}: the local provider needs root (network namespaces); run it as root")


@guard
def pool_serve(args: argparse.Namespace) -> int:
    from pytest_k8sstate.providers.local.warm import idle_limit
    from pytest_k8sstate.providers.local.warmserve import serve

    spec = _spec(args)
    _require_root("pool serve")
    idle = args.idle if args.idle is not None else idle_limit()
    return serve(spec, size=args.size, idle=idle, log=lambda msg: print(msg, flush=True))


@guard
def pool_start(args: argparse.Namespace) -> int:
    from pytest_k8sstate.providers.local.warm import ensure_serving, pool_dir, serving, statuses
    from pytest_k8sstate.util.poll import wait_until

    spec = _spec(args)
    _require_root("pool start")
    started = ensure_serving(spec, size=args.size, idle=args.idle)
    d = pool_dir(spec)
    print(
        f"warm pool {spec.slug()}: {'started' if started else 'already running'} "
        f"({spec.describe()}); log: {d / 'serve.log'}"
    )
    if args.wait:
        t0 = time.monotonic()

        def warm() -> str | None:
            st = next((s for s in statuses() if s.slug == spec.slug()), None)
            if st is not None and len(st.waiting) >= args.size:
                return None
            if time.monotonic() - t0 > 5.0 and not serving(d):
                raise ProviderError(f"the warm pool server stopped; see {d / 'serve.log'}")
            return f"{len(st.waiting) if st else 0} of {args.size} ready"

        wait_until(f"warm pool {spec.slug()}", warm, timeout=START_WAIT, error=ProviderError, interval=0.2)
        print(f"warm pool {spec.slug()}: {args.size} ready in {time.monotonic() - t0:.1f}s")
    return 0


@guard
def pool_status(args: argparse.Namespace) -> int:
    from pytest_k8sstate.providers.local.warm import statuses

    rows = statuses()
    if not rows:
        print("no warm pools")
    for s in rows:
        server = f"server pid {s.server_pid}" if s.server_pid else "no server"
        creating = f", creating {s.creating}" if s.creating else ""
        print(f"{s.slug}: {server}; waiting: {', '.join(s.waiting) or '(none)'}{creating}")
    return 0


@guard
def pool_stop(args: argparse.Namespace) -> int:
    from pytest_k8sstate.providers.local.warm import stop

    t0 = time.monotonic()
    stopped = stop()
    if stopped:
        print(f"stopped {', '.join(stopped)} ({time.monotonic() - t0:.1f}s; waiting clusters deleted)")
    else:
        print("no warm pool server was running")
    return 0


def _shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=1, help="clusters kept ready (default 1)")
    p.add_argument("--nodes", type=int, default=2, help="worker nodes besides the control plane (default 2)")
    p.add_argument("--proxy-mode", choices=PROXY_MODES, default="iptables", help="kube-proxy mode")
    p.add_argument("--ip-family", choices=IP_FAMILIES, default="ipv4", help="IP families (default ipv4)")
    p.add_argument("--version", help="Kubernetes version (default: the pinned one)")
    p.add_argument(
        "--idle",
        type=float,
        default=None,
        help="stop (deleting the waiting clusters) after this many seconds without a take "
        "(default $K8SSTATE_POOL_IDLE or 900)",
    )


def add_cli(subparsers: Any) -> None:
    """Register ``pool`` on the top-level ``k8sstate`` subparsers."""
    pl = subparsers.add_parser("pool", help="a warm pool of ready local clusters for test sessions")
    psub = pl.add_subparsers(dest="pool_command", metavar="{start,status,stop}")
    psub.required = True
    s = psub.add_parser(
        "start",
        help="start a background server keeping ready local clusters (pytest: --k8sstate-pool N)",
        epilog="examples:\n"
        "  k8sstate pool start --size 1 --wait     # then: pytest --k8sstate-pool 1 takes it at once\n"
        "  k8sstate pool status\n"
        "  k8sstate pool stop                      # deletes the clusters still waiting",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _shape(s)
    s.add_argument("--wait", action="store_true", help="return once SIZE clusters are ready")
    s.set_defaults(func=pool_start)
    st = psub.add_parser("status", help="the pools, their servers and waiting clusters")
    st.set_defaults(func=pool_status)
    sp = psub.add_parser("stop", help="stop every pool server; the clusters still waiting are deleted")
    sp.set_defaults(func=pool_stop)
    sv = psub.add_parser("serve", help="run a pool server in the foreground (what `start` runs)")
    _shape(sv)
    sv.set_defaults(func=pool_serve)
