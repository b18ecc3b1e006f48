"""Progress through the ``k8sstate`` entry point: a slow build prints live progress; a second install starts
no ``go`` at all.

The Go toolchain is replaced by ``fake_go`` (a shell script named as such): it records each invocation and
"builds" by sleeping, then copying ``/bin/true`` where ``go install`` would put the binary. Everything else
— the CLI, the installer, the cache, its manifest and lock — is the real code in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "pytest_k8sstate.cli")

FAKE_GO = """#!/bin/sh
# fake go (test double): records its argv, then behaves like `go install PKG@V` into $GOBIN, slowly
echo "$*" >> "$FAKE_GO_LOG"
sleep "$FAKE_GO_SECONDS"
case "$1" in
  install) cp /bin/true "$GOBIN/kind" ;;
  *) echo "fake go: unexpected command $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture
def fake_go(tmp_path: Path) -> Path:
    go = tmp_path / "fake-go" / "go"
    go.parent.mkdir()
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    return go


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argv list, no shell
        [*CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def test_a_slow_build_prints_progress_lines_and_a_second_install_runs_no_go(
    tmp_path: Path, fake_go: Path
) -> None:
    calls = tmp_path / "go-calls.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("K8SSTATE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        K8SSTATE_CACHE_DIR=str(tmp_path / "cache"),
        K8SSTATE_GO=str(fake_go),
        K8SSTATE_PROGRESS_INTERVAL="0.2",
        FAKE_GO_LOG=str(calls),
        FAKE_GO_SECONDS="2",
    )
    args = ["binaries", "install", "--components", "kind", "--no-download"]
    first = _cli(args, env)
    assert first.returncode == 0, first.stdout + first.stderr
    # the permanent lines on stdout, the live ones on stderr (not a TTY here: plain lines)
    assert "[k8sstate] kind v0.33.0: building from the Go module proxy… (log: " in first.stdout
    still = [ln for ln in first.stderr.splitlines() if "(still running, " in ln]
    assert still, first.stderr
    assert still[0].startswith("[k8sstate] binaries: kind v0.33.0: building from the Go module proxy… (log: ")
    assert still[0].endswith("s elapsed)")
    assert "[k8sstate] [k8sstate]" not in first.stdout + first.stderr
    assert "\r" not in first.stderr
    assert calls.read_text().splitlines() == ["install -trimpath -ldflags=-s -w sigs.k8s.io/kind@v0.33.0"]

    second = _cli(args, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[k8sstate] kind v0.33.0: cache hit" in second.stdout
    assert calls.read_text().count("\n") == 1  # no go process started for a cache hit

    quiet = _cli(args, {**env, "K8SSTATE_PROGRESS": "0", "K8SSTATE_CACHE_DIR": str(tmp_path / "c2")})
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "still running" not in quiet.stderr  # silenced; the permanent lines remain
    assert "building from the Go module proxy… done (" in quiet.stdout


def _local_unavailable() -> str | None:
    from pytest_k8sstate.binaries import Versions, find_binary
    from pytest_k8sstate.providers.local.binaries import KUBE_BINARIES

    if os.geteuid() != 0:
        return "the local provider needs root (network namespaces)"
    missing = [n for n in (*KUBE_BINARIES, "kwok") if find_binary(n, Versions.resolve()) is None]
    return f"binaries not installed: {', '.join(missing)}" if missing else None


@pytest.mark.slow
def test_a_real_local_create_says_what_it_waits_on(tmp_path: Path) -> None:
    """``k8sstate cluster create --provider local`` (a real control plane in namespaces, 0 workers): the
    plain progress lines name the step being waited on."""
    reason = _local_unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = f"hprog{os.getpid() % 10000}"
    env = {
        k: v for k, v in os.environ.items() if k not in ("K8SSTATE_PROGRESS", "K8SSTATE_PROGRESS_INTERVAL")
    }
    env.update(PYTHONPATH=str(ROOT), K8SSTATE_PROGRESS_INTERVAL="0.5")
    try:
        res = subprocess.run(  # noqa: S603 - argv list, no shell
            [*CLI, "cluster", "create", "--provider", "local", "--name", name, "--nodes", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=ROOT,
        )
    finally:
        subprocess.run(  # noqa: S603 - argv list, no shell
            [*CLI, "cluster", "delete", "--provider", "local", "--name", name],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
            cwd=ROOT,
        )
    assert res.returncode == 0, res.stdout + res.stderr
    still = [ln for ln in res.stderr.splitlines() if "(still running, " in ln]
    assert still, res.stderr
    bad = [ln for ln in still if not ln.startswith("[k8sstate] ") or ln.count("[k8sstate]") != 1]
    assert not bad, "\n".join(bad)
    assert any(ln.startswith(f"[k8sstate] cluster {name!r}: waiting for ") for ln in still), still
    # (a busy machine may also show the binaries lookup before the create: "[k8sstate] binaries: …")
