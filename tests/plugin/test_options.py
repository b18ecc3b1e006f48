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
            "*--k8s-provider=NAME*",
            "*--k8s-nodes=N*",
            "*--k8s-proxy-mode=MODE*",
            "*--k8s-cni=NAME*",
            "*--k8s-version=VERSION*",
            "*--k8s-keep-cluster*",
            "*--k8s-reuse-cluster=NAME*",
            "*--k8s-kubeconfig=PATH*",
            "*--k8s-artifacts=DIR*",
            "*--k8s-include-secrets*",
            "*--k8s-ignore=PATTERN*",
        ]
    )
    for ini in ("k8s_provider", "k8s_nodes", "k8s_proxy_mode", "k8s_keep_cluster", "k8s_ignore"):
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
        "--k8s-provider=kind",
        "--k8s-nodes=3",
        "--k8s-proxy-mode=NFTABLES",
        "--k8s-cni=bridge",
        "--k8s-version=v1.37.1",
        "--k8s-keep-cluster",
        "--k8s-reuse-cluster=dev",
        "--k8s-include-secrets",
        "--k8s-ignore=/registry/events/**",
        "--k8s-ignore=leases/**",
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
        k8s_provider = kind
        k8s_nodes = 3
        k8s_proxy_mode = nftables
        k8s_keep_cluster = yes
        k8s_artifacts = out/artifacts
        k8s_ignore =
            /registry/events/**
            configmaps/**
        """
    )
    s = plugin.settings()
    assert (s.provider, s.nodes, s.proxy_mode, s.keep_cluster) == ("kind", 3, "nftables", True)
    assert s.artifacts == plugin.pytester.path / "out" / "artifacts"
    assert s.ignore == ("/registry/events/**", "configmaps/**")


def test_cli_zero_overrides_ini(plugin: PluginRunner) -> None:
    plugin.pytester.makeini("[pytest]\nk8s_nodes = 3\nk8s_provider = kind\n")
    s = plugin.settings("--k8s-nodes", "0")
    assert s.nodes == 0
    assert s.provider == "kind"


def test_precedence_cli_over_env_over_ini(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin.pytester.makeini("[pytest]\nk8s_proxy_mode = nftables\nk8s_nodes = 3\nk8s_keep_cluster = true\n")
    monkeypatch.setenv("K8SSTATE_PROXY_MODE", "ipvs")
    monkeypatch.setenv("K8SSTATE_NODES", "1")
    monkeypatch.setenv("K8SSTATE_KEEP_CLUSTER", "0")
    s = plugin.settings("--k8s-nodes=5")
    assert (s.proxy_mode, s.nodes, s.keep_cluster) == ("ipvs", 5, False)


def test_ignore_patterns_are_added_from_ini_env_and_cli(
    plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin.pytester.makeini("[pytest]\nk8s_ignore = a/**\n")
    monkeypatch.setenv("K8SSTATE_IGNORE", "b/**, c/**")
    s = plugin.settings("--k8s-ignore", "d/**", "--k8s-ignore", "a/**")
    assert s.ignore == ("a/**", "b/**", "c/**", "d/**")


def test_cli_artifacts_relative_to_invocation_dir(plugin: PluginRunner) -> None:
    s = plugin.settings("--k8s-artifacts=arts")
    assert s.artifacts == Path.cwd() / "arts"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--k8s-provider=docker"],
            "--k8s-provider: invalid value 'docker' (from command line --k8s-provider); "
            "expected one of local, kind, minikube, existing",
        ),
        (
            ["--k8s-nodes=two"],
            "--k8s-nodes: invalid value 'two' (from command line --k8s-nodes); "
            "expected a whole number of worker nodes from 0 to 64",
        ),
        (["--k8s-nodes=-1"], "--k8s-nodes: invalid value '-1'"),
        (
            ["--k8s-proxy-mode=userspace"],
            "--k8s-proxy-mode: invalid value 'userspace' (from command line "
            "--k8s-proxy-mode); expected one of iptables, nftables, ipvs",
        ),
        (["--k8s-version=latest"], "--k8s-version: invalid value 'latest'"),
        (
            ["--k8s-cni=calico"],
            "--k8s-cni: invalid value 'calico' (from command line --k8s-cni); expected one of ptp",
        ),
        (["--k8s-reuse-cluster=My_Cluster"], "--k8s-reuse-cluster: invalid value 'My_Cluster'"),
        (["--k8s-ignore="], "--k8s-ignore: empty pattern"),
    ],
)
def test_bad_cli_values_are_usage_errors(plugin: PluginRunner, args: list[str], expected: str) -> None:
    with pytest.raises(pytest.UsageError) as excinfo:
        plugin.configure(*args)
    assert expected in str(excinfo.value)


def test_bad_ini_and_env_values_name_their_origin(
    plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin.pytester.makeini("[pytest]\nk8s_keep_cluster = maybe\n")
    with pytest.raises(
        pytest.UsageError,
        match=r"--k8s-keep-cluster: invalid value 'maybe' \(from ini option "
        r"k8s_keep_cluster\); expected a boolean",
    ):
        plugin.configure()
    monkeypatch.setenv("K8SSTATE_PROVIDER", "kube")
    with pytest.raises(
        pytest.UsageError,
        match=r"invalid value 'kube' \(from environment variable "
        r"K8SSTATE_PROVIDER\)",
    ):
        plugin.configure("--k8s-keep-cluster")


def test_existing_provider_needs_a_kubeconfig(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(plugin.pytester.path))
    with pytest.raises(
        pytest.UsageError,
        match=r"--k8s-provider existing: kubeconfig .* does not exist; pass --k8s-kubeconfig PATH",
    ):
        plugin.configure("--k8s-provider=existing")
    kubeconfig = plugin.pytester.path / "kc.yaml"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert plugin.settings("--k8s-provider=existing").kubeconfig == kubeconfig


def test_usage_error_exit_code_and_message(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile("def test_x(): pass")
    result = plugin.run("--k8s-proxy-mode=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--k8s-proxy-mode: invalid value 'bogus'*expected one of iptables, nftables, ipvs"]
    )


def test_report_header(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile("def test_x(): pass")
    result = plugin.run("--k8s-nodes=1")
    result.stdout.fnmatch_lines(
        ["k8sstate: provider local, 1 worker nodes, proxy mode iptables, artifacts *"]
    )
    assert result.ret == 0
