"""A warm pool of pristine ``local`` clusters: a background process keeps N ready, a session takes one.

``k8sstate pool start`` (or the plugin's ``--k8sstate-pool N``) starts one *pool server*
(:mod:`.warmserve`) per cluster shape (:class:`WarmSpec`: workers, proxy mode, IP family, version). It
creates clusters with :class:`~pytest_k8sstate.providers.local.provider.LocalProvider` like any session
would (so each one has its pristine capture for ``fresh=True``) until N of them wait, and creates another
whenever one is taken.
A session that needs a cluster of that shape *takes* a waiting one (milliseconds) instead of creating it
(seconds): :func:`take`.

Everything lives in ``<cache>/pool/<shape>/``:

* ``serve.lock``: held (``flock``) by the server for its whole life; a second server of the same shape
  exits at once; a free lock means no server.
* ``server.json``: the server's pid, start time, size and idle limit (``k8sstate pool status``/``stop``).
* ``ready/<cluster>``: an empty file per waiting cluster. **Taking a cluster is unlinking its file**: the
  kernel lets exactly one process succeed, so the server (stopping, or dropping a dead cluster) and any
  number of sessions never hand out one cluster twice.
* ``creating``: the name of the cluster the server is creating now (a session may wait for it).
* ``used``: touched by every take and whenever a cluster becomes ready; the idle limit counts from its
  mtime.

Ownership, so nothing outlives its owner unnoticed (:mod:`.reaper`): a waiting cluster is owned by the
server (its pid and start time in the cluster's ``state.json``); a taken one is handed to the taker (or
to nobody, for a persistent cluster) under the provider's global lock before it is used. A server killed
with SIGKILL leaves clusters whose owner is gone: the reaper removes them at the next ``local`` create or
``cluster list``, like any other orphan. A server stopped with SIGTERM/SIGINT (``k8sstate pool stop``)
deletes its waiting clusters (and the one it was creating) and exits; one that nobody used for its idle
limit (default :data:`DEFAULT_IDLE` seconds, ``K8SSTATE_POOL_IDLE``) does the same on its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest_k8sstate.providers.local.state as state_mod
from pytest_k8sstate.errors import ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.providers.host import alive
from pytest_k8sstate.providers.local.binaries import kube_version
from pytest_k8sstate.providers.local.liveness import check_alive
from pytest_k8sstate.providers.local.provider import LocalProvider, check_kubeconfig_out
from pytest_k8sstate.util.files import cache_dir
from pytest_k8sstate.util.poll import wait_until

__all__ = [
    "DEFAULT_IDLE",
    "IDLE_ENV",
    "MAX_SIZE",
    "PoolStatus",
    "WarmSpec",
    "ensure_serving",
    "idle_limit",
    "pool_dir",
    "serving",
    "statuses",
    "stop",
    "take",
]

DEFAULT_IDLE = 900.0
"""Seconds a pool nobody takes from stays up (then it deletes its waiting clusters and exits)."""
IDLE_ENV = "K8SSTATE_POOL_IDLE"
MAX_SIZE = 8
STOP_TIMEOUT = 60.0  # a stopping server deletes its clusters (and a half-made one) within this
_SLUG_RE = re.compile(r"^[0-9a-z.-]{1,64}$")

Log = Callable[[str], None]


@dataclass(frozen=True)
class WarmSpec:
    """The shape of the clusters of one pool: what makes two of them interchangeable."""

    nodes: int
    proxy_mode: str
    ip_family: str = "ipv4"
    version: str | None = None
    """None: the pinned version."""

    def slug(self) -> str:
        """The pool's directory name, e.g. ``2w-iptables-ipv4-v1.37.1``: the version is the one its
        clusters run (the pinned one resolved), so an upgrade that pins another never takes old ones."""
        version = re.sub(r"[^0-9a-z.-]", "-", kube_version(self.version).lower())
        slug = f"{self.nodes}w-{self.proxy_mode}-{self.ip_family}-{version}"[:64]
        if not _SLUG_RE.match(slug):
            raise ConfigError(f"warm pool: cannot name a pool for {self!r} (version {version!r})")
        return slug

    def describe(self) -> str:
        return f"1 control plane + {self.nodes} workers, {self.proxy_mode}, {self.ip_family}, " + (
            f"Kubernetes {self.version}" if self.version else "pinned version"
        )


def pool_dir(spec: WarmSpec) -> Path:
    return cache_dir() / "pool" / spec.slug()


def idle_limit(env: dict[str, str] | None = None) -> float:
    """``$K8SSTATE_POOL_IDLE`` seconds (default :data:`DEFAULT_IDLE`); ConfigError naming it when bad."""
    raw = (os.environ if env is None else env).get(IDLE_ENV, "").strip()
    if not raw:
        return DEFAULT_IDLE
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= 7 * 86400:
        raise ConfigError(f"{IDLE_ENV}={raw[:40]!r}: expected seconds from 1 to 604800 (e.g. 900)")
    return value


# --- the lock that says a server runs ----------------------------------------------------------------
def serving(d: Path) -> bool:
    """A server holds ``d``'s lock now."""
    try:
        fd = os.open(d / "serve.lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _ready_dir(d: Path) -> Path:
    return d / "ready"


def _waiting(d: Path) -> list[str]:
    """Names of the waiting clusters, oldest first (a file taken meanwhile is just not listed)."""
    entries = []
    try:
        with os.scandir(_ready_dir(d)) as it:
            for e in it:
                try:
                    entries.append((e.stat(follow_symlinks=False).st_mtime, e.name))
                except FileNotFoundError:
                    continue
    except OSError:
        return []
    return [name for _, name in sorted(entries) if state_mod.valid_name(name)]


def _unlink(path: Path) -> bool:
    """True for the one process whose unlink removed ``path``."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.touch()
        os.utime(path)


# --- starting and stopping servers ---------------------------------------------------------------------
def ensure_serving(spec: WarmSpec, *, size: int, idle: float | None = None) -> subprocess.Popen[bytes] | None:
    """Start a server for ``spec`` in the background unless one runs; the started process, or None.

    The server is a ``k8sstate pool serve`` process in its own session (Ctrl-C of the caller does not
    reach it), logging to ``<pool dir>/serve.log``; it outlives the caller by design (see the module
    docstring for how it ends)."""
    d = pool_dir(spec)
    if serving(d):
        return None
    d.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "pytest_k8sstate.cli",
        "pool",
        "serve",
        "--nodes",
        str(spec.nodes),
        "--proxy-mode",
        spec.proxy_mode,
        "--ip-family",
        spec.ip_family,
        "--size",
        str(size),
        "--idle",
        str(idle if idle is not None else idle_limit()),
    ]
    if spec.version:
        argv += ["--version", spec.version]
    env = {**os.environ, "K8SSTATE_PROGRESS": "0"}
    with open(d / "serve.log", "ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )


def _server(d: Path) -> tuple[int, int | None] | None:
    try:
        raw = json.loads((d / "server.json").read_text())
        pid, start = raw["pid"], raw["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None
    return pid, start if isinstance(start, int) else None


def _pool_dirs() -> Iterator[Path]:
    base = cache_dir() / "pool"
    with contextlib.suppress(OSError):
        for d in sorted(base.iterdir()):
            if d.is_dir() and not d.is_symlink() and _SLUG_RE.match(d.name):
                yield d


@dataclass(frozen=True)
class PoolStatus:
    slug: str
    server_pid: int | None
    waiting: tuple[str, ...]
    creating: str | None


def statuses() -> list[PoolStatus]:
    out = []
    for d in _pool_dirs():
        srv = _server(d) if serving(d) else None
        creating = _creating(d) if srv else None
        out.append(PoolStatus(d.name, srv[0] if srv else None, tuple(_waiting(d)), creating))
    return out


def stop(*, spec: WarmSpec | None = None, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Stop every pool server (or ``spec``'s: SIGTERM; each deletes its waiting clusters) and wait for it;
    returns the pools stopped. Ready files of a server that is already gone are removed (its clusters are
    orphans: the reaper's)."""
    stopped = []
    for d in _pool_dirs():
        if spec is not None and d.name != spec.slug():
            continue
        srv = _server(d)
        if serving(d) and srv is not None and alive(*srv):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(srv[0], signal.SIGTERM)
            wait_until(
                f"the warm pool server {d.name} (pid {srv[0]}) to stop",
                lambda d=d: "it still holds its lock" if serving(d) else None,  # type: ignore[misc]
                timeout=timeout,
                error=ProviderError,
                interval=0.1,
            )
            stopped.append(d.name)
        elif not serving(d):
            for name in _waiting(d):
                _unlink(_ready_dir(d) / name)
    return stopped


# --- taking a cluster ---------------------------------------------------------------------------------
def _creating(d: Path) -> str | None:
    try:
        return (d / "creating").read_text().strip() or None
    except OSError:
        return None


def take(
    spec: WarmSpec,
    *,
    owner_pid: int | None,
    owner_start: int | None,
    kubeconfig_out: Path | None = None,
    wait: float = 0.0,
    starting: Callable[[], bool] | None = None,
    log: Log = lambda _msg: None,
) -> str | None:
    """Take a waiting cluster of ``spec`` and make ``owner_pid`` its owner (None: nobody, a persistent
    cluster); its name, or None when none is there.

    With ``wait`` > 0, a cluster the server is creating at the time of the call is waited for, up to
    ``wait`` seconds, unless another taker gets it first (then None: the caller creates its own rather
    than queue behind others). ``starting``: the server was just started and is alive while this says
    so; its first cluster is waited for too.
    """
    if kubeconfig_out is not None:
        check_kubeconfig_out(kubeconfig_out)  # refused before anything is taken
    d = pool_dir(spec)
    t0 = time.monotonic()
    awaited: str | None = None
    while True:
        for name in _waiting(d):
            if not _unlink(_ready_dir(d) / name):
                continue  # another taker (or the server dropping it) was first
            _touch(d / "used")
            if _adopt(d, name, owner_pid, owner_start, kubeconfig_out, log):
                return name
        if time.monotonic() - t0 >= wait:
            return None
        creating = _creating(d) if serving(d) else None
        if awaited is None:
            if creating is not None:
                awaited = creating
            elif starting is None or not starting():
                return None
        elif creating != awaited and awaited not in _waiting(d):
            return None  # the awaited one was taken by someone else, or its create failed
        time.sleep(0.05)


def _adopt(
    d: Path, name: str, owner_pid: int | None, owner_start: int | None, kubeconfig_out: Path | None, log: Log
) -> bool:
    """Hand the taken cluster ``name`` to its new owner; False when it is not usable (a cluster of a
    server that is gone is left to the reaper; a dead one is deleted). Whatever fails before the new
    owner is saved hands the cluster back to the server (its ready file again) and raises."""
    import shutil

    server = _server(d)
    saved = False
    try:
        with state_mod.global_lock():
            st = state_mod.load_state(name)
            if st is None or st.phase != "ready":
                log(f"warm pool: {name} is gone or not ready; skipped")
                saved = True  # nothing to hand back
                return False
            if server is None or (st.owner_pid, st.owner_start) != server or not alive(*server):
                log(f"warm pool: {name} is not a live server's; left to the reaper")
                saved = True
                return False
            st.owner_pid, st.owner_start = owner_pid, owner_start
            if kubeconfig_out is not None:
                try:
                    kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(st.kubeconfig, kubeconfig_out)
                    os.chmod(kubeconfig_out, 0o600)
                except OSError as exc:
                    raise ProviderError(f"--kubeconfig {kubeconfig_out}: cannot write it ({exc})") from exc
                st.extra_kubeconfig = str(kubeconfig_out)
            st.save()
            saved = True
    finally:
        if not saved:
            with contextlib.suppress(OSError):
                (_ready_dir(d) / name).touch()
    try:
        check_alive(st)
    except ProviderError as exc:
        log(f"warm pool: {name} is not alive ({exc}); deleting it")
        with contextlib.suppress(K8sStateError):
            LocalProvider().delete(name)
        return False
    return True
