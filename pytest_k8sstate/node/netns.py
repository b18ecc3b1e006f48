"""Network namespaces the project creates (tests, the ``local`` provider's nodes).

Names always start with :data:`PREFIX` so leftovers can be found and reaped; nothing here touches
the root namespace's netfilter rules or routes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from pytest_k8sstate.errors import CommandError, K8sStateError
from pytest_k8sstate.node import nfmon
from pytest_k8sstate.node.exec import NetnsExec, run_command

PREFIX = "k8ss-"
NETNS_DIR = Path("/run/netns")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def require_root(what: str) -> None:
    """Raise a clear error when not root (netns and netfilter need CAP_NET_ADMIN)."""
    if os.geteuid() != 0:
        raise K8sStateError(
            f"{what} needs root (network namespaces and netfilter need CAP_NET_ADMIN); "
            "run as root, e.g. `sudo -E pytest ...`"
        )


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str, *, loopback_up: bool = True) -> NetnsExec:
    """Create network namespace ``name`` (must start with PREFIX) and bring ``lo`` up."""
    if not name.startswith(PREFIX) or not _NAME_RE.match(name):
        raise K8sStateError(f"network namespace name {name!r} must match {PREFIX}[A-Za-z0-9_.-]+")
    require_root(f"creating network namespace {name}")
    run_command(["ip", "netns", "add", name], timeout=10, where="netns")
    ns = NetnsExec(name)
    if loopback_up:
        try:
            ns.run(["ip", "link", "set", "lo", "up"], timeout=10)
        except BaseException:
            delete(name)
            raise
    return ns


def delete(name: str) -> None:
    """Delete ``name`` if it exists; never raises for an already-gone namespace."""
    nfmon.close(name)  # its announcement socket would keep the namespace alive
    if not exists(name):
        return
    with contextlib.suppress(CommandError):
        run_command(["ip", "netns", "delete", name], timeout=10, where="netns")


def list_ours() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))


@contextlib.contextmanager
def temporary(tag: str = "t") -> Iterator[NetnsExec]:
    """A fresh namespace named ``k8ss-<tag>-<pid>-<n>``, deleted on exit (also on Ctrl-C)."""
    temporary.counter += 1  # type: ignore[attr-defined]
    name = f"{PREFIX}{tag}-{os.getpid()}-{temporary.counter}"  # type: ignore[attr-defined]
    ns = create(name)
    try:
        yield ns
    finally:
        delete(name)


temporary.counter = 0  # type: ignore[attr-defined]
