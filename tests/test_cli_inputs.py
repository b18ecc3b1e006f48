"""Issue 14, the command line: input bounds (regular files, ``-``, a size cap), strict ``--dst``, the
address family of a DNAT, a snapshot that captured nothing, the binaries manifest, exit codes."""

from __future__ import annotations

import copy
import io
import json
import os
import sys
from pathlib import Path

import pytest
from test_hostile_inputs import NFT_JSON, _cli, _one_error_line, _subprocess, valid_snapshot

from pytest_k8sstate.cli.trace import _check_family
from pytest_k8sstate.errors import ConfigError, TraceError
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.util.inputs import MAX_INPUT_ENV, max_input_bytes, read_input

# --------------------------------------------------------------------------------------------------
# CLI input bounds


def test_fifo_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: opening it for reading the usual way would block forever
    for argv in (
        ("show", str(fifo)),
        ("diff", str(fifo), str(fifo)),
        ("trace", "--iptables-save", str(fifo), "--dst", "10.0.0.1:80"),
        ("trace", "--nft-json", "/dev/zero", "--dst", "10.0.0.1:80"),
        ("show", str(tmp_path)),
    ):
        proc = _subprocess(*argv)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        _one_error_line(err, "not a regular file", "give '-'")
        assert str(fifo) in err or "/dev/zero" in err or str(tmp_path) in err


def test_dash_reads_stdin_and_closed_stdin_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "s.json"
    valid_snapshot().save(good)
    proc = _subprocess("show", "-", input=good.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert b"before" in proc.stdout
    for stdin in (None, io.TextIOWrapper(io.BytesIO(b""))):
        if stdin is not None:
            stdin.close()
        monkeypatch.setattr(sys, "stdin", stdin)
        rc, out, err = _cli(capsys, "trace", "--nft-json", "-", "--dst", "10.0.0.1:80")
        assert (rc, out) == (2, "")
        _one_error_line(err, "-: standard input is closed")
        rc, _, err = _cli(capsys, "show", "-")
        assert rc == 2
        _one_error_line(err, "standard input is closed; pipe the snapshot into it")


def test_input_size_is_capped_and_the_cap_can_be_lifted(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    Snapshot("big", 1.0, cluster={"pad": "x" * (3 << 20)}).save(big)  # a valid 3 MB snapshot
    dump = tmp_path / "big.txt"
    dump.write_bytes(b"x" * (3 << 20))
    for argv in (("show", str(big)), ("trace", "--iptables-save", str(dump), "--dst", "10.0.0.1:80")):
        proc = _subprocess(*argv, env={MAX_INPUT_ENV: "1M"})
        assert proc.returncode == 2
        _one_error_line(
            proc.stderr.decode(), argv[-1] if argv[0] == "show" else str(dump),
            "larger than the input limit of 1048576 bytes", MAX_INPUT_ENV,
        )  # fmt: skip
    # stdin: a stream that never ends (here: 3 MB of it) is cut at the cap
    proc = _subprocess("trace", "--iptables-save", "-", "--dst", "10.0.0.1:80", env={MAX_INPUT_ENV: "1M"},
                       input=b"\0" * (3 << 20))  # fmt: skip
    assert proc.returncode == 2
    _one_error_line(proc.stderr.decode(), "<stdin>: larger than the input limit")
    # lifted: the same snapshot is read
    proc = _subprocess("show", str(big), env={MAX_INPUT_ENV: "8M"})
    assert proc.returncode == 0, proc.stderr
    assert b"big" in proc.stdout
    proc = _subprocess("show", str(big), env={MAX_INPUT_ENV: "lots"})
    assert proc.returncode == 2
    _one_error_line(proc.stderr.decode(), f"${MAX_INPUT_ENV}='lots'")


def test_max_input_bytes_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, want in (("", 1 << 30), ("123", 123), ("4G", 4 << 30), ("500m", 500 << 20), ("2KB", 2048)):
        monkeypatch.setenv(MAX_INPUT_ENV, raw)
        assert max_input_bytes() == want
    for raw in ("0", "-1", "1.5G", "١٠", "G", "9" * 30):
        monkeypatch.setenv(MAX_INPUT_ENV, raw)
        with pytest.raises(ConfigError, match=MAX_INPUT_ENV):
            max_input_bytes()


def test_read_input_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^{tmp_path}/nope: cannot read dump: No such file"):
        read_input(str(tmp_path / "nope"), "dump")


@pytest.mark.parametrize(
    "dst",
    ["1.2.3.4:+80", "1.2.3.4: 80", "1.2.3.4:8_0", "1.2.3.4:８0", "1.2.3.4:٨٠", "1.2.3.4:²", "1.2.3.4:0",
     "1.2.3.4:65536", "1.2.3.4:080080", "1.2.3.4", "².2.3.4:80", "[::1]", "[::1]:0", "::1:80",
     "[1.2.3.4]:80", "1.2.3.4:80 "],
)  # fmt: skip
def test_dst_port_is_strict_ascii_1_to_65535(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dst: str
) -> None:
    dump = tmp_path / "d.txt"
    dump.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    rc, out, err = _cli(capsys, "trace", "--iptables-save", str(dump), "--dst", dst)
    assert (rc, out) == (2, "")
    _one_error_line(err, "--dst: expected")


def test_dst_accepts_the_valid_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "d.txt"
    dump.write_text("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    for dst in ("1.2.3.4:1", "1.2.3.4:65535", "1.2.3.4:00080"):
        rc, out, err = _cli(capsys, "trace", "--iptables-save", str(dump), "--dst", dst, "--json")
        assert (rc, err) == (0, ""), err
        assert json.loads(out)["outcomes"][0]["dnat"] is None


def test_ipv4_packet_dnated_to_ipv6_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = tmp_path / "v6.txt"
    dump.write_text(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "-A PREROUTING -d 10.0.0.1/32 -p tcp -m tcp --dport 80 "
        "-j DNAT --to-destination [fd00::2]:8080\nCOMMIT\n"
    )
    rc, out, err = _cli(capsys, "trace", "--iptables-save", str(dump), "--dst", "10.0.0.1:80", "--json")
    assert (rc, out) == (2, "")
    _one_error_line(err, str(dump))
    # the CLI's own check of an outcome (whatever the tracer returns): never "fd00::2:8080" as an answer
    for dnat in ("fd00::2:8080", "[fd00::2]:8080"):
        with pytest.raises(
            TraceError, match=r"dump.txt: the IPv4 packet to 10.0.0.1:80 is DNATed to the IPv6"
        ):
            _check_family(dnat, "10.0.0.1:80", "dump.txt")
    _check_family("10.1.2.3:8080", "10.0.0.1:80", "dump.txt")
    _check_family(None, "10.0.0.1:80", "dump.txt")
    # the nft tracer's error names the file too
    nft = copy.deepcopy(NFT_JSON)
    nft["nftables"][-1]["rule"]["expr"] = [{"dnat": {"addr": "fd00::2", "port": 8080}}]
    dump = tmp_path / "v6.json"
    dump.write_text(json.dumps(nft))
    rc, out, err = _cli(capsys, "trace", "--nft-json", str(dump), "--dst", "172.30.0.10:80")
    assert (rc, out) == (2, "")
    _one_error_line(err, str(dump))  # named by the tracer or, failing that, by the CLI


def test_error_lines_are_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "n" * 10_000_000
    rc, _, err = _cli(capsys, "snapshot", "-o", str(tmp_path / "f.json"), "--netns", name)
    assert rc == 2
    _one_error_line(err, "--netns nnnn", "(10000")
    assert len(err) <= 1100


# --------------------------------------------------------------------------------------------------
# snapshot: nothing captured is an error


def test_snapshot_of_a_missing_netns_is_one_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f.json"
    rc, stdout, err = _cli(capsys, "snapshot", "-o", str(out), "--netns", "no-such-netns-k8ss")
    assert (rc, stdout) == (2, "")
    _one_error_line(err, "--netns no-such-netns-k8ss: no such network namespace")
    assert not out.exists()
    rc, _, err = _cli(capsys, "snapshot", "-o", str(out), "--netns", "../etc")
    assert rc == 2
    _one_error_line(err, "no such network namespace")


def test_manifest_nested_deeply_or_malformed_is_ignored_with_one_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pytest_k8sstate.binaries import Versions
    from pytest_k8sstate.binaries.cache import Manifest, version_dir

    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    vdir = version_dir("kwok", Versions.resolve().kwok, tmp_path)
    vdir.mkdir(parents=True)
    binary = vdir / "kwok"
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o755)
    bad_manifests = [
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"binaries": {"kwok": {"source": {"x": 1}, "size": 10}}}),
        json.dumps({"binaries": {"kwok": {"size": 1e400}}}).replace("Infinity", "1e400"),
        json.dumps({"binaries": {"kwok": {"size": 10, "extra": [[[]]]}}}),
        json.dumps({"binaries": []}),
        "9" * 5000,
    ]
    for text in bad_manifests:
        (vdir / "manifest.json").write_text(text)
        caplog.clear()
        assert Manifest(vdir).data == {"binaries": {}}
        assert [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()], text[:40]
        for argv in (["binaries", "list"], ["binaries", "path", "kwok"]):
            rc, out, err = _cli(capsys, *argv)
            assert rc == 0, err
            assert "Traceback" not in err
        assert str(binary) in out
    (vdir / "manifest.json").unlink()
    os.mkfifo(vdir / "manifest.json")
    assert Manifest(vdir).data == {"binaries": {}}  # a FIFO is not opened for reading: no hang


def test_missing_binary_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    rc, out, err = _cli(capsys, "binaries", "path", "kind")
    assert (rc, out) == (2, "")
    _one_error_line(err, "kind is not in the cache")
    rc, _, err = _cli(capsys, "binaries", "install", "--components", "kind", "--no-download", "--no-build")
    assert rc == 2
    assert "k8sstate: error:" in err
    assert "Traceback" not in err
