"""Remove leftovers of ``local`` clusters whose owner process died.

A cluster created by a test session records the session's pid (and its kernel start time) in
``<cache>/clusters/<name>/state.json``. When that process is gone — killed, crashed, or ended without
teardown — :func:`reap` stops the cluster's recorded processes, deletes its recorded network namespaces
and its directory. Clusters created by ``k8sstate cluster create`` have no owner and stay until deleted.
A cluster that never finished creating and whose creator died is reaped too.

Called at every ``local`` create and by ``k8sstate cluster list``/``delete``.
"""

from __future__ import annotations

import contextlib
import os

import pytest_k8sstate.providers.local.net as net
import pytest_k8sstate.providers.local.state as state_mod
from pytest_k8sstate.errors import K8sStateError

__all__ = ["orphans", "reap"]


def orphans() -> list[state_mod.ClusterState]:
    """Clusters whose owner process is gone."""
    return [s for s in state_mod.all_states() if not s.owner_alive()]


def reap(*, verbose: bool = False) -> list[str]:
    """Tear down every orphaned cluster; returns their names. Never raises for a single failure."""
    if os.geteuid() != 0:  # cannot delete namespaces anyway; nothing of ours can exist without root
        return []
    reaped = []
    for st in orphans():
        with contextlib.suppress(K8sStateError, OSError):
            left = state_mod.kill_processes(st.processes, timeout=5)
            ns_left = net.delete_netns(list(st.netns))
            if not left and not ns_left:
                state_mod.remove_dir(st.dir)
                reaped.append(st.name)
                if verbose:
                    print(
                        f"[k8sstate] reaped leftovers of cluster {st.name!r} "
                        f"(owner pid {st.owner_pid} is gone)"
                    )
    return reaped
