"""The node image build steps, run by :class:`NodeImageBuilder` (``workdir`` holds the rootfs, the logs
of every step and the cached image tarball); :func:`pytest_k8sstate.providers.kind.image.build` runs them.

1. ``rootfs``: ``debootstrap --variant=minbase`` of Debian (:mod:`.rootfs`), cached by its inputs.
2. ``base``: kind's base-image customisation applied to the rootfs, then ``docker import``.
3. ``images``: one small image per component (the binary, the libraries ``ldd`` names, ``ENV PATH``),
   tagged as kubeadm/kind expect (:class:`~.plan.KubePlan`).
4. ``node``: a container of the base image gets kubeadm/kubelet/kubectl, the default CNI and imports the
   images into its containerd; ``docker commit`` (+ a one-line build for ``STOPSIGNAL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_k8sstate.errors import CommandError
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.base import Progress
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.docker.engine import unmount_under
from pytest_k8sstate.providers.kind import noderoutes
from pytest_k8sstate.providers.kind.image.errors import ImageBuildError
from pytest_k8sstate.providers.kind.image.plan import KubePlan
from pytest_k8sstate.providers.kind.image.rootfs import (
    BASE_PACKAGES,
    DEBOOTSTRAP_TIMEOUT,
    MIRROR,
    SUITE,
    component_root,
    customize_base,
    debootstrap_argv,
    go_module_dir,
    kind_files,
    netfilter_links,
)
from pytest_k8sstate.util.poll import wait_until

__all__ = ["DOCKER_TIMEOUT", "NodeImageBuilder", "stderr_progress"]

DOCKER_TIMEOUT = 1200.0


def stderr_progress(line: str) -> None:
    """The builder's default progress: ``[kindimage] <line>`` on stderr."""
    print(f"[kindimage] {line}", file=sys.stderr, flush=True)


@dataclass
class NodeImageBuilder:
    """Runs the steps; ``workdir`` holds the rootfs, logs and the cached image tarball."""

    workdir: Path
    docker_host: str | None = None
    progress: Progress = stderr_progress
    suite: str = SUITE
    mirror: str = MIRROR
    packages: tuple[str, ...] = BASE_PACKAGES
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.workdir / "rootfs"

    def _log(self, name: str) -> Path:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        return self.workdir / "logs" / f"{name}.log"

    def _run(
        self, step: str, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
    ) -> str:
        try:
            res = run_command(argv, timeout=timeout, env=env, check=False, where=f"kindimage {step}")
        except CommandError as exc:
            raise ImageBuildError(f"kind node image, step {step}: {exc}") from exc
        log = self._log(step)
        with open(log, "ab") as fh:
            fh.write(f"$ {' '.join(argv)}\n".encode() + res.stdout + res.stderr)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()[-5:]
            raise ImageBuildError(
                f"kind node image, step {step}: {' '.join(argv[:4])}... exited {res.returncode}; "
                f"log {log}:\n  " + "\n  ".join(tail)
            )
        return res.text

    def docker_argv(self, *args: str) -> list[str]:
        """``docker [--host H] ARGS`` against this builder's engine."""
        return DockerCli(self.docker_host).argv(*args)

    def _docker(self, step: str, *args: str, timeout: float = DOCKER_TIMEOUT) -> str:
        return self._run(step, self.docker_argv(*args), timeout)

    def _timed(self, step: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        self.progress(f"{step}: start")
        fn()
        self.timings[step] = time.monotonic() - t0
        self.progress(f"{step}: done in {self.timings[step]:.1f}s")

    # --- step 1 ----------------------------------------------------------------------------------
    def build_rootfs(self) -> Path:
        """debootstrap (skipped when ``rootfs/.k8sstate-done`` records the same inputs)."""
        marker = self.rootfs / ".k8sstate-done"
        want = {"suite": self.suite, "mirror": self.mirror, "packages": list(self.packages)}
        with contextlib.suppress(OSError, ValueError):
            if json.loads(marker.read_text()) == want:
                self.progress(f"rootfs: cached ({self.rootfs})")
                return self.rootfs
        if shutil.which("debootstrap") is None:
            raise ImageBuildError("debootstrap not found; apt-get install debootstrap")

        def run() -> None:
            if self.rootfs.exists():
                unmount_under(self.rootfs)
                shutil.rmtree(self.rootfs)
            self.workdir.mkdir(parents=True, exist_ok=True)
            try:
                self._run(
                    "rootfs",
                    debootstrap_argv(
                        self.rootfs, suite=self.suite, mirror=self.mirror, packages=self.packages
                    ),
                    DEBOOTSTRAP_TIMEOUT,
                )
            finally:
                unmount_under(self.rootfs)
            marker.write_text(json.dumps(want))

        self._timed("rootfs", run)
        return self.rootfs

    # --- step 2 ----------------------------------------------------------------------------------
    def kind_files(self, kind_version: str) -> Path:
        """kind's ``images/base/files`` from the kind module in the Go module cache."""
        return kind_files(kind_version)

    def customize_base(self, files: Path) -> None:
        """kind's images/base Dockerfile steps, applied to the rootfs directory (no chroot needed)."""
        customize_base(self.rootfs, files)

    def import_dir(self, step: str, root: Path, tag: str, changes: Iterable[str] = ()) -> None:
        """``docker import`` of ``root`` (``dev``/``proc``/``sys`` contents left out) as ``tag``."""
        tar = self.workdir / f"{step}.tar"
        skip = {"dev", "proc", "sys"}

        def keep(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
            parts = Path(ti.name).parts
            if len(parts) > 2 and parts[1] in skip:
                return None
            return ti

        with tarfile.open(tar, "w") as tf:
            tf.add(root, arcname=".", filter=keep)
        args: list[str] = []
        for c in changes:
            args += ["--change", c]
        try:
            self._docker(step, "import", *args, str(tar), tag)
        finally:
            tar.unlink()

    # --- step 3 ----------------------------------------------------------------------------------
    def component_root(self, name: str, files: Mapping[str, Path], from_rootfs: Sequence[str] = ()) -> Path:
        """A minimal root for one image (:func:`~.rootfs.component_root`) under ``images/<name>``."""
        return component_root(self.workdir / "images" / name, self.rootfs, files, from_rootfs)

    def build_pause(self, kubernetes_version: str) -> Path:
        """``pause`` from ``build/pause/linux/pause.c`` of the k8s.io/kubernetes module, ``gcc -static``."""
        out = self.workdir / "gobin" / "pause"
        if out.exists():
            return out
        src = (
            go_module_dir(f"k8s.io/kubernetes@{kubernetes_version}") / "build" / "pause" / "linux" / "pause.c"
        )
        if not src.is_file():
            raise ImageBuildError(f"{src} missing: the Kubernetes module is not in the Go module cache")
        out.parent.mkdir(parents=True, exist_ok=True)
        self._run(
            "pause",
            ["gcc", "-Os", "-Wall", "-static", f"-DVERSION={kubernetes_version}", "-o", str(out), str(src)],
            300,
        )
        return out

    def build_component_images(self, bins: Mapping[str, Path], plan: KubePlan) -> list[str]:
        """The images kubeadm (and kind's CNI) will ask containerd for; returns their tags."""
        path_env = "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"
        netfilter = [
            "/usr/sbin/xtables-nft-multi",
            "/usr/sbin/xtables-legacy-multi",
            "/usr/lib/x86_64-linux-gnu/xtables",
            "/usr/sbin/nft",
            "/usr/sbin/ipset",
            "/usr/sbin/conntrack",
        ]
        images: list[tuple[str, str, dict[str, Path], list[str], list[str]]] = []
        for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            images.append((comp, plan.tag(comp), {f"/usr/local/bin/{comp}": bins[comp]}, [], [path_env]))
        images.append(
            (
                "kube-proxy",
                plan.tag("kube-proxy"),
                {"/usr/local/bin/kube-proxy": bins["kube-proxy"]},
                netfilter,
                [path_env],
            )
        )
        etcd_files = {"/usr/local/bin/etcd": bins["etcd"]}
        if "etcdctl" in bins:
            etcd_files["/usr/local/bin/etcdctl"] = bins["etcdctl"]
        images.append(("etcd", plan.etcd_tag, etcd_files, [], [path_env]))
        if "coredns" in bins:
            images.append(
                ("coredns", plan.coredns_tag, {"/coredns": bins["coredns"]}, [], ['ENTRYPOINT ["/coredns"]'])
            )
        images.append(("pause", plan.pause_tags[0], {"/pause": bins["pause"]}, [], ['ENTRYPOINT ["/pause"]']))
        if "kindnetd" in bins:
            images.append(
                (
                    "kindnetd",
                    plan.kindnetd_tag,
                    {"/bin/kindnetd": bins["kindnetd"]},
                    netfilter,
                    [path_env, 'CMD ["/bin/kindnetd"]'],
                )
            )
        tags: list[str] = []
        for name, tag, files, from_rootfs, changes in images:
            root = self.component_root(name, files, from_rootfs)
            if from_rootfs:
                netfilter_links(root)
            self.import_dir(f"image-{name}", root, tag, changes)
            shutil.rmtree(root)
            tags.append(tag)
        for extra in plan.pause_tags[1:]:
            self._docker("image-tag", "tag", plan.pause_tags[0], extra)
            tags.append(extra)
        return tags

    # --- step 4 ----------------------------------------------------------------------------------
    def build_node(
        self,
        base_tag: str,
        node_tag: str,
        bins: Mapping[str, Path],
        image_tags: Sequence[str],
        cni_manifest: str,
        kubernetes_version: str,
        *,
        default_cni: str = "kindnet",
    ) -> None:
        """``default_cni``: ``kindnet`` (kindnetd image + kind's manifest) or ``k8sstate-node-routes``
        (:mod:`.noderoutes`: its agent and systemd unit go into the node, ``cni_manifest`` switches it on)."""
        images_tar = self.workdir / "images.tar"
        self._docker("save-images", "save", "-o", str(images_tar), *image_tags)
        cid = f"k8sstate-kindimage-{os.getpid()}"
        self._docker(
            "node-run", "run", "-d", "--privileged", "--name", cid, "--entrypoint=sleep", base_tag, "infinity"
        )
        try:
            for b in ("kubeadm", "kubelet", "kubectl"):
                self._docker("node-cp", "cp", str(bins[b]), f"{cid}:/usr/bin/{b}")
            if "crictl" in bins:  # kind export logs / kind load use it
                self._docker("node-cp", "cp", str(bins["crictl"]), f"{cid}:/usr/local/bin/crictl")
            self._docker("node-cp", "cp", str(images_tar), f"{cid}:/kind/images.tar")
            self._docker("node-exec", "exec", cid, "sh", "-c", f"echo {kubernetes_version} > /kind/version")
            man = self.workdir / "default-cni.yaml"
            man.write_text(cni_manifest)
            self._docker("node-exec", "exec", cid, "mkdir", "-p", "/kind/manifests")
            self._docker("node-cp", "cp", str(man), f"{cid}:/kind/manifests/default-cni.yaml")
            if default_cni == noderoutes.CONFIGMAP:
                self._install_node_routes(cid)
            self._docker(
                "node-containerd",
                "exec",
                "-d",
                cid,
                "sh",
                "-c",
                "containerd >/var/log/containerd-build.log 2>&1",
            )

            def containerd_down() -> str | None:
                res = run_command(self.docker_argv("exec", cid, "ctr", "version"), timeout=30, check=False)
                return None if res.returncode == 0 else res.stderr.decode(errors="replace").strip()

            wait_until(
                "containerd in the build container",
                containerd_down,
                timeout=60,
                error=ImageBuildError,
                interval=1.0,
                max_interval=1.0,
            )
            self._docker(
                "node-import",
                "exec",
                cid,
                "ctr",
                "--namespace=k8s.io",
                "images",
                "import",
                "--label=io.cri-containerd.pinned=pinned",
                "--all-platforms",
                "--no-unpack",
                "--digests",
                "/kind/images.tar",
            )
            listed = self._docker(
                "node-import", "exec", cid, "ctr", "--namespace=k8s.io", "images", "list", "-q"
            )
            missing = [t for t in image_tags if t not in listed and f"docker.io/{t}" not in listed]
            if missing:
                raise ImageBuildError(f"images missing in the node's containerd after import: {missing}")
            self._docker(
                "node-exec", "exec", cid, "sh", "-c", "pkill containerd; rm -f /kind/images.tar; sleep 1"
            )
            self._docker(
                "node-commit",
                "commit",
                "--change",
                'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
                "--change",
                "CMD []",
                "--change",
                "ENV container=docker",
                "--change",
                f"LABEL {noderoutes.IMAGE_LABEL}={default_cni}",
                cid,
                node_tag + "-unsealed",
            )
            # `docker commit --change` cannot set STOPSIGNAL (systemd wants SIGRTMIN+3): a one-line build
            dockerfile = f"FROM {node_tag}-unsealed\nSTOPSIGNAL SIGRTMIN+3\n".encode()
            try:
                run_command(
                    self.docker_argv("build", "-t", node_tag, "-"),
                    input=dockerfile,
                    timeout=DOCKER_TIMEOUT,
                    where="kindimage node-seal",
                )
            finally:
                run_command(self.docker_argv("rmi", node_tag + "-unsealed"), timeout=120, check=False)
        finally:
            run_command(self.docker_argv("rm", "-f", "-v", cid), timeout=120, check=False)
            with contextlib.suppress(OSError):
                images_tar.unlink()

    def _install_node_routes(self, cid: str) -> None:
        """:mod:`.noderoutes`' agent and its systemd unit (enabled) into the build container."""
        d = self.workdir / "node-routes"
        d.mkdir(parents=True, exist_ok=True)
        agent = d / "agent"
        agent.write_text(noderoutes.AGENT_SCRIPT)
        agent.chmod(0o755)
        unit = d / noderoutes.UNIT_NAME
        unit.write_text(noderoutes.UNIT)
        self._docker("node-cp", "cp", str(agent), f"{cid}:{noderoutes.AGENT_PATH}")
        self._docker("node-cp", "cp", str(unit), f"{cid}:/etc/systemd/system/{noderoutes.UNIT_NAME}")
        wants = "/etc/systemd/system/multi-user.target.wants"
        self._docker(
            "node-exec",
            "exec",
            cid,
            "sh",
            "-c",
            f"mkdir -p {wants} && ln -sf /etc/systemd/system/{noderoutes.UNIT_NAME} {wants}/",
        )
