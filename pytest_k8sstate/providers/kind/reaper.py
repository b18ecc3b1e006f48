"""kind clusters whose creator is gone: a test session (or a create) killed, crashed or ended without
teardown. ``persistent`` clusters (``k8sstate cluster create``) have no owner once ready and stay.

The owner is recorded in the cluster's :class:`~pytest_k8sstate.providers.statefile.StateFile` as pid +
kernel start time (a recycled pid is another process). A cluster whose ``kind create cluster`` still runs is
never an orphan: kind goes on in its own session after its owner died, and deleting under it would leave the
nodes it creates afterwards.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from pytest_k8sstate.providers.host import alive, proc_start_time
from pytest_k8sstate.providers.statefile import StateFile, valid_name

__all__ = ["kind_create_running", "orphaned", "orphans", "owner"]


def owner() -> dict[str, Any]:
    """The state fields that make this process a cluster's owner (``owner_pid``, ``owner_start``)."""
    return {"owner_pid": os.getpid(), "owner_start": proc_start_time(os.getpid())}


def kind_create_running(name: str, proc: Path = Path("/proc")) -> bool:
    """True while a ``kind create cluster --name NAME`` process exists (read from ``/proc/*/cmdline``)."""
    needle = f"create\0cluster\0--name\0{name}\0".encode()
    with contextlib.suppress(OSError):
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def orphaned(root: Path, name: str, docker_host: str | None) -> bool:
    """True when cluster ``name`` (of the engine at ``docker_host``) has an owner that is gone.

    The record is not trusted: a name a create would refuse, a directory that is a symlink, a record naming
    another cluster or an owner without a start time is never an orphan (never deleted by the reaper).
    """
    d = root / name
    if not valid_name(name) or d.is_symlink() or not d.is_dir():
        return False
    st = StateFile.load(name, root)
    pid = st.data.get("owner_pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or st.data.get("docker_host") != docker_host:
        return False
    if st.data.get("name", name) != name or not isinstance(st.data.get("owner_start"), int):
        return False
    start = st.data.get("owner_start")
    if alive(pid, start if isinstance(start, int) else None):
        return False
    return not kind_create_running(name)


def orphans(root: Path, docker_host: str | None) -> list[str]:
    """Names of the :func:`orphaned` clusters recorded under ``root``."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for d in sorted(root.iterdir()):
            if orphaned(root, d.name, docker_host):
                out.append(d.name)
    return out
