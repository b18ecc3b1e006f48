"""The project's Docker engine stop: containerd shims that outlived the engine are killed — only its own.

A stand-in for a shim (named as such): this interpreter under the name ``containerd-shim-runc-v2``, with the
argv a real shim has; the real leftover was seen after a CI run (three shims of dead kind containers kept
running after ``docker-setup.sh stop``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pytest_k8sstate.providers.docker.engine import kill_shims


def _fake_shim(tmp_path: Path, exec_root: Path) -> subprocess.Popen[bytes]:
    shim = tmp_path / "containerd-shim-runc-v2"
    if not shim.exists():
        shim.symlink_to(sys.executable)
    sock = str(exec_root / "containerd" / "containerd.sock")
    return subprocess.Popen(  # noqa: S603 - this interpreter under another name
        [str(shim), "-c", "import time; time.sleep(60)", "-namespace", "moby", "-address", sock]
    )


def test_kill_shims_kills_only_this_engines_shims(tmp_path: Path) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    mine, theirs = _fake_shim(tmp_path, ours), _fake_shim(tmp_path, other)
    try:
        time.sleep(0.3)  # let both exec
        killed = kill_shims(ours)
        assert killed == [mine.pid]
        assert mine.wait(timeout=10) != 0
        assert theirs.poll() is None, "a shim of another engine was killed"
    finally:
        for p in (mine, theirs):
            p.kill()
            p.wait(timeout=10)
