"""The project's own modules are imported, never ``importorskip``-ed: a broken import must fail the tests
that use it, not skip them."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
OWN_MODULE_SKIP = re.compile(r"importorskip\(\s*[\"']pytest_k8sstate")


def test_no_test_importorskips_a_project_module() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{lineno}"
        for path in sorted(TESTS.rglob("*.py"))
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OWN_MODULE_SKIP.search(line)
    ]
    assert offenders == []
