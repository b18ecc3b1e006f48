"""The traffic workload image ``k8sstate.local/agnhost:<version>``, built offline, and loading it into nodes.

Upstream's agnhost image is alpine + agnhost + DNS/network tools; nothing can be pulled here, so it is built
``FROM scratch`` with ``docker build -`` from an in-memory context: the static agnhost binary (binaries
component ``agnhost``: ``k8s.io/kubernetes/test/images/agnhost`` at the Kubernetes version,
``CGO_ENABLED=0``) at ``/agnhost`` (``ENTRYPOINT``, ``CMD ["pause"]`` as upstream) and Debian's static busybox
at ``/bin/busybox`` with applet links (``sh``, ``nc``, ``wget``, ``nslookup``, …: a shell, the probe client
and a DNS client). The image carries the label ``io.k8sstate.inputs=<sha256 of both binaries and this
module>``: an image with the tag and that label is reused, any other is rebuilt (cache by version +
content).

:func:`load_into_nodes` imports it into each kind node's containerd like kind's ``load docker-image``
(``docker save | ctr --namespace=k8s.io images import --digests -``), skipping nodes whose containerd
already has the same image ID. This sub-package is deliberately not a module of ``image/`` itself: the node
image's key hashes that package's modules, and the workload image is no input of the node image.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.node.exec import NodeExec, run_command
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.util.progress import progress as live_progress

__all__ = [
    "AGNHOST_REPO",
    "APPLETS",
    "INPUTS_LABEL",
    "AgnhostImage",
    "build_context",
    "ensure_agnhost_image",
    "image_inputs",
    "load_into_nodes",
]

AGNHOST_REPO = "k8sstate.local/agnhost"
INPUTS_LABEL = "io.k8sstate.inputs"
APPLETS = ("sh", "nc", "wget", "nslookup", "cat", "ls", "sleep", "hostname", "ip", "timeout", "env", "seq")
BUILD_TIMEOUT = 300.0
SAVE_TIMEOUT = 300.0
IMPORT_TIMEOUT = 300.0

Progress = Callable[[str], None]


def _quiet(line: str) -> None:
    del line


@dataclass(frozen=True)
class AgnhostImage:
    tag: str
    inputs: str
    image_id: str
    built: bool
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "inputs": self.inputs,
            "image_id": self.image_id,
            "built": self.built,
            "seconds": round(self.seconds, 2),
        }


def image_inputs(agnhost: Path, busybox: Path) -> str:
    """sha256 over both binaries and this module (the recipe)."""
    h = hashlib.sha256()
    for name, path in (("agnhost", agnhost), ("busybox", busybox), ("recipe", Path(__file__))):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"agnhost image input {name}: cannot read {path}: {exc.strerror}") from None
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def _add(
    tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o755, link: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = 0
    if link:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_context(agnhost: Path, busybox: Path, inputs: str, version: str) -> bytes:
    """The ``docker build -`` context (a tar): Dockerfile + ``root/`` (agnhost, busybox and its applets)."""
    dockerfile = (
        "FROM scratch\n"
        "COPY root/ /\n"
        f'LABEL {INPUTS_LABEL}="{inputs}" io.k8sstate.agnhost-version="{version}"\n'
        "ENV PATH=/bin\n"
        "EXPOSE 8080 8081 9376\n"
        'ENTRYPOINT ["/agnhost"]\n'
        'CMD ["pause"]\n'
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "Dockerfile", data=dockerfile.encode(), mode=0o644)
        _add(tar, "root")
        _add(tar, "root/agnhost", data=agnhost.read_bytes())
        _add(tar, "root/bin")
        _add(tar, "root/bin/busybox", data=busybox.read_bytes())
        for applet in APPLETS:
            _add(tar, f"root/bin/{applet}", link="busybox")
        for d in ("tmp", "uploads"):
            _add(tar, f"root/{d}", mode=0o1777)
    return buf.getvalue()


def _label(docker: DockerCli, tag: str) -> str | None:
    res = docker.run("image", "inspect", "--format", "{{json .Config.Labels}}", tag, timeout=30, check=False)
    if res.returncode != 0:
        return None
    labels = json.loads(res.text or "null") or {}
    value = labels.get(INPUTS_LABEL) if isinstance(labels, dict) else None
    return str(value) if value else None


def _image_id(docker: DockerCli, tag: str) -> str:
    return docker.run("image", "inspect", "--format", "{{.Id}}", tag, timeout=30).text.strip()


def ensure_agnhost_image(
    docker: DockerCli, agnhost: Path, busybox: Path, version: str, *, progress: Progress = _quiet
) -> AgnhostImage:
    """``k8sstate.local/agnhost:<version>`` in ``docker``'s engine: reused when its inputs label matches,
    else built (``docker build -`` from :func:`build_context`)."""
    tag = f"{AGNHOST_REPO}:{version}"
    t0 = time.monotonic()
    inputs = image_inputs(agnhost, busybox)
    if _label(docker, tag) == inputs:
        progress(f"{tag}: cached (inputs {inputs[:12]})")
        return AgnhostImage(tag, inputs, _image_id(docker, tag), False, time.monotonic() - t0)
    with live_progress(f"{tag}: docker build", sink=progress) as live:
        live.emit(f"{tag}: building FROM scratch (agnhost {agnhost}, busybox {busybox})")
        context = build_context(agnhost, busybox, inputs, version)
        res = run_command(
            docker.argv("build", "-q", "-t", tag, "-"),
            input=context,
            timeout=BUILD_TIMEOUT,
            check=False,
            where=f"docker ({docker.where})",
        )
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise ProviderError(f"building {tag}: docker build exited {res.returncode}: {err[-500:]}")
    seconds = time.monotonic() - t0
    progress(f"{tag}: built in {seconds:.1f}s")
    return AgnhostImage(tag, inputs, _image_id(docker, tag), True, seconds)


def _node_image_id(node: NodeExec, tag: str) -> str:
    res = node.run(["crictl", "inspecti", "-o", "json", tag], timeout=30, check=False)
    if res.returncode != 0:
        return ""
    try:
        return str(json.loads(res.text)["status"]["id"])
    except (ValueError, KeyError, TypeError):
        return ""


def load_into_nodes(
    docker: DockerCli, tag: str, nodes: Sequence[NodeExec], *, progress: Progress = _quiet
) -> dict[str, str]:
    """Import ``tag`` into each node's containerd (namespace ``k8s.io``) unless it already has that image ID.

    Returns node → ``"loaded"`` or ``"present"``.
    """
    want = _image_id(docker, tag)
    done: dict[str, str] = {}
    tar: bytes | None = None
    with live_progress(f"{tag}: loading into the nodes", sink=progress) as live:
        for node in nodes:
            if _node_image_id(node, tag) == want:
                done[node.node] = "present"
                continue
            if tar is None:
                live.step("docker save")
                tar = run_command(
                    docker.argv("save", tag), timeout=SAVE_TIMEOUT, where=f"docker ({docker.where})"
                ).stdout
            t0 = time.monotonic()
            live.step(f"ctr images import on {node.node}")
            node.run(
                ["ctr", "--namespace=k8s.io", "images", "import", "--digests", "-"],
                input=tar,
                timeout=IMPORT_TIMEOUT,
            )
            if not _node_image_id(node, tag):
                raise ProviderError(f"{tag} imported into {node.node} but crictl does not list it there")
            live.emit(f"{tag}: loaded into {node.node} ({time.monotonic() - t0:.1f}s)")
            done[node.node] = "loaded"
    return done
