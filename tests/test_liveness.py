"""Liveness of a ``local`` cluster's components: checked at every snapshot and on
``--k8sstate-reuse-cluster``.

Real processes throughout: a recorded ``sleep`` killed for the quick tests (no root), and a real 1-worker
cluster whose kube-proxy, kube-apiserver and etcd are SIGKILLed for the others (root + binaries; skipped
with the reason otherwise). The cluster is deleted at the end although components are dead, and nothing of
it may be left.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_provider_local import local_cluster  # tests/ is on sys.path (rootdir-less layout)

import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.plugin.options import Settings
from pytest_k8sstate.plugin.pool import ClusterPool
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.local.liveness import check_alive, forget
from pytest_k8sstate.providers.local.procs import Procs
from pytest_k8sstate.util.files import CACHE_ENV


# ------------------------------------------------------------------------------------------------
# no root needed: recorded processes of a cluster state
# ------------------------------------------------------------------------------------------------
def test_a_killed_process_is_named_with_its_signal_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    st = local_state.claim("lv", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    procs = Procs(st)
    code = "import sys, time; print('serving on :6443', flush=True); time.sleep(300)"
    victim = procs.start("kube-apiserver", [sys.executable, "-c", code], None)
    other = procs.start("etcd", ["sleep", "300"], None)
    try:
        log = Path(victim.log or "")
        deadline = time.monotonic() + 30
        while "serving on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        check_alive(st)  # all running: nothing raised
        os.kill(victim.pid, signal.SIGKILL)
        procs.popen["kube-apiserver"].wait(timeout=30)
        with pytest.raises(ProviderError) as info:
            check_alive(st)
        msg = str(info.value)
        assert "local cluster 'lv' is broken: kube-apiserver not running" in msg
        assert f"pid {victim.pid}, killed by SIGKILL" in msg
        assert "serving on :6443" in msg  # its last log lines
        assert "etcd" not in msg.split("\n")[0]  # the running one is not named
        assert "k8sstate cluster delete --name lv" in msg
        # another process (the CLI, a reusing session) has no exit status, but still names the component
        forget(st)
        reloaded = local_state.load_state("lv")
        assert reloaded is not None
        with pytest.raises(
            ProviderError, match=r"kube-apiserver is not running \(pid \d+, exit status unknown"
        ):
            check_alive(reloaded)
    finally:
        procs.reap()
        forget(st)
    assert other.pid > 0


# ------------------------------------------------------------------------------------------------
# a real cluster (root + binaries)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_cluster("lv") as c:  # deleted at the end although components are dead; nothing left
        yield c


def _kill(cluster: Cluster, process: str) -> int:
    st = local_state.load_state(cluster.name)
    assert st is not None
    rec = next(p for p in st.processes if p.name == process)
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{rec.pid}/stat").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{rec.pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    return rec.pid


def test_dead_kube_proxy_fails_the_next_snapshot(cluster: Cluster) -> None:
    before = cluster.snapshot("before")  # all alive: captures
    assert before.nodes
    worker = cluster.workers[0].name
    pid = _kill(cluster, f"kube-proxy-{worker}")
    with pytest.raises(ProviderError) as info:
        cluster.snapshot("after")
    msg = str(info.value)
    assert f"kube-proxy of node '{worker}' is not running (pid {pid}, killed by SIGKILL)" in msg
    assert f"kube-proxy-{worker}.log" in msg
    tail = msg.split(f"kube-proxy-{worker}.log:\n", 1)[1].splitlines()
    assert tail
    assert tail[0].startswith("    ")
    assert tail[0].strip() not in ("(empty)", "(no log)")


def test_dead_apiserver_fails_the_next_snapshot(cluster: Cluster) -> None:
    _kill(cluster, "kube-apiserver")
    with pytest.raises(ProviderError, match=r"kube-apiserver is not running \(pid \d+, killed by SIGKILL\)"):
        cluster.snapshot("after")


def test_reuse_of_a_cluster_whose_etcd_died_says_what_is_broken(cluster: Cluster) -> None:
    _kill(cluster, "etcd")
    pool = ClusterPool(Settings(provider="local", nodes=1, reuse_cluster=cluster.name))
    with pytest.raises(ProviderError) as info:
        pool.get()
    msg = str(info.value)
    assert (
        f"--k8sstate-reuse-cluster {cluster.name}: the local cluster {cluster.name} exists but cannot "
        "be reused" in msg
    )
    assert "etcd is not running" in msg
    assert f"k8sstate cluster delete --name {cluster.name}" in msg
    assert "already exists" not in msg
    assert pool.close() == []  # nothing created, nothing deleted: the broken cluster stays for the user
    assert local_state.load_state(cluster.name) is not None
