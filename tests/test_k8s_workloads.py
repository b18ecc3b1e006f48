"""Workload helpers without a cluster: exec status parsing, Service → pod port, the refusals with reasons.

The helpers themselves run against real pods in ``tests/test_k8s_workloads_kind.py``; the ``local``
refusals are checked here with a stand-in cluster object (the check happens before any API call: kwok pods
have no containers, so there is nothing real to call).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_k8sstate.errors import K8sStateError, ProviderError
from pytest_k8sstate.k8s.helper import K8sHelper
from pytest_k8sstate.k8s.workloads import exit_status, resolve_target_port
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.images import load_image, tar_tags


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        ("", 0),
        ('{"metadata":{},"status":"Success"}', 0),
        (
            "metadata: {}\nstatus: Failure\nmessage: 'command terminated with non-zero exit code: exit 3'\n"
            "reason: NonZeroExitCode\ndetails:\n  causes:\n  - reason: ExitCode\n    message: '3'\n",
            3,
        ),
    ],
)
def test_exit_status(channel: str, code: int) -> None:
    assert exit_status(channel, "exec x") == code


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        (
            '{"status":"Failure","message":"exec: \\"nope\\": executable file not found in $PATH",'
            '"reason":"InternalError","details":{"causes":[{"message":"not found"}]}}',
            'exec x: exec: "nope": executable file not found',
        ),
        ("[1, 2", "exec x: unreadable exec status"),
        ('{"status":"Failure","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}', "exec x: "),
    ],
)
def test_exit_status_errors(channel: str, message: str) -> None:
    with pytest.raises(K8sStateError) as info:
        exit_status(channel, "exec x")
    assert str(info.value).startswith(message)


SVC = {
    "metadata": {"name": "web"},
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"port": 81, "targetPort": 9090}]},
}
POD = {
    "metadata": {"name": "p"},
    "spec": {"containers": [{"ports": [{"name": "web", "containerPort": 8080}]}]},
}


def test_resolve_target_port() -> None:
    assert resolve_target_port(SVC, 80, POD) == 8080
    assert resolve_target_port(SVC, "http", POD) == 8080
    assert resolve_target_port(SVC, 81, POD) == 9090
    with pytest.raises(K8sStateError, match="service/web has no port 82; its ports: http, 81"):
        resolve_target_port(SVC, 82, POD)
    with pytest.raises(K8sStateError, match="targets 'web', a port pod/p does not name"):
        resolve_target_port(SVC, 80, {"metadata": {"name": "p"}, "spec": {"containers": [{}]}})


def _helper(provider: str, loader: Any = None) -> K8sHelper:
    return K8sHelper(None, "ns", cluster=SimpleNamespace(provider=provider), image_loader=loader)


def test_local_provider_refuses_container_helpers_with_the_reason() -> None:
    k = _helper("local")
    for call, what in (
        (lambda: k.logs("p"), "logs"),
        (lambda: k.exec("p", ["true"]), "exec"),
        (lambda: k.port_forward("p", 80).__enter__(), "port_forward"),
    ):
        with pytest.raises(K8sStateError) as info:
            call()
        assert str(info.value).startswith(f"{what} is not supported by provider local: its pods are kwok's")


def test_exec_wants_an_argv() -> None:
    with pytest.raises(K8sStateError, match="cmd must be a non-empty argv list"):
        _helper("kind").exec("p", "hostname")  # type: ignore[arg-type]
    with pytest.raises(K8sStateError, match="expected a pod name or pod/NAME"):
        _helper("kind").logs("deploy/x")


def test_load_image_without_a_loader_and_on_other_providers() -> None:
    with pytest.raises(K8sStateError, match="load_image is not supported by provider local"):
        _helper("local").load_image("x:1")
    assert _helper("kind", loader=lambda image: {"n": f"got {image}"}).load_image("x:1") == {"n": "got x:1"}
    for provider, hint in (
        ("local", "kwok's and run no images"),
        ("minikube", "minikube image load"),
        ("existing", "push the image to a registry"),
    ):
        cluster = Cluster(provider, provider, Path("k"), "", [], None, frozenset(), "iptables")
        with pytest.raises(ProviderError, match=f"not supported by provider {provider}: .*{hint}"):
            load_image(cluster, "x:1")


def _save_tar(path: Path, manifest: Any) -> Path:
    with tarfile.open(path, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_tags(tmp_path: Path) -> None:
    good = _save_tar(tmp_path / "a.tar", [{"Config": "c.json", "RepoTags": ["me/app:1", "me/app:latest"]}])
    assert tar_tags(good) == ["me/app:1", "me/app:latest"]
    with pytest.raises(ProviderError, match="the tarball has no tagged image"):
        tar_tags(_save_tar(tmp_path / "b.tar", [{"Config": "c.json", "RepoTags": None}]))
    (tmp_path / "c.tar").write_text("not a tar")
    with pytest.raises(ProviderError, match="not a `docker save` tarball"):
        tar_tags(tmp_path / "c.tar")
