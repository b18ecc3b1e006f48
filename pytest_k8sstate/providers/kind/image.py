"""Build a kind node image offline (no registry): Debian packages + the Go module proxy + the binaries cache.

Plan and rationale: ``docs/kind-on-restricted-machines.md`` section 5. Steps (each cached in
``<cache>/kind-images/<key>/``; ``python -m pytest_k8sstate.providers.kind.image build`` runs them all):

1. ``rootfs``: ``debootstrap --variant=minbase`` of Debian **bookworm** (systemd 252 still boots on cgroup v1)
   with the packages of kind's base image plus containerd, runc and the CNI plugins from Debian.
2. ``base``: kind's base-image customisation applied to the rootfs (systemd units pruned, ``/sbin/init``,
   kind's ``images/base/files`` from the kind module in the Go module cache, ``/opt/cni/bin``,
   ``/etc/containerd/cri-base.json``), then ``docker import`` → ``k8sstate/kind-base:<key>``.
3. ``images``: one small image per component (the binary, the libraries ``ldd`` names, ``ENV PATH``),
   tagged as kubeadm/kind expect; ``docker save`` of all of them.
4. ``node``: a container of the base image gets kubeadm/kubelet/kubectl and imports the images into its
   containerd (``ctr -n k8s.io images import``); ``docker commit`` → ``k8sstate/node:<version>-<key>``;
   ``docker save`` → ``<cache>/kind-images/<key>/node.tar`` (reloaded instead of rebuilt).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k8sstate.errors import BinaryError, CommandError, K8sStateError
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.kind import noderoutes

if TYPE_CHECKING:
    from pytest_k8sstate.binaries.install import Versions

__all__ = [
    "BASE_PACKAGES",
    "ImagePlan",
    "NodeImageBuilder",
    "debootstrap_argv",
    "image_key",
    "ldd_paths",
    "parse_ldd",
]

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# kind's images/base/Dockerfile package list (minus nfs-common/open-iscsi/fuse-overlayfs: storage drivers
# and rootless are not needed here) + the container runtime from Debian.
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "e2fsprogs",
    "bash",
    "ca-certificates",
    "curl",
    "jq",
    "procps",
    "ipset",
    "containerd",
    "runc",
    "containernetworking-plugins",
)
EXTRA_PAUSE_TAGS = ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10.1")
CNI_PLUGINS = ("host-local", "loopback", "ptp", "portmap")
DEFAULT_CNIS = ("auto", "kindnet", noderoutes.CONFIGMAP)
"""``auto``: kindnet when a kindnetd binary is at hand (``--kindnetd`` or ``<workdir>/gobin/kindnetd``)."""
DEBOOTSTRAP_TIMEOUT = 3600.0
KEEP_IMAGES = 3  # node image tarballs (and their docker tags) kept after a build; older ones are removed
DOCKER_TIMEOUT = 1200.0

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"[kindimage] {line}", file=sys.stderr, flush=True)


class ImageBuildError(K8sStateError):
    """A step of the node image build failed (message names the step, the command and the log)."""


# --------------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------------
def debootstrap_argv(
    target: Path, *, suite: str = SUITE, mirror: str = MIRROR, packages: Sequence[str] = BASE_PACKAGES
) -> list[str]:
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        suite,
        str(target),
        mirror,
    ]


_LDD_RE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def parse_ldd(text: str) -> list[str]:
    """Absolute library paths from ``ldd`` output (``libc.so.6 => /lib/... (0x..)``, ``/lib64/ld-...``)."""
    out: list[str] = []
    for line in text.splitlines():
        m = _LDD_RE.match(line)
        if m and m[2] not in out:
            out.append(m[2])
    return out


def ldd_paths(binary: Path) -> list[str]:
    """Libraries ``binary`` needs (empty for static binaries)."""
    res = run_command(["ldd", str(binary)], timeout=30, check=False, where="ldd")
    if res.returncode != 0:  # "not a dynamic executable"
        return []
    return parse_ldd(res.text)


@dataclass(frozen=True)
class ImagePlan:
    """One component image: ``tag`` ← ``binaries`` (+ their libraries) and optional extra host files."""

    tag: str
    binaries: tuple[str, ...]
    extra_files: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()


def image_key(inputs: Mapping[str, object]) -> str:
    """A short stable key of everything that goes into the image (rebuild only when it changes)."""
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# builder
# --------------------------------------------------------------------------------------------------
@dataclass
class NodeImageBuilder:
    """Runs the steps; ``workdir`` holds the rootfs, logs and the cached image tarball."""

    workdir: Path
    docker_host: str | None = None
    progress: Progress = _stderr
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
        return ["docker", *(["--host", self.docker_host] if self.docker_host else []), *args]

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
                _unmount_under(self.rootfs)
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
                _unmount_under(self.rootfs)
            marker.write_text(json.dumps(want))

        self._timed("rootfs", run)
        return self.rootfs

    # --- step 2 ----------------------------------------------------------------------------------
    def kind_files(self, kind_version: str) -> Path:
        """kind's ``images/base/files`` from the kind module in the Go module cache."""
        gomodcache = run_command(["go", "env", "GOMODCACHE"], timeout=30, where="go env").text.strip()
        d = Path(gomodcache) / f"sigs.k8s.io/kind@{kind_version}" / "images" / "base" / "files"
        if not d.is_dir():
            raise ImageBuildError(
                f"kind's base image files not found at {d}; download the kind module first "
                f"(`go mod download sigs.k8s.io/kind@{kind_version}` or `k8sstate binaries install kind`)"
            )
        return d

    def customize_base(self, files: Path) -> None:
        """kind's images/base Dockerfile steps, applied to the rootfs directory (no chroot needed)."""
        r = self.rootfs
        for src in sorted(files.rglob("*")):
            rel = src.relative_to(files)
            if src.is_dir() or rel.parts[0] == "LICENSES":
                continue
            dest = r / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            shutil.copyfile(src, dest)
            executable = rel.parts[0] == "usr" or (len(rel.parts) > 1 and rel.parts[:2] == ("kind", "bin"))
            dest.chmod(0o755 if executable else 0o644)
        systemd = r / "lib" / "systemd" / "system"
        for pattern in (
            "sysinit.target.wants/systemd-tmpfiles-setup.service",
            "multi-user.target.wants/*",
            "local-fs.target.wants/*",
            "sockets.target.wants/*udev*",
            "sockets.target.wants/*initctl*",
            "basic.target.wants/*",
        ):
            for f in systemd.glob(pattern):
                f.unlink()
        for f in (r / "etc" / "systemd" / "system").glob("*.wants/*"):
            f.unlink()
        journald = r / "etc" / "systemd" / "journald.conf"
        if "\nReadKMsg=no\n" not in journald.read_text():
            with open(journald, "a", encoding="utf-8") as fh:
                fh.write("ReadKMsg=no\n")
        _symlink(r / "sbin" / "init", "/usr/lib/systemd/systemd")
        wants = r / "etc" / "systemd" / "system" / "multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        for unit in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
            _symlink(wants / unit, f"/etc/systemd/system/{unit}")
        _symlink(r / "etc" / "systemd" / "system" / "systemd-binfmt.service", "/dev/null")
        (r / "etc" / "kubernetes" / "manifests").mkdir(parents=True, exist_ok=True)
        # Debian's containerd/runc/CNI where kind's units and config expect them
        for b in ("containerd", "ctr", "containerd-shim-runc-v2"):
            _symlink(r / "usr" / "local" / "bin" / b, f"/usr/bin/{b}")
        _symlink(r / "usr" / "local" / "sbin" / "runc", "/usr/sbin/runc")
        cni = r / "opt" / "cni" / "bin"
        cni.mkdir(parents=True, exist_ok=True)
        for plugin in CNI_PLUGINS:
            src = r / "usr" / "lib" / "cni" / plugin
            if not src.exists():
                raise ImageBuildError(f"CNI plugin {src} missing; is containernetworking-plugins installed?")
            shutil.copy2(src, cni / plugin)
        # Restricted machines (no CAP_SYS_RESOURCE in the bounding set, see docs): containerd must not
        # give pods an oom_score_adj below its own (runc's init dies writing it: "can't get final
        # child's PID from pipe: EOF"); kind sets this only for rootless nodes.
        from pytest_k8sstate.providers.docker.engine import capabilities_missing

        if "CAP_SYS_RESOURCE" in capabilities_missing():
            conf = r / "etc" / "containerd" / "config.toml"
            conf.write_text(
                conf.read_text().replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
            )
        spec = json.loads(run_command(["ctr", "oci", "spec"], timeout=30, where="ctr oci spec").stdout)
        spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
            {"path": "/kind/bin/mount-product-files.sh"}
        )
        spec.get("process", {}).pop("rlimits", None)
        (r / "etc" / "containerd" / "cri-base.json").write_text(json.dumps(spec, indent=2))

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
        """A minimal root for one image: ``files`` (dest → host path) + their libraries; ``from_rootfs``:
        paths copied (with their libraries and symlink chains) out of the node rootfs."""
        root = self.workdir / "images" / name
        if root.exists():
            shutil.rmtree(root)
        for d in ("etc", "tmp", "var/run", "run", "usr/local/bin"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "etc" / "nsswitch.conf").write_text("hosts: files dns\n")
        (root / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        )
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        for dest, src in files.items():
            target = root / dest.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            for lib in ldd_paths(src):
                _copy_path(Path("/"), lib, root)
        for rel in from_rootfs:
            _copy_path(self.rootfs, rel, root)
            # a directory (iptables' xtables extensions): its .so files are dlopen()ed and have their own
            # libraries (libxt_statistic.so needs libm: without it kube-proxy's iptables-restore fails)
            src = self.rootfs / rel.lstrip("/")
            objects = [rel] if not src.is_dir() else [f"{rel}/{f.name}" for f in sorted(src.glob("*.so"))]
            needed: set[str] = set()
            for obj in objects:
                res = run_command(
                    ["chroot", str(self.rootfs), "ldd", obj], timeout=30, check=False, where="ldd"
                )
                if res.returncode == 0:
                    needed.update(parse_ldd(res.text))
            for lib in sorted(needed):
                _copy_path(self.rootfs, lib, root)
        return root

    def build_pause(self, kubernetes_version: str) -> Path:
        """``pause`` from ``build/pause/linux/pause.c`` of the k8s.io/kubernetes module, ``gcc -static``."""
        out = self.workdir / "gobin" / "pause"
        if out.exists():
            return out
        gomodcache = run_command(["go", "env", "GOMODCACHE"], timeout=30, where="go env").text.strip()
        src = (
            Path(gomodcache)
            / f"k8s.io/kubernetes@{kubernetes_version}"
            / "build"
            / "pause"
            / "linux"
            / "pause.c"
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
                _netfilter_links(root)
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
            deadline = time.monotonic() + 60
            while True:
                res = run_command(self.docker_argv("exec", cid, "ctr", "version"), timeout=30, check=False)
                if res.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise ImageBuildError(
                        "containerd in the build container did not start: "
                        + res.stderr.decode(errors="replace")
                    )
                time.sleep(1)
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


def _netfilter_links(root: Path) -> None:
    """iptables/ip6tables (nft and legacy) as symlinks to the xtables multi-binaries."""
    sbin = root / "usr" / "sbin"
    for fam in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            _symlink(sbin / f"{fam}-nft{suffix}", "xtables-nft-multi")
            _symlink(sbin / f"{fam}-legacy{suffix}", "xtables-legacy-multi")
            _symlink(sbin / f"{fam}{suffix}", "xtables-nft-multi")


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def _copy_path(src_root: Path, path: str, dest_root: Path, depth: int = 0) -> None:
    """Copy ``path`` (absolute inside ``src_root``) to ``dest_root``, recreating symlink chains."""
    if depth > 16:
        raise ImageBuildError(f"symlink loop at {src_root}{path}")
    rel = path.lstrip("/")
    src = src_root / rel
    dest = dest_root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        target = os.readlink(src)
        if not dest.is_symlink() and not dest.exists():
            dest.symlink_to(target)
        nxt = target if target.startswith("/") else str(Path(path).parent / target)
        _copy_path(src_root, os.path.normpath(nxt), dest_root, depth + 1)
        return
    if src.is_dir():
        if not dest.exists():
            shutil.copytree(src, dest, symlinks=True)
        return
    if not dest.exists():
        shutil.copy2(src, dest)


def _unmount_under(root: Path) -> None:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root).rstrip("/") + "/"
    targets = [ln.split()[1] for ln in mounts if len(ln.split()) > 1 and ln.split()[1].startswith(prefix)]
    for t in sorted(targets, key=len, reverse=True):
        with contextlib.suppress(CommandError):
            run_command(["umount", "-l", t], timeout=10, check=False, where="cleanup")


def default_workdir() -> Path:
    from pytest_k8sstate.binaries.install import cache_dir

    return cache_dir() / "kind-images"


def cni_manifest_from_kind(kind_version: str, kindnetd_tag: str) -> str:
    """kind's default CNI manifest (``defaultCNIManifest`` in kind's nodeimage/const_cni.go, read from the
    kind module in the Go module cache) with its kindnetd image replaced by ``kindnetd_tag``."""
    gomodcache = run_command(["go", "env", "GOMODCACHE"], timeout=30, where="go env").text.strip()
    src = (
        Path(gomodcache) / f"sigs.k8s.io/kind@{kind_version}" / "pkg" / "build" / "nodeimage" / "const_cni.go"
    )
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


def _go_tools(
    versions: Versions,
    plan: KubePlan,
    *,
    coredns: Path | None,
    crictl: Path | None,
    progress: Progress,
) -> dict[str, Path]:
    """CoreDNS (the version kubeadm names, unless ``$K8SSTATE_COREDNS_VERSION``) and crictl: given paths, or
    from the binaries cache, built from the Go module proxy on first use."""
    import pytest_k8sstate.binaries.install as bins_mod

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


@dataclass
class BuildResult:
    tag: str
    key: str
    tarball: Path
    seconds: float
    timings: dict[str, float]
    cached: bool


def build(
    *,
    workdir: Path | None = None,
    docker_host: str | None = None,
    kubernetes: str | None = None,
    kindnetd: Path | None = None,
    coredns: Path | None = None,
    crictl: Path | None = None,
    default_cni: str = "auto",
    progress: Progress = _stderr,
) -> BuildResult:
    """Build (or load from the cache) the node image; returns its tag."""
    import pytest_k8sstate.binaries.install as bins_mod

    t0 = time.monotonic()
    versions = bins_mod.Versions.resolve(kubernetes=kubernetes)
    wd = workdir or default_workdir()
    b = NodeImageBuilder(wd, docker_host=docker_host, progress=progress)
    need = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"]
    need += ["kubelet", "kubeadm", "etcd", "etcdctl"]
    got = bins_mod.ensure_binaries(need, versions, progress=progress)
    bins: dict[str, Path] = {n: got[n] for n in need}
    plan = kubeadm_plan(bins["kubeadm"], versions.kubernetes)
    bins.update(_go_tools(versions, plan, coredns=coredns, crictl=crictl, progress=progress))
    # kindnetd: given, or found where an earlier build put one (it cannot be built from the proxy)
    if default_cni not in DEFAULT_CNIS:
        raise ImageBuildError(f"default CNI {default_cni!r}: expected one of {', '.join(DEFAULT_CNIS)}")
    kindnetd = kindnetd or (wd / "gobin" / "kindnetd")
    if default_cni == "kindnet" and not kindnetd.is_file():
        raise ImageBuildError(
            f"default CNI kindnet: no kindnetd binary at {kindnetd}; it cannot be built from the Go module "
            "proxy (see providers/kind/noderoutes.py): pass --kindnetd PATH or --default-cni auto"
        )
    if default_cni != noderoutes.CONFIGMAP and kindnetd.is_file():
        bins["kindnetd"] = kindnetd
        default_cni = "kindnet"
    else:
        if default_cni == "auto":
            progress(
                f"no kindnetd binary at {kindnetd} (it cannot be built from the Go module proxy): the "
                f"image's default CNI is {noderoutes.CONFIGMAP} (ptp + host-local + per-node routes, "
                "pytest_k8sstate/providers/kind/noderoutes.py); pass --kindnetd PATH for kind's own"
            )
        default_cni = noderoutes.CONFIGMAP
    inputs = {
        "versions": versions.to_json(),
        "plan": asdict(plan),
        "suite": b.suite,
        "packages": list(b.packages),
        "binaries": {n: bins_mod._sha256_file(p) for n, p in sorted(bins.items())},
        "default_cni": default_cni,
        # this module's steps and what goes into the node from noderoutes.py
        "recipe": hashlib.sha256(
            Path(__file__).read_bytes() + Path(noderoutes.__file__).read_bytes()
        ).hexdigest(),
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
    if default_cni == "kindnet":
        manifest = cni_manifest_from_kind(versions.kind, plan.kindnetd_tag)
    else:
        manifest = noderoutes.MANIFEST
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
    in_use = os.environ.get("K8SSTATE_KIND_IMAGE", "")
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_k8sstate.providers.kind.image")
    ap.add_argument("step", choices=("rootfs", "build"))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--kubernetes", default=None)
    ap.add_argument("--default-cni", choices=DEFAULT_CNIS, default="auto")
    for tool in ("kindnetd", "coredns", "crictl"):
        ap.add_argument(f"--{tool}", type=Path, default=None, metavar="PATH", help=f"a prebuilt {tool}")
    args = ap.parse_args(argv)
    host = os.environ.get("DOCKER_HOST")
    try:
        if args.step == "rootfs":
            b = NodeImageBuilder(args.workdir or default_workdir(), docker_host=host)
            b.build_rootfs()
            print(json.dumps({"timings": b.timings}))
        else:
            r = build(
                workdir=args.workdir,
                docker_host=host,
                kubernetes=args.kubernetes,
                kindnetd=args.kindnetd,
                coredns=args.coredns,
                crictl=args.crictl,
                default_cni=args.default_cni,
            )
            print(
                json.dumps(
                    {
                        "tag": r.tag,
                        "tarball": str(r.tarball),
                        "seconds": round(r.seconds, 1),
                        "timings": r.timings,
                        "cached": r.cached,
                    }
                )
            )
    except (K8sStateError, BinaryError) as exc:
        print(f"kindimage: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
