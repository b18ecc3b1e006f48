"""Pinned binaries: versions, wrapper go.mod generation, cache, download fallback, go lookup, locking, CLI.

Real where it can be: the Kubernetes and etcd go.mod files come from the Go module proxy via ``go mod
download``, downloads are real attempts against the real URLs (they fail fast without internet), the lock is
held by a real second process, and one test really builds kwok with ``go install`` (Go's build cache makes
it quick after the first time). No Kubernetes build runs here.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest_k8sstate.binaries as b
from pytest_k8sstate.binaries import download, gobuild, versions
from pytest_k8sstate.cli import binaries as cli_binaries
from pytest_k8sstate.errors import BinaryError, ConfigError, ParseError

TRUE = Path(shutil.which("true") or "/bin/true")
HAVE_GO = shutil.which("go") is not None or Path("/usr/local/go/bin/go").exists()
needs_go = pytest.mark.skipif(not HAVE_GO, reason="needs the go command (install Go >= 1.26)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(root))
    for comp in b.COMPONENT_BINARIES:
        monkeypatch.delenv(b.Versions.env_var(comp), raising=False)
    return root


def put_binary(cache: Path, component: str, version: str, name: str, src: Path = TRUE) -> Path:
    vdir = cache / "bin" / f"{component}-{version}"
    vdir.mkdir(parents=True, exist_ok=True)
    dest = vdir / name
    shutil.copy2(src, dest)
    return dest


# --- versions ---
@pytest.mark.parametrize(
    ("given_", "want"),
    [("1.37.1", "v1.37.1"), ("v1.37.1", "v1.37.1"), (" 3.7.3 ", "v3.7.3"), ("1.38.0-rc.0", "v1.38.0-rc.0")],
)
def test_normalize_version_accepts_with_and_without_v(given_: str, want: str) -> None:
    assert b.normalize_version(given_) == want


@pytest.mark.parametrize(
    "bad", ["", "1.37", "v1", "latest", "1.37.x", "vv1.37.1", "1.37.1.2", "01.2.3", "1.37.1-"]
)
def test_normalize_version_rejects_with_the_value_and_the_expected_form(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"expected X\.Y\.Z or vX\.Y\.Z"):
        b.normalize_version(bad, what="kubernetes version")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.none()))
def test_normalize_version_fuzz_only_config_errors(value: object) -> None:
    try:
        out = b.normalize_version(value)
    except ConfigError:
        return
    assert out.startswith("v")
    assert b.normalize_version(out) == out


def test_versions_defaults_env_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"K8SSTATE_KUBERNETES_VERSION": "1.37.0", "K8SSTATE_KIND_VERSION": "v0.32.0"}
    v = b.Versions.resolve(env=env, kind="0.33.0")
    assert v.kubernetes == "v1.37.0"  # from the environment
    assert v.kind == "v0.33.0"  # the argument wins over the environment
    assert v.etcd == b.DEFAULT_ETCD_VERSION
    assert b.Versions(kubernetes="1.37.1").kubernetes == "v1.37.1"
    assert b.Versions.from_json(v.to_json()) == v
    with pytest.raises(ConfigError, match="K8SSTATE_ETCD_VERSION"):
        b.Versions.resolve(env={"K8SSTATE_ETCD_VERSION": "3.7"})


def test_pinned_defaults() -> None:
    v = b.Versions()
    assert v.kubernetes == "v1.37.1"  # v1.37.2's source zip is refused by proxy.golang.org (403)
    assert v.etcd.startswith("v3.7.")
    assert b.staging_version(v.kubernetes) == "v0.37.1"
    assert b.staging_version("1.38.0-rc.1") == "v0.38.0-rc.1"


def test_components_expand_groups_and_reject_unknown_names() -> None:
    assert versions.expand_components(None) == list(b.DEFAULT_BINARIES)
    assert versions.expand_components(["etcd,kwok", "kwok"]) == ["etcd", "etcdctl", "kwok"]
    assert "kubelet" not in versions.expand_components(["kubernetes"])
    assert {"kubelet", "kubeadm"} <= set(versions.expand_components(["all"]))
    with pytest.raises(ConfigError, match="unknown component 'kube-dns'"):
        versions.expand_components(["kube-dns"])


# --- wrapper go.mod generation ---
@needs_go
def test_kubernetes_wrapper_gomod_from_the_real_kubernetes_gomod(cache: Path) -> None:
    info = b.module_info("k8s.io/kubernetes", b.DEFAULT_KUBERNETES_VERSION, cache=cache)
    text = info.gomod.read_text()
    staged = b.staging_modules(text)
    assert {"k8s.io/api", "k8s.io/client-go", "k8s.io/kubelet", "k8s.io/kube-proxy"} <= set(staged)
    out = b.kubernetes_wrapper_gomod(text, "1.37.1")
    assert "require k8s.io/kubernetes v1.37.1" in out
    assert "./staging" not in out
    for mod in staged:
        assert f"\t{mod} => {mod} v0.37.1\n" in out
    assert out.count(" => ") == len(staged)
    assert "\ngo 1." in out


@needs_go
def test_module_info_reports_the_exact_go_error_for_a_version_the_proxy_refuses(cache: Path) -> None:
    with pytest.raises(BinaryError) as excinfo:
        b.module_info("sigs.k8s.io/kwok", "v0.0.999", cache=cache)
    msg = str(excinfo.value)
    assert "cannot serve sigs.k8s.io/kwok@v0.0.999" in msg
    assert "go mod download said:" in msg
    assert "v0.0.999" in msg.split("said:", 1)[1]


@needs_go
def test_etcd_wrapper_gomod_maps_local_replaces_to_published_modules(cache: Path) -> None:
    v = b.DEFAULT_ETCD_VERSION
    mods = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3")
    texts = {m: b.module_info(m, v, cache=cache).gomod.read_text() for m in mods}
    out = b.etcd_wrapper_gomod(texts, v)
    assert f"\tgo.etcd.io/etcd/server/v3 {v}\n" in out
    assert f"\tgo.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 {v}\n" in out
    assert "../" not in out


def test_staging_modules_rejects_other_modules_and_missing_staging() -> None:
    with pytest.raises(ParseError, match=r"module k8s\.io/kubernetes"):
        b.staging_modules("module example.com/x\n\ngo 1.22\n")
    with pytest.raises(ParseError, match="staging"):
        b.staging_modules("module k8s.io/kubernetes\n\ngo 1.22\n")
    with pytest.raises(ParseError, match="a 'go' directive"):
        b.staging_modules("module k8s.io/kubernetes\nreplace k8s.io/api => ./staging/src/k8s.io/api\n")
    with pytest.raises(ParseError, match=r"gomod:2: expected a replace directive"):
        b.staging_modules("module k8s.io/kubernetes\nreplace k8s.io/api ./x\n", source="gomod")
    single = "module k8s.io/kubernetes // c\ngo 1.22\nreplace k8s.io/api => ./staging/src/k8s.io/api // x\n"
    assert b.staging_modules(single) == ["k8s.io/api"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "module k8s.io/kubernetes",
                "go 1.26.0",
                "go x",
                "replace (",
                ")",
                "k8s.io/a => ./staging/a",
                "=>",
            ]
        )
        | st.text(max_size=40),
        max_size=12,
    )
)
def test_gomod_parser_fuzz_only_parse_errors(lines: list[str]) -> None:
    try:
        b.staging_modules("\n".join(lines))
    except ParseError:
        pass


# --- cache ---
def test_cache_dir_honours_the_environment(cache: Path) -> None:
    assert b.cache_dir() == cache


def test_cache_hit_adopts_a_binary_and_records_its_manifest(cache: Path) -> None:
    path = put_binary(cache, "kwok", "v0.8.0", "kwok")
    lines: list[str] = []
    got = b.ensure_binaries(["kwok"], progress=lines.append, download=False, build=False)
    assert got["kwok"] == path
    assert got.sources == {"kwok": "cache"}
    assert lines == ["kwok v0.8.0: cache hit (0.0s)"]
    manifest = json.loads((path.parent / "manifest.json").read_text())
    entry = manifest["binaries"]["kwok"]
    assert entry["source"] == "adopted"
    assert entry["sha256"] == hashlib.sha256(TRUE.read_bytes()).hexdigest()
    assert b.find_binary("kwok") == path
    assert b.find_binary("kind") is None
    ran = subprocess.run([str(got["kwok"])], timeout=10, check=False)  # noqa: S603 - argv list, no shell
    assert ran.returncode == 0
    # a second install is a cache hit straight from the manifest
    assert b.ensure_binaries(["kwok"], progress=lines.append, download=False, build=False).sources == {
        "kwok": "cache"
    }
    with pytest.raises(BinaryError, match="was not requested"):
        _ = got["kind"]


def test_progress_lines_carry_the_prefix_once(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_k8sstate.providers.base import stderr_progress

    put_binary(cache, "kwok", "v0.8.0", "kwok")
    b.ensure_binaries(["kwok"], download=False, build=False)  # the default progress: stderr
    b.ensure_binaries(["kwok"], progress=stderr_progress, download=False, build=False)  # the providers'
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["[k8sstate] kwok v0.8.0: cache hit (0.0s)"] * 2
    assert run_cli(["binaries", "install", "--components", "kwok", "--no-build", "--no-download"]) == 0
    assert "[k8sstate] kwok v0.8.0: cache hit (0.0s)\n" in capsys.readouterr().out


def test_a_binary_whose_size_changed_is_not_a_cache_hit(cache: Path) -> None:
    path = put_binary(cache, "kwok", "v0.8.0", "kwok")
    b.ensure_binaries(["kwok"], progress=lambda _: None, download=False, build=False)
    path.write_bytes(b"#!/bin/sh\n")  # truncated / replaced behind our back
    assert b.find_binary("kwok") is None
    with pytest.raises(BinaryError, match=r"kwok v0\.8\.0 not in the cache .*--no-build"):
        b.ensure_binaries(["kwok"], progress=lambda _: None, download=False, build=False)


# --- downloads ---
@pytest.mark.slow
def test_download_is_tried_for_real_and_falls_back_to_building(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No go on PATH: the fallback build stops right after the (real) download attempt, with the go message.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("K8SSTATE_GO", raising=False)
    monkeypatch.setattr(gobuild, "GO_FALLBACKS", ())
    lines: list[str] = []
    outcome: b.BinarySet | BinaryError
    try:
        outcome = b.ensure_binaries(["kind"], progress=lines.append, download_timeout=2.0)
    except BinaryError as exc:
        outcome = exc
    if isinstance(outcome, b.BinarySet):  # a machine with internet: downloaded and checksum-verified
        assert outcome.sources["kind"] == "download"
        return
    # no internet here: the download fails fast, then the build is tried
    assert any(
        ln.startswith("kind v0.33.0: download unavailable (")
        and ln.endswith("building from the Go module proxy")
        for ln in lines
    ), lines
    assert "Go toolchain is needed" in str(outcome)
    assert not list((cache / "bin" / "kind-v0.33.0").glob(".tmp-*"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real HTTP server on loopback standing in for dl.k8s.io and github.com (same paths)."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv(download.KUBERNETES_RELEASE_URL_ENV, f"{base}/k8s/")
        monkeypatch.setenv(download.GITHUB_URL_ENV, f"{base}/gh")
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("HTTP_PROXY", raising=False)
        yield root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def publish(path: Path, data: bytes, checksum: str | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return checksum or hashlib.sha256(data).hexdigest()


def test_official_download_with_a_verified_checksum(cache: Path, mirror: Path) -> None:
    arch = download.goarch()
    data = TRUE.read_bytes()
    exe = mirror / "k8s" / "v1.37.1" / "bin" / "linux" / arch / "kubectl"
    exe.with_name("kubectl.sha256").parent.mkdir(parents=True)
    exe.with_name("kubectl.sha256").write_text(publish(exe, data) + "\n")
    lines: list[str] = []
    got = b.ensure_binaries(["kubectl"], progress=lines.append, build=False)
    assert got.sources == {"kubectl": "download"}
    assert got["kubectl"].read_bytes() == data
    assert lines[-1].startswith("kubectl v1.37.1: downloaded (")
    entry = json.loads((got["kubectl"].parent / "manifest.json").read_text())["binaries"]["kubectl"]
    assert entry["source"] == "download"
    assert entry["detail"].endswith(f"/k8s/v1.37.1/bin/linux/{arch}/kubectl")
    assert subprocess.run([str(got["kubectl"])], timeout=10, check=False).returncode == 0  # noqa: S603


def test_a_checksum_mismatch_is_not_installed(cache: Path, mirror: Path) -> None:
    arch = download.goarch()
    exe = mirror / "k8s" / "v1.37.1" / "bin" / "linux" / arch / "kubectl"
    exe.with_name("kubectl.sha256").parent.mkdir(parents=True)
    exe.with_name("kubectl.sha256").write_text(publish(exe, TRUE.read_bytes(), "0" * 64))
    lines: list[str] = []
    with pytest.raises(BinaryError, match="--no-build"):
        b.ensure_binaries(["kubectl"], progress=lines.append, build=False)
    assert any("download unavailable (checksum mismatch for http://127.0.0.1:" in ln for ln in lines), lines
    vdir = cache / "bin" / "kubernetes-v1.37.1"
    assert sorted(p.name for p in vdir.iterdir()) == [".lock"]  # nothing installed, no temp file left


def test_etcd_and_kind_release_assets(cache: Path, mirror: Path) -> None:
    arch = download.goarch()
    stem = f"etcd-v3.7.3-linux-{arch}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("etcd", "etcdctl", "etcdutl"):
            tar.add(TRUE, arcname=f"{stem}/{name}")
    rel = mirror / "gh" / "etcd-io" / "etcd" / "releases" / "download" / "v3.7.3"
    digest = publish(rel / f"{stem}.tar.gz", buf.getvalue())
    (rel / "SHA256SUMS").write_text(f"{'1' * 64}  etcd-v3.7.3-darwin-arm64.zip\n{digest}  {stem}.tar.gz\n")
    kind = (
        mirror
        / "gh"
        / "kubernetes-sigs"
        / "kind"
        / "releases"
        / "download"
        / "v0.33.0"
        / f"kind-linux-{arch}"
    )
    digest = publish(kind, TRUE.read_bytes())
    kind.with_name(f"kind-linux-{arch}.sha256sum").write_text(f"{digest}  kind-linux-{arch}\n")
    got = b.ensure_binaries(["etcd", "kind"], progress=lambda _: None, build=False)
    assert got.sources == {"etcd": "download", "etcdctl": "download", "kind": "download"}
    assert not (got["etcd"].parent / "etcdutl").exists()
    assert not list(got["etcd"].parent.glob(".tmp-*"))
    for name in ("etcd", "etcdctl", "kind"):
        assert got[name].read_bytes() == TRUE.read_bytes()
    assert [r[0] for r in b.list_cached()] == ["etcd", "etcdctl", "kind"]
    assert got.path_env().split(":")[:2] == [str(got["etcd"].parent), str(got["kind"].parent)]


def test_checksum_file_formats() -> None:
    h = "a" * 64
    assert download.checksum_from(f"{h}\n", None, "x.sha256") == h
    assert (
        download.checksum_from(
            f"{'b' * 64}  other.tar.gz\n{h}  etcd-v3.7.3-linux-amd64.tar.gz\n",
            "etcd-v3.7.3-linux-amd64.tar.gz",
            "s",
        )
        == h
    )
    assert download.checksum_from(f"{h} *kind-linux-amd64", "kind-linux-amd64", "s") == h
    with pytest.raises(download.DownloadUnavailable, match="no sha256 for kind-linux-amd64"):
        download.checksum_from("<html>not found</html>", "kind-linux-amd64", "s")


# --- go ---
def test_missing_go_names_what_was_checked_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BinaryError) as excinfo:
        b.find_go(env={"PATH": str(tmp_path)}, fallbacks=(str(tmp_path / "go"),))
    msg = str(excinfo.value)
    assert "$K8SSTATE_GO" in msg
    assert str(tmp_path) in msg
    assert "install Go" in msg
    assert "K8SSTATE_GO=/path/to/go/bin/go" in msg
    with pytest.raises(BinaryError, match="K8SSTATE_GO='/nonexistent/go' is not an executable go command"):
        b.find_go(env={"K8SSTATE_GO": "/nonexistent/go"})


def test_failed_command_shows_the_last_lines_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    script = "import sys\nfor i in range(40): print('line', i)\nsys.exit(3)"
    with pytest.raises(BinaryError) as excinfo:
        gobuild.run_logged(
            [sys.executable, "-c", script], cwd=tmp_path, log_path=log, what="demo", timeout=30
        )
    msg = str(excinfo.value)
    assert "exited 3" in msg
    assert "line 39" in msg
    assert "line 0\n" not in msg
    assert "line 0" in log.read_text()


def test_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    marker = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(BinaryError, match="did not finish within 1s"):
        gobuild.run_logged([sys.executable, "-c", script], cwd=tmp_path, log_path=log, what="demo", timeout=1)
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


# --- locking ---
LOCK_HOLDER = """
import fcntl, shutil, sys, time
vdir, src = sys.argv[1], sys.argv[2]
fh = open(vdir + "/.lock", "a+")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(1.0)
shutil.copy2(src, vdir + "/kwok")
fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
"""


def test_a_second_installer_waits_for_the_lock_and_then_hits_the_cache(cache: Path) -> None:
    vdir = cache / "bin" / "kwok-v0.8.0"
    vdir.mkdir(parents=True)
    holder = subprocess.Popen(  # noqa: S603 - argv list, no shell
        [sys.executable, "-c", LOCK_HOLDER, str(vdir), str(TRUE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        lines: list[str] = []
        got = b.ensure_binaries(["kwok"], progress=lines.append, download=False, build=False)
        assert got["kwok"] == vdir / "kwok"
        assert "waiting for another process installing it" in lines[0]
        assert lines[-1].startswith("kwok v0.8.0: cache hit")
    finally:
        holder.wait(timeout=30)


def test_lock_wait_has_a_deadline(tmp_path: Path) -> None:
    vdir = tmp_path / "bin" / "etcd-v3.7.3"
    vdir.mkdir(parents=True)
    with (vdir / ".lock").open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        held = subprocess.run(  # noqa: S603 - argv list, no shell
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path\n"
                "from pytest_k8sstate.binaries.cache import version_lock\n"
                "from pytest_k8sstate.errors import BinaryError\n"
                "try:\n"
                "    with version_lock(Path(sys.argv[1]), 'etcd v3.7.3', print, timeout=0.3): pass\n"
                "except BinaryError as e: print('ERR', e); sys.exit(7)\n",
                str(vdir),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    assert held.returncode == 7, held.stderr
    assert "held" in held.stdout
    assert "for more than 0.3s" in held.stdout


# --- a real (small) build ---
@needs_go
@pytest.mark.slow
def test_build_kwok_with_go_install_into_an_empty_cache(cache: Path) -> None:
    lines: list[str] = []
    got = b.ensure_binaries(["kwok"], progress=lines.append, download=False)
    assert got.sources == {"kwok": "build"}
    assert lines[-1].startswith("kwok v0.8.0: building from the Go module proxy… done (")
    out = subprocess.run(  # noqa: S603 - argv list, no shell
        [str(got["kwok"]), "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "0.8.0" in out.stdout + out.stderr
    entry = json.loads((got["kwok"].parent / "manifest.json").read_text())["binaries"]["kwok"]
    assert entry["source"] == "build"
    assert entry["sha256"] == hashlib.sha256(got["kwok"].read_bytes()).hexdigest()
    assert not list(got["kwok"].parent.glob(".tmp-*"))
    assert (cache / "logs" / "kwok-v0.8.0.log").exists()


# --- CLI ---
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="k8sstate")
    cli_binaries.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def test_cli_install_path_and_list(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = put_binary(cache, "kwok", "v0.8.0", "kwok")
    assert run_cli(["binaries", "install", "--components", "kwok", "--no-build", "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "kwok v0.8.0: cache hit" in out
    assert "1 binaries ready in" in out
    assert run_cli(["binaries", "path", "kwok"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert run_cli(["binaries", "path", "kind"]) == 2  # README: a missing binary exits 2
    assert "k8sstate binaries install --components kind" in capsys.readouterr().err
    assert run_cli(["binaries", "list"]) == 0
    out = capsys.readouterr().out
    assert "kwok" in out
    assert "pinned" in out
    assert "missing" in out  # kube-apiserver etc. are not in this temporary cache
    assert run_cli(["binaries", "install", "--components", "kind", "--no-build", "--no-download"]) == 2
    assert "k8sstate: error:" in capsys.readouterr().err


def test_cli_rejects_a_bad_version_with_exit_2(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        run_cli(["binaries", "install", "--kubernetes", "1.37"])
    assert excinfo.value.code == 2
    assert "expected X.Y.Z or vX.Y.Z" in capsys.readouterr().err


def test_the_package_exports_its_public_api_and_the_cache_dir_helper() -> None:
    from pytest_k8sstate.util import files

    for name in b.__all__:
        assert getattr(b, name) is not None, name
    assert b.cache_dir is files.cache_dir  # one cache-dir helper, read at call time


def test_the_k8sstate_command_has_the_binaries_group(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_k8sstate.cli.main import main

    path = put_binary(cache, "kind", "v0.33.0", "kind")
    b.ensure_binaries(["kind"], progress=lambda _: None, download=False, build=False)
    assert main(["binaries", "path", "kind"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["binaries", "path", "kwok"]) == 2


# --- a full cache disk: a real 256 KiB tmpfs in a private mount namespace ---
_ENOSPC_SCRIPT = """
import os, subprocess, sys
from pathlib import Path
d, mirror = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], check=True, timeout=10)
os.environ["K8SSTATE_CACHE_DIR"] = str(d)
os.environ["K8SSTATE_KUBERNETES_RELEASE_URL"] = mirror.as_uri()
import pytest_k8sstate.binaries as b
from pytest_k8sstate.errors import BinaryError

def attempt(what, names, **kw):
    try:
        b.ensure_binaries(names, progress=lambda _line: None, **kw)
        print(what, "no error")
    except BinaryError as exc:
        print(what, "ERROR", exc)

attempt("download", ["kubectl"], build=False)  # 512 KiB into 256 KiB
print("FILES", sorted(os.listdir(d / "bin" / "kubernetes-v1.37.1")))
kwok = d / "bin" / "kwok-v0.8.0" / "kwok"
kwok.parent.mkdir(parents=True)
kwok.write_text("#!/bin/sh\\n")
kwok.chmod(0o755)
try:
    (d / "filler").write_bytes(bytes(1 << 20))  # 1 MiB into what is left of 256 KiB: fills it
except OSError:
    pass
attempt("manifest", ["kwok"], download=False, build=False)  # adopting it writes manifest.json
print("FILES", sorted(os.listdir(kwok.parent)))
from pytest_k8sstate.binaries import gobuild
try:  # a build step whose output does not fit (its log lives outside the full disk)
    gobuild.run_logged(["cp", sys.executable, d / "out"], cwd=d, log_path=mirror / "build.log",
                       what="kwok v0.8.0: building", timeout=30)
except BinaryError as exc:
    print("build ERROR", exc)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@pytest.mark.skipif(sys.platform != "linux" or not hasattr(os, "geteuid") or os.geteuid() != 0, reason="root")
def test_a_full_cache_disk_is_one_message_naming_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    data = os.urandom(512 << 10)
    exe = tmp_path / "mirror" / "v1.37.1" / "bin" / "linux" / download.goarch() / "kubectl"
    exe.parent.mkdir(parents=True)
    exe.with_name("kubectl.sha256").write_text(publish(exe, data) + "\n")
    res = subprocess.run(  # noqa: S603 - a private mount namespace: the tmpfs is invisible outside
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            _ENOSPC_SCRIPT,
            str(mnt),
            str(tmp_path / "mirror"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stdout.splitlines()
    fix = "free space there or point K8SSTATE_CACHE_DIR at a directory on a disk with room"
    vdir = mnt / "bin" / "kubernetes-v1.37.1"
    assert lines[0].startswith(f"download ERROR {vdir}/.tmp-kubectl-"), res.stdout
    assert f": no space left on device; {fix}" in lines[0], res.stdout
    assert len(lines[0].splitlines()) == 1
    assert lines[1] == "FILES ['.lock']", res.stdout  # no temp file, nothing installed
    manifest = mnt / "bin" / "kwok-v0.8.0" / "manifest.json"
    assert lines[2].startswith(f"manifest ERROR {manifest}: no space left on device; {fix}"), res.stdout
    assert lines[3] == "FILES ['.lock', 'kwok']", res.stdout  # no manifest temp file
    assert lines[4].startswith(f"build ERROR kwok v0.8.0: building: {mnt}: no space left on device; {fix}")
    assert lines[4].endswith(f"; see {tmp_path / 'mirror' / 'build.log'}"), res.stdout
    assert len(lines) == 5, res.stdout
    assert not list(mnt.iterdir())  # the tmpfs was private to that process
