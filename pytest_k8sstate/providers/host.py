"""Facts about this machine that more than one provider needs: kernel features and live processes.

The ``local`` provider's nodes are network namespaces, kind's and minikube's (docker driver) are
containers: all share this kernel, so a kernel feature can be checked here before any cluster exists.
Processes are identified by pid *and* kernel start time, so a recycled pid is never taken for ours.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import run_command

__all__ = ["alive", "check_ipvs_support", "proc_start_time"]

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
