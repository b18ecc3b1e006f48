"""The warm pool's server: keeps N clusters of one shape ready (``k8sstate pool serve``).

See :mod:`.warm` for the pool's files, ownership and how a session takes a cluster; this module is the
process that fills the pool, replaces what is taken, drops dead clusters, and stops (deleting what waits)
on SIGTERM/SIGINT or after its idle limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import time
from pathlib import Path

import pytest_k8sstate.providers.local.state as state_mod
from pytest_k8sstate.errors import ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.host import proc_start_time, sigterm_as_interrupt
from pytest_k8sstate.providers.local.liveness import check_alive
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.providers.local.warm import (
    MAX_SIZE,
    Log,
    WarmSpec,
    _ready_dir,
    _touch,
    _unlink,
    _waiting,
    pool_dir,
)
from pytest_k8sstate.util.files import atomic_write_json

__all__ = ["HEALTH_EVERY", "MAX_FAILURES", "POLL", "serve"]

POLL = 0.25  # the server's loop: a taken cluster is replaced within this
HEALTH_EVERY = 10.0  # seconds between liveness checks of the waiting clusters
MAX_FAILURES = 3  # creates failing in a row before the server gives up


def serve(spec: WarmSpec, *, size: int, idle: float, log: Log = print) -> int:
    """Keep ``size`` clusters of ``spec`` waiting until stopped or idle; 0 when done (or already served).
    SIGTERM and SIGINT stop it the same way (its waiting clusters deleted)."""
    if not 1 <= size <= MAX_SIZE:
        raise ConfigError(f"warm pool size {size}: expected 1 to {MAX_SIZE}")
    d = pool_dir(spec)
    _ready_dir(d).mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "serve.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if not _lock(fd):
            log(f"warm pool {spec.slug()}: another server runs it; nothing to do")
            return 0
        me, start = os.getpid(), proc_start_time(os.getpid())
        atomic_write_json(
            d / "server.json",
            {"pid": me, "start": start, "size": size, "idle": idle, "since": time.time()},
            mode=0o600,
        )
        _touch(d / "used")
        provider = LocalProvider(progress=lambda msg: log(f"  {msg}"))
        log(f"warm pool {spec.slug()}: keeping {size} ready ({spec.describe()}); idle limit {idle:.0f}s")
        sigterm_as_interrupt()
        pending: list[str] = []  # a cluster made but not yet marked ready
        try:
            _serve_loop(spec, d, provider, size=size, idle=idle, owner=(me, start), pending=pending, log=log)
        except KeyboardInterrupt:
            log(f"warm pool {spec.slug()}: stopping")
        finally:
            # a second Ctrl-C or SIGTERM must not cut the clean-up short
            old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                _drain(d, provider, (me, start), pending, log)
                with contextlib.suppress(OSError):
                    (d / "server.json").unlink()
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)
        return 0
    finally:
        os.close(fd)


def _lock(fd: int, patience: float = 2.0) -> bool:
    """Take the server lock; a taker's short shared probe (:func:`serving`) may hold it for a moment."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _serve_loop(
    spec: WarmSpec,
    d: Path,
    provider: LocalProvider,
    *,
    size: int,
    idle: float,
    owner: tuple[int, int | None],
    pending: list[str],
    log: Log,
) -> None:
    failures = 0
    checked = 0.0
    while True:
        _reap_children()  # never during a create: nothing else of ours runs at this point
        with contextlib.suppress(OSError):
            if time.time() - (d / "used").stat().st_mtime > idle:
                log(f"warm pool {spec.slug()}: unused for {idle:.0f}s; stopping")
                return
        if time.monotonic() - checked > HEALTH_EVERY:
            _drop_dead(d, provider, owner, log)
            checked = time.monotonic()
        if len(_waiting(d)) >= size:
            time.sleep(POLL)
            continue
        name = "wp" + secrets.token_hex(4)
        (d / "creating").write_text(name)
        pending[:] = [name]
        started = time.monotonic()
        try:
            provider.create(
                ClusterSpec(
                    name=name,
                    nodes=spec.nodes,
                    proxy_mode=spec.proxy_mode,
                    ip_family=spec.ip_family,
                    version=spec.version,
                )
            )
        except K8sStateError as exc:
            failures += 1
            log(f"warm pool {spec.slug()}: creating {name} failed ({failures}/{MAX_FAILURES}): {exc}")
            if failures >= MAX_FAILURES:
                log(f"warm pool {spec.slug()}: giving up after {failures} failed creates in a row")
                return
            time.sleep(min(30.0, 5.0 * failures))
            continue
        finally:
            with contextlib.suppress(OSError):
                (d / "creating").unlink()
        failures = 0
        (_ready_dir(d) / name).touch()
        pending.clear()
        _touch(d / "used")  # the idle time counts from here too: a slow create is not idleness
        log(f"warm pool {spec.slug()}: {name} ready in {time.monotonic() - started:.1f}s")


def _reap_children() -> None:
    """Collect exited children: the processes of a taken cluster are this server's children, and its
    taker kills them when it deletes the cluster (between creates nothing else of ours runs here)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _drop_dead(d: Path, provider: LocalProvider, owner: tuple[int, int | None], log: Log) -> None:
    """Delete waiting clusters that died or are no longer this server's (unlinking their file first)."""
    for name in _waiting(d):
        st = state_mod.load_state(name)
        why = None
        if st is None or st.phase != "ready" or (st.owner_pid, st.owner_start) != owner:
            why = "gone or not this pool's"
        else:
            try:
                check_alive(st)
            except ProviderError as exc:
                why = str(exc)
        if why is not None and _unlink(_ready_dir(d) / name):
            log(f"warm pool: dropping {name}: {why}")
            if st is not None and (st.owner_pid, st.owner_start) == owner:
                with contextlib.suppress(K8sStateError):
                    provider.delete(name)


def _drain(
    d: Path, provider: LocalProvider, owner: tuple[int, int | None], pending: list[str], log: Log
) -> None:
    """Delete every waiting cluster this server can still unlink (a taken one is the taker's), and the
    one it made but had not marked ready yet."""
    names = [n for n in _waiting(d) if _unlink(_ready_dir(d) / n)]
    for name in pending:
        st = state_mod.load_state(name)
        if st is not None and (st.owner_pid, st.owner_start) == owner:
            names.append(name)
    for name in names:
        try:
            provider.delete(name)
            log(f"warm pool: deleted waiting cluster {name}")
        except K8sStateError as exc:  # the reaper removes it later (its owner, this server, is gone)
            log(f"warm pool: deleting {name} failed: {exc}")
