"""The README's example test runs as written (docs with runnable examples).

The first ```python block of README.md is written into a pytester directory next to a copy of
``manifests/`` and run with the plugin on a real ``local`` cluster.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m is not None, "README.md has no ```python block"
    return m.group(1)


def test_readme_example_is_a_test() -> None:
    code = readme_example()
    compile(code, "README.md", "exec")
    assert "def test_" in code


@pytest.mark.usefixtures("local_provider_ok")
def test_readme_example_passes_on_a_local_cluster(plugin: Any) -> None:
    shutil.copytree(ROOT / "manifests", plugin.pytester.path / "manifests")
    plugin.pytester.makepyfile(test_readme=readme_example())
    result = plugin.run_subprocess("-q", "--k8sstate-nodes", "1", timeout=600)
    result.assert_outcomes(passed=1)


def install_doc_blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_install_doc_ini_example_is_what_the_plugin_reads(plugin: Any) -> None:
    (ini,) = install_doc_blocks("ini")
    plugin.pytester.makeini(ini)
    settings = plugin.settings()
    assert (settings.provider, settings.nodes, settings.log_lines) == ("kind", 1, 100)


@pytest.mark.usefixtures("local_provider_ok")
def test_install_doc_example_passes_on_a_local_cluster(plugin: Any) -> None:
    (code,) = install_doc_blocks("python")
    plugin.pytester.makepyfile(test_configmap=code)
    result = plugin.run_subprocess("-q", "--k8sstate-nodes", "0", timeout=600)
    result.assert_outcomes(passed=1)
