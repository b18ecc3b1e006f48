"""The node image's files on disk (no Docker): the Debian rootfs, kind's base-image changes applied to it,
the minimal roots of the component images (a binary + the libraries ``ldd`` names), and where the Go module
cache keeps kind's and Kubernetes' sources."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.kind.image.errors import ImageBuildError

__all__ = [
    "BASE_PACKAGES",
    "MIRROR",
    "SUITE",
    "component_root",
    "copy_path",
    "customize_base",
    "debootstrap_argv",
    "go_module_dir",
    "kind_files",
    "ldd_paths",
    "netfilter_links",
    "parse_ldd",
    "symlink",
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
CNI_PLUGINS = ("host-local", "loopback", "ptp", "bridge", "portmap")
DEBOOTSTRAP_TIMEOUT = 3600.0


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


def go_module_dir(module: str) -> Path:
    """``$(go env GOMODCACHE)/<module>`` (``sigs.k8s.io/kind@v0.31.0``); may not exist yet."""
    gomodcache = run_command(["go", "env", "GOMODCACHE"], timeout=30, where="go env").text.strip()
    return Path(gomodcache) / module


def kind_files(kind_version: str) -> Path:
    """kind's ``images/base/files`` from the kind module in the Go module cache."""
    d = go_module_dir(f"sigs.k8s.io/kind@{kind_version}") / "images" / "base" / "files"
    if not d.is_dir():
        raise ImageBuildError(
            f"kind's base image files not found at {d}; download the kind module first "
            f"(`go mod download sigs.k8s.io/kind@{kind_version}` or `k8sstate binaries install kind`)"
        )
    return d


def customize_base(r: Path, files: Path) -> None:
    """kind's images/base Dockerfile steps, applied to the rootfs directory ``r`` (no chroot needed)."""
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
    symlink(r / "sbin" / "init", "/usr/lib/systemd/systemd")
    wants = r / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
        symlink(wants / unit, f"/etc/systemd/system/{unit}")
    symlink(r / "etc" / "systemd" / "system" / "systemd-binfmt.service", "/dev/null")
    (r / "etc" / "kubernetes" / "manifests").mkdir(parents=True, exist_ok=True)
    # Debian's containerd/runc/CNI where kind's units and config expect them
    for b in ("containerd", "ctr", "containerd-shim-runc-v2"):
        symlink(r / "usr" / "local" / "bin" / b, f"/usr/bin/{b}")
    symlink(r / "usr" / "local" / "sbin" / "runc", "/usr/sbin/runc")
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


def component_root(
    root: Path, rootfs: Path, files: Mapping[str, Path], from_rootfs: Sequence[str] = ()
) -> Path:
    """A minimal root at ``root`` for one image: ``files`` (dest → host path) + their libraries;
    ``from_rootfs``: paths copied (with their libraries and symlink chains) out of the node ``rootfs``."""
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
            copy_path(Path("/"), lib, root)
    for rel in from_rootfs:
        copy_path(rootfs, rel, root)
        # a directory (iptables' xtables extensions): its .so files are dlopen()ed and have their own
        # libraries (libxt_statistic.so needs libm: without it kube-proxy's iptables-restore fails)
        src = rootfs / rel.lstrip("/")
        objects = [rel] if not src.is_dir() else [f"{rel}/{f.name}" for f in sorted(src.glob("*.so"))]
        needed: set[str] = set()
        for obj in objects:
            res = run_command(["chroot", str(rootfs), "ldd", obj], timeout=30, check=False, where="ldd")
            if res.returncode == 0:
                needed.update(parse_ldd(res.text))
        for lib in sorted(needed):
            copy_path(rootfs, lib, root)
    return root


def netfilter_links(root: Path) -> None:
    """iptables/ip6tables (nft and legacy) as symlinks to the xtables multi-binaries."""
    sbin = root / "usr" / "sbin"
    for fam in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            symlink(sbin / f"{fam}-nft{suffix}", "xtables-nft-multi")
            symlink(sbin / f"{fam}-legacy{suffix}", "xtables-legacy-multi")
            symlink(sbin / f"{fam}{suffix}", "xtables-nft-multi")


def symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def copy_path(src_root: Path, path: str, dest_root: Path, depth: int = 0) -> None:
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
        copy_path(src_root, os.path.normpath(nxt), dest_root, depth + 1)
        return
    if src.is_dir():
        if not dest.exists():
            shutil.copytree(src, dest, symlinks=True)
        return
    if not dest.exists():
        shutil.copy2(src, dest)
