"""A real ``go build`` whose output does not fit: the binaries layer's one clear message.

A hello-world module is built by the binaries layer's own build step (``prepare``: write the module and
``go mod tidy``; ``go_build``: ``go build -o`` into the version directory) with the whole binaries cache —
module, build log, output — on a 1 MiB tmpfs, which the linked binary (about 1.5 MiB) does not fit. The
tmpfs is mounted in a private mount namespace (``unshare --mount``: invisible to the rest of the machine)
and unmounted in a ``finally``. No network: the module has no dependencies (``GOFLAGS=-mod=mod``,
``GOPROXY=off``). Root, ``unshare`` and the Go toolchain are needed; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_k8sstate.binaries.gobuild import find_go
from pytest_k8sstate.errors import BinaryError

_SCRIPT = """
import os, subprocess, sys
from pathlib import Path
d = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True, timeout=10)
try:
    os.environ.update(GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local", K8SSTATE_CACHE_DIR=str(d))
    from pytest_k8sstate.binaries.gobuild import _Build, find_go
    from pytest_k8sstate.errors import BinaryError
    vdir = d / "bin" / "hello-v0.0.1"
    vdir.mkdir(parents=True)
    installed = []
    b = _Build(find_go(), "hello", "v0.0.1", vdir, d, lambda *_a: None, lambda *a: installed.append(a))
    b.prepare({
        "go.mod": "module example.com/hello\\n\\ngo 1.21\\n",
        "main.go": 'package main\\n\\nimport "fmt"\\n\\nfunc main() { fmt.Println("hello") }\\n',
    })
    print("PREPARED", sorted(p.name for p in b.bdir.iterdir()))
    try:
        b.go_build("hello", ".", "a hello-world module")
        print("BUILT", installed)
    except BinaryError as exc:
        print("ERROR", exc)
    print("LEFT", sorted(p.name for p in vdir.iterdir()))
finally:
    subprocess.run(["umount", str(d)], check=True, timeout=30)
"""


def _go_or_skip() -> None:
    try:
        find_go()
    except BinaryError as exc:
        pytest.skip(str(exc))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs root (mounts a tmpfs)")
def test_a_real_go_build_on_a_full_disk_is_one_message(tmp_path: Path) -> None:
    _go_or_skip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(  # noqa: S603 - a private mount namespace: the tmpfs is invisible outside
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _SCRIPT, str(mnt)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    out = res.stdout
    assert res.returncode == 0, res.stderr + out
    assert "Traceback" not in res.stderr + out
    lines = out.splitlines()
    assert lines[0] == "PREPARED ['.k8sstate-inputs', 'go.mod', 'main.go']", out  # tidy ran: it fits
    err = lines[1]
    assert err.startswith(f"ERROR hello v0.0.1: {mnt}/build/hello-v0.0.1: no space left on device; "), out
    assert "no space left on device; free space there or point K8SSTATE_CACHE_DIR at a directory" in err
    assert err.endswith(f"; see {mnt}/logs/hello-v0.0.1.log"), out
    assert lines[2] == "LEFT []", out  # no partial binary left in the version directory
    assert len(lines) == 3, out
    assert not list(mnt.iterdir())  # the tmpfs was private to that process and is gone
