"""Provider settings as options: ``--k8sstate-kind-config/-kind-image``, ``--k8sstate-minikube-*``.

Each is an option, an ini key and an env variable, and reaches the provider the plugin builds
(``plugin.pool``'s factory) -- checked down to what the provider would run: kind's generated config and
node image, minikube's ``start`` command line. The boundary: minikube itself cannot run here (no kicbase
image, no registry), so the minikube tests stop at the command line; kind's config is what kind would read.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_k8sstate.plugin.pool import _default_provider_factory
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.kind.config import kind_config, node_image
from pytest_k8sstate.providers.minikube import start_argv

PluginRunner = Any  # tests/plugin/conftest.py

KIND_CONFIG = """\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: ignored
networking:
  podSubnet: 10.200.0.0/16
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
nodes:
- role: control-plane
  labels: {tier: cp}
- role: worker
  extraMounts: [{hostPath: /tmp, containerPath: /host-tmp}]
"""


def _provider(settings: Any, name: str) -> Any:
    return _default_provider_factory(name, lambda _m: None, settings)


def test_kind_options_reach_the_generated_config(plugin: PluginRunner) -> None:
    cfg_file = plugin.pytester.path / "kind.yaml"
    cfg_file.write_text(KIND_CONFIG)
    s = plugin.settings(
        "--k8sstate-provider=kind", "--k8sstate-kind-config=kind.yaml", "--k8sstate-kind-image=my/node:v1"
    )
    assert s.options_for("kind") == {"config_file": cfg_file, "image": "my/node:v1"}
    assert s.options_for("minikube") == {}
    prov = _provider(s, "kind")
    spec = ClusterSpec(name="c1", nodes=1, proxy_mode="nftables")
    image = node_image(spec, prov.options, env={})
    assert image == "my/node:v1"
    cfg = kind_config(spec, prov.options, image)
    assert cfg["name"] == "c1"
    assert cfg["networking"] == {"kubeProxyMode": "nftables", "podSubnet": "10.200.0.0/16"}
    assert cfg["containerdConfigPatches"] == ['[plugins."io.containerd.grpc.v1.cri".registry]']
    assert cfg["nodes"] == [
        {"role": "control-plane", "labels": {"tier": "cp"}, "image": "my/node:v1"},
        {
            "role": "worker",
            "extraMounts": [{"hostPath": "/tmp", "containerPath": "/host-tmp"}],
            "image": "my/node:v1",
        },
    ]


def test_kind_options_from_ini_and_env(plugin: PluginRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    (plugin.pytester.path / "sub").mkdir()
    (plugin.pytester.path / "sub" / "k.yaml").write_text("kind: Cluster\n")
    plugin.pytester.makeini("[pytest]\nk8sstate_kind_config = sub/k.yaml\nk8sstate_kind_image = ini/node:1\n")
    s = plugin.settings()
    assert s.options_for("kind") == {
        "config_file": plugin.pytester.path / "sub" / "k.yaml",
        "image": "ini/node:1",
    }
    monkeypatch.setenv("K8SSTATE_KIND_IMAGE", "env/node:2")
    assert plugin.settings().options_for("kind")["image"] == "env/node:2"
    assert plugin.settings("--k8sstate-kind-image=cli/node:3").options_for("kind")["image"] == "cli/node:3"


def test_minikube_options_reach_the_start_command(plugin: PluginRunner) -> None:
    s = plugin.settings(
        "--k8sstate-provider=minikube",
        "--k8sstate-minikube-driver=docker",
        "--k8sstate-minikube-cni=flannel",
        "--k8sstate-minikube-cpus=2",
        "--k8sstate-minikube-memory=4g",
    )
    assert s.options_for("minikube") == {"driver": "docker", "cni": "flannel", "cpus": 2, "memory": "4g"}
    prov = _provider(s, "minikube")
    argv = start_argv("minikube", ClusterSpec(name="m1", nodes=1), prov.options)
    for flag in ("--driver=docker", "--cni=flannel", "--cpus=2", "--memory=4g", "--nodes=2", "-p"):
        assert flag in argv


def test_minikube_other_driver_is_refused_with_the_reason(plugin: PluginRunner) -> None:
    from pytest_k8sstate.errors import ProviderError

    s = plugin.settings("--k8sstate-minikube-driver=kvm2")
    prov = _provider(s, "minikube")
    assert "--driver=kvm2" in start_argv("minikube", ClusterSpec(name="m1"), prov.options)
    with pytest.raises(
        ProviderError, match="driver 'kvm2' is not supported: node state is read with `docker exec`"
    ):
        prov.create(ClusterSpec(name="m1"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k8sstate-minikube-cpus=0"], "--k8sstate-minikube-cpus: invalid value '0' (from command line"),
        (["--k8sstate-minikube-cpus=two"], "a whole number of CPUs from 1 to 1024"),
        (["--k8sstate-minikube-memory=lots"], "--k8sstate-minikube-memory: invalid value 'lots'"),
        (["--k8sstate-minikube-driver=Dock er"], "a driver name such as docker"),
        (["--k8sstate-kind-image=bad image"], "an image reference like kindest/node:v1.37.1"),
        (["--k8sstate-kind-config=missing.yaml"], "missing.yaml is not a file; give a kind Cluster config"),
    ],
)
def test_bad_values_are_one_usage_error(plugin: PluginRunner, args: list[str], message: str) -> None:
    plugin.pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = plugin.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_help_lists_the_provider_options(plugin: PluginRunner) -> None:
    out = plugin.run("--help").stdout.str()
    for flag in (
        "--k8sstate-kind-config=FILE",
        "--k8sstate-kind-image=TAG",
        "--k8sstate-minikube-driver=DRIVER",
        "--k8sstate-minikube-cni=CNI",
        "--k8sstate-minikube-cpus=N",
        "--k8sstate-minikube-memory=SIZE",
    ):
        assert flag in out
    for ini in ("k8sstate_kind_config", "k8sstate_minikube_memory"):
        assert f"  {ini} " in out


def test_kind_config_file_bad_content(tmp_path: Path) -> None:
    from pytest_k8sstate.errors import ConfigError
    from pytest_k8sstate.providers.kind.config import KindOptions

    spec = ClusterSpec(name="c1", nodes=2)
    cases = {
        "a: [": "not valid YAML",
        "- a list\n": "expected a mapping",
        "kind: Pod\n": "kind is 'Pod'; expected 'Cluster'",
        "networking: {kubeProxyMode: ipvs}\n": "set it with --k8sstate-proxy-mode instead",
        "nodes: [{role: control-plane}, {role: worker}]\n": "this cluster has 1 and 2 (set the workers with",
        "kubeadmConfigPatches: nope\n": "kubeadmConfigPatches must be a list",
    }
    for text, message in cases.items():
        f = tmp_path / "k.yaml"
        f.write_text(text)
        with pytest.raises(ConfigError, match=None) as info:
            kind_config(spec, KindOptions(config_file=f))
        assert message in str(info.value), (text, str(info.value))
        assert str(f) in str(info.value)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "pytest_k8sstate.cli", *argv], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--provider", "minikube", "--kind-image", "x:1"],
            "--kind-image is an option of --provider kind, not minikube",
        ),
        (
            ["--provider", "kind", "--minikube-cpus", "2"],
            "--minikube-cpus is an option of --provider minikube",
        ),
        (
            ["--provider", "kind", "--kind-config", "/nonexistent.yaml"],
            "--kind-config /nonexistent.yaml: no such file",
        ),
        (
            ["--provider", "minikube", "--minikube-memory", "lots"],
            "minikube memory='lots': expected megabytes",
        ),
    ],
)
def test_cli_cluster_create_provider_flags(argv: list[str], message: str) -> None:
    proc = _cli("cluster", "create", "--name", "optcheck", *argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_help_shows_the_provider_flags() -> None:
    out = _cli("cluster", "create", "--help").stdout
    for flag in (
        "--kind-config FILE",
        "--kind-image TAG",
        "--minikube-driver DRIVER",
        "--minikube-memory SIZE",
    ):
        assert flag in out
