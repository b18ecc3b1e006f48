"""The cluster's processes: started inside a node's network namespace, recorded, marked, checked, logged.

Every process gets its own session (Ctrl-C reaches the pytest process, not them; teardown stops their
process groups) and a log file ``<cluster dir>/logs/<name>.log`` whose tail goes into every error.

Nothing of a cluster can outlive its owner unnoticed: a process's entry is written to the state *before* it
is started (pid 0), its pid, kernel start time and executable right after; and every process carries
``K8SSTATE_CLUSTER=<cluster dir>`` and ``K8SSTATE_OWNER=<pid>:<start>`` in its environment (inherited by its
children, readable in ``/proc/<pid>/environ``), so :func:`kill_processes` and the reaper find it even when
its owner was killed before the pid was written. A parent-death signal (``PR_SET_PDEATHSIG``) is not used:
a persistent cluster (``k8sstate cluster create``) must outlive its creator, and the signal follows the
creating *thread*, not the process.

A process is signalled only when it proves to be ours: its recorded pid, start time and executable all
match (:func:`~pytest_k8sstate.providers.host.same_process`), or it carries the cluster's marker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.host import alive, proc_environ, proc_start_time, same_process
from pytest_k8sstate.providers.local.liveness import remember
from pytest_k8sstate.providers.local.state import ClusterState, ProcRecord, checkpoint
from pytest_k8sstate.util.procs import kill_group

__all__ = ["MARKER_ENV", "OWNER_ENV", "Marked", "Procs", "kill_processes", "log_tail", "marked_processes"]

MARKER_ENV = "K8SSTATE_CLUSTER"
OWNER_ENV = "K8SSTATE_OWNER"


@dataclass(frozen=True)
class Marked:
    """A process carrying a cluster's marker: its pid, start time, marker (cluster dir) and owner."""

    pid: int
    start: int
    marker: str
    owner_pid: int | None
    owner_start: int | None

    def owner_alive(self) -> bool:
        return self.owner_pid is not None and alive(self.owner_pid, self.owner_start)


def _owner(value: str) -> tuple[int | None, int | None]:
    pid, _, start = value.partition(":")
    try:
        return int(pid), int(start) if start.isdigit() else None
    except ValueError:
        return None, None


def marked_processes(proc: Path = Path("/proc")) -> Iterator[Marked]:
    """Every live process whose environment carries ``K8SSTATE_CLUSTER`` (root reads every environment)."""
    key, okey = f"{MARKER_ENV}=".encode(), f"{OWNER_ENV}=".encode()
    with contextlib.suppress(OSError):
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            env = proc_environ(pid)
            if not env:
                continue
            marker = next((e[len(key) :] for e in env if e.startswith(key)), None)
            if marker is None:
                continue
            start = proc_start_time(pid)
            if start is None or pid == os.getpid():
                continue
            owner = next((e[len(okey) :] for e in env if e.startswith(okey)), b"")
            yield Marked(pid, start, marker.decode(errors="replace"), *_owner(owner.decode(errors="replace")))


def _signal(pid: int, sig: int) -> None:
    """Signal ``pid``'s process group when it leads one (our processes do), else ``pid`` alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def kill_processes(st: ClusterState, *, term_grace: float = 0.0, timeout: float = 10.0) -> list[str]:
    """Stop the cluster's processes: the recorded ones that prove to be ours (pid, start time, executable)
    and every process carrying the cluster's marker. SIGTERM first when ``term_grace`` > 0, then SIGKILL.

    Returns the names of processes still alive after ``timeout`` (normally none), and of recorded processes
    that run but do not prove to be ours (left alone; the caller keeps the record and says so).
    """
    marker = st.marker

    def ours() -> dict[int, tuple[str, int]]:
        out: dict[int, tuple[str, int]] = {}
        for p in st.processes:
            if p.start is not None and same_process(p.pid, p.start, p.exe):
                out[p.pid] = (p.name, p.start)
        for m in marked_processes():
            if m.marker == marker:
                out.setdefault(m.pid, (f"pid {m.pid} of cluster {st.name!r}", m.start))
        return out

    # once proven ours, a process is followed by pid + start time alone: while it exits, its exe and
    # environment are already gone but it still holds its namespace
    tracked: dict[int, tuple[str, int]] = {}

    def signal_all(sig: int) -> dict[int, tuple[str, int]]:
        tracked.update(ours())
        for pid, (_name, start) in tracked.items():
            if proc_start_time(pid) == start:  # still that process (a recycled pid is left alone)
                _signal(pid, sig)
        return tracked

    def wait(sig: int, until: float) -> dict[int, tuple[str, int]]:
        delay = 0.005
        while True:
            if sig == signal.SIGKILL:
                signal_all(sig)
            else:
                tracked.update(ours())
            for pid in tracked:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            live = {pid: v for pid, v in tracked.items() if proc_start_time(pid) == v[1]}
            if not live or time.monotonic() >= until:
                return live
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    if term_grace > 0:
        signal_all(signal.SIGTERM)
        wait(signal.SIGTERM, time.monotonic() + term_grace)
    left = sorted(name for name, _ in wait(signal.SIGKILL, time.monotonic() + timeout).values())
    # recorded, running (pid + start time), but not provably ours: never signalled, never forgotten silently
    return left + [
        f"{p.name} (pid {p.pid}: recorded without a matching start time and executable, so not signalled; "
        f"stop it yourself if it is this cluster's)"
        for p in st.processes
        if p.pid > 1 and p.pid not in tracked and p.start is not None and alive(p.pid, p.start)
    ]


def _exe_of(program: str) -> str | None:
    """The resolved path ``/proc/<pid>/exe`` shows once ``program`` runs (None when not on PATH)."""
    found = shutil.which(program)
    return os.path.realpath(found) if found else None


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
        # the intent first: an owner killed from here on leaves a record (and marked processes)
        rec = ProcRecord(name=name, pid=0, start=None, netns=netns, log=str(log), exe=_exe_of(args[0]))
        self.st.processes.append(rec)
        self.st.save()
        env = {
            **os.environ,
            MARKER_ENV: self.st.marker,
            OWNER_ENV: f"{self.st.owner_pid or os.getpid()}:{self.st.owner_start or ''}",
        }
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
                    env=env,
                )
            except FileNotFoundError as exc:
                self.st.processes.remove(rec)
                self.st.save()
                raise ProviderError(f"cannot start {name}: {exc}") from exc
        self.popen[name] = p
        checkpoint(f"popen:{name}")
        rec.pid, rec.start = p.pid, proc_start_time(p.pid)
        remember(rec, p)
        self.st.save()
        checkpoint(f"started:{name}")
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
