"""The warm pool of ``local`` clusters (providers/local/warm.py): real servers, real clusters, real races.

Each test runs its own pool server (a ``k8sstate pool serve`` process, as ``--k8sstate-pool`` starts it)
for a 0-worker shape, and stops it at the end whatever happened. Root and the Kubernetes binaries are
needed (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_provider_contract import leftovers, unavailable  # tests/ is on sys.path (rootdir-less layout)

import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.cli.main import main as cli_main
from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.providers.host import proc_start_time
from pytest_k8sstate.providers.local import warm
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.providers.local.reaper import reap

ROOT = Path(__file__).resolve().parent.parent
SPEC = warm.WarmSpec(0, "iptables")
CREATE = 120.0  # one 0-worker cluster, loaded machine


def _until(what: str, probe: Callable[[], bool], timeout: float = CREATE) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _status() -> warm.PoolStatus | None:
    return next((s for s in warm.statuses() if s.slug == SPEC.slug()), None)


def _waiting() -> tuple[str, ...]:
    s = _status()
    return s.waiting if s else ()


@pytest.fixture
def pool_ok() -> None:
    why = unavailable("local")
    if why:
        pytest.skip(why)


@pytest.fixture
def server(pool_ok: None) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start pool servers of SPEC in the foreground of a child process; all stopped and cleaned after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(size: int = 1, idle: float = 300.0) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "pytest_k8sstate.cli", "pool", "serve", "--nodes", "0"]
        p = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [*argv, "--size", str(size), "--idle", str(idle)],
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=warm.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
        reap()
        for name in [s.name for s in local_state.all_states() if s.name.startswith("wp")]:
            LocalProvider().delete(name)


TAKE = """
import json, os, sys, time
from pytest_k8sstate.providers.host import proc_start_time
from pytest_k8sstate.providers.local import warm
owner = int(sys.argv[1])
at = float(sys.argv[2])
time.sleep(max(0.0, at - time.time()))
name = warm.take(warm.WarmSpec(0, "iptables"), owner_pid=owner, owner_start=proc_start_time(owner))
print(json.dumps(name))
"""


def test_one_waiting_cluster_goes_to_exactly_one_of_racing_takers_and_is_replaced(server) -> None:
    srv = server(size=1)
    _until("the pool's first cluster", lambda: len(_waiting()) == 1)
    (first,) = _waiting()
    st = local_state.load_state(first)
    assert st is not None
    assert st.owner_pid == srv.pid  # waiting: owned by the server

    # six processes take at the same instant; each hands the cluster to this process
    at = time.time() + 2.0
    me = str(os.getpid())
    takers = [
        subprocess.Popen([sys.executable, "-c", TAKE, me, str(at)], cwd=ROOT, stdout=subprocess.PIPE)  # noqa: S603
        for _ in range(6)
    ]
    got = [json.loads(p.communicate(timeout=60)[0]) for p in takers]
    assert [g for g in got if g is not None] == [first]  # exactly one winner, the others got nothing
    st = local_state.load_state(first)
    assert st is not None
    assert (st.owner_pid, st.owner_start) == (os.getpid(), proc_start_time(os.getpid()))
    cluster = LocalProvider().get(first)  # alive, usable
    assert [n.role for n in cluster.nodes] == ["control-plane"]

    # the server replaces it; the taken one is not its any more: stopping the pool leaves it alone
    _until("a replacement", lambda: len(_waiting()) == 1 and _waiting() != (first,))
    (second,) = _waiting()
    assert warm.stop(spec=SPEC) == [SPEC.slug()]
    assert srv.wait(timeout=10) == 0
    assert leftovers("local", second) == []  # deleted with its server
    assert _waiting() == ()
    LocalProvider().get(first)  # still alive
    LocalProvider().delete(first)
    assert leftovers("local", first) == []


def test_a_killed_server_leaves_orphans_the_reaper_removes_and_a_taker_skips(server) -> None:
    srv = server(size=1)
    _until("the pool's first cluster", lambda: len(_waiting()) == 1)
    (name,) = _waiting()
    os.killpg(srv.pid, signal.SIGKILL)
    srv.wait(timeout=10)
    assert name in reap()  # its owner (the server) is gone: reaped like any other cluster
    assert leftovers("local", name) == []
    # its ready file is stale: taking skips it (no crash, nothing adopted)
    me = os.getpid()
    assert warm.take(SPEC, owner_pid=me, owner_start=proc_start_time(me)) is None
    assert _waiting() == ()


def test_an_unused_pool_stops_on_its_own_and_deletes_what_waits(server) -> None:
    srv = server(size=1, idle=8.0)
    _until("the pool's first cluster", lambda: len(_waiting()) == 1)
    (name,) = _waiting()
    out, _ = srv.communicate(timeout=CREATE)
    assert srv.returncode == 0
    assert b"unused for 8s; stopping" in out, out.decode(errors="replace")
    assert leftovers("local", name) == []
    status = _status()
    assert status is not None
    assert status.server_pid is None


def test_a_taker_waits_for_the_cluster_being_created_instead_of_creating_its_own(server) -> None:
    server(size=1)
    me = os.getpid()
    t0 = time.monotonic()
    name = warm.take(SPEC, owner_pid=me, owner_start=proc_start_time(me), wait=CREATE, grace=15.0)
    assert name is not None, "the server's first cluster was not handed over"
    try:
        assert time.monotonic() - t0 > 1.0  # it was being created, not already there
        st = local_state.load_state(name)
        assert st is not None
        assert st.owner_pid == me
    finally:
        LocalProvider().delete(name)


def test_a_server_of_the_same_shape_exits_at_once(server) -> None:
    first = server(size=1)
    _until("the first server's lock", lambda: warm.serving(warm.pool_dir(SPEC)), timeout=30)
    second = server(size=1)
    out, _ = second.communicate(timeout=30)
    assert second.returncode == 0
    assert b"another server runs it" in out
    assert first.poll() is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pool", "start", "--size", "0"], "--size 0: expected 1 to 8 clusters"),
        (["pool", "start", "--nodes", "-1"], "--nodes -1: expected 0 to 64 worker nodes"),
        (["pool", "serve", "--idle", "0"], "--idle 0: expected seconds from 1 to 604800"),
    ],
)
def test_bad_pool_options_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"k8sstate: error: {message}\n"


def test_idle_limit_from_the_environment() -> None:
    assert warm.idle_limit({}) == warm.DEFAULT_IDLE
    assert warm.idle_limit({warm.IDLE_ENV: "30"}) == 30.0
    with pytest.raises(ConfigError, match="K8SSTATE_POOL_IDLE='soon': expected seconds"):
        warm.idle_limit({warm.IDLE_ENV: "soon"})
