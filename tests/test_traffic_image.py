"""The agnhost workload: its build component (binaries) and its FROM-scratch image (kind.image.agnhost)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pytest_k8sstate.binaries import find_binary
from pytest_k8sstate.binaries.gomod import AGNHOST_PACKAGE, agnhost_wrapper_files
from pytest_k8sstate.binaries.versions import INSTALL_ORDER, Versions, expand_components
from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.kind.image.agnhost import (
    APPLETS,
    INPUTS_LABEL,
    build_context,
    ensure_agnhost_image,
    image_inputs,
)

KUBE_GOMOD = """module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require k8s.io/api v0.0.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_agnhost_is_an_on_demand_component_at_the_kubernetes_version():
    v = Versions(kubernetes="1.37.1")
    assert Versions().agnhost == Versions().kubernetes
    assert Versions.resolve(env={"K8SSTATE_AGNHOST_VERSION": "1.36.0"}).agnhost == "v1.36.0"
    assert expand_components("agnhost") == ["agnhost"]
    assert "agnhost" not in expand_components(None)  # never built unless asked for
    assert INSTALL_ORDER[-2:] == ("agnhost", "flannel")  # on-demand components last
    assert Versions.from_json(v.to_json()) == v


def test_agnhost_wrapper_module():
    files = agnhost_wrapper_files(KUBE_GOMOD, "v1.37.1")
    gomod = files["go.mod"]
    assert "module k8sstate.local/agnhostbuild" in gomod
    assert "require k8s.io/kubernetes v1.37.1" in gomod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.37.1" in gomod
    assert "godebug default=go1.25" in gomod
    assert f'import _ "{AGNHOST_PACKAGE}"' in files["tools.go"]
    assert files["tools.go"].startswith("//go:build tools")


def _fake_binaries(tmp_path: Path) -> tuple[Path, Path]:
    agnhost = tmp_path / "agnhost"
    busybox = tmp_path / "busybox"
    agnhost.write_bytes(b"\x7fELF agnhost")
    busybox.write_bytes(b"\x7fELF busybox")
    return agnhost, busybox


def test_build_context_layout(tmp_path):
    agnhost, busybox = _fake_binaries(tmp_path)
    inputs = image_inputs(agnhost, busybox)
    with tarfile.open(fileobj=io.BytesIO(build_context(agnhost, busybox, inputs, "v1.37.1"))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        dockerfile = tar.extractfile("Dockerfile").read().decode()  # type: ignore[union-attr]
        assert tar.extractfile("root/agnhost").read() == agnhost.read_bytes()  # type: ignore[union-attr]
    assert dockerfile.startswith("FROM scratch\n")
    assert f'{INPUTS_LABEL}="{inputs}"' in dockerfile
    assert 'ENTRYPOINT ["/agnhost"]' in dockerfile
    assert members["root/agnhost"].mode == 0o755
    for applet in APPLETS:
        assert members[f"root/bin/{applet}"].issym()
        assert members[f"root/bin/{applet}"].linkname == "busybox"
    assert members["root/tmp"].mode == 0o1777


def test_inputs_follow_content(tmp_path):
    agnhost, busybox = _fake_binaries(tmp_path)
    first = image_inputs(agnhost, busybox)
    assert image_inputs(agnhost, busybox) == first
    agnhost.write_bytes(b"\x7fELF agnhost v2")
    assert image_inputs(agnhost, busybox) != first
    with pytest.raises(ConfigError, match="agnhost image input busybox"):
        image_inputs(agnhost, tmp_path / "missing")


def _engine() -> DockerCli:
    docker = DockerCli()
    try:
        docker.require()
    except ProviderError as exc:  # no docker CLI / no engine answering: the stated prerequisite
        pytest.skip(f"no Docker engine: {exc}")
    return docker


def test_image_builds_from_scratch_runs_and_is_reused():
    """With a Docker engine (scripts/docker-setup.sh start): built once, then reused; busybox and agnhost
    both run in it."""
    agnhost = find_binary("agnhost")
    if agnhost is None:
        pytest.skip("agnhost not in the binaries cache: k8sstate binaries install --components agnhost")
    if not Path("/bin/busybox").is_file():
        pytest.skip("/bin/busybox missing: apt-get install busybox-static")
    docker = _engine()
    version = "v0.0.0-k8sstate-test"
    try:
        first = ensure_agnhost_image(docker, agnhost, Path("/bin/busybox"), version)
        again = ensure_agnhost_image(docker, agnhost, Path("/bin/busybox"), version)
        assert not again.built
        assert again.image_id == first.image_id
        out = docker.run(
            "run", "--rm", "--entrypoint", "/bin/sh", first.tag, "-c", "nc --help 2>&1 | head -1"
        )
        assert "BusyBox" in out.text
        assert "netexec" in docker.run("run", "--rm", first.tag, "--help", timeout=60).text
    finally:
        docker.run("rmi", "-f", f"k8sstate.local/agnhost:{version}", check=False)
