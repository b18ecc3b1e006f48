"""Is every component of a ``local`` cluster still running? Checked before every snapshot and on reuse.

One ``/proc/<pid>/stat`` read per recorded process (pid + kernel start time as recorded; no API call):
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, the port forwarder and one
kube-proxy per node. A dead one is named (with its node), with its exit status when this process started
it (:func:`exit_status`: the creating process still holds the ``Popen``) and the last lines of its log.
"""

from __future__ import annotations

import signal
import subprocess

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.host import alive
from pytest_k8sstate.providers.local.state import ClusterState, ProcRecord

__all__ = ["check_alive", "dead_components", "describe_dead", "exit_status", "forget", "remember"]

_STARTED: dict[tuple[int, int | None], subprocess.Popen[bytes]] = {}
"""The processes this process started, by (pid, start time): their exit status stays readable (a dropped
``Popen`` would be reaped by :mod:`subprocess` at the next ``Popen`` call, its status lost)."""


def remember(rec: ProcRecord, p: subprocess.Popen[bytes]) -> None:
    _STARTED[(rec.pid, rec.start)] = p


def forget(st: ClusterState) -> None:
    """Drop the ``Popen`` objects of ``st``'s processes (after teardown)."""
    for rec in st.processes:
        _STARTED.pop((rec.pid, rec.start), None)


def exit_status(rec: ProcRecord) -> str:
    """``exit status N`` / ``killed by SIGX`` when this process started ``rec``, else why it is unknown."""
    p = _STARTED.get((rec.pid, rec.start))
    if p is None:
        return "exit status unknown: not started by this process"
    try:  # called for a process found dead: a zombie to collect (wait: poll gives up on a busy lock)
        code = p.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        return "exit status not collected yet"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _component(st: ClusterState, rec: ProcRecord) -> str:
    """``kube-proxy of node 'n'`` for a per-node process, else the process's name."""
    for n in st.nodes:
        if rec.name.endswith(f"-{n.name}") and rec.netns == n.netns:
            return f"{rec.name.removesuffix(f'-{n.name}')} of node {n.name!r}"
    return rec.name


def dead_components(st: ClusterState) -> list[ProcRecord]:
    """The recorded processes that no longer run (pid gone, a zombie, or a recycled pid)."""
    return [rec for rec in st.processes if rec.pid <= 0 or rec.start is None or not alive(rec.pid, rec.start)]


def describe_dead(st: ClusterState, dead: list[ProcRecord]) -> str:
    """One paragraph per dead component: name, node, pid, exit status and its last log lines."""
    from pytest_k8sstate.providers.local.procs import log_tail

    return "\n".join(
        f"  {_component(st, rec)} is not running (pid {rec.pid}, {exit_status(rec)}); "
        f"last lines of {rec.log}:\n{log_tail(rec.log)}"
        for rec in dead
    )


def check_alive(st: ClusterState) -> None:
    """ProviderError naming every dead component of ``st``'s cluster; nothing when all run."""
    dead = dead_components(st)
    if dead:
        names = ", ".join(_component(st, rec) for rec in dead)
        raise ProviderError(
            f"local cluster {st.name!r} is broken: {names} not running\n{describe_dead(st, dead)}\n"
            f"to recover, delete it with `k8sstate cluster delete --name {st.name}` and run again"
        )
