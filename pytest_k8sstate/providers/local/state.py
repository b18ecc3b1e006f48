"""Bookkeeping of ``local`` clusters: the cluster directory, ``state.json``, subnet index.

Everything a cluster owns is recorded in ``<cache>/clusters/<name>/state.json`` *before* it is created
(network namespaces; a process's entry before it is started, its pid + kernel start time + executable right
after). Teardown and the reaper work only from this record and from the marker every process of the cluster
carries in its environment (:mod:`.procs`).

The record is not trusted: another user of the cache directory, a bug or a half-written disk may have
changed it. :func:`read_state` checks every field (types, the cluster name with the regex used at create,
namespace names derived from that name, paths inside the cluster's directory) and refuses the file with
the field's path; :func:`all_states` skips such a file with one warning naming it. Files are written 0600 in
0700 directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.node.netns import PREFIX as NETNS_PREFIX
from pytest_k8sstate.providers.host import alive
from pytest_k8sstate.providers.statefile import valid_name, write_error
from pytest_k8sstate.util.files import atomic_write_json, cache_dir
from pytest_k8sstate.util.poll import wait_until

__all__ = [
    "DIE_AT_ENV",
    "ClusterState",
    "NodeRecord",
    "ProcRecord",
    "all_states",
    "checkpoint",
    "claim",
    "cluster_dir",
    "clusters_dir",
    "global_lock",
    "load_state",
    "read_state",
    "remove_dir",
    "valid_name",
]

STATE_FILE = "state.json"
MAX_INDEX = 256
MAX_STATE_BYTES = 1 << 20  # a real state.json is a few KiB
MAX_STRING = 4096
#: test hook: ``K8SSTATE_TEST_DIE_AT=<step>`` makes the creating process SIGKILL itself at that step
DIE_AT_ENV = "K8SSTATE_TEST_DIE_AT"

_warned: set[str] = set()


def clusters_dir() -> Path:
    return cache_dir() / "clusters"


def cluster_dir(name: str) -> Path:
    """``<cache>/clusters/<name>``; a name a create would refuse is refused here too."""
    if not valid_name(name):
        raise ProviderError(f"{name!r} is not a cluster name (1-32 lowercase letters, digits and '-')")
    return clusters_dir() / name


def trusted_dir(path: Path) -> bool:
    """``path`` and every directory above it are not symlinks (``path`` itself), owned by us or root, and not
    writable by group or others — so nobody else can swap what lies below it between a check and a delete
    (e.g. a cache dir in another user's home kept by ``sudo -E``)."""
    try:
        if path.is_symlink():
            return False
        uid = os.geteuid()
        for d in [path, *path.resolve().parents]:
            st = os.lstat(d)
            if st.st_uid not in (uid, 0):
                return False
            if st.st_mode & 0o022 and not (st.st_mode & 0o1000):  # group/other-writable without sticky bit
                return False
        return True
    except OSError:
        return False


def inside_clusters_dir(path: Path) -> bool:
    """``path`` is a real directory (not a symlink) directly inside the clusters directory, which must be
    a trusted directory (:func:`trusted_dir`): the reaper deletes only there."""
    try:
        root = clusters_dir()
        return not path.is_symlink() and trusted_dir(root) and path.resolve().parent == root.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or make an existing one 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)


def netns_names(name: str, nodes: int) -> list[str]:
    """The namespaces a cluster ``name`` with ``nodes`` workers may own (node ones first, then the wire)."""
    workers = [f"{name}-worker{'' if k == 1 else k}" for k in range(1, nodes + 1)]
    return [f"{NETNS_PREFIX}{n}" for n in [f"{name}-control-plane", *workers]] + [f"{NETNS_PREFIX}{name}-net"]


def _netns_of(name: str, ns: str) -> bool:
    pat = rf"{re.escape(NETNS_PREFIX + name)}-(net|control-plane|worker([2-9]|[1-9][0-9]{{1,3}})?)"
    return re.fullmatch(pat, ns) is not None


@dataclass
class ProcRecord:
    """One process of the cluster. ``pid`` 0: recorded before its start (the intent), not started yet."""

    name: str
    pid: int
    start: int | None
    netns: str | None = None
    log: str | None = None
    exe: str | None = None  # what /proc/<pid>/exe shows once it runs (resolved path)


@dataclass
class NodeRecord:
    name: str
    role: str
    ip: str
    netns: str
    pod_cidr: str
    ip6: str = ""
    """The node's IPv6 address (ipv6 and dual clusters; ``ip`` stays the IPv4 wire address)."""
    pod_cidr6: str = ""


_NODE_REQUIRED = {"name", "role", "ip", "netns", "pod_cidr"}
IP_FAMILIES = ("ipv4", "ipv6", "dual")


@dataclass
class ClusterState:
    name: str
    index: int
    subnet: str
    proxy_mode: str
    version: str
    owner_pid: int | None
    owner_start: int | None
    ip_family: str = "ipv4"
    subnet6: str = ""
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

    @property
    def marker(self) -> str:
        """The value of every cluster process's ``K8SSTATE_CLUSTER``: the resolved cluster directory."""
        return str(self.dir.resolve())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: object) -> ClusterState:
        """The state in ``d``, every field checked; ValueError naming the field otherwise."""
        return _parse_state(d)

    def save(self) -> None:
        path = self.dir / STATE_FILE
        try:
            _private_dir(self.dir)
            atomic_write_json(path, self.to_json(), mode=0o600)
        except OSError as exc:
            raise write_error(path, exc) from exc

    def owner_alive(self) -> bool:
        """A cluster without an owner (``k8sstate cluster create``) lives until deleted."""
        if self.owner_pid is None:
            return True
        return alive(self.owner_pid, self.owner_start)


# ------------------------------------------------------------------------------------------- validation
def _str(v: object, where: str, *, empty: bool = True) -> str:
    if not isinstance(v, str) or len(v) > MAX_STRING or "\0" in v or (not empty and not v):
        raise ValueError(f"{where}: expected a string (at most {MAX_STRING} characters)")
    return v


def _int(v: object, where: str, lo: int = 0, hi: int = 1 << 62) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{where}: expected an integer in [{lo}, {hi}]")
    return v


def _opt(v: object, where: str, kind: type) -> Any:
    if v is None:
        return None
    return _int(v, where) if kind is int else _str(v, where)


def _fields(d: object, where: str, cls: type, required: set[str]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0][:80]!r}")
    missing = sorted(required - set(d))
    if missing:
        raise ValueError(f"{where}: missing field {missing[0]!r}")
    return dict(d)


def _inside(path: str, base: Path, where: str) -> str:
    try:
        ok = Path(path).resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{where}: {path[:200]!r} is not inside {base}")
    return path


def _list(v: object, where: str, limit: int = 1024) -> list[Any]:
    if not isinstance(v, list) or len(v) > limit:
        raise ValueError(f"{where}: expected a list (at most {limit} entries)")
    return v


def _parse_state(d: object) -> ClusterState:
    raw = _fields(d, "", ClusterState, {"name", "index", "subnet", "proxy_mode", "version"})
    name = raw["name"]
    if not valid_name(name):
        raise ValueError(f"name: {str(name)[:80]!r} is not a cluster name")
    base = clusters_dir() / name
    netns = [_str(ns, f"netns[{i}]") for i, ns in enumerate(_list(raw.get("netns", []), "netns"))]
    for i, ns in enumerate(netns):
        if not _netns_of(name, ns):
            raise ValueError(f"netns[{i}]: {ns[:80]!r} is not a namespace of cluster {name!r}")
    nodes = []
    for i, n in enumerate(_list(raw.get("nodes", []), "nodes")):
        nd = _fields(n, f"nodes[{i}]", NodeRecord, _NODE_REQUIRED)
        rec = NodeRecord(**{k: _str(v, f"nodes[{i}].{k}") for k, v in nd.items()})
        if not _netns_of(name, rec.netns):
            raise ValueError(f"nodes[{i}].netns: {rec.netns[:80]!r} is not a namespace of cluster {name!r}")
        nodes.append(rec)
    procs = []
    for i, p in enumerate(_list(raw.get("processes", []), "processes")):
        w = f"processes[{i}]"
        pd = _fields(p, w, ProcRecord, {"name", "pid", "start"})
        log = _opt(pd.get("log"), f"{w}.log", str)
        ns = _opt(pd.get("netns"), f"{w}.netns", str)
        if ns is not None and not _netns_of(name, ns):
            raise ValueError(f"{w}.netns: {ns[:80]!r} is not a namespace of cluster {name!r}")
        procs.append(
            ProcRecord(
                name=_str(pd["name"], f"{w}.name"),
                pid=_int(pd["pid"], f"{w}.pid", 0, 1 << 22),
                start=_opt(pd["start"], f"{w}.start", int),
                netns=ns,
                log=None if log is None else _inside(log, base / "logs", f"{w}.log"),
                exe=_opt(pd.get("exe"), f"{w}.exe", str),
            )
        )
    ports = raw.get("ports", {})
    if not isinstance(ports, dict) or len(ports) > 16:
        raise ValueError("ports: expected an object of at most 16 ports")
    kubeconfig = _str(raw.get("kubeconfig", ""), "kubeconfig")
    created = raw.get("created_at", 0.0)
    if not isinstance(created, int | float) or isinstance(created, bool) or not 0 <= created < 1e11:
        raise ValueError("created_at: expected a time in seconds since 1970")
    ip_family = _str(raw.get("ip_family", "ipv4"), "ip_family")
    if ip_family not in IP_FAMILIES:
        raise ValueError(f"ip_family: expected one of {', '.join(IP_FAMILIES)}, got {ip_family[:40]!r}")
    phase = _str(raw.get("phase", "creating"), "phase")
    if phase not in ("creating", "ready", "deleting"):
        raise ValueError(f"phase: expected creating, ready or deleting, got {phase[:40]!r}")
    return ClusterState(
        name=name,
        index=_int(raw["index"], "index", 0, MAX_INDEX - 1),
        subnet=_str(raw["subnet"], "subnet"),
        proxy_mode=_str(raw["proxy_mode"], "proxy_mode"),
        version=_str(raw["version"], "version"),
        owner_pid=_opt(raw.get("owner_pid"), "owner_pid", int),
        owner_start=_opt(raw.get("owner_start"), "owner_start", int),
        ip_family=ip_family,
        subnet6=_str(raw.get("subnet6", ""), "subnet6"),
        phase=phase,
        netns=netns,
        nodes=nodes,
        processes=procs,
        ports={_str(k, "ports"): _int(v, f"ports.{k}", 0, 65535) for k, v in ports.items()},
        kubeconfig=kubeconfig and _inside(kubeconfig, base, "kubeconfig"),
        extra_kubeconfig=_opt(raw.get("extra_kubeconfig"), "extra_kubeconfig", str),
        created_at=float(created),
    )


def read_state(d: Path) -> ClusterState:
    """The state in directory ``d`` (inside the clusters directory, named like its cluster).

    FileNotFoundError when there is none; ProviderError naming the file and the field when it is refused.
    """
    path = d / STATE_FILE
    if not inside_clusters_dir(d):
        raise ProviderError(f"{d}: not a directory inside {clusters_dir()} (a symlink?); ignored")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ProviderError(f"{path}: unreadable cluster state ({exc.strerror or exc})") from exc
    try:
        if len(data) > MAX_STATE_BYTES:
            raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
        st = _parse_state(json.loads(data))
        if st.name != d.name:
            raise ValueError(f"name: {st.name!r} is not the directory's name {d.name!r}")
    except RecursionError:
        raise ProviderError(f"{path}: refused cluster state: nested too deeply") from None
    except ValueError as exc:  # json's errors are ValueErrors too
        msg = str(exc)[:300]
        raise ProviderError(
            f"{path}: refused cluster state: {msg}; remove the directory {d} if it is not yours "
            "(processes and network namespaces it lists are left alone)"
        ) from None
    return st


def _warn(message: str) -> None:
    """One warning per message and process (``cluster list`` may read the same file more than once)."""
    if message not in _warned:
        _warned.add(message)
        print(f"[k8sstate] warning: {message}", file=sys.stderr)


def load_state(name: str) -> ClusterState | None:
    try:
        return read_state(cluster_dir(name))
    except FileNotFoundError:
        return None


def all_states() -> list[ClusterState]:
    """Every readable state; a refused one is skipped with one warning naming its file."""
    out: list[ClusterState] = []
    base = clusters_dir()
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return out
    for d in entries:
        if d.name.startswith(".") or not (d.is_dir() or d.is_symlink()):
            continue
        try:
            out.append(read_state(d))
        except FileNotFoundError:
            continue
        except ProviderError as exc:
            _warn(str(exc))
    return out


@contextlib.contextmanager
def global_lock(timeout: float = 30.0) -> Iterator[None]:
    """Serialise claims of names and subnet indexes across processes (pytest-xdist workers)."""
    base = clusters_dir()
    try:
        _private_dir(base)
        fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise write_error(base / ".lock", exc) from exc

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
    name: str,
    *,
    proxy_mode: str,
    version: str,
    owner_pid: int | None,
    owner_start: int | None,
    ip_family: str = "ipv4",
) -> ClusterState:
    """Create the cluster directory and state with the lowest free subnet index (under the lock)."""
    with global_lock():
        d = cluster_dir(name)
        if (d / STATE_FILE).exists() or d.is_symlink():
            raise ProviderError(
                f"cluster {name!r} already exists ({d}); delete it with "
                f"`k8sstate cluster delete --name {name}` or pick another name"
            )
        used = {s.index for s in all_states()}
        free = [i for i in range(MAX_INDEX) if i not in used]
        if not free:
            raise ProviderError(f"all {MAX_INDEX} local cluster slots are in use; delete some clusters")
        idx = free[0]
        st = ClusterState(
            name=name,
            index=idx,
            subnet=f"172.31.{idx}.0/24",
            ip_family=ip_family,
            subnet6="" if ip_family == "ipv4" else str(ipaddress.IPv6Network(f"fd00:172:31:{idx:x}::/64")),
            proxy_mode=proxy_mode,
            version=version,
            owner_pid=owner_pid,
            owner_start=owner_start,
            created_at=time.time(),
        )
        try:
            st.save()
        except BaseException:
            remove_dir(d)
            raise
        return st


def remove_dir(path: Path) -> None:
    """Remove a cluster directory: only a real directory directly inside the clusters directory."""
    if inside_clusters_dir(path) and valid_name(path.name):
        shutil.rmtree(path, ignore_errors=True)


def checkpoint(step: str) -> None:
    """Test hook: when ``$K8SSTATE_TEST_DIE_AT`` is ``step``, this process SIGKILLs itself here (an owner
    killed at that step of a create: tests/test_reaper_hostile.py). Read at call time; unset in normal use."""
    if os.environ.get(DIE_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
