"""The install story, as a user lives it (docs/install.md): ``python -m build`` from a copy of the
project's files, the wheel installed into a clean virtualenv (no site packages, not this checkout on any
path) and a tiny pytest session in another directory with the plugin loaded from the wheel's entry point.

Needs PyPI (the build backend and the wheel's dependencies); skipped with that reason when PyPI is not
reachable. Slow (a minute or two: a fresh virtualenv gets kubernetes, grpcio, cryptography, ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from pypi_access import pypi_unreachable

ROOT = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".tox",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".k8sstate",
    ".*_cache",
    ".hypothesis",
)


def _run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(  # noqa: S603 - fixed argv
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert result.returncode == 0, f"{argv} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no K8SSTATE_* or PYTEST_* settings of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("K8SSTATE_", "PYTEST_", "PYTHON", "VIRTUAL_ENV", "KUBECONFIG"))
    }
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = pypi_unreachable()
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("build", reason="`build` is in the test extra: pip install -e '.[test]'")
    src = tmp_path_factory.mktemp("src") / "pytest-k8sstate"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    dist = src / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], src, timeout=600)
    wheels = sorted(dist.glob("pytest_k8sstate-*.whl"))
    assert len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    assert sorted(dist.glob("pytest_k8sstate-*.tar.gz")), "no sdist built"
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv with the wheel installed (its dependencies from PyPI)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(where)], where.parent, timeout=120)
    home = tmp_path_factory.mktemp("home")
    _run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        where.parent,
        timeout=900,
        env=clean_env(home),
    )
    return where


def test_the_wheel_has_the_metadata_entry_points_and_package_data(wheel: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(info).decode())
        entry_points = zf.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert meta["Name"] == "pytest-k8sstate"
    assert meta["Version"] == project["version"]
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.11"
    assert "Framework :: Pytest" in meta.get_all("Classifier")
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert {"html", "test"} <= set(meta.get_all("Provides-Extra"))
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "[pytest11]\nk8sstate = pytest_k8sstate.plugin" in entry_points
    assert "k8sstate = pytest_k8sstate.cli:main" in entry_points
    assert "pytest_k8sstate/py.typed" in names
    assert "pytest_k8sstate/providers/kind/data/node-routes.sh" in names
    assert not [n for n in names if n.startswith("tests/")], "tests must not be installed as a package"


PROJECT_TEST = """
def test_plain():
    assert 1 + 1 == 2


def test_uses_the_cluster(k8s_api):
    k8s_api.list("pods")
"""

UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "https://127.0.0.1:9"}
users:
- name: nobody
  user: {token: "x"}
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
current-context: nowhere
"""


def test_a_project_elsewhere_uses_the_installed_plugin(venv: Path, tmp_path: Path) -> None:
    """docs/install.md's steps: pytest --help lists the options; the fixture against no cluster gives
    one clear error (no traceback), and a plain test of the same project still passes."""
    project = tmp_path / "my-project"
    project.mkdir()
    (project / "test_mine.py").write_text(PROJECT_TEST)
    env = clean_env(tmp_path)
    pytest_bin = str(venv / "bin" / "pytest")

    help_text = _run([pytest_bin, "--help"], project, timeout=120, env=env)
    for option in ("--k8sstate-provider=NAME", "--k8sstate-kubeconfig=PATH", "--k8sstate-test-namespace"):
        assert option in help_text

    # the plugin is the wheel's, not this checkout's
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import pytest_k8sstate; print(pytest_k8sstate.__file__)"],
        project,
        timeout=60,
        env=env,
    )
    assert where.startswith(str(venv)), where

    missing = subprocess.run(  # noqa: S603 - fixed argv
        [pytest_bin, "-p", "no:cacheprovider", "--k8sstate-provider=existing", "--k8sstate-kubeconfig=nope"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert missing.returncode == 4, missing.stdout + missing.stderr  # pytest's usage error
    assert f"kubeconfig {project / 'nope'} does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    (project / "kubeconfig").write_text(UNREACHABLE_KUBECONFIG)
    run = subprocess.run(  # noqa: S603 - fixed argv
        [
            pytest_bin,
            "-p",
            "no:cacheprovider",
            "-rA",
            "--k8sstate-provider=existing",
            "--k8sstate-kubeconfig=kubeconfig",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "1 passed" in out, out
    assert "1 error" in out or "1 failed" in out, out
    assert "k8sstate:" in out, out
    assert "127.0.0.1:9" in out, out
    assert "Traceback" not in out, out
