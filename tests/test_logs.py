"""Per-step logs: cursors at each snapshot, the lines between two of them in ``diff.logs``.

Real files and a real ``sh`` (through :class:`LocalExec`); the ``local`` provider's component logs at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_k8sstate.assertions import assert_logs_contain
from pytest_k8sstate.errors import CommandError, K8sStateError, ParseError
from pytest_k8sstate.node.exec import CommandResult, LocalExec
from pytest_k8sstate.node.logs import (
    KIND_SOURCES,
    LogSource,
    _journal_lines,
    capture_cursors,
    read_between,
)
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.state.diff import StateDiff
from pytest_k8sstate.state.logs import LogDiff


def _write(p: Path, *lines: str) -> None:
    with open(p, "a") as fh:
        fh.writelines(ln + "\n" for ln in lines)


def _sources(d: Path) -> list[LogSource]:
    return [LogSource("{stem}", path=f"{d}/*.log"), LogSource("pod-{dir}", path=f"{d}/pods/*/*.log")]


def test_source_validation_names_the_problem() -> None:
    with pytest.raises(K8sStateError, match="exactly one of path= or unit="):
        LogSource("x")
    with pytest.raises(K8sStateError, match="no spaces or shell characters"):
        LogSource("x", path="/var/log/$(reboot).log")
    with pytest.raises(K8sStateError, match="absolute"):
        LogSource("x", path="relative/*.log")
    with pytest.raises(K8sStateError, match="not a unit name"):
        LogSource("x", unit="a; b")
    assert LogSource("{dir}", path="/a/*/*.log").name_for("/a/kube-proxy/0.log") == "kube-proxy"
    assert KIND_SOURCES[0].name_for("/var/log/pods/kube-system_etcd-x_1/etcd/0.log") == "etcd"


def test_only_the_lines_written_between_two_snapshots(tmp_path: Path) -> None:
    (tmp_path / "pods" / "kube-proxy").mkdir(parents=True)
    api, proxy = tmp_path / "kube-apiserver.log", tmp_path / "pods" / "kube-proxy" / "0.log"
    _write(api, "old line 1", "old line 2")
    _write(proxy, "proxy started")
    ex = LocalExec("n1")
    before = capture_cursors(ex, _sources(tmp_path))
    assert {c.component for c in before.cursors} == {"kube-apiserver", "pod-kube-proxy"}
    assert before.errors == {}
    _write(api, "new: created Service default/web", "new: second line")
    _write(tmp_path / "kube-scheduler.log", "scheduler came up")  # a new source since before
    after = capture_cursors(ex, _sources(tmp_path))
    _write(api, "written after the after-snapshot: not in the diff")
    chunks = {c.component: c for c in read_between(ex, before, after)}
    assert chunks["kube-apiserver"].lines == ["new: created Service default/web", "new: second line"]
    assert chunks["kube-apiserver"].note is None
    assert chunks["kube-scheduler"].lines == ["scheduler came up"]
    assert chunks["pod-kube-proxy"].lines == []


def test_cut_rotated_and_gone_sources_are_said(tmp_path: Path) -> None:
    big, rot, gone = tmp_path / "big.log", tmp_path / "rot.log", tmp_path / "gone.log"
    renamed = tmp_path / "renamed.log"
    for p in (big, rot, gone, renamed):
        _write(p, "start")
    ex = LocalExec("n1")
    before = capture_cursors(ex, _sources(tmp_path))
    _write(big, *(f"line {i:04d}" for i in range(1000)))
    rot.unlink()
    _write(rot, "after rotation")  # a new file; the kernel may give it the old inode
    renamed.rename(tmp_path / "renamed.log.1")
    _write(renamed, "new file")  # as kubelet / logrotate rotate: the old one kept, a new inode
    gone.unlink()
    after = capture_cursors(ex, _sources(tmp_path))
    chunks = {c.component: c for c in read_between(ex, before, after, max_bytes=100_000, max_lines=10)}
    assert chunks["big"].lines == [f"line {i:04d}" for i in range(10)]
    assert chunks["big"].note == "cut: first 10 lines, 990 more"
    small = {c.component: c for c in read_between(ex, before, after, max_bytes=20)}
    assert small["big"].lines == ["line 0000", "line 0001"]  # 20 bytes: two lines
    assert small["big"].note is not None
    assert small["big"].note.startswith("cut: first 20 of 10000 bytes")
    assert chunks["rot"].lines == ["after rotation"]
    assert chunks["rot"].note is not None
    assert "read from its start" in chunks["rot"].note
    assert chunks["renamed"].lines == ["new file"]
    assert chunks["renamed"].note == "rotated or truncated since the first snapshot: read from its start"
    assert "renamed.log" not in chunks  # renamed.log.1 does not match *.log: not a source
    assert chunks["gone"].note == "gone since before"


class _Broken(LocalExec):
    def run(self, argv: Sequence[str], **_: object) -> CommandResult:  # type: ignore[override]
        raise CommandError(f"node {self.node}: docker exec failed: no such container")


def test_an_unreadable_node_is_recorded_not_raised(tmp_path: Path) -> None:
    _write(tmp_path / "a.log", "x")
    cur = capture_cursors(_Broken("n2"), _sources(tmp_path))
    assert cur.cursors == []
    assert "no such container" in cur.errors["*"]
    ok = capture_cursors(LocalExec("n2"), _sources(tmp_path))
    _write(tmp_path / "a.log", "y")
    after = capture_cursors(LocalExec("n2"), _sources(tmp_path))
    chunks = read_between(_Broken("n2"), ok, after)
    assert chunks[0].lines == []
    assert chunks[0].note is not None
    assert "no such container" in chunks[0].note


def test_journal_lines_stop_at_the_after_cursor() -> None:
    entries = [
        {"__CURSOR": "s=1;i=1", "MESSAGE": "route 10.244.1.0/24 via 172.18.0.3 added"},
        {"__CURSOR": "s=1;i=2", "MESSAGE": [104, 105]},  # journald's form of a non-UTF-8 message
        {"__CURSOR": "s=1;i=3", "MESSAGE": "after the snapshot"},
    ]
    raw = "\n".join(json.dumps(e) for e in entries).encode()
    lines, note = _journal_lines(raw, "s=1;i=2", 100)
    assert lines == ["route 10.244.1.0/24 via 172.18.0.3 added", "hi"]
    assert note is None
    lines, note = _journal_lines(raw, "s=1;i=9", 1)
    assert len(lines) == 1
    assert note == "cut: first 1 lines"
    _, note = _journal_lines(b"Failed to get journal\n", "x", 5)
    assert note is not None
    assert "unreadable journal output" in note


def test_a_unit_without_journal_entries_has_an_empty_cursor() -> None:
    cur = capture_cursors(LocalExec("n1"), [LogSource("agent", unit="k8ss-no-such-unit-xyz.service")])
    assert cur.errors == {}
    assert [(c.unit, c.cursor) for c in cur.cursors] == [("k8ss-no-such-unit-xyz.service", None)]


def test_snapshot_logs_round_trip_diff_and_filters(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    _write(logdir / "kube-proxy.log", "I1203 syncing iptables rules")
    ex = LocalExec("node-a")
    src = {"node-a": [LogSource("{stem}", path=f"{logdir}/*.log")]}
    before = Snapshot.capture("before", nodes=[ex], logs=src)
    _write(logdir / "kube-proxy.log", "I1203 Syncing nftables rules", "E1203 failed to sync: boom")
    _write(logdir / "etcd.log", "etcd: compacted")
    after = Snapshot.capture("after", nodes=[ex], logs=src)
    # saved and loaded: the cursors survive; the diff reads the nodes for the lines between
    before2 = Snapshot.load(before.save(tmp_path / "b.json.gz"))
    after2 = Snapshot.load(after.save(tmp_path / "a.json"))
    assert before2.logs == before.logs
    assert after2.logs == after.logs
    diff = before2.diff(after2, logs_from=[ex])
    assert diff.logs is not None
    assert diff.logs["node-a/kube-proxy"] == ["I1203 Syncing nftables rules", "E1203 failed to sync: boom"]
    assert diff.logs["node-a/etcd"] == ["etcd: compacted"]
    with pytest.raises(KeyError, match="logs: node-a/etcd, node-a/kube-proxy"):
        diff.logs["node-b/kube-proxy"]
    assert diff.logs.grep(r"^E\d{4}") == [("node-a/kube-proxy", "E1203 failed to sync: boom")]
    assert diff.logs.filter(component="kube-*").keys() == ["node-a/kube-proxy"]
    assert diff.logs.filter(node="node-b").keys() == []
    assert diff.logs.filter(pattern="compacted").keys() == ["node-a/etcd"]
    with pytest.raises(K8sStateError, match="not a regular expression"):
        diff.logs.filter(pattern="(")
    assert_logs_contain(diff, "Syncing", component="kube-proxy")
    with pytest.raises(AssertionError, match=r"0 log line\(s\) match 'Syncing'.*node-a/etcd \(1 lines\)"):
        assert_logs_contain(diff, "Syncing", component="etcd")
    # in the diff's JSON (diff.json artifact) and its text
    again = StateDiff.from_json(json.loads(json.dumps(diff.to_json())))
    assert again.logs is not None
    assert again.logs["node-a/kube-proxy"] == diff.logs["node-a/kube-proxy"]
    text = diff.summary()
    assert "logs (3 new line(s)):" in text
    assert "    E1203 failed to sync: boom" in text
    # without node access: cursors kept, a note says the lines were not read
    offline = before2.diff(after2)
    assert offline.logs is None
    assert any("not read" in n for n in offline.notes)


def test_old_snapshots_without_logs_still_load(tmp_path: Path) -> None:
    snap = Snapshot.capture("old", nodes=[])
    d = snap.to_json()
    assert "logs" not in d
    assert "pods" not in d
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    assert Snapshot.load(p).logs == {}
    d["logs"] = {"n1": {"node": "n1", "cursors": [{"component": "x", "path": "/a.log", "size": -1}]}}
    p.write_text(json.dumps(d))
    with pytest.raises(ParseError, match=r"at \$\.logs\.n1.*non-negative integer inode"):
        Snapshot.load(p)


def test_log_diff_json_rejects_bad_shapes() -> None:
    with pytest.raises(ParseError, match="'chunks': an object of lists"):
        LogDiff.from_json({"chunks": {"a/b": "x"}})
    with pytest.raises(ParseError, match="'lines': a list of strings"):
        LogDiff.from_json({"chunks": {"a/b": [{"lines": [1]}]}})


# ------------------------------------------------------------------------------------------------
# a real local cluster: its component logs between two snapshots
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_local_cluster_component_logs_between_snapshots() -> None:
    from kubernetes import client
    from test_provider_contract import unavailable  # tests/ is on sys.path (rootdir-less layout)

    from pytest_k8sstate.providers.base import ClusterSpec
    from pytest_k8sstate.providers.local.provider import LocalProvider
    from pytest_k8sstate.providers.logsources import log_sources

    why = unavailable("local")
    if why:
        pytest.skip(why)
    prov = LocalProvider()
    name = f"lg{os.getpid() % 100000}"
    cluster = prov.create(ClusterSpec(name=name, nodes=2))
    try:
        srcs = log_sources(cluster)
        cp, worker = cluster.nodes[0].name, cluster.nodes[1].name
        assert {s.component for s in srcs[cp]} >= {"kube-apiserver", "etcd", "kube-proxy"}
        assert [s.component for s in srcs[worker]] == ["kube-proxy"]
        before = cluster.snapshot("before", logs=True)
        assert {c.component for c in before.logs[worker].cursors} == {"kube-proxy"}
        api = client.CoreV1Api(cluster.kube_api())
        api.create_namespaced_service(
            "default",
            {
                "metadata": {"name": "logs-web"},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]},
            },
        )
        deadline = time.monotonic() + 30
        while True:  # kube-proxy syncs within a second or so of the Service
            after = cluster.snapshot("after", logs=True)
            diff = before.diff(after, logs_from=[n.exec for n in cluster.nodes])
            assert diff.logs is not None
            assert diff.logs.errors == {}
            if len(diff.logs.grep("Syncing iptables rules", component="kube-proxy")) >= 1 + len(
                cluster.workers
            ):
                break
            assert time.monotonic() < deadline, "\n".join(diff.logs.render())
            time.sleep(0.5)
        # the API server allocated the Service's ClusterIP, logged between the two snapshots only
        (hit,) = assert_logs_contain(diff, r'"allocated clusterIPs" service="default/logs-web"')
        assert hit[0] == f"{cp}/kube-apiserver"
        for n in cluster.nodes:  # every node's own kube-proxy resynced
            assert_logs_contain(diff, "Syncing iptables rules", component="kube-proxy", node=n.name)
        assert set(diff.logs.keys()) <= {f"{n.name}/kube-proxy" for n in cluster.nodes} | {
            f"{cp}/{c}"
            for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        }
        # nothing before the first cursor leaks in: each component's start line is older
        assert not diff.logs.grep(r"^--- \d\d:\d\d:\d\d ")
        assert not before.diff(before, logs_from=[n.exec for n in cluster.nodes]).logs
    finally:
        prov.delete(name)


def test_failure_artifacts_get_logs_txt_only_when_there_is_something(tmp_path: Path) -> None:
    from pytest_k8sstate.node.logs import LogChunk
    from pytest_k8sstate.plugin.state import write_artifacts

    quiet = StateDiff(logs=LogDiff(chunks={"n1/kube-proxy": [LogChunk("kube-proxy", "/x.log")]}))
    assert [p.name for p in write_artifacts(tmp_path / "a", before=None, after=None, diff=quiet)] == [
        "diff.json"
    ]
    chunk = LogChunk("kube-proxy", "/x.log", ["I1203 Syncing iptables rules"], "cut: first 1 lines, 4 more")
    loud = StateDiff(logs=LogDiff(chunks={"n1/kube-proxy": [chunk]}))
    written = write_artifacts(tmp_path / "b", before=None, after=None, diff=loud)
    assert [p.name for p in written] == ["diff.json", "logs.txt"]
    assert (tmp_path / "b" / "logs.txt").read_text().splitlines() == [
        "  n1/kube-proxy: 1 line(s)",
        "    I1203 Syncing iptables rules",
        "    (/x.log: cut: first 1 lines, 4 more)",
    ]
    assert json.loads((tmp_path / "b" / "diff.json").read_text())["logs"]["chunks"]["n1/kube-proxy"][0][
        "lines"
    ]


@pytest.mark.parametrize("data", [b"", b"a", b"start\n", bytes(range(256)) * 3, b"x" * 64])
def test_posix_cksum_matches_the_cksum_command(data: bytes) -> None:
    from pytest_k8sstate.node.exec import run_command
    from pytest_k8sstate.node.logs import posix_cksum

    out = run_command(["cksum"], input=data, timeout=10).text.split()
    assert (posix_cksum(data), len(data)) == (int(out[0]), int(out[1]))


def test_cursor_heads_of_many_files_in_one_read(tmp_path: Path) -> None:
    from pytest_k8sstate.node.logs import posix_cksum

    (tmp_path / "d.log").mkdir()  # a directory matching the glob is not a log
    _write(tmp_path / "a.log", "short")
    _write(tmp_path / "b.log", "y" * 100)
    (tmp_path / "c.log").write_bytes(b"")
    cur = capture_cursors(LocalExec("n"), [LogSource("{stem}", path=f"{tmp_path}/*.log")])
    got = {c.component: (c.size, c.head) for c in cur.cursors}
    assert got == {
        "a": (6, "6:" + str(posix_cksum(b"short\n"))),
        "b": (101, f"64:{posix_cksum(b'y' * 64)}"),
        "c": (0, f"0:{posix_cksum(b'')}"),
    }
