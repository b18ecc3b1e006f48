"""Names that cannot clash: ``--k8sstate-*`` options, ``k8sstate_*`` markers, the ``k8s_api`` fixture; the
0.1 spellings still work with a deprecation warning, but only where no other plugin owns the name; and a
session with pytest-kubernetes (from PyPI) installed beside the plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pypi_access import pypi_unreachable

from pytest_k8sstate.plugin.options import OPTIONS

PluginRunner = Any  # tests/plugin/conftest.py
ROOT = Path(__file__).resolve().parents[2]


def test_every_option_is_prefixed_and_has_a_prefixed_ini_key(plugin: PluginRunner) -> None:
    for opt in OPTIONS:
        assert opt.flag.startswith("--k8sstate-"), opt
        assert opt.ini.startswith("k8sstate_"), opt
        assert opt.env.startswith("K8SSTATE_"), opt
    text = plugin.run("--help").stdout.str()
    for opt in OPTIONS:
        assert opt.flag in text
        assert f"  {opt.ini} " in text
        if opt.legacy_flag:  # nobody else registered the 0.1 name here: it is there, marked deprecated
            assert opt.legacy_flag in text
    assert "deprecated: use --k8sstate-provider" in text


def test_the_old_option_names_still_work_and_warn(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile("def test_x(): pass")
    result = plugin.run("--k8s-nodes=3", "--k8s-proxy-mode=nftables")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    for old, new in (("--k8s-nodes", "--k8sstate-nodes"), ("--k8s-proxy-mode", "--k8sstate-proxy-mode")):
        assert (
            f"K8sStateDeprecationWarning: {old} is deprecated and will be removed in the next release: "
            f"use {new}"
        ) in out
    settings = plugin.settings("--k8s-nodes=3")
    assert settings.nodes == 3
    assert settings.deprecations == (
        "--k8s-nodes is deprecated and will be removed in the next release: use --k8sstate-nodes",
    )


def test_the_new_name_wins_over_the_old_one(plugin: PluginRunner) -> None:
    settings = plugin.settings("--k8s-nodes=3", "--k8sstate-nodes=1")
    assert settings.nodes == 1
    assert settings.deprecations == ()  # the old one was not used


def test_old_ini_keys_still_work_and_warn(plugin: PluginRunner) -> None:
    plugin.pytester.makeini("[pytest]\nk8s_nodes = 4\nk8s_ignore = /registry/x/**\n")
    settings = plugin.settings()
    assert settings.nodes == 4
    assert settings.ignore == ("/registry/x/**",)
    assert (
        "ini option k8s_nodes is deprecated and will be removed in the next release: use ini option "
        in (settings.deprecations[0])
    )


def test_bad_values_of_old_names_name_the_old_name(plugin: PluginRunner) -> None:
    with pytest.raises(
        pytest.UsageError, match=r"--k8sstate-nodes: invalid value 'x' \(from command line --k8s-nodes\)"
    ):
        plugin.settings("--k8s-nodes=x")


def test_an_old_option_name_owned_by_another_plugin_stays_theirs(plugin: PluginRunner) -> None:
    """A conftest (as pytest-kubernetes does) registering ``--k8s-provider`` first: no clash, their value
    is theirs, ours is untouched and nothing warns."""
    plugin.pytester.makeconftest(
        """
        def pytest_addoption(parser):
            parser.getgroup("k8s").addoption("--k8s-provider", dest="k8s_provider")
            parser.addini("k8s_nodes", "theirs")

        def test_dummy():
            pass
        """
    )
    plugin.pytester.makepyfile(
        """
        def test_theirs(pytestconfig):
            assert pytestconfig.getoption("k8s_provider") == "k3d"
            assert pytestconfig.getini("k8s_nodes") == "7"
        """
    )
    plugin.pytester.makeini("[pytest]\nk8s_nodes = 7\n")
    result = plugin.run(
        "--k8s-provider=k3d", "-W", "error::pytest_k8sstate.plugin.options.K8sStateDeprecationWarning"
    )
    result.assert_outcomes(passed=1)
    settings = plugin.settings("--k8s-provider=k3d")
    assert settings.provider == "local"  # ours: the default, not their k3d
    assert settings.nodes == 2  # their ini key is theirs
    assert settings.deprecations == ()


def test_old_markers_still_work_and_warn(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.finding(7, "an old-style finding")
        @pytest.mark.needs("ipvs")
        def test_old(k8s_cluster):
            pass

        @pytest.mark.k8sstate_finding(8, "a new-style finding")
        def test_new():
            pass
        """
    )
    result = plugin.run("--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    out = result.stdout.str()
    for old, new in (("needs", "k8sstate_needs"), ("finding", "k8sstate_finding")):
        assert (
            f"K8sStateDeprecationWarning: @pytest.mark.{old} is deprecated and will be removed in the next "
            f"release: use @pytest.mark.{new}"
        ) in out
    assert "needs ipvs: the cluster's kube-proxy runs in iptables mode" in out
    result.stdout.fnmatch_lines(
        ["*k8sstate findings*", "7  an old-style finding*skipped*", "8  a new-style finding*passed"]
    )


def test_the_old_fixture_name_is_registered_and_documented_as_deprecated(plugin: PluginRunner) -> None:
    text = plugin.run("--fixtures", "-v").stdout.str()
    assert (
        "Deprecated: ``k8s_api`` (which works in the test's own namespace; this one in ``default``)." in text
    )


def test_the_old_fixture_warns(plugin: PluginRunner) -> None:
    plugin.pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def k8s_cluster():  # no cluster: the fixture fails after its warning
            raise RuntimeError("no cluster here")
        """
    )
    plugin.pytester.makepyfile("def test_old(k8s):\n    pass\n")
    result = plugin.run()
    result.assert_outcomes(errors=1)
    assert "no cluster here" in result.stdout.str()


def test_no_fixture_of_ours_uses_a_generic_name(plugin: PluginRunner) -> None:
    text = plugin.run("--fixtures").stdout.str()
    for ours in ("k8s_api", "k8s_cluster", "k8s_clusters", "cluster_state", "k8sstate_namespace"):
        assert f"\n{ours} " in text or f"\n{ours} --" in text, ours


# ------------------------------------------------------------------------------------------ pytest-kubernetes


@pytest.fixture(scope="module")
def pytest_kubernetes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest-kubernetes from PyPI, installed into a directory of its own (``pip install --target``)."""
    reason = pypi_unreachable()
    if reason is not None:
        pytest.skip(reason)
    target = tmp_path_factory.mktemp("pytest-kubernetes")
    result = subprocess.run(  # noqa: S603 - fixed argv
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            "pytest-kubernetes",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "pytest_kubernetes" / "plugin.py").is_file()
    return target


BOTH_PLUGINS_TESTS = """
def test_both_plugins_are_loaded(pytestconfig):
    names = {name for name, _ in pytestconfig.pluginmanager.list_name_plugin()}
    assert "pytest-kubernetes" in names
    assert any(name == "k8sstate" or name.endswith("pytest_k8sstate.plugin") for name in names)


def test_each_option_is_its_owners(pytestconfig):
    assert pytestconfig.getoption("k8s_provider") == "kind"  # pytest-kubernetes'
    assert pytestconfig.getoption("k8sstate_provider") == "existing"  # ours


def test_the_k8s_fixture_is_pytest_kubernetes(request):
    defs = request._fixturemanager.getfixturedefs("k8s", request.node)
    assert [d.func.__module__ for d in defs] == ["pytest_kubernetes.plugin"]
"""


def test_a_session_with_pytest_kubernetes_installed_beside(
    plugin: PluginRunner, pytest_kubernetes: Path, tmp_path: Path
) -> None:
    """Both plugins in one session: pytest starts (no ``option dest already used``), each plugin reads its
    own ``--…-provider``, the ``k8s`` fixture stays pytest-kubernetes', our 0.1 names it owns are not
    registered (and so do not warn)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    plugin.pytester.makepyfile(test_both=BOTH_PLUGINS_TESTS)
    env_path = os.pathsep.join([str(pytest_kubernetes), str(ROOT), os.environ.get("PYTHONPATH", "")])
    plugin.pytester._monkeypatch.setenv("PYTHONPATH", env_path)
    result = plugin.run_subprocess(
        "--k8s-provider=kind",
        "--k8sstate-provider=existing",
        f"--k8sstate-kubeconfig={kubeconfig}",
        "-W",
        "error::pytest_k8sstate.plugin.options.K8sStateDeprecationWarning",
        "-p",
        "no:randomly",
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=3)
    assert "k8sstate: provider existing" in result.stdout.str()

    help_text = plugin.run_subprocess("--help").stdout.str()
    assert "--k8s-cluster-name" in help_text  # theirs
    assert "--k8sstate-provider=NAME" in help_text  # ours
    assert "deprecated: use --k8sstate-provider" not in help_text  # their --k8s-provider, not our alias
    assert "deprecated: use --k8sstate-nodes" in help_text  # a 0.1 name nobody else uses


def test_the_rename_script_rewrites_a_01_test_file(tmp_path: Path) -> None:
    old = tmp_path / "test_old.py"
    old.write_text(
        "import pytest\n"
        "from kubernetes import client as k8s\n\n\n"
        '@pytest.mark.finding(4, "svc")\n'
        '@pytest.mark.needs("ipvs")\n'
        "def test_x(k8s_cluster, k8s, cluster_state):\n"
        '    k8s.apply("a.yaml")\n'
        '    other = request.getfixturevalue("k8s")\n'
        '    assert "k8s.io/api" and k8s_cluster\n'
        '    args = ["--k8s-provider", "kind", "--k8s-proxy-mode=ipvs", "--k8s-cluster-name=theirs"]\n'
        '    ini = "[pytest]\\nk8s_nodes = 3\\n"\n'
    )
    result = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, str(ROOT / "scripts" / "rename-0.1-names.py"), "--fixture", str(old)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert old.read_text() == (
        "import pytest\n"
        "from kubernetes import client as k8s\n\n\n"
        '@pytest.mark.k8sstate_finding(4, "svc")\n'
        '@pytest.mark.k8sstate_needs("ipvs")\n'
        "def test_x(k8s_cluster, k8s_api, cluster_state):\n"
        '    k8s_api.apply("a.yaml")\n'
        '    other = request.getfixturevalue("k8s_api")\n'
        '    assert "k8s.io/api" and k8s_cluster\n'
        '    args = ["--k8sstate-provider", "kind", "--k8sstate-proxy-mode=ipvs", '
        '"--k8s-cluster-name=theirs"]\n'
        '    ini = "[pytest]\\nk8sstate_nodes = 3\\n"\n'
    )
