"""``k8s_api.load_image``: a workload image into every node of a cluster, without a registry.

kind: a tag is taken from the user's Docker engine (``$DOCKER_HOST`` or the default one) when it has it,
else from the engine the cluster's nodes run in (the project's), ``docker save``d once and imported into each
node's containerd that lacks that image ID (:func:`~pytest_k8sstate.providers.kind.image.agnhost.
load_into_nodes`, the code that loads agnhost); a ``docker save`` tarball (``.tar``) is imported as is.
Other providers: a :class:`~pytest_k8sstate.errors.ProviderError` saying it is not supported and what to
do instead.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.docker.cli import DockerCli
from pytest_k8sstate.providers.kind.image.agnhost import IMPORT_TIMEOUT, load_into_nodes

__all__ = ["image_loader", "load_image", "tar_tags"]

UNSUPPORTED = {
    "local": "its pods are kwok's and run no images",
    "minikube": "use `minikube image load IMAGE -p PROFILE`",
    "existing": "the plugin does not own the cluster's nodes; push the image to a registry they pull from",
}


def tar_tags(path: Path) -> list[str]:
    """The tags (``RepoTags``) a ``docker save`` tarball holds; a clear error for anything else."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise KeyError("manifest.json")
            manifest = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ProviderError(
            f"load_image({str(path)!r}): not a `docker save` tarball (no readable manifest.json: {exc})"
        ) from None
    tags = [str(t) for entry in manifest if isinstance(entry, dict) for t in entry.get("RepoTags") or []]
    if not tags:
        raise ProviderError(f"load_image({str(path)!r}): the tarball has no tagged image (RepoTags is empty)")
    return tags


def _engine_with(tag: str, cluster: Cluster) -> DockerCli:
    """The user's engine when it has ``tag``, else the cluster's (the project's) engine."""
    user = DockerCli()
    with contextlib.suppress(CommandError):  # no docker CLI / engine of the user's: try the cluster's
        if user.image_exists(tag):
            return user
    host = cluster.details.get("docker_host") or getattr(cluster.nodes[0].exec, "host", None)
    own = DockerCli(str(host) if host else None)
    if own.host != user.host and own.image_exists(tag):
        return own
    where = user.where + ("" if own.host == user.host else f" nor {own.where}")
    raise ProviderError(f"load_image({tag!r}): no such image in the Docker engine at {where}; build/pull it")


def load_image(cluster: Cluster, image: str | Path, progress: Any = None) -> dict[str, str]:
    """Load ``image`` (tag or tarball path) into every node of ``cluster``; node → ``loaded``/``present``."""
    if cluster.provider != "kind":
        why = UNSUPPORTED.get(cluster.provider, "it has no image loader")
        raise ProviderError(f"load_image is not supported by provider {cluster.provider}: {why}")
    say = progress or (lambda _line: None)
    execs = [n.exec for n in cluster.nodes]
    path = Path(image)
    if isinstance(image, Path) or (path.suffix == ".tar" and path.is_file()):
        tags = tar_tags(path)
        data = path.read_bytes()
        for node in execs:
            node.run(
                ["ctr", "--namespace=k8s.io", "images", "import", "--digests", "-"],
                input=data,
                timeout=IMPORT_TIMEOUT,
            )
            say(f"{path.name} ({', '.join(tags)}): loaded into {node.node}")
        return {node.node: "loaded" for node in execs}
    return load_into_nodes(_engine_with(str(image), cluster), str(image), execs, progress=say)


def image_loader(cluster: Cluster) -> Any:
    """``load_image`` bound to ``cluster`` (the ``image_loader`` the plugin gives ``K8sHelper``)."""

    def load(image: str | Path) -> dict[str, str]:
        return load_image(cluster, image)

    return load
