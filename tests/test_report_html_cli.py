"""``k8sstate report BEFORE AFTER -o diff.html`` through the installed ``k8sstate`` entry point (a real
process): the page it writes, filters, stdout, and one clear line with exit 2 for bad input."""

from __future__ import annotations

import gzip
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import snapshots

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "k8sstate"


def k8sstate(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script when installed (the ``k8sstate`` entry point), else ``python -m``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "pytest_k8sstate.cli"]
    return subprocess.run(  # noqa: S603 - our own entry point
        [*cmd, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    before, after = snapshots()
    before.save(tmp_path / "before.json")
    after.save(tmp_path / "after.json.gz")
    return tmp_path


def test_report_writes_a_self_contained_page(files: Path) -> None:
    r = k8sstate("report", "before.json", "after.json.gz", "-o", "diff.html", cwd=files)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "wrote diff.html\n"
    page = (files / "diff.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert 'data-service="default/web:http"' in page
    assert 'data-key="/registry/deployments/default/web"' in page
    assert "<script" not in page.lower()


def test_filters_and_stdout(files: Path) -> None:
    r = k8sstate("report", "before.json", "after.json.gz", "-o", "-", "--namespace", "kube-system", cwd=files)
    assert r.returncode == 0, r.stderr
    assert 'data-service="kube-system/old"' in r.stdout
    assert 'data-service="default/web:http"' not in r.stdout  # another namespace's Service
    assert 'data-key="/registry/deployments/default/web"' not in r.stdout
    titled = k8sstate(
        "report", "before.json", "after.json.gz", "-o", "-", "--title", "<b>scale</b>", cwd=files
    )
    assert "<title>&lt;b&gt;scale&lt;/b&gt;</title>" in titled.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.json", "after.json.gz", "-o", "x.html"], "missing.json"),
        (["bad.json", "after.json.gz", "-o", "x.html"], "bad.json"),
        (["before.json", "after.json.gz", "-o", "nodir/x.html"], "does not exist; create it first"),
        (["before.json", "after.json.gz", "-o", "."], "is a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files: Path, argv: list[str], message: str) -> None:
    (files / "bad.json").write_text('{"label": "x", ')
    r = k8sstate("report", *argv, cwd=files)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("k8sstate: error: "), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert not (files / "x.html").exists()


def test_help_has_an_example(files: Path) -> None:
    r = k8sstate("report", "--help", cwd=files)
    assert r.returncode == 0
    assert "k8sstate report before.json after.json -o diff.html" in r.stdout
    usage = k8sstate("report", "before.json", cwd=files)
    assert usage.returncode == 2
    assert "-o/--output" in usage.stderr


DOC = ROOT / "docs" / "report.md"


def _doc_commands() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], ""))
            elif out:
                out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


@pytest.mark.parametrize(("cmd", "shown"), _doc_commands(), ids=[c for c, _ in _doc_commands()])
def test_docs_report_md_commands_run(files: Path, cmd: str, shown: str) -> None:
    (files / "after.json").write_bytes(gzip.decompress((files / "after.json.gz").read_bytes()))
    argv = shlex.split(cmd)
    assert argv[0] == "k8sstate"
    r = k8sstate(*argv[1:], cwd=files)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == shown
    out = argv[argv.index("-o") + 1]
    assert (files / out).read_text().startswith("<!DOCTYPE html>")


def test_docs_report_md_python_example_runs(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (files / "after.json").write_bytes(gzip.decompress((files / "after.json.gz").read_bytes()))
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    monkeypatch.chdir(files)
    exec(compile(code, str(DOC), "exec"), {})  # the document's own example
    page = (files / "diff.html").read_text()
    assert "<title>web scaled to 3</title>" in page
    assert 'data-service="default/web:http"' in page
