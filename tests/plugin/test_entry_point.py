"""pytest registers the module ``pytest_k8sstate.plugin`` (entry point ``pytest11: k8sstate``): every hook
and fixture of ``plugin.hooks`` must be importable from it, or pytest silently never calls it."""

from __future__ import annotations

import pytest_k8sstate.plugin as plugin
import pytest_k8sstate.plugin.hooks as hooks


def _hooks_and_fixtures(module: object) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if (name.startswith("pytest_") and callable(value))
        or type(value).__name__ == "FixtureFunctionDefinition"
    }


def test_the_entry_point_module_exposes_every_hook_and_fixture() -> None:
    defined = _hooks_and_fixtures(hooks)
    assert {
        "pytest_configure",
        "pytest_runtest_setup",
        "k8s_cluster",
        "cluster_state",
        "k8s_api",
        "k8sstate_namespace",
    } <= defined
    assert _hooks_and_fixtures(plugin) == defined
    assert set(plugin.__all__) == defined


def test_the_core_modules_do_not_import_pytest() -> None:
    """pool, state and findings are the plugin's pytest-free core (pytest only for type checking)."""
    import ast
    from pathlib import Path

    package = Path(plugin.__file__).parent
    for name in ("pool.py", "state.py", "findings.py"):
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        runtime = [node for node in tree.body if not isinstance(node, ast.If)]  # `if TYPE_CHECKING:` blocks
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.Module(body=runtime, type_ignores=[]))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert "pytest" not in imported, name
        assert "_pytest" not in imported, name
