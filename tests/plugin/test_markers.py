"""Markers: registration, ``needs`` skips, ``k8sstate`` validation and parametrisation, findings table."""

from __future__ import annotations

from typing import Any

import pytest

PluginRunner = Any  # tests/plugin/conftest.py


def test_markers_are_registered(plugin: PluginRunner) -> None:
    result = plugin.run("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.k8sstate(provider=None, nodes=None, proxy_mode=None, ip_family=None, cni=None, "
            "version=None, fresh=False, namespace=None):*",
            "@pytest.mark.k8sstate_needs(capability, ...):*",
            "@pytest.mark.k8sstate_finding(number, title):*",
        ]
    )


def test_strict_markers_accept_ours(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.k8sstate_finding(1, "base cluster")
        @pytest.mark.k8sstate(nodes=1)
        def test_x():
            pass
        """
    )
    plugin.run("--strict-markers").assert_outcomes(passed=1)


def test_needs_skips_with_the_missing_capability_and_what_to_do(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.k8sstate_needs("container-runtime")
        def test_resolv_conf():
            raise AssertionError("must not run")

        @pytest.mark.k8sstate_needs("ipvs")
        def test_ipvs():
            raise AssertionError("must not run")

        @pytest.mark.k8sstate_needs("kindnet")
        @pytest.mark.k8sstate(nodes=1)
        def test_kindnet():
            raise AssertionError("must not run")
        """
    )
    result = plugin.run("-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] *: needs container-runtime: the local provider runs pods with kwok "
            "(no container runtime); use --k8sstate-provider kind",
            "SKIPPED [[]1[]] *: needs ipvs: the cluster's kube-proxy runs in iptables mode; "
            'use --k8sstate-proxy-mode ipvs or @pytest.mark.k8sstate(proxy_mode="ipvs")',
            "SKIPPED [[]1[]] *: needs kindnet: kindnet runs only on kind clusters; "
            "use --k8sstate-provider kind",
        ]
    )


def test_marker_with_another_spec_parametrizes_k8s_cluster(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(
        """
        import pytest

        def test_default(k8s_cluster):
            pass

        @pytest.mark.k8sstate(nodes=3, proxy_mode="nftables")
        def test_nft(cluster_state):
            pass

        @pytest.mark.k8sstate(nodes=2, fresh=True)
        def test_same_spec(k8s_api):
            pass

        @pytest.mark.k8sstate(proxy_mode="nftables")
        def test_no_cluster_fixture():
            pass
        """
    )
    result = plugin.run("--collect-only", "-q")
    result.stdout.fnmatch_lines_random(
        [
            "test_marker_with_another_spec_parametrizes_k8s_cluster.py::test_default",
            "test_marker_with_another_spec_parametrizes_k8s_cluster.py::test_nft[[]k8s-local-3w-nftables[]]",
            "test_marker_with_another_spec_parametrizes_k8s_cluster.py::test_same_spec",
            "test_marker_with_another_spec_parametrizes_k8s_cluster.py::test_no_cluster_fixture",
        ]
    )
    assert result.ret == 0


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "k8sstate(node=3)",
            "unknown argument(s) node; expected provider, nodes, proxy_mode, ip_family, cni, version, fresh",
        ),
        (
            "k8sstate(cni='calico')",
            "invalid cni='calico'; expected one of ptp, bridge, flannel, flannel-host-gw, kindnet, cilium",
        ),
        (
            "k8sstate(proxy_mode='userspace')",
            "invalid proxy_mode='userspace'; expected one of iptables, nftables, ipvs",
        ),
        ("k8sstate(nodes='3')", "invalid nodes='3'; expected an int from 0 to 64"),
        (
            "k8sstate(provider='docker')",
            "invalid provider='docker'; expected one of local, kind, minikube, existing",
        ),
        ("k8sstate(3)", "invalid positional args (3,); expected keyword arguments"),
    ],
)
def test_bad_marker_arguments_fail_collection_clearly(
    plugin: PluginRunner, marker: str, message: str
) -> None:
    plugin.pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_x(k8s_cluster):
            pass
        """
    )
    result = plugin.run()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*::test_x: @pytest.mark.k8sstate: {message}"])
    assert "Traceback" not in result.stdout.str()


FINDINGS = """
import pytest

@pytest.mark.k8sstate_finding(4, "A ClusterIP Service adds KUBE-SVC and KUBE-SEP chains")
def test_clusterip():
    pass

@pytest.mark.k8sstate_finding(3, "A Pod gets a pause sandbox container")
def test_pause():
    pytest.skip("needs container-runtime: no runtime here")

@pytest.mark.k8sstate_finding(10, "Scaling rewrites every probability")
def test_scaling():
    assert 1 == 2

@pytest.mark.k8sstate_finding(24, "iptables vs nftables: same outcomes")
@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_modes(mode):
    pass

@pytest.mark.k8sstate_finding(11, "IPVS: ClusterIP on kube-ipvs0")
@pytest.mark.xfail(reason="not in this kernel")
def test_ipvs():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

@pytest.mark.k8sstate_finding(2, "A Pod adds only its keys")
def test_setup_error(broken):
    pass

def test_not_a_finding():
    pass
"""


def test_findings_table(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(FINDINGS)
    result = plugin.run()
    result.assert_outcomes(passed=4, skipped=1, failed=1, xfailed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*= k8sstate findings =*",
            " #  finding * result",
            " 2  A Pod adds only its keys * error: in setup",
            " 3  A Pod gets a pause sandbox container * skipped: needs container-runtime: no runtime here",
            " 4  A ClusterIP Service adds KUBE-SVC and KUBE-SEP chains * passed",
            "10  Scaling rewrites every probability * failed",
            "11  IPVS: ClusterIP on kube-ipvs0 * xfailed: not in this kernel",
            "24  iptables vs nftables: same outcomes [[]iptables[]] * passed",
            "24  iptables vs nftables: same outcomes [[]nftables[]] * passed",
            "1 error, 1 failed, 3 passed, 1 skipped, 1 xfailed",
        ]
    )
    assert "test_not_a_finding" not in result.stdout.str().split("k8sstate findings")[1]


def test_no_findings_table_without_finding_tests(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile("def test_x(): pass")
    result = plugin.run()
    assert "k8sstate findings" not in result.stdout.str()


def test_findings_table_with_xdist(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(FINDINGS)
    result = plugin.run_subprocess("-p", "xdist", "-n", "2")
    result.stdout.fnmatch_lines(
        [
            "*= k8sstate findings =*",
            " 3  A Pod gets a pause sandbox container * skipped: needs container-runtime: no runtime here",
            "10  Scaling rewrites every probability * failed",
            "1 error, 1 failed, 3 passed, 1 skipped, 1 xfailed",
        ]
    )
