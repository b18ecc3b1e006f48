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


SEEN: set[str] = set()  # clusters of SPEC's pool the tests saw (only those are cleaned up)


def _waiting_seen() -> tuple[str, ...]:
    names = _waiting()
    SEEN.update(names)
    return names


@pytest.fixture
def server(pool_ok: None) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start pool servers of SPEC in the foreground of a child process; all stopped and cleaned after."""
    started: list[subprocess.Popen[bytes]] = []
    SEEN.clear()

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
        SEEN.update(_waiting())
        for name in SEEN:
            if local_state.load_state(name) is not None:
                LocalProvider().delete(name)


TAKE = """
import json, sys
from pytest_k8sstate.providers.host import proc_start_time
from pytest_k8sstate.providers.local import warm
owner = int(sys.argv[1])
spec = warm.WarmSpec(0, "iptables")
spec.slug()  # everything imported and resolved before the start line
print("ready", flush=True)
sys.stdin.readline()  # the start line: all takers at once
name = warm.take(spec, owner_pid=owner, owner_start=proc_start_time(owner))
print(json.dumps(name), flush=True)
"""


def test_one_waiting_cluster_goes_to_exactly_one_of_racing_takers_and_is_replaced(server) -> None:
    srv = server(size=1)
    _until("the pool's first cluster", lambda: len(_waiting_seen()) == 1)
    (first,) = _waiting()
    st = local_state.load_state(first)
    assert st is not None
    assert st.owner_pid == srv.pid  # waiting: owned by the server

    # six processes take at the same instant; each hands the cluster to this process. The server is
    # paused meanwhile, so no replacement can be there for a late taker.
    me = str(os.getpid())
    takers = [
        subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-c", TAKE, me], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(6)
    ]
    for p in takers:
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        for p in takers:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        got = [json.loads(p.communicate(timeout=60)[0]) for p in takers]
    finally:
        os.kill(srv.pid, signal.SIGCONT)
    assert [g for g in got if g is not None] == [first]  # exactly one winner, the others got nothing
    st = local_state.load_state(first)
    assert st is not None
    assert (st.owner_pid, st.owner_start) == (os.getpid(), proc_start_time(os.getpid()))
    cluster = LocalProvider().get(first)  # alive, usable
    assert [n.role for n in cluster.nodes] == ["control-plane"]

    # the server replaces it; the taken one is not its any more: stopping the pool leaves it alone
    _until("a replacement", lambda: len(_waiting_seen()) == 1 and _waiting() != (first,))
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
    _until("the pool's first cluster", lambda: len(_waiting_seen()) == 1)
    (name,) = _waiting()
    os.killpg(srv.pid, signal.SIGKILL)
    srv.wait(timeout=10)
    # its ready file is stale and the cluster alive but ownerless: a taker leaves it to the reaper
    me = os.getpid()
    assert warm.take(SPEC, owner_pid=me, owner_start=proc_start_time(me)) is None
    st = local_state.load_state(name)
    assert st is not None
    assert st.owner_pid == srv.pid  # not adopted
    assert name in reap()  # its owner (the server) is gone: reaped like any other cluster
    assert leftovers("local", name) == []
    assert _waiting() == ()


def test_a_kubeconfig_path_that_is_not_ours_is_refused_before_anything_is_taken(
    server, tmp_path: Path
) -> None:
    server(size=1)
    _until("the pool's first cluster", lambda: len(_waiting_seen()) == 1)
    (name,) = _waiting()
    theirs = tmp_path / "config"
    theirs.write_text("apiVersion: v1\nkind: Config\n")
    me = os.getpid()
    with pytest.raises(ConfigError, match="is not a kubeconfig written by k8sstate"):
        warm.take(SPEC, owner_pid=me, owner_start=proc_start_time(me), kubeconfig_out=theirs)
    assert _waiting() == (name,)  # still waiting, still the server's
    assert theirs.read_text() == "apiVersion: v1\nkind: Config\n"
    ours = tmp_path / "ours" / "kubeconfig"
    assert warm.take(SPEC, owner_pid=me, owner_start=proc_start_time(me), kubeconfig_out=ours) == name
    st = local_state.load_state(name)
    assert st is not None
    assert st.extra_kubeconfig == str(ours)
    assert ours.read_bytes() == Path(st.kubeconfig).read_bytes()
    LocalProvider().delete(name)
    assert not ours.exists()  # our copy goes with the cluster


def test_an_unused_pool_stops_on_its_own_and_deletes_what_waits(server) -> None:
    srv = server(size=1, idle=8.0)
    _until("the pool's first cluster", lambda: len(_waiting_seen()) == 1)
    (name,) = _waiting()
    out, _ = srv.communicate(timeout=CREATE)
    assert srv.returncode == 0
    assert b"unused for 8s; stopping" in out, out.decode(errors="replace")
    assert leftovers("local", name) == []
    status = _status()
    assert status is not None
    assert status.server_pid is None


def test_a_taker_waits_for_the_cluster_being_created_instead_of_creating_its_own(server) -> None:
    srv = server(size=1)
    me = os.getpid()
    t0 = time.monotonic()
    name = warm.take(
        SPEC, owner_pid=me, owner_start=proc_start_time(me), wait=CREATE, starting=lambda: srv.poll() is None
    )
    assert name is not None, "the server's first cluster was not handed over"
    try:
        assert time.monotonic() - t0 > 1.0  # it was being created, not already there
        st = local_state.load_state(name)
        assert st is not None
        assert st.owner_pid == me
    finally:
        LocalProvider().delete(name)


def test_a_taker_without_a_server_does_not_wait(pool_ok: None) -> None:
    me = os.getpid()
    t0 = time.monotonic()
    assert warm.take(SPEC, owner_pid=me, owner_start=proc_start_time(me), wait=60.0) is None
    assert time.monotonic() - t0 < 5.0


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
