"""The ``local`` reaper against state files it must not trust, owners killed mid-create, SIGTERM, a full disk.

Real processes, real network namespaces, a real full tmpfs (in a private mount namespace). The hostile-file
tests plant ``state.json`` files in a temporary ``K8SSTATE_CACHE_DIR`` and check that nothing outside it is
touched and that no unrelated process is signalled. The kill/SIGTERM tests create real clusters (root and
the Kubernetes binaries; skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_provider_contract import leftovers, unavailable  # tests/ is on sys.path (rootdir-less layout)

import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.node import netns
from pytest_k8sstate.providers.host import proc_start_time
from pytest_k8sstate.providers.local.procs import MARKER_ENV, OWNER_ENV, marked_processes
from pytest_k8sstate.providers.local.reaper import reap
from pytest_k8sstate.util.files import CACHE_ENV

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, /proc environ)")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _wait_marked(pids: set[int], timeout: float = 10.0) -> None:
    """Wait until every pid in ``pids`` shows its marker.

    Popen returns once the child's ``execve`` has closed its close-on-exec pipe, which the kernel does before
    it sets the new image's environment bounds: for a moment ``/proc/PID/environ`` reads empty.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = {m.pid for m in marked_processes()}
        if pids <= seen:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pids {sorted(pids - seen)} never showed their marker in {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "cache"
    (c / "clusters").mkdir(parents=True)
    monkeypatch.setenv(CACHE_ENV, str(c))
    return c


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process (not started by the provider, no marker)."""
    p = subprocess.Popen(["sleep", "300"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def _state(name: str, **over: object) -> dict[str, object]:
    st: dict[str, object] = {
        "name": name,
        "index": 7,
        "subnet": "172.31.7.0/24",
        "proxy_mode": "iptables",
        "version": "v1",
        "owner_pid": _dead_pid(),
        "owner_start": 1,
        "phase": "creating",
    }
    st.update(over)
    return st


def _plant(cache: Path, dirname: str, data: object) -> Path:
    d = cache / "clusters" / dirname
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return d / "state.json"


def _cli_list(cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CACHE_ENV: str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "pytest_k8sstate.cli", "cluster", "list", "--provider", "local", "--reap"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


# ------------------------------------------------------------------------------------------------
# hostile state files
# ------------------------------------------------------------------------------------------------
@needs_root
def test_traversal_name_and_unproven_process_are_left_alone(
    cache: Path, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    start = proc_start_time(sleeper.pid)
    exe = os.path.realpath(shutil.which("sleep") or "sleep")
    # the reproduction: a traversal name, a dead owner, a process entry without a start time
    hostile = _state("../../victim", processes=[{"name": "x", "pid": sleeper.pid, "start": None}])
    bad = _plant(cache, "evil", hostile)
    # a well-formed cluster whose entries point at the unrelated sleeper with one proof missing or wrong
    entries = [
        {"name": "no-start", "pid": sleeper.pid, "start": None, "exe": exe},
        {"name": "no-exe", "pid": sleeper.pid, "start": start},
        {"name": "wrong-exe", "pid": sleeper.pid, "start": start, "exe": "/usr/bin/python3"},
        {"name": "wrong-start", "pid": sleeper.pid, "start": (start or 0) + 1, "exe": exe},
    ]
    _plant(cache, "plain", _state("plain", processes=entries))
    res = _cli_list(cache)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if "warning" in ln] == [
        f"[k8sstate] warning: {bad}: refused cluster state: name: '../../victim' is not a cluster name; "
        f"remove the directory {bad.parent} if it is not yours (processes and network namespaces it "
        "lists are left alone)"
    ]
    assert sleeper.poll() is None, "an unrelated process was signalled"
    assert (victim / "precious").read_text() == "keep me"
    assert bad.exists()  # a refused file is left for the user to look at
    # the entries without a start time are ignored; those with a start time that run but prove nothing keep
    # the record (reported, never signalled)
    assert res.stdout.split() == ["plain", "local"]
    assert (cache / "clusters" / "plain").exists()
    _plant(cache, "plain", _state("plain", processes=entries[:1]))
    assert reap() == ["plain"]  # nothing it can prove and nothing running it records: reaped
    assert sleeper.poll() is None


@needs_root
def test_symlinked_cluster_dir_is_not_followed(cache: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "state.json").write_text(json.dumps(_state("link")))
    (cache / "clusters" / "link").symlink_to(outside)
    nested = tmp_path / "outside2"
    nested.mkdir()
    _plant(cache, "logs", _state("logs", kubeconfig=str(nested / "admin.conf")))
    assert reap() == []
    assert (outside / "state.json").exists()
    assert (cache / "clusters" / "link").is_symlink()
    assert nested.exists()
    assert (cache / "clusters" / "logs").exists()  # refused: its kubeconfig is outside the cluster dir


def test_clusters_dir_others_can_write_is_not_trusted(cache: Path, tmp_path: Path) -> None:
    """A clusters dir that someone else could swap under us (group/other-writable, or a symlink) is not
    reaped at all: the dead cluster's directory stays."""
    dead = _plant(cache, "dead1", _state("dead1")).parent
    clusters = cache / "clusters"
    os.chmod(clusters, 0o777)
    try:
        assert not local_state.trusted_dir(clusters)
        reap()
        assert dead.exists()
    finally:
        os.chmod(clusters, 0o700)
    assert local_state.trusted_dir(clusters)
    reap()
    assert not dead.exists()  # the same dead cluster, now in a trusted dir, is reaped

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = tmp_path / "linked-clusters"
    link.symlink_to(elsewhere)
    assert not local_state.trusted_dir(link)


@needs_root
def test_netns_of_another_cluster_or_in_use_is_kept(cache: Path, sleeper: subprocess.Popen[bytes]) -> None:
    tag = os.getpid() % 100000
    foreign = f"k8ss-hf{tag}-net"
    used = f"k8ss-hu{tag}-net"
    netns.create(foreign)
    netns.create(used)
    inside = subprocess.Popen(["ip", "netns", "exec", used, "sleep", "300"])  # noqa: S603
    try:
        _plant(cache, f"ha{tag}", _state(f"ha{tag}", netns=[foreign]))  # not a namespace of "ha…": refused
        _plant(cache, f"hu{tag}", _state(f"hu{tag}", netns=[used]))  # its own name, but someone else's inside
        reap()
        assert netns.exists(foreign)
        assert netns.exists(used)
        assert inside.poll() is None
        assert (cache / "clusters" / f"hu{tag}").exists()  # kept: the namespace could not be proven ours
    finally:
        inside.kill()
        inside.wait()
        netns.delete(foreign)
        netns.delete(used)


def test_delete_reports_a_recorded_process_it_cannot_prove(
    cache: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    from pytest_k8sstate.providers.local.provider import LocalProvider

    start = proc_start_time(sleeper.pid)
    _plant(
        cache,
        "kp",
        _state("kp", owner_pid=None, processes=[{"name": "x", "pid": sleeper.pid, "start": start}]),
    )
    with pytest.raises(
        ProviderError, match=rf"x \(pid {sleeper.pid}: recorded without a matching start time"
    ):
        LocalProvider().delete("kp")
    assert sleeper.poll() is None
    assert (cache / "clusters" / "kp" / "state.json").exists()


@needs_root
def test_marked_process_of_a_vanished_cluster_is_reaped_only_without_owner(cache: Path) -> None:
    marker = str((cache / "clusters" / "gone").resolve())
    orphan = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, MARKER_ENV: marker, OWNER_ENV: f"{_dead_pid()}:1"}
    )
    me = f"{os.getpid()}:{proc_start_time(os.getpid())}"
    owned = subprocess.Popen(["sleep", "300"], env={**os.environ, MARKER_ENV: marker, OWNER_ENV: me})
    try:
        _wait_marked({orphan.pid, owned.pid})
        reap()
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert owned.poll() is None
    finally:
        for p in (orphan, owned):
            p.kill()
            p.wait()


def test_kind_reaper_ignores_hostile_dirs(tmp_path: Path) -> None:
    from pytest_k8sstate.providers.kind.reaper import orphaned, orphans

    root = tmp_path / "kind-clusters"
    outside = tmp_path / "outside"
    outside.mkdir()
    rec = {"owner_pid": _dead_pid(), "owner_start": 1, "docker_host": None}
    (outside / "state.json").write_text(json.dumps({**rec, "name": "link"}))
    root.mkdir()
    (root / "link").symlink_to(outside)
    for dirname, data in [
        ("Bad_Name", {**rec, "name": "Bad_Name"}),
        ("other", {**rec, "name": "victim"}),
        ("nostart", {**rec, "name": "nostart", "owner_start": None}),
        ("deep", "[" * 100_000),
        ("ok", {**rec, "name": "ok"}),
    ]:
        (root / dirname).mkdir()
        (root / dirname / "state.json").write_text(data if isinstance(data, str) else json.dumps(data))
    assert orphans(root, None) == ["ok"]
    assert not orphaned(root, "../outside", None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "Expecting property name"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (json.dumps(_state("wt", index="7")), "index: expected an integer"),
        (json.dumps(_state("wt", processes="x")), "processes: expected a list"),
        (json.dumps(_state("wt", processes=[{"name": "a", "pid": True, "start": 1}])), "processes[0].pid"),
        (json.dumps(_state("wt", created_at=1e300)), "created_at: expected a time"),
        (json.dumps(_state("wt", surprise=1)), "unknown field 'surprise'"),
        (json.dumps(_state("other")), "name: 'other' is not the directory's name 'wt'"),
        (" " * (2 << 20), "larger than"),
    ],
)
def test_malformed_state_is_one_warning(cache: Path, content: str, expected: str) -> None:
    path = _plant(cache, "wt", content)
    with pytest.raises(ProviderError) as err:
        local_state.load_state("wt")
    assert str(path) in str(err.value)
    assert expected in str(err.value)
    res = _cli_list(cache)
    assert (res.returncode, res.stdout) == (0, "no clusters (local)\n")
    warnings = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1, res.stderr
    assert str(path) in warnings[0]
    assert path.exists()


def test_state_is_private(cache: Path) -> None:
    os.chmod(cache / "clusters", 0o755)
    st = local_state.claim("pv", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    assert (cache / "clusters").stat().st_mode & 0o777 == 0o700
    assert st.dir.stat().st_mode & 0o777 == 0o700
    assert (st.dir / "state.json").stat().st_mode & 0o777 == 0o600


_ENOSPC_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    d = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], check=True, timeout=10)
    os.environ["K8SSTATE_CACHE_DIR"] = str(d)
    import pytest_k8sstate.providers.local.state as s
    from pytest_k8sstate.errors import ProviderError
    st = s.claim("full", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    try:
        with open(d / "filler", "wb") as fh:
            while True:
                fh.write(b"x" * 4096)
                fh.flush()
    except OSError:
        pass
    st.ports = {"api": 1}
    st.processes = [s.ProcRecord(name=f"p{i}" * 50, pid=1, start=1) for i in range(200)]
    for what, call in (("save", st.save), ("claim", lambda: s.claim("full2", proxy_mode="iptables",
                       version="v1", owner_pid=None, owner_start=None))):
        try:
            call()
            print(what, "no error")
        except ProviderError as exc:
            print(what, "ERROR", exc)
    print("FILES", sorted(os.listdir(st.dir)), sorted(os.listdir(d / "clusters")))
    """
)


@needs_root
def test_full_disk_is_one_message_and_no_temp_file(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private mount namespace")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(  # noqa: S603 - a private mount namespace: the tmpfs is invisible outside
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _ENOSPC_SCRIPT, str(mnt)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(
        f"save ERROR {mnt}/clusters/full/state.json: cannot write the cluster state: no space left on device"
    ), res.stdout
    assert lines[1].startswith("claim ERROR"), res.stdout
    assert "no space left on device" in lines[1], res.stdout
    assert lines[2] == "FILES ['state.json'] ['.lock', 'full']", res.stdout  # no temp file, no half claim
    assert not list(mnt.iterdir())  # the tmpfs was private to that process


# ------------------------------------------------------------------------------------------------
# owners killed at each step of a create; SIGTERM
# ------------------------------------------------------------------------------------------------
def _skip_without_cluster() -> None:
    why = unavailable("local")
    if why:
        pytest.skip(why)


_DIE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from pytest_k8sstate.providers.base import ClusterSpec
    from pytest_k8sstate.providers.local.provider import LocalProvider
    LocalProvider(timeout=90).create(ClusterSpec(name={name!r}, nodes=0))
    print("CREATED", flush=True)
    """
)


def _marked(name: str) -> list[int]:
    marker = str(local_state.cluster_dir(name).resolve())
    return [m.pid for m in marked_processes() if m.marker == marker]


@pytest.mark.slow
@pytest.mark.parametrize(
    "step",
    ["claimed", "netns-recorded", "popen:etcd", "popen:kube-apiserver", "started:kwok", "popen:kube-proxy"],
)
def test_owner_killed_at_a_step_of_create_leaves_nothing(step: str, tmp_path: Path) -> None:
    _skip_without_cluster()
    name = f"kd{os.getpid() % 10000}{abs(hash(step)) % 100}"
    if step == "popen:kube-proxy":
        step = f"popen:kube-proxy-{name}-control-plane"
    script = tmp_path / "die.py"
    script.write_text(_DIE_SCRIPT.format(root=str(ROOT), name=name))
    res = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, local_state.DIE_AT_ENV: step},
        timeout=180,
    )
    try:
        assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
        st = local_state.load_state(name)
        assert st is not None
        assert not st.owner_alive()
        if step.startswith("popen:"):  # killed between the start and the record of its pid: only marked
            proc = step.removeprefix("popen:")
            assert [p.pid for p in st.processes if p.name == proc] == [0]
            assert _marked(name), "the started process carries no marker"
        assert name in reap()
        assert _marked(name) == []
        assert leftovers("local", name) == []
    finally:
        for pid in _marked(name):
            os.kill(pid, signal.SIGKILL)
        reap()


_SESSION_TEST = textwrap.dedent(
    """
    import pathlib

    def test_waits(k8s_cluster):
        pathlib.Path({ready!r}).write_text(k8s_cluster.name)
        import time
        time.sleep(300)
    """
)


@pytest.mark.slow
def test_sigterm_cleans_up_a_session_like_ctrl_c(tmp_path: Path) -> None:
    _skip_without_cluster()
    ready = tmp_path / "ready"
    (tmp_path / "test_session.py").write_text(_SESSION_TEST.format(ready=str(ready)))
    name = ""
    proc = subprocess.Popen(  # noqa: S603
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *(
                "--k8sstate-provider",
                "local",
                "--k8sstate-nodes",
                "0",
                "--k8sstate-artifacts",
                str(tmp_path / "artifacts"),
            ),
            str(tmp_path / "test_session.py"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), proc.communicate(timeout=60)[0].decode(errors="replace")[-3000:]
        name = ready.read_text()
        assert _marked(name)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0].decode(errors="replace")
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-3000:]
        assert _marked(name) == []
        assert leftovers("local", name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _marked(name) if name else []:
            os.kill(pid, signal.SIGKILL)
        reap()


@pytest.mark.slow
def test_sigterm_during_create_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    """What ``k8sstate cluster create`` runs (``provider.create``) gets SIGTERM half-way: it cleans up."""
    _skip_without_cluster()
    from test_provider_contract import _start_create

    from pytest_k8sstate.providers.registry import get_provider

    name = f"sc{os.getpid() % 100000}"
    proc, pids = _start_create(get_provider("local"), name, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        assert proc.returncode != 0, err.decode(errors="replace")[-2000:]
        assert b"KeyboardInterrupt: signal SIGTERM" in err
        assert _marked(name) == []
        assert leftovers("local", name, pids) == []
    finally:
        reap()


# --- the --kubeconfig copy of a local cluster: removed on delete only while it is still our copy ---------
@pytest.mark.parametrize("edited", [False, True])
def test_delete_removes_the_kubeconfig_copy_by_content_not_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edited: bool
) -> None:
    from pytest_k8sstate.providers.local.provider import LocalProvider

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    st = local_state.claim("kcopy", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    kc = st.dir / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    copy = tmp_path / "elsewhere" / "my.kubeconfig"
    copy.parent.mkdir()
    copy.write_bytes(kc.read_bytes())
    if edited:  # the user changed the file since: it is theirs now
        copy.write_text(kc.read_text() + "# mine\n")
    st.kubeconfig = str(kc)
    st.extra_kubeconfig = str(copy)
    st.save()
    LocalProvider(progress=lambda _line: None).delete("kcopy")
    assert copy.exists() is edited
    assert not st.dir.exists()
