"""The minikube provider: command construction and output parsing (pure).

minikube cannot run on this machine: its docker driver needs the kicbase image and preloaded images
from a registry, and none is reachable. The lifecycle test below skips with that reason.
"""

from __future__ import annotations

import shutil

import pytest

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.minikube import (
    MINIKUBE_CERTS,
    NO_REGISTRY_REASON,
    MinikubeOptions,
    minikube_node_names,
    parse_node_list,
    parse_profile_list,
    start_argv,
)


def test_start_argv_defaults() -> None:
    argv = start_argv("minikube", ClusterSpec(name="mk", nodes=2, proxy_mode="ipvs"), MinikubeOptions())
    assert argv[:4] == ["minikube", "start", "-p", "mk"]
    assert "--driver=docker" in argv
    assert "--nodes=3" in argv  # control-plane + 2 workers
    assert "--container-runtime=containerd" in argv
    assert "--extra-config=kube-proxy.mode=ipvs" in argv
    assert "--keep-context=true" in argv  # never switches the user's current context
    assert "--wait=all" in argv
    assert "--wait-timeout=600s" in argv
    assert not any(a.startswith("--kubernetes-version") for a in argv)


def test_start_argv_all_options() -> None:
    opts = MinikubeOptions(
        container_runtime="docker",
        base_image="local/kicbase:dev",
        cni="false",
        extra_config=("kubelet.max-pods=50", "apiserver.v=4"),
        cpus=2,
        memory="4g",
        wait=0,
    )
    argv = start_argv("/opt/minikube", ClusterSpec(name="mk2", nodes=0, version="1.37.1"), opts)
    assert argv[0] == "/opt/minikube"
    for expected in (
        "--nodes=1",
        "--kubernetes-version=v1.37.1",
        "--container-runtime=docker",
        "--extra-config=kube-proxy.mode=iptables",
        "--extra-config=kubelet.max-pods=50",
        "--extra-config=apiserver.v=4",
        "--base-image=local/kicbase:dev",
        "--cni=false",
        "--cpus=2",
        "--memory=4g",
        "--wait=none",
    ):
        assert expected in argv


@pytest.mark.parametrize(
    "kwargs",
    [{"container_runtime": "rkt"}, {"extra_config": ("kubelet",)}, {"extra_config": ("x=y",)}, {"wait": -5}],
)
def test_options_reject_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="minikube"):
        MinikubeOptions(**kwargs)  # type: ignore[arg-type]


def test_node_names_and_lists() -> None:
    assert minikube_node_names("p", 2) == ["p", "p-m02", "p-m03"]
    assert parse_node_list("p\t192.168.49.2\np-m02\t192.168.49.3\n\n") == [
        ("p", "192.168.49.2"),
        ("p-m02", "192.168.49.3"),
    ]
    doc = '{"invalid": [{"Name": "broken"}], "valid": [{"Name": "p", "Status": "OK"}, {"x": 1}]}'
    assert parse_profile_list(doc) == ["p", "broken"]
    assert parse_profile_list("not json") == []


def test_etcd_certificates_are_minikubes_layout() -> None:
    assert MINIKUBE_CERTS.ca == "/var/lib/minikube/certs/etcd/ca.crt"
    assert MINIKUBE_CERTS.cert == "/var/lib/minikube/certs/apiserver-etcd-client.crt"
    assert MINIKUBE_CERTS.key == "/var/lib/minikube/certs/apiserver-etcd-client.key"


@pytest.mark.skipif(
    shutil.which("minikube") is None, reason=NO_REGISTRY_REASON + " (and minikube is not installed)"
)
def test_minikube_lifecycle() -> None:  # pragma: no cover - needs minikube + registry
    from pytest_k8sstate.providers.minikube import MinikubeProvider

    prov = MinikubeProvider(progress=lambda _l: None)
    spec = ClusterSpec(name="k8ss-mk", nodes=1)
    cluster = prov.create(spec)
    try:
        assert [n.role for n in cluster.nodes] == ["control-plane", "worker"]
        assert cluster.control_plane.exec.which("iptables-save")
        assert cluster.etcd is not None
    finally:
        prov.delete(spec.name)
