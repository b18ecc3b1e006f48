"""Helpers for pytester tests of the plugin.

Inner pytest runs load the plugin with ``-p pytest_k8sstate.plugin`` unless the package is installed
(then its ``pytest11`` entry point loads it, and ``-p`` would register it twice). ``PYTEST_ADDOPTS`` and
the plugin's ``K8SSTATE_*`` variables are cleared so the outer environment cannot leak in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points

import pytest

import pytest_k8sstate.binaries as binaries
import pytest_k8sstate.plugin.options as k8s_config
from pytest_k8sstate.plugin.hooks import SETTINGS_KEY
from pytest_k8sstate.plugin.options import Settings
from pytest_k8sstate.providers.local.binaries import KUBE_BINARIES
from pytest_k8sstate.util.files import cache_dir


def _entry_point_installed() -> bool:
    return any(ep.value == "pytest_k8sstate.plugin" for ep in entry_points(group="pytest11"))


# pytester points HOME at a temp dir; keep the real binaries/cluster cache (resolved before that)
REAL_CACHE = str(cache_dir())

PLUGIN_ARGS: tuple[str, ...] = () if _entry_point_installed() else ("-p", "pytest_k8sstate.plugin")
OPTION_ENV = tuple(
    opt.env
    for name, opt in vars(k8s_config).items()
    if name.startswith("OPT_") and isinstance(opt, k8s_config._Option)
)


class PluginRunner:
    """pytester plus the plugin: ``run`` (in-process), ``run_subprocess``, ``configure``, ``settings``."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.plugin_args = PLUGIN_ARGS

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)

    def run_subprocess(self, *args: str, timeout: float = 300) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(
            *PLUGIN_ARGS, "-p", "no:cacheprovider", *args, timeout=timeout
        )

    def configure(self, *args: str) -> pytest.Config:
        """A configured ``Config`` (pytest_configure ran) for option-resolution tests."""
        return self.pytester.parseconfigure(*PLUGIN_ARGS, *args)

    def settings(self, *args: str) -> Settings:
        return self.configure(*args).stash[SETTINGS_KEY]


@pytest.fixture
def kpytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", REAL_CACHE)
    for name in OPTION_ENV:
        monkeypatch.delenv(name, raising=False)
    return pytester


@pytest.fixture
def plugin(kpytester: pytest.Pytester) -> PluginRunner:
    return PluginRunner(kpytester)


def local_cluster_unavailable() -> str | None:
    """Why the local provider cannot create a cluster here (None when it can).

    Only the expected conditions (not root, binaries not installed) become a reason to skip; anything
    else raised here is a bug in the provider or the binaries cache and errors the tests.
    """
    if os.geteuid() != 0:
        return "the local provider needs root (network namespaces)"
    versions = binaries.Versions.resolve()
    missing = [n for n in (*KUBE_BINARIES, "kwok") if binaries.find_binary(n, versions) is None]
    if missing:
        return f"binaries not installed: {', '.join(missing)} (run `k8sstate binaries install`)"
    return None


@pytest.fixture
def local_unavailable() -> Callable[[], str | None]:
    """:func:`local_cluster_unavailable` itself, for tests of which conditions skip."""
    return local_cluster_unavailable


@pytest.fixture
def local_provider_ok() -> None:
    """Skip unless the local provider can create a cluster here."""
    reason = local_cluster_unavailable()
    if reason is not None:
        pytest.skip(reason)
