"""kwok's default stages (nodes Ready with lease heartbeats, pods Running, Jobs completing, deletions), taken
from the ``sigs.k8s.io/kwok`` module through the Go module proxy and cached next to the kwok binary."""

from __future__ import annotations

from pathlib import Path

from pytest_k8sstate.binaries.cache import version_dir
from pytest_k8sstate.binaries.gobuild import module_info
from pytest_k8sstate.binaries.versions import Versions
from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.util.files import atomic_write_text

__all__ = ["KWOK_STAGE_FILES", "kwok_stages"]

# kwok's own stage definitions (what `kwokctl` uses by default): nodes Ready with lease heartbeats, pods
# Running with IPs from the node's podCIDR, Job pods completing, deletions finishing.
KWOK_STAGE_FILES: tuple[str, ...] = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def kwok_stages(version: str | None = None, *, cache: Path | None = None) -> Path:
    """A YAML file with kwok's default stages for ``version``, taken from the kwok module itself.

    The stage definitions are data of the ``sigs.k8s.io/kwok`` module: they are fetched through the Go
    module proxy (``go mod download``) like the kwok binary and kept next to it in the cache
    (``bin/kwok-<version>/stages.yaml``); nothing of kwok's is shipped with this package.
    """
    version = version or Versions.resolve().kwok
    target = version_dir("kwok", version, cache) / "stages.yaml"
    if target.is_file():
        return target
    info = module_info("sigs.k8s.io/kwok", version, cache=cache)
    if info.dir is None:
        raise BinaryError(f"go mod download sigs.k8s.io/kwok@{version} returned no module directory")
    docs = []
    for rel in KWOK_STAGE_FILES:
        f = info.dir / rel
        if not f.is_file():
            raise BinaryError(
                f"kwok {version} has no stage file {rel} (looked in {info.dir}); pin a kwok version that "
                "ships kustomize/stage (v0.4 or newer) with K8SSTATE_KWOK_VERSION"
            )
        docs.append(f.read_text(encoding="utf-8").strip())
    atomic_write_text(target, "\n---\n".join(docs) + "\n")
    return target
