"""Loopback forwarders into a network namespace, one per cluster state dir (kind, minikube).

With the project's Docker engine (:mod:`pytest_k8sstate.providers.docker.engine`) container IPs exist only
inside its namespace: :func:`ensure_forwarder` starts :mod:`pytest_k8sstate.providers.portforward` (its own
session, on the root namespace's 127.0.0.1) and records it in ``<state dir>/forward.json``; it is reused while
its targets are the same and its command line still names ``portforward`` and the state dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.util.files import atomic_write_json
from pytest_k8sstate.util.poll import wait_until
from pytest_k8sstate.util.procs import kill_group

__all__ = ["ensure_forwarder", "stop_forwarder"]

SCRIPT = Path(__file__).resolve().parent / "portforward.py"
MARKER = "portforward"
"""Word every forwarder's command line contains (with the state dir): a recycled pid is never signalled."""


def _proc_alive(pid: int, marker: str) -> bool:
    """True when ``pid`` is a forwarder whose command line contains ``marker`` (the state dir)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return MARKER in cmdline and marker in cmdline


def _recorded(state_dir: Path) -> dict[str, object] | None:
    """``forward.json`` when its forwarder still runs."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads((state_dir / "forward.json").read_text())
        if isinstance(info, dict) and _proc_alive(int(info["pid"]), str(state_dir)):
            return info
    return None


def ensure_forwarder(state_dir: Path, netns: str, targets: Sequence[str], timeout: float = 20.0) -> list[int]:
    """A running forwarder for ``targets`` (``IP:PORT``) into ``netns``; returns its local ports (reused)."""
    info = _recorded(state_dir)
    if info is not None and info.get("targets") == list(targets):
        ports = info.get("ports")
        if isinstance(ports, list):
            return [int(p) for p in ports]
    stop_forwarder(state_dir)
    tmp_ready = state_dir / "forward.ready"
    with contextlib.suppress(OSError):
        tmp_ready.unlink()
    argv = [sys.executable, str(SCRIPT), "--netns", netns, "--ready-file", str(tmp_ready)]
    for t in targets:
        argv += ["--map", f"127.0.0.1:0={t}"]
    with open(state_dir / "forward.log", "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def exited() -> None:
        if proc.poll() is not None:
            raise ProviderError(
                f"port forwarder into {netns} exited ({proc.returncode}); see {state_dir / 'forward.log'}"
            )

    try:
        wait_until(
            f"the port forwarder into {netns}",
            lambda: None if tmp_ready.exists() else f"no {tmp_ready.name} yet",
            timeout=timeout,
            error=ProviderError,
            check=exited,
            interval=0.05,
            max_interval=0.05,
        )
        ports = [int(p) for p in json.loads(tmp_ready.read_text())["ports"]]
    except BaseException:
        kill_group(proc)
        raise
    atomic_write_json(
        state_dir / "forward.json",
        {"pid": proc.pid, "ports": ports, "targets": list(targets), "netns": netns},
        indent=None,
    )
    return ports


def stop_forwarder(state_dir: Path) -> None:
    """Stop the forwarder recorded in ``state_dir`` (if it still runs) and forget it."""
    info = _recorded(state_dir)
    if info is not None:
        with contextlib.suppress(ProcessLookupError, ValueError, TypeError):
            os.kill(int(str(info["pid"])), signal.SIGTERM)
    with contextlib.suppress(OSError):
        (state_dir / "forward.json").unlink()
