"""The ``existing`` provider pointed at a kind cluster: what a user of a real cluster would supply.

* a debug image the nodes already have (no registry here): ``k8sstate.local/debug:busybox`` -- Debian's
  static busybox with ``sh``, ``sleep``, ``chroot``, ``env`` links, ``FROM scratch`` -- built in the project's
  Docker engine and loaded into every node with :func:`pytest_k8sstate.providers.images.load_image` (the
  ``k8s_api.load_image`` code);
* etcd's endpoint and client certificates taken from the kind control-plane node: the certificates are read
  out of the node (``/etc/kubernetes/pki``, as an admin of a kubeadm cluster would copy them), the endpoint
  is the kind provider's loopback forwarder to the node's ``:2379`` (the node's own address is inside the
  engine's network namespace, unreachable from here).

``python tests/existing_kind.py NAME DIR`` prints the ``export`` lines ``scripts/kind-e2e.sh`` evaluates
(``K8SSTATE_DEBUG_IMAGE``, ``K8SSTATE_ETCD_*``, ``K8SSTATE_EXISTING_KIND``).
"""

from __future__ import annotations

import io
import shlex
import sys
import tarfile
from pathlib import Path

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.images import load_image

DEBUG_TAG = "k8sstate.local/debug:busybox"
BUSYBOX = Path("/bin/busybox")
LINKS = ("sh", "sleep", "chroot", "env", "cat", "ls")
PKI = {
    "CA": "/etc/kubernetes/pki/etcd/ca.crt",
    "CERT": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
    "KEY": "/etc/kubernetes/pki/apiserver-etcd-client.key",
}


def _context() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = b'FROM scratch\nCOPY root/ /\nCMD ["sleep", "3600"]\n'
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("root/bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for name in LINKS:
            link = tarfile.TarInfo(f"root/bin/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def debug_image(kind: Cluster) -> str:
    """:data:`DEBUG_TAG` built (if missing) in the cluster's engine and present in every node."""
    docker = DockerCli(kind.details.get("docker_host"))
    if not docker.image_exists(DEBUG_TAG):
        if not BUSYBOX.is_file():
            raise K8sStateError(f"{BUSYBOX} missing: apt-get install busybox-static")
        run_command(docker.argv("build", "-q", "-t", DEBUG_TAG, "-"), input=_context(), timeout=300)
    load_image(kind, DEBUG_TAG)
    return DEBUG_TAG


def etcd_files(kind: Cluster, dest: Path) -> dict[str, str]:
    """``K8SSTATE_ETCD_*`` for ``kind``: certificates copied out of its control-plane node into ``dest``."""
    if kind.etcd is None or not kind.etcd.endpoints:
        raise K8sStateError(f"kind cluster {kind.name} has no etcd endpoint")
    dest.mkdir(parents=True, exist_ok=True)
    env = {"ENDPOINTS": ",".join(kind.etcd.endpoints)}
    for part, path in PKI.items():
        target = dest / Path(path).name
        target.write_bytes(kind.control_plane.exec.run(["cat", path], timeout=30).stdout)
        target.chmod(0o600)
        env[part] = str(target)
    return {f"K8SSTATE_ETCD_{k}": v for k, v in env.items()}


def main(argv: list[str]) -> int:
    from pytest_k8sstate.providers.registry import get_provider

    name, dest = argv[0], Path(argv[1])
    kind = get_provider("kind").get(name)
    env = {"K8SSTATE_EXISTING_KIND": name, "K8SSTATE_DEBUG_IMAGE": debug_image(kind)}
    env.update(etcd_files(kind, dest))
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
