"""Every ``$ k8sstate …`` example of docs/cli.md runs, against the snapshots of tests/diff_fixtures.py, and
prints exactly the output the document shows."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from diff_fixtures import write_snapshots

from pytest_k8sstate.cli.main import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
JUNIT = Path(__file__).resolve().parent / "data" / "cni-table"


def examples() -> list[tuple[str, str]]:
    """(command line, expected stdout) of each ``$ k8sstate`` line in a console block of docs/cli.md."""
    out: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), flags=re.S):
        cmd: str | None = None
        lines: list[str] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                if cmd is not None:
                    out.append((cmd, "\n".join(lines)))
                cmd, lines = line[2:], []
            else:
                lines.append(line)
        if cmd is not None:
            out.append((cmd, "\n".join(lines)))
    return out


def test_the_document_has_examples() -> None:
    cmds = [c for c, _ in examples()]
    assert len(cmds) >= 7
    assert all(c.startswith("k8sstate ") for c in cmds)


@pytest.mark.parametrize(("cmd", "expected"), examples(), ids=[c for c, _ in examples()])
def test_example_prints_what_the_document_shows(
    cmd: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    write_snapshots(tmp_path)
    for junit in JUNIT.glob("*.xml"):  # real runs' JUnit files for `findings cni-table`
        shutil.copy(junit, tmp_path / junit.name)
    argv = shlex.split(cmd)[1:]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert err == ""
    assert rc == 0
    assert out.rstrip("\n") == expected.rstrip("\n")
