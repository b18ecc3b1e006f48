"""Build a kind node image offline (no registry): Debian packages + the Go module proxy + the binaries cache.

Plan and rationale: ``docs/kind-on-restricted-machines.md`` section 5. :func:`build` (``k8sstate image
build``) runs the steps of :class:`~.builder.NodeImageBuilder`, each cached in ``<cache>/kind-images/``:

1. ``rootfs`` (:mod:`.rootfs`): ``debootstrap --variant=minbase`` of Debian **bookworm** (systemd 252 still
   boots on cgroup v1) with the packages of kind's base image plus containerd, runc and the CNI plugins.
2. ``base``: kind's base-image customisation applied to the rootfs (systemd units pruned, ``/sbin/init``,
   kind's ``images/base/files`` from the kind module in the Go module cache, ``/opt/cni/bin``,
   ``/etc/containerd/cri-base.json``), then ``docker import`` → ``k8sstate/kind-base:<key>``.
3. ``images``: one small image per component, tagged as kubeadm/kind expect (:mod:`.plan`); ``docker save``.
4. ``node``: a container of the base image gets kubeadm/kubelet/kubectl, the default CNI (kindnetd or
   :mod:`pytest_k8sstate.providers.kind.noderoutes`) and imports the images into its containerd;
   ``docker commit`` → ``k8sstate/node:<version>-<key>``; ``docker save`` →
   ``<cache>/kind-images/node-<version>-<key>.tar`` (reloaded instead of rebuilt).

The key (:func:`image_key`) covers every input: versions, the kubeadm plan, packages, the binaries' sha256,
the default CNI, and the recipe (:func:`recipe_digest`: this package's source and the node-routes agent's
files).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.base import Progress
from pytest_k8sstate.providers.kind import noderoutes
from pytest_k8sstate.providers.kind.config import IMAGE_ENV
from pytest_k8sstate.providers.kind.image.builder import DOCKER_TIMEOUT, NodeImageBuilder, stderr_progress
from pytest_k8sstate.providers.kind.image.errors import ImageBuildError
from pytest_k8sstate.providers.kind.image.plan import (
    DEFAULT_CNIS,
    choose_default_cni,
    cni_manifest,
    go_tools,
    kubeadm_plan,
)
from pytest_k8sstate.util.files import cache_dir

__all__ = [
    "DEFAULT_CNIS",
    "BuildResult",
    "ImageBuildError",
    "NodeImageBuilder",
    "build",
    "default_workdir",
    "image_key",
    "prune_tarballs",
    "recipe_digest",
]

KEEP_IMAGES = 3  # node image tarballs (and their docker tags) kept after a build; older ones are removed


def image_key(inputs: Mapping[str, object]) -> str:
    """A short stable key of everything that goes into the image (rebuild only when it changes)."""
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def recipe_digest(agent_files: Mapping[str, str] | None = None) -> str:
    """sha256 of how the image is made: this package's modules and what goes into the node from
    :mod:`~pytest_k8sstate.providers.kind.noderoutes` (its module and ``agent_files``, default its data
    files: the agent script, its unit, the manifest)."""
    files = noderoutes.data_files() if agent_files is None else agent_files
    h = hashlib.sha256()
    for module in [*sorted(Path(__file__).parent.glob("*.py")), Path(noderoutes.__file__)]:
        h.update(module.name.encode() + b"\0" + module.read_bytes())
    for name, text in sorted(files.items()):
        h.update(name.encode() + b"\0" + text.encode())
    return h.hexdigest()


def default_workdir() -> Path:
    """``<cache>/kind-images`` (the cache dir read now)."""
    return cache_dir() / "kind-images"


@dataclass
class BuildResult:
    tag: str
    key: str
    tarball: Path
    seconds: float
    timings: dict[str, float]
    cached: bool

    def to_json(self) -> dict[str, object]:
        """What ``k8sstate image build`` prints (one JSON line; ``tag`` is what scripts read)."""
        return {
            "tag": self.tag,
            "tarball": str(self.tarball),
            "seconds": round(self.seconds, 1),
            "timings": self.timings,
            "cached": self.cached,
        }


def build(
    *,
    workdir: Path | None = None,
    docker_host: str | None = None,
    kubernetes: str | None = None,
    kindnetd: Path | None = None,
    coredns: Path | None = None,
    crictl: Path | None = None,
    default_cni: str = "auto",
    progress: Progress = stderr_progress,
) -> BuildResult:
    """Build (or load from the cache) the node image; returns its tag."""
    import pytest_k8sstate.binaries as bins_mod

    t0 = time.monotonic()
    wd = workdir or default_workdir()
    # kindnetd: given, or found where an earlier build put one (it cannot be built from the proxy)
    kindnetd = kindnetd or (wd / "gobin" / "kindnetd")
    default_cni = choose_default_cni(default_cni, kindnetd, progress)
    versions = bins_mod.Versions.resolve(kubernetes=kubernetes)
    b = NodeImageBuilder(wd, docker_host=docker_host, progress=progress)
    need = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"]
    need += ["kubelet", "kubeadm", "etcd", "etcdctl"]
    got = bins_mod.ensure_binaries(need, versions, progress=progress)
    bins: dict[str, Path] = {n: got[n] for n in need}
    plan = kubeadm_plan(bins["kubeadm"], versions.kubernetes)
    bins.update(go_tools(versions, plan, coredns=coredns, crictl=crictl, progress=progress))
    if default_cni == "kindnet":
        bins["kindnetd"] = kindnetd
    inputs = {
        "versions": versions.to_json(),
        "plan": asdict(plan),
        "suite": b.suite,
        "packages": list(b.packages),
        "binaries": {n: bins_mod.sha256_file(p) for n, p in sorted(bins.items())},
        "default_cni": default_cni,
        "recipe": recipe_digest(),
    }
    key = image_key(inputs)
    tag = f"k8sstate/node:{versions.kubernetes}-{key}"
    tarball = wd / f"node-{versions.kubernetes}-{key}.tar"
    if run_command(b.docker_argv("image", "inspect", tag), timeout=60, check=False).returncode == 0:
        _touch(tarball)  # in use: pruning goes by last use
        return BuildResult(tag, key, tarball, time.monotonic() - t0, {}, True)
    if tarball.is_file():
        progress(f"loading cached {tarball}")
        run_command(b.docker_argv("load", "-i", str(tarball)), timeout=DOCKER_TIMEOUT, where="docker load")
        _touch(tarball)
        return BuildResult(tag, key, tarball, time.monotonic() - t0, {}, True)
    bins["pause"] = b.build_pause(versions.kubernetes)
    b.build_rootfs()
    base_tag = f"k8sstate/kind-base:{key}"

    def base() -> None:
        b.customize_base(b.kind_files(versions.kind))
        b.import_dir(
            "base",
            b.rootfs,
            base_tag,
            [
                'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
                "ENV container=docker",
            ],
        )

    b._timed("base", base)
    image_tags: list[str] = []
    b._timed("images", lambda: image_tags.extend(b.build_component_images(bins, plan)))
    manifest = cni_manifest(default_cni, versions.kind, plan)
    b._timed(
        "node",
        lambda: b.build_node(
            base_tag, tag, bins, image_tags, manifest, versions.kubernetes, default_cni=default_cni
        ),
    )
    partial = tarball.with_name(tarball.name + ".partial")  # a killed save never looks like a cached image

    def save() -> None:
        try:
            b._docker("save", "save", "-o", str(partial), tag)
            os.replace(partial, tarball)
        finally:
            partial.unlink(missing_ok=True)

    b._timed("save", save)
    # the node image keeps the base layers; the base tag itself is not needed any more
    run_command(b.docker_argv("rmi", base_tag), timeout=120, check=False, where="docker rmi")
    in_use = os.environ.get(IMAGE_ENV, "")
    for old in prune_tarballs(wd, keep=KEEP_IMAGES):
        progress(f"removed an older node image: {old.name}")
        old_tag = "k8sstate/node:" + old.name.removeprefix("node-").removesuffix(".tar")
        if old_tag != in_use:  # (a running cluster's image is not removed by docker anyway)
            run_command(b.docker_argv("rmi", old_tag), timeout=120, check=False, where="docker rmi")
    return BuildResult(tag, key, tarball, time.monotonic() - t0, b.timings, False)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def prune_tarballs(workdir: Path, *, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recently used ``node-*.tar`` (each ~1.3 GB); returns the deleted."""
    tars = sorted(workdir.glob("node-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    gone = []
    for old in tars[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
            gone.append(old)
    return gone
