"""Remove leftovers of ``local`` clusters whose owner process died.

A cluster created by a test session records the session's pid (and its kernel start time) in
``<cache>/clusters/<name>/state.json``. When that process is gone — killed, crashed, or ended without
teardown — :func:`reap` stops the cluster's processes, deletes its network namespaces and its directory.
Clusters created by ``k8sstate cluster create`` have no owner and stay until deleted. A cluster that never
finished creating and whose creator died is reaped too.

The reaper removes only what it can prove it created (the state file is not trusted, see :mod:`.state`):

* a directory only directly inside the clusters directory, never through a symlink, named like a cluster;
* a process only when its recorded pid, start time and executable all match, or when it carries the
  cluster's marker in its environment (:mod:`.procs`) — which also finds processes whose pid never reached
  the state file;
* a network namespace only when its name is one of that cluster's and no process other than the
  cluster's own runs in it;
* marked processes of a cluster whose directory is gone, when their owner is gone too.

Called at every ``local`` create and by ``k8sstate cluster list``/``delete``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest_k8sstate.providers.local.net as net
import pytest_k8sstate.providers.local.state as state_mod
from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.providers.host import proc_start_time
from pytest_k8sstate.providers.local.procs import kill_processes, marked_processes

__all__ = ["netns_users", "orphans", "reap"]

NETNS_RUN = Path("/run/netns")


def orphans() -> list[state_mod.ClusterState]:
    """Clusters whose owner process is gone."""
    return [s for s in state_mod.all_states() if not s.owner_alive()]


def netns_users(ns: str, proc: Path = Path("/proc")) -> set[int]:
    """Pids of the processes running in network namespace ``ns`` (empty when it does not exist)."""
    try:
        st = os.stat(NETNS_RUN / ns)
    except OSError:
        return set()
    out = set()
    with contextlib.suppress(OSError):
        for entry in proc.iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    s = os.stat(entry / "ns" / "net")
                    if (s.st_ino, s.st_dev) == (st.st_ino, st.st_dev):
                        out.add(int(entry.name))
    return out


def _reap_one(st: state_mod.ClusterState) -> bool:
    if kill_processes(st, timeout=5):
        return False
    # a namespace someone else's process runs in is not provably ours: left alone (and the record kept)
    busy = [ns for ns in st.netns if netns_users(ns)]
    if busy:
        return False
    if net.delete_netns(list(st.netns)):
        return False
    state_mod.remove_dir(st.dir)
    return True


def _stray() -> list[tuple[int, int]]:
    """Marked processes of a cluster directory of ours that has no state file, whose owner is gone."""
    base = state_mod.clusters_dir().resolve()
    out = []
    for m in marked_processes():
        d = Path(m.marker)
        if d.parent != base or not state_mod.valid_name(d.name) or m.owner_alive():
            continue
        if not (d / state_mod.STATE_FILE).exists() and not d.is_symlink():
            out.append((m.pid, m.start))
    return out


def reap(*, verbose: bool = False) -> list[str]:
    """Tear down every orphaned cluster; returns their names. Never raises for a single failure."""
    if os.geteuid() != 0:  # cannot delete namespaces anyway; nothing of ours can exist without root
        return []
    reaped = []
    for st in orphans():
        with contextlib.suppress(K8sStateError, OSError):
            if _reap_one(st):
                reaped.append(st.name)
                if verbose:
                    print(
                        f"[k8sstate] reaped leftovers of cluster {st.name!r} "
                        f"(owner pid {st.owner_pid} is gone)"
                    )
    for pid, start in _stray():
        if proc_start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return reaped
