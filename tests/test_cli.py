"""The ``k8sstate`` CLI on real dumps / captures: trace, diff, show, snapshot; error handling."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_fixtures import k8s_value, service, start_etcd

from pytest_k8sstate.cli.main import build_parser, main
from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.etcd.client import EtcdClient
from pytest_k8sstate.etcd.server import find_etcd_binary
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ns() -> Iterator[NetnsExec]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and loads netfilter rules (CAP_NET_ADMIN)")
    with netns.temporary("h4c") as n:
        yield n


@pytest.fixture
def nft_dump(ns: NetnsExec, tmp_path: Path) -> Path:
    """``nft -j list ruleset`` of a namespace with kube-proxy's nftables rules (2 services × 3 endpoints)."""
    ns.run(["nft", "-f", "-"], input=render_ruleset(generate_services(2, 3)).encode(), timeout=60)
    p = tmp_path / "ruleset.json"
    p.write_bytes(ns.run(["nft", "-j", "list", "ruleset"]).stdout)
    return p


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------------------
# trace


def test_trace_nft_json(nft_dump: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "trace", "--nft-json", str(nft_dump), "--dst", "172.30.0.10:80", "--json")
    assert (rc, err) == (0, "")
    doc = json.loads(out)
    assert list(doc) == ["outcomes"]
    assert doc["outcomes"] == [
        {
            "probability": pytest.approx(1 / 3),
            "dnat": f"10.180.0.{i}:8080",
            "masquerade": True,
            "verdict": "ACCEPT",
        }
        for i in (1, 2, 3)
    ]
    rc, out, _ = run(capsys, "trace", "--nft-json", str(nft_dump), "--dst", "172.30.0.10:80", "--paths")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "packet tcp 203.0.113.10:40000 → 172.30.0.10:80, starts in nat PREROUTING"
    assert lines[1].split() == ["PROBABILITY", "DNAT", "MASQUERADE", "VERDICT"]
    assert lines[2].split() == ["0.333333", "(1/3)", "10.180.0.1:8080", "yes", "ACCEPT"]
    assert any(line.startswith("10.180.0.1:8080 (ACCEPT): ") for line in lines)
    # from a pod inside the cluster CIDR: not masqueraded; a local source starts in OUTPUT
    rc, out, _ = run(
        capsys, "trace", "--nft-json", str(nft_dump), "--dst", "172.30.0.10:80", "--src", "10.9.9.9", "--json"
    )
    assert {o["masquerade"] for o in json.loads(out)["outcomes"]} == {False}
    rc, out, _ = run(
        capsys,
        "trace",
        "--nft-json",
        str(nft_dump),
        "--dst",
        "172.30.0.10:80",
        "--src",
        "192.0.2.5",
        "--local-ip",
        "192.0.2.5",
        "127.0.0.1",
    )
    assert "starts in nat OUTPUT (node-local source)" in out


def test_trace_iptables_save(ns: NetnsExec, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svcs = make_services(1, 4)
    ns.run(["iptables-restore"], input=kube_proxy_iptables(svcs).encode(), timeout=60)
    dump = tmp_path / "iptables.txt"
    dump.write_bytes(ns.run(["iptables-save"]).stdout)
    rc, out, err = run(
        capsys, "trace", "--iptables-save", str(dump), "--dst", f"{svcs[0].cluster_ip}:80", "--json"
    )
    assert (rc, err) == (0, "")
    outcomes = json.loads(out)["outcomes"]
    assert sorted(o["dnat"] for o in outcomes) == sorted(svcs[0].endpoints)
    assert all(abs(o["probability"] - 0.25) < 1e-6 for o in outcomes)


def test_malformed_dumps_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_ipt = tmp_path / "bad.txt"
    bad_ipt.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [oops]\nCOMMIT\n")
    rc, out, err = run(capsys, "trace", "--iptables-save", str(bad_ipt), "--dst", "10.0.0.1:80")
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"k8sstate: error: {bad_ipt}:3: expected ")

    bad_nft = tmp_path / "bad.json"
    bad_nft.write_text('{"nftables": [\n  {"table": }\n]}\n')
    rc, out, err = run(capsys, "trace", "--nft-json", str(bad_nft), "--dst", "10.0.0.1:80")
    assert rc == 2
    assert err.count("\n") == 1
    assert err.startswith(f"k8sstate: error: {bad_nft}:2: expected ")

    rc, _, err = run(capsys, "trace", "--nft-json", str(bad_nft), "--dst", "10.0.0.1")
    assert rc == 2
    assert err == (
        "k8sstate: error: --dst: expected IPv4:PORT such as 10.96.0.10:53 or [IPv6]:PORT such as "
        "[fd00::a]:53, got '10.0.0.1'\n"
    )
    rc, _, err = run(capsys, "trace", "--nft-json", str(tmp_path / "missing.json"), "--dst", "10.0.0.1:80")
    assert rc == 2
    assert err.startswith(f"k8sstate: error: {tmp_path / 'missing.json'}: cannot read")


def test_one_entry_point_registers_every_group_and_a_missing_one_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No import guard that silently drops a command group (it hid "not written yet" modules)."""
    import pytest_k8sstate.cli.cluster as cluster_cli

    cli_main = importlib.import_module("pytest_k8sstate.cli.main")  # the package's `main` is the function

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {"trace", "diff", "show", "snapshot", "binaries", "cluster", "node"} <= set(sub.choices)
    assert not hasattr(cluster_cli, "main")  # `k8sstate` (pytest_k8sstate.cli:main) is the only entry point
    monkeypatch.setattr(cli_main, "EXTENSIONS", (*cli_main.EXTENSIONS, "pytest_k8sstate.cli.not_written"))
    with pytest.raises(ModuleNotFoundError, match="not_written"):
        build_parser()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0  # a bare `k8sstate` prints the help (tests/test_cli_diffshow.py)
    assert main(["trace", "--dst", "10.0.0.1:80"]) == 2  # needs --iptables-save or --nft-json
    assert main(["--help"]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------------------------------
# snapshot / show / diff


def test_snapshot_show_diff_from_network_namespace(
    ns: NetnsExec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svcs = make_services(2, 2)
    ns.run(["iptables-restore"], input=kube_proxy_iptables(svcs[:1]).encode(), timeout=60)
    before = tmp_path / "before.json"
    rc, out, err = run(
        capsys, "snapshot", "-o", str(before), "--netns", ns.netns, "--label", "before", "--no-ipvs"
    )
    assert (rc, err) == (0, "")
    assert out == f"wrote {before}: 0 etcd keys, 1 node(s)\n"
    ns.run(["iptables-restore"], input=kube_proxy_iptables(svcs).encode(), timeout=60)
    after = tmp_path / "after.json.gz"
    assert main(["snapshot", "-o", str(after), "--netns", ns.netns, "--label", "after"]) == 0
    capsys.readouterr()

    rc, out, _ = run(capsys, "show", str(before))
    assert rc == 0
    assert out.startswith("snapshot 'before' taken ")
    assert "etcd: not captured" in out
    assert f"node {ns.netns}:" in out
    assert "iptables nat" in out

    rc, out, _ = run(capsys, "diff", str(before), str(after), "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["etcd"]["added"] == doc["etcd"]["removed"] == doc["etcd"]["modified"] == []
    nd = doc["nodes"][ns.netns]
    assert ["nat", svcs[1].svc_chain] in nd["chains_added"]
    assert nd["rules_removed"] == []
    rc, out, _ = run(capsys, "diff", str(before), str(after))
    assert rc == 0
    assert out.startswith("diff before → after\n")
    assert (
        f"  service {svcs[1].port_id}: added {svcs[1].cluster_ip}:{svcs[1].port}/tcp; endpoints 0 → 2" in out
    )
    rc, out, _ = run(capsys, "diff", str(before), str(after), "--rules")
    assert rc == 0
    assert f"+ chain nat {svcs[1].svc_chain}" in out


def _path_dir(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for n in names:
        real = shutil.which(n)
        assert real is not None, n
        (d / n).symlink_to(real)
    return d


def _cli_process(argv: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(path)
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "pytest_k8sstate.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_snapshot_with_missing_tools_warns_per_part_and_with_none_captured_fails(
    ns: NetnsExec, tmp_path: Path
) -> None:
    """iptables-save / ip6tables-save / nft / ipset missing on PATH: the rest is captured (exit 0, one
    warning per part);
    not even `ip` (no part at all): one error naming the node, exit 2, no file."""
    out = tmp_path / "partial.json"
    proc = _cli_process(
        ["snapshot", "-o", str(out), "--netns", ns.netns, "--no-ipvs"],
        _path_dir(tmp_path, ["ip", "sh", "test"]),
    )
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.splitlines()
    assert sorted(w.split(":")[1].strip() for w in warnings) == [f"node {ns.netns}"] * 4
    assert sorted(w.split(": ")[2].split()[0] for w in warnings) == ["ip6tables", "ipsets", "iptables", "nft"]
    snap = Snapshot.load(out)
    assert snap.nodes[ns.netns].links
    assert set(snap.nodes[ns.netns].errors) == {"iptables", "ip6tables", "nft", "ipsets"}

    empty = tmp_path / "empty"
    empty.mkdir()
    none = tmp_path / "none.json"
    proc = _cli_process(["snapshot", "-o", str(none), "--netns", ns.netns], empty)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"k8sstate: error: node {ns.netns}: nothing captured (every part failed)")
    assert "Traceback" not in proc.stderr
    assert not none.exists()


def test_snapshot_from_etcd_endpoint_with_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        find_etcd_binary()
    except BinaryError as exc:
        pytest.skip(str(exc))
    pki, server = start_etcd(tmp_path / "e")
    try:
        with EtcdClient(server.target) as c:
            c.put(
                "/registry/services/specs/default/web",
                k8s_value("v1", "Service", service("default", "web", uid="u")),
            )
        out_file = tmp_path / "s.json"
        t = server.target
        assert t.ca is not None
        assert t.cert is not None
        assert t.key is not None
        argv = ["snapshot", "-o", str(out_file), "--etcd-endpoint", t.endpoints[0]]
        argv += ["--etcd-ca", str(t.ca), "--etcd-cert", str(t.cert), "--etcd-key", str(t.key)]
        rc, out, err = run(capsys, *argv)
        assert (rc, err) == (0, "")
        assert out == f"wrote {out_file}: 1 etcd keys, 0 node(s)\n"
        snap = Snapshot.load(out_file)
        assert snap.etcd is not None
        assert snap.etcd.entries["/registry/services/specs/default/web"].decoded.kind == "Service"
        rc, out, _ = run(capsys, "show", str(out_file))
        assert "services/specs" in out
        # TLS files must come together
        rc, _, err = run(
            capsys, "snapshot", "-o", str(out_file), "--etcd-endpoint", t.endpoints[0], "--etcd-ca", str(t.ca)
        )
        assert rc == 2
        assert err.startswith("k8sstate: error: --etcd-ca, --etcd-cert and --etcd-key go together")
    finally:
        server.stop()
    del pki


def test_snapshot_needs_a_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "snapshot", "-o", str(tmp_path / "x.json"))
    assert rc == 2
    assert err.startswith("k8sstate: error: nothing to capture")


def test_malformed_snapshot_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    Snapshot("x", 1.0).save(good)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1,\n"label": "x",\n"taken_at": ,\n}')
    rc, out, err = run(capsys, "diff", str(good), str(bad))
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith(f"k8sstate: error: {bad}:3: expected valid JSON")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": 1, "label": "x", "taken_at": 1, "cluster": {}, "nodes": {"n": 5}}))
    rc, _, err = run(capsys, "show", str(wrong))
    assert rc == 2
    assert err.startswith(f"k8sstate: error: {wrong} at $.nodes.n: expected a node state object")


# --------------------------------------------------------------------------------------------------
# as a process


def test_python_dash_m_subprocess(nft_dump: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "pytest_k8sstate.cli", "trace", "--nft-json", str(nft_dump)]
    ok = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*argv, "--dst", "172.30.0.11:80", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["outcomes"]) == 3
    bad = tmp_path / "bad.json"
    bad.write_text("[1,\n2,\n")
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "pytest_k8sstate.cli", "show", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"k8sstate: error: {bad}:")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    """SIGINT while the CLI blocks reading a dump from stdin → exit 130 with one line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_k8sstate.cli",
            "trace",
            "--nft-json",
            "-",
            "--dst",
            "10.0.0.1:80",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        syscall = Path(f"/proc/{proc.pid}/syscall")
        while True:  # wait until it blocks in read(0, ...)
            try:
                if syscall.read_text().startswith("0 0x0 "):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("the CLI never blocked reading stdin")
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert err == b"k8sstate: interrupted\n"
