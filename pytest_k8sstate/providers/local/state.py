"""Bookkeeping of ``local`` clusters: the cluster directory, ``state.json``, subnet index, processes.

Everything a cluster owns is recorded in ``<cache>/clusters/<name>/state.json`` *before* it is
created (network namespaces) or right after it is started (processes: pid + kernel start time, so a
recycled pid is never killed). Teardown and the reaper work only from this record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.host import alive
from pytest_k8sstate.util.files import atomic_write_json, cache_dir
from pytest_k8sstate.util.poll import wait_until

__all__ = [
    "ClusterState",
    "NodeRecord",
    "ProcRecord",
    "all_states",
    "claim",
    "cluster_dir",
    "clusters_dir",
    "global_lock",
    "kill_processes",
    "load_state",
    "remove_dir",
]

STATE_FILE = "state.json"
MAX_INDEX = 256


def clusters_dir() -> Path:
    return cache_dir() / "clusters"


def cluster_dir(name: str) -> Path:
    return clusters_dir() / name


@dataclass
class ProcRecord:
    name: str
    pid: int
    start: int | None
    netns: str | None = None
    log: str | None = None


@dataclass
class NodeRecord:
    name: str
    role: str
    ip: str
    netns: str
    pod_cidr: str


@dataclass
class ClusterState:
    name: str
    index: int
    subnet: str
    proxy_mode: str
    version: str
    owner_pid: int | None
    owner_start: int | None
    phase: str = "creating"  # creating | ready | deleting
    netns: list[str] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    processes: list[ProcRecord] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    kubeconfig: str = ""
    extra_kubeconfig: str | None = None
    created_at: float = 0.0

    @property
    def dir(self) -> Path:
        return cluster_dir(self.name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClusterState:
        d = dict(d)
        d["nodes"] = [NodeRecord(**n) for n in d.get("nodes", [])]
        d["processes"] = [ProcRecord(**p) for p in d.get("processes", [])]
        return cls(**d)

    def save(self) -> None:
        atomic_write_json(self.dir / STATE_FILE, self.to_json())

    def owner_alive(self) -> bool:
        """A cluster without an owner (``k8sstate cluster create``) lives until deleted."""
        if self.owner_pid is None:
            return True
        return alive(self.owner_pid, self.owner_start)


def load_state(name: str) -> ClusterState | None:
    path = cluster_dir(name) / STATE_FILE
    try:
        return ClusterState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ProviderError(
            f"{path}: unreadable cluster state ({exc}); remove the directory {path.parent} "
            "(its processes and network namespaces may need manual cleanup: see `ip netns list`)"
        ) from exc


def all_states() -> list[ClusterState]:
    out: list[ClusterState] = []
    base = clusters_dir()
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if d.is_dir() and (d / STATE_FILE).is_file():
            with contextlib.suppress(ProviderError):
                st = load_state(d.name)
                if st is not None:
                    out.append(st)
    return out


@contextlib.contextmanager
def global_lock(timeout: float = 30.0) -> Iterator[None]:
    """Serialise claims of names and subnet indexes across processes (pytest-xdist workers)."""
    base = clusters_dir()
    base.mkdir(parents=True, exist_ok=True)
    fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT, 0o644)

    def locked() -> str | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "another k8sstate process holds it"
        return None

    try:
        wait_until(f"the lock {base / '.lock'}", locked, timeout=timeout, error=ProviderError)
        yield
    finally:
        os.close(fd)


def claim(
    name: str, *, proxy_mode: str, version: str, owner_pid: int | None, owner_start: int | None
) -> ClusterState:
    """Create the cluster directory and state with the lowest free subnet index (under the lock)."""
    with global_lock():
        d = cluster_dir(name)
        if (d / STATE_FILE).exists():
            raise ProviderError(
                f"cluster {name!r} already exists ({d}); delete it with "
                f"`k8sstate cluster delete --name {name}` or pick another name"
            )
        used = {s.index for s in all_states()}
        free = [i for i in range(MAX_INDEX) if i not in used]
        if not free:
            raise ProviderError(f"all {MAX_INDEX} local cluster slots are in use; delete some clusters")
        idx = free[0]
        d.mkdir(parents=True, exist_ok=True)
        st = ClusterState(
            name=name,
            index=idx,
            subnet=f"172.31.{idx}.0/24",
            proxy_mode=proxy_mode,
            version=version,
            owner_pid=owner_pid,
            owner_start=owner_start,
            created_at=time.time(),
        )
        st.save()
        return st


def kill_processes(procs: list[ProcRecord], *, term_grace: float = 0.0, timeout: float = 10.0) -> list[str]:
    """Stop recorded processes (whole process groups). SIGTERM first when ``term_grace`` > 0, then SIGKILL.

    Returns the names of processes still alive after ``timeout`` (normally none).
    """
    live = [p for p in procs if alive(p.pid, p.start)]
    if not live:
        return []

    def signal_all(sig: int) -> None:
        for p in live:
            if not alive(p.pid, p.start):
                continue
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, sig)

    def reap_children() -> None:
        for p in live:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p.pid, os.WNOHANG)

    def wait(until: float) -> bool:
        delay = 0.005
        while True:
            reap_children()
            if not any(alive(p.pid, p.start) for p in live):
                return True
            if time.monotonic() >= until:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    if term_grace > 0:
        signal_all(signal.SIGTERM)
        if wait(time.monotonic() + term_grace):
            return []
    signal_all(signal.SIGKILL)
    wait(time.monotonic() + timeout)
    return [p.name for p in live if alive(p.pid, p.start)]


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
