"""What goes into a node image: the images kubeadm asks for (:class:`KubePlan`), the default CNI (kind's
kindnetd manifest or :mod:`pytest_k8sstate.providers.kind.noderoutes`), and the Go-built tools (CoreDNS at
the version kubeadm names, crictl)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.base import Progress
from pytest_k8sstate.providers.kind import noderoutes
from pytest_k8sstate.providers.kind.image.errors import ImageBuildError
from pytest_k8sstate.providers.kind.image.rootfs import go_module_dir

if TYPE_CHECKING:
    from pytest_k8sstate.binaries import Versions

__all__ = [
    "DEFAULT_CNIS",
    "KubePlan",
    "choose_default_cni",
    "cni_manifest",
    "cni_manifest_from_go",
    "cni_manifest_from_kind",
    "coredns_version",
    "go_tools",
    "kubeadm_plan",
    "plan_from_image_list",
]

EXTRA_PAUSE_TAGS = ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10.1")
DEFAULT_CNIS = ("auto", "kindnet", noderoutes.CONFIGMAP)
"""``auto``: kindnet when a kindnetd binary is at hand (``--kindnetd`` or ``<workdir>/gobin/kindnetd``)."""


@dataclass(frozen=True)
class KubePlan:
    """Image names and tags kubeadm ``v{kubernetes}`` and kind's CNI manifest ask for."""

    kubernetes: str
    etcd_tag: str
    coredns_tag: str
    pause_tags: tuple[str, ...]
    kindnetd_tag: str = "docker.io/kindest/kindnetd:k8sstate"

    def tag(self, component: str) -> str:
        return f"registry.k8s.io/{component}:{self.kubernetes}"


def kubeadm_plan(kubeadm: Path, kubernetes_version: str) -> KubePlan:
    """Ask kubeadm itself which images it will use (``kubeadm config images list``)."""
    res = run_command(
        [str(kubeadm), "config", "images", "list", f"--kubernetes-version={kubernetes_version}"],
        timeout=60,
        where="kubeadm",
    )
    return plan_from_image_list(res.text, kubernetes_version)


def plan_from_image_list(text: str, kubernetes_version: str) -> KubePlan:
    etcd = coredns = pause = ""
    for line in text.split():
        if "/etcd:" in line:
            etcd = line
        elif "/coredns" in line:
            coredns = line
        elif "/pause:" in line:
            pause = line
    if not (etcd and coredns and pause):
        raise ImageBuildError(
            f"kubeadm config images list: expected etcd, coredns and pause images, got {text!r}"
        )
    # kind's containerd config pins its own sandbox image (registry.k8s.io/pause:3.10); 3.10.1 is the
    # no-op workload image of this project's manifests (tests/findings): tag them all
    extra = tuple(t for t in EXTRA_PAUSE_TAGS if t != pause)
    return KubePlan(kubernetes_version, etcd, coredns, (pause, *extra))


def cni_manifest_from_kind(kind_version: str, kindnetd_tag: str) -> str:
    """kind's default CNI manifest (``defaultCNIManifest`` in kind's nodeimage/const_cni.go, read from the
    kind module in the Go module cache) with its kindnetd image replaced by ``kindnetd_tag``."""
    src = go_module_dir(f"sigs.k8s.io/kind@{kind_version}") / "pkg" / "build" / "nodeimage" / "const_cni.go"
    try:
        text = src.read_text()
    except OSError as exc:
        raise ImageBuildError(f"cannot read {src}: {exc}; download the kind module first") from exc
    return cni_manifest_from_go(text, kindnetd_tag, str(src))


def cni_manifest_from_go(text: str, kindnetd_tag: str, source: str = "const_cni.go") -> str:
    marker = "const defaultCNIManifest = `"
    start = text.find(marker)
    if start < 0:
        raise ImageBuildError(f"{source}: no defaultCNIManifest raw string")
    # `...` + kindnetdImage + `...`: the image constant splits the raw string
    rest = text[start + len(marker) :].replace("` + kindnetdImage + `", kindnetd_tag)
    end = rest.find("`")
    if end < 0:
        raise ImageBuildError(f"{source}: defaultCNIManifest raw string is not closed")
    return rest[:end]


def coredns_version(plan: KubePlan) -> str:
    """The CoreDNS version kubeadm asks for (``registry.k8s.io/coredns/coredns:v1.14.6`` → ``v1.14.6``)."""
    return plan.coredns_tag.rpartition(":")[2]


def go_tools(
    versions: Versions,
    plan: KubePlan,
    *,
    coredns: Path | None,
    crictl: Path | None,
    progress: Progress,
) -> dict[str, Path]:
    """CoreDNS (the version kubeadm names, unless ``$K8SSTATE_COREDNS_VERSION``) and crictl: given paths, or
    from the binaries cache, built from the Go module proxy on first use."""
    import pytest_k8sstate.binaries as bins_mod

    out: dict[str, Path] = {}
    if coredns is not None:
        out["coredns"] = coredns
    if crictl is not None:
        out["crictl"] = crictl
    need = [n for n in ("coredns", "crictl") if n not in out]
    if not need:
        return out
    if not os.environ.get(bins_mod.Versions.env_var("coredns"), "").strip():  # no explicit pin
        versions = dataclasses.replace(versions, coredns=coredns_version(plan))
    try:
        got = bins_mod.ensure_binaries(need, versions, progress=progress)
    except BinaryError as exc:
        raise ImageBuildError(
            f"kind node image: {exc}\n(or pass a prebuilt binary: --coredns PATH / --crictl PATH)"
        ) from exc
    out.update({n: got[n] for n in need})
    return out


def choose_default_cni(default_cni: str, kindnetd: Path, progress: Progress) -> str:
    """``kindnet`` or :data:`~pytest_k8sstate.providers.kind.noderoutes.CONFIGMAP` for the requested
    ``default_cni`` (one of :data:`DEFAULT_CNIS`), given where a kindnetd binary would be."""
    if default_cni not in DEFAULT_CNIS:
        raise ImageBuildError(f"default CNI {default_cni!r}: expected one of {', '.join(DEFAULT_CNIS)}")
    if default_cni == "kindnet" and not kindnetd.is_file():
        raise ImageBuildError(
            f"default CNI kindnet: no kindnetd binary at {kindnetd}; it cannot be built from the Go module "
            "proxy (see providers/kind/noderoutes.py): pass --kindnetd PATH or --default-cni auto"
        )
    if default_cni != noderoutes.CONFIGMAP and kindnetd.is_file():
        return "kindnet"
    if default_cni == "auto":
        progress(
            f"no kindnetd binary at {kindnetd} (it cannot be built from the Go module proxy): the "
            f"image's default CNI is {noderoutes.CONFIGMAP} (ptp + host-local + per-node routes, "
            "pytest_k8sstate/providers/kind/noderoutes.py); pass --kindnetd PATH for kind's own"
        )
    return noderoutes.CONFIGMAP


def cni_manifest(default_cni: str, kind_version: str, plan: KubePlan) -> str:
    """The node's ``/kind/manifests/default-cni.yaml`` for the chosen default CNI."""
    if default_cni == "kindnet":
        return cni_manifest_from_kind(kind_version, plan.kindnetd_tag)
    return noderoutes.MANIFEST
