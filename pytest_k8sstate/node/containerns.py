"""The network namespace of a node container on this machine's kernel (kind/minikube on a local engine).

A kind node is a container of a Docker engine that runs on this machine: its network namespace is
``/proc/<pid of the container's init>/ns/net`` here, so :mod:`~pytest_k8sstate.node.netnsio` can read
its fingerprints in-process (about a millisecond) exactly as for a ``local`` node, and
:mod:`~pytest_k8sstate.node.reuse` can skip the node's parts that did not change.

:func:`netns_path` finds that path once per container (``docker inspect`` for the pid) and checks it is
the same namespace the node's own shell is in (the inode ``stat`` prints inside the node equals the
one seen here: an engine in a VM, another pid namespace or a remote host fails that and the node is
simply read by its commands). The pid's start time is remembered: a restarted container (new pid, or
the old pid reused by another process) is looked up again. Only a ``unix://`` engine (or the default
one) qualifies; root is needed to join the namespace (otherwise nothing is reused either).
"""

from __future__ import annotations

import os
import threading

from pytest_k8sstate.errors import CommandError
from pytest_k8sstate.node.exec import DockerExec, run_command

__all__ = ["netns_path"]

_lock = threading.Lock()
_known: dict[tuple[str, str | None, str], tuple[int, str] | None] = {}
"""(docker, host, container) → (pid, start time) of its init, or None (not on this kernel)."""


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # fields after the command name (which may hold spaces and parentheses): start time is field 22
    rest = stat[stat.rfind(b")") + 2 :].split()
    return rest[19].decode() if len(rest) > 19 else None


def _resolve(exec: DockerExec) -> tuple[int, str] | None:
    if exec.host and not exec.host.startswith("unix://"):
        return None  # a remote engine: its containers are not on this kernel
    if os.geteuid() != 0:
        return None  # joining another namespace needs CAP_SYS_ADMIN
    host = ["--host", exec.host] if exec.host else []
    try:
        res = run_command(
            [exec.docker, *host, "inspect", "--format", "{{.State.Pid}}", exec.container],
            timeout=30,
            check=False,
        )
        inside = exec.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"], timeout=30, check=False)
    except CommandError:
        return None
    text = res.stdout.decode(errors="replace").strip()
    if res.returncode != 0 or not text.isdigit() or int(text) <= 0 or inside.returncode != 0:
        return None
    pid = int(text)
    try:
        ino = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
    if inside.stdout.decode(errors="replace").strip() != str(ino):
        return None  # another pid namespace / kernel: the pid here is not the container's
    start = _start_time(pid)
    return None if start is None else (pid, start)


def netns_path(exec: DockerExec) -> str | None:
    """``/proc/<pid>/ns/net`` of ``exec``'s container when it runs on this kernel, else None."""
    key = (exec.docker, exec.host, exec.container)
    with _lock:
        seen = key in _known
        known = _known.get(key)
    if not seen or (known is not None and _start_time(known[0]) != known[1]):
        known = _resolve(exec)
        with _lock:
            _known[key] = known
    return None if known is None else f"/proc/{known[0]}/ns/net"
