"""The folder tree is the architecture: each package imports only the layers below it (docs/design.md).

Reads every module's ``import`` statements (lazy ones inside functions included) with :mod:`ast`, so a new
upward import fails here with the module and line that made it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_k8sstate"

# package → the packages it may import (besides itself); docs/design.md explains each row
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "util": frozenset({"errors"}),
    "parse": frozenset({"errors"}),
    "trace": frozenset({"errors", "parse"}),
    "node": frozenset({"errors", "util", "parse"}),
    "pki": frozenset({"errors"}),
    "binaries": frozenset({"errors", "util"}),
    "etcd": frozenset({"errors", "util", "node", "pki", "binaries"}),
    "state": frozenset({"errors", "util", "parse", "node", "etcd"}),
    "assertions": frozenset({"errors", "parse", "trace", "node", "etcd", "state"}),
    "k8s": frozenset({"errors", "util"}),
    "providers": frozenset({"errors", "util", "node", "pki", "binaries", "etcd", "k8s"}),
    "testing": frozenset({"errors", "parse"}),
    "traffic": frozenset({"errors", "util", "node", "k8s", "trace", "state", "providers"}),
    "report": frozenset({"errors", "util", "parse", "trace", "node", "etcd", "state"}),
    "plugin": frozenset({"errors", "util", "state", "assertions", "k8s", "providers", "report"}),
    "cli": frozenset(
        {
            "errors",
            "util",
            "parse",
            "trace",
            "node",
            "etcd",
            "state",
            "binaries",
            "providers",
            "k8s",
            "pki",
            "traffic",
            "assertions",
            "report",
        }
    ),
    "__init__": frozenset({"errors"}),
}
# the one sanctioned upward edge: ``Cluster.snapshot()`` (public API of the k8s_cluster fixture) captures
# through the state package, imported lazily inside that method
EXCEPTIONS = {("providers/base.py", "state")}

# modules over ~500 lines that are one cohesive thing (docs/design.md says why)
LONG_OK = {
    "parse/iptables.py",
    "parse/nft.py",
    "trace/iptables.py",
    "trace/nft.py",
    "k8s/helper.py",
}
MAX_LINES = 500


def _package_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "pytest_k8sstate":
                out.extend((node.lineno, a.name) for a in node.names)
            elif node.module.startswith("pytest_k8sstate."):
                out.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            ours = [a.name for a in node.names if a.name.startswith("pytest_k8sstate.")]
            out.extend((node.lineno, name.split(".")[1]) for name in ours)
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(p) for p in MODULES}
    assert packages <= set(ALLOWED), f"new package(s) without a layer: {sorted(packages - set(ALLOWED))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    own = _package_of(path)
    rel = str(path.relative_to(PACKAGE))
    bad = [
        f"{rel}:{line} imports pytest_k8sstate.{dst}"
        for line, dst in _imports(path)
        if dst != own and dst not in ALLOWED.get(own, frozenset()) and (rel, dst) not in EXCEPTIONS
    ]
    assert not bad, "upward or sideways import (see docs/design.md):\n" + "\n".join(bad)


def test_no_relative_imports() -> None:
    bad = [
        f"{p.relative_to(PACKAGE)}:{n.lineno}"
        for p in MODULES
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ImportFrom) and n.level > 0
    ]
    assert not bad, f"relative imports (the layout uses absolute ones): {bad}"


def test_modules_stay_small_unless_listed_as_cohesive() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert set(long) <= LONG_OK, f"modules over {MAX_LINES} lines: {long}; split them or justify in design.md"
    # a listed module that shrank must leave the list, so the list stays true
    assert LONG_OK <= set(long), f"no longer long, remove from LONG_OK: {sorted(LONG_OK - set(long))}"


def test_a_layer_violation_is_reported(tmp_path: Path) -> None:
    """The checker itself can fail: an upward import in a parse module is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pytest_k8sstate.plugin.hooks import k8s\n")
    assert _imports(bad) == [(2, "plugin")]
    assert "plugin" not in ALLOWED["parse"]
