"""The ip family in the plugin: ``--k8sstate-ip-family`` / ini / env / marker, and ``ipv6`` / ``dual-stack``
skips decided before any cluster exists (the reason names the option that gives the capability)."""

from __future__ import annotations

from typing import Any

import pytest

PluginRunner = Any  # tests/plugin/conftest.py

NEEDS_TESTS = """
import pytest

@pytest.mark.k8sstate_needs("dual-stack")
def test_dual():
    raise AssertionError("must not run")

@pytest.mark.k8sstate_needs("ipv6")
def test_v6():
    raise AssertionError("must not run")
"""


def test_ipv4_cluster_skips_dual_stack_and_ipv6_tests_before_create(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(NEEDS_TESTS)
    result = plugin.run("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] *: needs dual-stack: the cluster is IPv4-only; use --k8sstate-ip-family dual or "
            '@pytest.mark.k8sstate(ip_family="dual")',
            "SKIPPED [[]1[]] *: needs ipv6: the cluster is IPv4-only; use --k8sstate-ip-family ipv6 or "
            '@pytest.mark.k8sstate(ip_family="ipv6")',
        ]
    )
    assert "creating local cluster" not in result.stdout.str() + result.stderr.str()


def test_ipv6_only_cluster_has_ipv6_but_not_dual_stack(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(NEEDS_TESTS.replace('"ipv6")\ndef test_v6', '"nope")\ndef test_v6'))
    result = plugin.run("-rs", "--k8sstate-ip-family", "ipv6", "-k", "test_dual")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *: needs dual-stack: the cluster is IPv6-only; *"])


def test_ip_family_from_option_ini_and_env(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugin.settings().ip_family == "ipv4"
    assert plugin.settings("--k8sstate-ip-family", "dual").ip_family == "dual"
    plugin.pytester.makeini("[pytest]\nk8sstate_ip_family = ipv6\n")
    assert plugin.settings().ip_family == "ipv6"
    monkeypatch.setenv("K8SSTATE_IP_FAMILY", "dual")
    assert plugin.settings().ip_family == "dual"


def test_bad_ip_family_names_the_option_and_the_choices(plugin: PluginRunner) -> None:
    result = plugin.run("--k8sstate-ip-family", "ipv5")
    assert result.ret != 0
    text = result.stdout.str() + result.stderr.str()
    for part in ("--k8sstate-ip-family", "ipv5", "ipv4, ipv6, dual"):
        assert part in text, text


def test_marker_ip_family_is_validated_and_parametrizes(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.k8sstate(ip_family="ipv5")
        def test_bad(k8s_cluster):
            pass
        """
    )
    result = plugin.run()
    text = result.stdout.str() + result.stderr.str()
    for part in ("ip_family='ipv5'", "ipv4, ipv6, dual"):
        assert part in text, text
