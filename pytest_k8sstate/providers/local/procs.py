"""The cluster's processes: started inside a node's network namespace, recorded at once, checked, logged.

Every process gets its own session (Ctrl-C reaches the pytest process, not them; teardown stops their
process groups) and a log file ``<cluster dir>/logs/<name>.log`` whose tail goes into every error.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.host import alive, proc_start_time
from pytest_k8sstate.providers.local.state import ClusterState, ProcRecord
from pytest_k8sstate.util.procs import kill_group

__all__ = ["Procs", "log_tail"]


def log_tail(path: str | None, lines: int = 8) -> str:
    """The last ``lines`` lines of a log (at most 16 KiB read, 300 characters a line), indented."""
    if not path:
        return "(no log)"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(log {path} unreadable)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(f"    {ln[:300]}" for ln in tail) or "    (empty)"


class Procs:
    """Start processes inside network namespaces and record them in the cluster state immediately."""

    def __init__(self, st: ClusterState) -> None:
        self.st = st
        self.popen: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str | Path], netns: str | None) -> ProcRecord:
        logdir = self.st.dir / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        log = logdir / f"{name}.log"
        args = [str(a) for a in argv]
        full = ["ip", "netns", "exec", netns, *args] if netns else args
        with open(log, "ab") as fh:
            fh.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(full)}\n".encode())
            fh.flush()
            try:
                p = subprocess.Popen(  # noqa: S603 - argv list, no shell
                    full,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us, not them; we stop them
                )
            except FileNotFoundError as exc:
                raise ProviderError(f"cannot start {name}: {exc}") from exc
        rec = ProcRecord(name=name, pid=p.pid, start=proc_start_time(p.pid), netns=netns, log=str(log))
        self.popen[name] = p
        self.st.processes.append(rec)
        self.st.save()
        return rec

    def check(self, names: Sequence[str] | None = None) -> None:
        """Raise ProviderError when a started process has exited (with its log tail)."""
        for rec in self.st.processes:
            if names is not None and rec.name not in names:
                continue
            p = self.popen.get(rec.name)
            code = p.poll() if p is not None else (None if alive(rec.pid, rec.start) else -1)
            if code is not None:
                raise ProviderError(
                    f"{rec.name} exited with code {code} while cluster {self.st.name!r} was starting; "
                    f"log {rec.log}:\n{log_tail(rec.log)}"
                )

    def logs(self, *names: str) -> Callable[[], str]:
        """A renderer of the log tails of the processes ``names`` (for a timeout's details)."""

        def render() -> str:
            return "\n".join(
                f"  last lines of {rec.name} ({rec.log}):\n{log_tail(rec.log)}"
                for rec in self.st.processes
                if rec.name in names
            )

        return render

    def reap(self) -> None:
        """Kill (if still there) and reap every process this object started; teardown has signalled the
        recorded groups already, so this mostly collects exit statuses. A reaped pid may be reused: only
        a process not reaped yet (``poll()`` is None) is signalled."""
        for p in self.popen.values():
            if p.poll() is None:
                kill_group(p, wait=1)
