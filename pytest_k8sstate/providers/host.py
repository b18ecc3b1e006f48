"""Facts about this machine that more than one provider needs: kernel features and live processes.

The ``local`` provider's nodes are network namespaces, kind's and minikube's (docker driver) are
containers: all share this kernel, so a kernel feature can be checked here before any cluster exists.
Processes are identified by pid *and* kernel start time, so a recycled pid is never taken for ours; before a
process is signalled, its executable (``/proc/<pid>/exe``) must match too (:func:`same_process`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import run_command

__all__ = [
    "alive",
    "check_ipvs_support",
    "proc_environ",
    "proc_exe",
    "proc_start_time",
    "same_process",
    "sigterm_as_interrupt",
]

IP_VS_PROC = Path("/proc/net/ip_vs")


def check_ipvs_support() -> None:
    """Return when this kernel has IPVS (loading ``ip_vs`` if needed), else raise ProviderError."""
    if IP_VS_PROC.exists():
        return
    with contextlib.suppress(CommandError):
        run_command(["modprobe", "ip_vs"], timeout=10, where="local")
    if IP_VS_PROC.exists():
        return
    raise ProviderError(
        "kube-proxy --proxy-mode=ipvs needs the kernel's IPVS support, which this kernel lacks "
        f"(/proc/net/ip_vs is missing and `modprobe ip_vs` failed on {os.uname().release}); "
        "use --proxy-mode iptables or nftables, or a kernel with CONFIG_IP_VS"
    )


def proc_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of ``pid``, None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    try:
        rest = data.rsplit(b")", 1)[1].split()
        if rest[0] == b"Z":  # a zombie is as good as gone
            return None
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, start: int | None) -> bool:
    """``pid`` exists and, when ``start`` is known, is the process that started then."""
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)


def proc_exe(pid: int) -> str | None:
    """The executable ``pid`` runs (``/proc/<pid>/exe``; `` (deleted)`` dropped), None when unreadable."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    return exe.removesuffix(" (deleted)")


def proc_environ(pid: int, limit: int = 1 << 20) -> list[bytes] | None:
    """The environment ``pid`` was started with (``NAME=value`` entries), None when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read(limit)
    except OSError:
        return None
    return data.split(b"\0")


def same_process(pid: object, start: object, exe: object) -> bool:
    """``pid`` runs now, started at ``start`` and runs ``exe``: all three recorded and all three equal.

    What decides whether a recorded process may be signalled; a record missing any of them never is.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    if not isinstance(start, int) or not isinstance(exe, str) or not exe:
        return False
    return proc_start_time(pid) == start and proc_exe(pid) == exe


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def sigterm_as_interrupt() -> bool:
    """Make SIGTERM raise KeyboardInterrupt, so the clean-up of Ctrl-C runs (CI sends SIGTERM on a timeout).

    Only in the main thread and only when SIGTERM still has its default action (a handler someone else
    installed is kept); returns whether it was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return True
