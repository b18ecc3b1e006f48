"""Options: CLI, env, ini; precedence; UsageError on bad values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PluginRunner = Any  # tests/plugin/conftest.py


def test_help_lists_every_option_in_the_k8sstate_group(plugin: PluginRunner) -> None:
    result = plugin.run("--help")
    result.stdout.fnmatch_lines(
        [
            "Kubernetes cluster state (pytest-k8sstate):",
            "*--k8sstate-provider=NAME*",
            "*--k8sstate-nodes=N*",
            "*--k8sstate-proxy-mode=MODE*",
            "*--k8sstate-cni=NAME*",
            "*--k8sstate-version=VERSION*",
            "*--k8sstate-keep-cluster*",
            "*--k8sstate-reuse-cluster=NAME*",
            "*--k8sstate-kubeconfig=PATH*",
            "*--k8sstate-artifacts=DIR*",
            "*--k8sstate-include-secrets*",
            "*--k8sstate-ignore=PATTERN*",
        ]
    )
    for ini in (
        "k8sstate_provider",
        "k8sstate_nodes",
        "k8sstate_proxy_mode",
        "k8sstate_keep_cluster",
        "k8sstate_ignore",
    ):
        assert f"  {ini} " in result.stdout.str()


def test_defaults(plugin: PluginRunner) -> None:
    s = plugin.settings()
    assert (s.provider, s.nodes, s.proxy_mode, s.version) == ("local", 2, "iptables", None)
    assert s.cni is None  # the provider's default pod network
    assert not s.keep_cluster
    assert not s.include_secrets
    assert s.reuse_cluster is None
    assert s.kubeconfig is None
    assert s.ignore == ()
    assert s.artifacts == plugin.pytester.path / ".k8sstate"


def test_cli_values(plugin: PluginRunner) -> None:
    s = plugin.settings(
        "--k8sstate-provider=kind",
        "--k8sstate-nodes=3",
        "--k8sstate-proxy-mode=NFTABLES",
        "--k8sstate-cni=bridge",
        "--k8sstate-version=v1.37.1",
        "--k8sstate-keep-cluster",
        "--k8sstate-reuse-cluster=dev",
        "--k8sstate-include-secrets",
        "--k8sstate-ignore=/registry/events/**",
        "--k8sstate-ignore=leases/**",
    )
    assert (s.provider, s.nodes, s.proxy_mode, s.version) == ("kind", 3, "nftables", "1.37.1")
    assert s.cni == "bridge"
    assert s.keep_cluster
    assert s.include_secrets
    assert s.reuse_cluster == "dev"
    assert s.ignore == ("/registry/events/**", "leases/**")


def test_ini_values_and_paths_relative_to_the_ini_file(plugin: PluginRunner) -> None:
    plugin.pytester.makeini(
        """
        [pytest]
        k8sstate_provider = kind
        k8sstate_nodes = 3
        k8sstate_proxy_mode = nftables
        k8sstate_keep_cluster = yes
        k8sstate_artifacts = out/artifacts
        k8sstate_ignore =
            /registry/events/**
            configmaps/**
        """
    )
    s = plugin.settings()
    assert (s.provider, s.nodes, s.proxy_mode, s.keep_cluster) == ("kind", 3, "nftables", True)
    assert s.artifacts == plugin.pytester.path / "out" / "artifacts"
    assert s.ignore == ("/registry/events/**", "configmaps/**")


def test_cli_zero_overrides_ini(plugin: PluginRunner) -> None:
    plugin.pytester.makeini("[pytest]\nk8sstate_nodes = 3\nk8sstate_provider = kind\n")
    s = plugin.settings("--k8sstate-nodes", "0")
    assert s.nodes == 0
    assert s.provider == "kind"


def test_precedence_cli_over_env_over_ini(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin.pytester.makeini(
        "[pytest]\nk8sstate_proxy_mode = nftables\nk8sstate_nodes = 3\nk8sstate_keep_cluster = true\n"
    )
    monkeypatch.setenv("K8SSTATE_PROXY_MODE", "ipvs")
    monkeypatch.setenv("K8SSTATE_NODES", "1")
    monkeypatch.setenv("K8SSTATE_KEEP_CLUSTER", "0")
    s = plugin.settings("--k8sstate-nodes=5")
    assert (s.proxy_mode, s.nodes, s.keep_cluster) == ("ipvs", 5, False)


def test_ignore_patterns_are_added_from_ini_env_and_cli(
    plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin.pytester.makeini("[pytest]\nk8sstate_ignore = a/**\n")
    monkeypatch.setenv("K8SSTATE_IGNORE", "b/**, c/**")
    s = plugin.settings("--k8sstate-ignore", "d/**", "--k8sstate-ignore", "a/**")
    assert s.ignore == ("a/**", "b/**", "c/**", "d/**")


def test_cli_artifacts_relative_to_invocation_dir(plugin: PluginRunner) -> None:
    s = plugin.settings("--k8sstate-artifacts=arts")
    assert s.artifacts == Path.cwd() / "arts"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--k8sstate-provider=docker"],
            "--k8sstate-provider: invalid value 'docker' (from command line --k8sstate-provider); "
            "expected one of local, kind, minikube, existing",
        ),
        (
            ["--k8sstate-nodes=two"],
            "--k8sstate-nodes: invalid value 'two' (from command line --k8sstate-nodes); "
            "expected a whole number of worker nodes from 0 to 64",
        ),
        (["--k8sstate-nodes=-1"], "--k8sstate-nodes: invalid value '-1'"),
        (
            ["--k8sstate-proxy-mode=userspace"],
            "--k8sstate-proxy-mode: invalid value 'userspace' (from command line "
            "--k8sstate-proxy-mode); expected one of iptables, nftables, ipvs",
        ),
        (["--k8sstate-version=latest"], "--k8sstate-version: invalid value 'latest'"),
        (
            ["--k8sstate-cni=calico"],
            "--k8sstate-cni: invalid value 'calico' (from command line --k8sstate-cni); expected one of ptp",
        ),
        (["--k8sstate-reuse-cluster=My_Cluster"], "--k8sstate-reuse-cluster: invalid value 'My_Cluster'"),
        (["--k8sstate-ignore="], "--k8sstate-ignore: empty pattern"),
    ],
)
def test_bad_cli_values_are_usage_errors(plugin: PluginRunner, args: list[str], expected: str) -> None:
    with pytest.raises(pytest.UsageError) as excinfo:
        plugin.configure(*args)
    assert expected in str(excinfo.value)


def test_bad_ini_and_env_values_name_their_origin(
    plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin.pytester.makeini("[pytest]\nk8sstate_keep_cluster = maybe\n")
    with pytest.raises(
        pytest.UsageError,
        match=r"--k8sstate-keep-cluster: invalid value 'maybe' \(from ini option "
        r"k8sstate_keep_cluster\); expected a boolean",
    ):
        plugin.configure()
    monkeypatch.setenv("K8SSTATE_PROVIDER", "kube")
    with pytest.raises(
        pytest.UsageError,
        match=r"invalid value 'kube' \(from environment variable "
        r"K8SSTATE_PROVIDER\)",
    ):
        plugin.configure("--k8sstate-keep-cluster")


def test_existing_provider_needs_a_kubeconfig(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(plugin.pytester.path))
    with pytest.raises(
        pytest.UsageError,
        match=r"--k8sstate-provider existing: kubeconfig .* does not exist; pass --k8sstate-kubeconfig PATH",
    ):
        plugin.configure("--k8sstate-provider=existing")
    kubeconfig = plugin.pytester.path / "kc.yaml"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert plugin.settings("--k8sstate-provider=existing").kubeconfig == kubeconfig


def test_usage_error_exit_code_and_message(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile("def test_x(): pass")
    result = plugin.run("--k8sstate-proxy-mode=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--k8sstate-proxy-mode: invalid value 'bogus'*expected one of iptables, nftables, ipvs"]
    )


def test_report_header(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile("def test_x(): pass")
    result = plugin.run("--k8sstate-nodes=1")
    result.stdout.fnmatch_lines(
        ["k8sstate: provider local, 1 worker nodes, proxy mode iptables, artifacts *"]
    )
    assert result.ret == 0
