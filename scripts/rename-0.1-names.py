#!/usr/bin/env python3
"""Rewrite test files from pytest-k8sstate 0.1's names to the current ones (review the diff after):

    --k8s-<option>            -> --k8sstate-<option>      (the 11 options of 0.1 only)
    ini k8s_<option>          -> k8sstate_<option>
    @pytest.mark.needs        -> @pytest.mark.k8sstate_needs
    @pytest.mark.finding      -> @pytest.mark.k8sstate_finding
    fixture k8s (parameters, ``k8s.method(``, getfixturevalue("k8s")) -> k8s_api   [--fixture, or files
                              under tests/ and docs/]

Usage: scripts/rename-0.1-names.py [--fixture] FILE...
Note: k8s_api works in the test's own namespace; a test whose assertions name ``default`` needs
``@pytest.mark.k8sstate(namespace="default")`` (or to use ``k8sstate_namespace``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

OPTS = "provider|nodes|proxy-mode|cni|version|keep-cluster|reuse-cluster|kubeconfig|artifacts|"
OPTS += "include-secrets|ignore"
INIS = OPTS.replace("-", "_")
FIXTURE_FILES: tuple[str, ...] = ("tests/findings/", "tests/examples/", "tests/plugin/", "docs/")


def rename(path: str, text: str, fixture: bool = False) -> str:
    text = re.sub(rf"--k8s-({OPTS})\b", r"--k8sstate-\1", text)
    text = re.sub(rf"(?:(?<=\\n)|\b)k8s_({INIS})\b", r"k8sstate_\1", text)
    text = re.sub(r"\bmark\.needs\b", "mark.k8sstate_needs", text)
    text = re.sub(r"\bmark\.finding\b", "mark.k8sstate_finding", text)
    if fixture or path.startswith(FIXTURE_FILES):
        text = (
            re.sub(r"(?<![\w.\-/])(?<!as )k8s(?=[,):=\]]|\s*[:=,)]|\s)", "k8s_api", text)
            if path.endswith(".py")
            else text
        )
        text = re.sub(r"(?<![\w.\-/])k8s\.(?!io\b)(?=[a-z_])", "k8s_api.", text)
        text = text.replace('getfixturevalue("k8s")', 'getfixturevalue("k8s_api")')
        text = text.replace("``k8s``", "``k8s_api``").replace("`k8s` fixture", "`k8s_api` fixture")
    return text


def main(argv: list[str]) -> int:
    fixture = "--fixture" in argv
    files = [a for a in argv if a != "--fixture"]
    if not files:
        print(__doc__, file=sys.stderr)
        return 2
    for f in files:
        p = Path(f)
        old = p.read_text(encoding="utf-8")
        new = rename(f, old, fixture)
        if new != old:
            p.write_text(new, encoding="utf-8")
            print("changed", f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
