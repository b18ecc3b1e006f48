"""The programs a ``local`` cluster runs: the pinned control-plane binaries, etcd, kwok and its stages.

Found in the binaries cache (:mod:`pytest_k8sstate.binaries`), with fallbacks that need no build (etcd
from ``$K8SSTATE_ETCD`` or PATH, kwok from PATH); what is still missing is installed on first use.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.providers.base import Progress

__all__ = ["KUBE_BINARIES", "kube_version", "kwok_stages", "resolve_binaries"]

KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")


def resolve_binaries(version: str | None, progress: Progress) -> dict[str, Path]:
    """Paths of the control-plane binaries, etcd and kwok (installed on demand by :mod:`..binaries`)."""
    import pytest_k8sstate.binaries as bins

    versions = bins.Versions.resolve(kubernetes=version)
    wanted = [*KUBE_BINARIES, "etcd", "kwok"]
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for name in wanted:
        p = bins.find_binary(name, versions)
        if p is not None:
            paths[name] = p
        else:
            missing.append(name)
    # Fallbacks that need no build: etcd from $K8SSTATE_ETCD/PATH, kwok from PATH.
    if "etcd" in missing:
        with contextlib.suppress(BinaryError):
            from pytest_k8sstate.etcd.server import find_etcd_binary

            paths["etcd"] = find_etcd_binary()
            missing.remove("etcd")
    kwok = shutil.which("kwok")
    if "kwok" in missing and kwok:
        paths["kwok"] = Path(kwok)
        missing.remove("kwok")
    if missing:
        progress(f"installing {', '.join(missing)} (first use; cached afterwards)")
        got = bins.ensure_binaries(missing, versions, progress=progress)
        for name in missing:
            paths[name] = got[name]
    return paths


def kube_version(version: str | None) -> str:
    """The Kubernetes version a cluster of ``version`` (None: the pinned default) runs, as ``v1.x.y``."""
    import pytest_k8sstate.binaries as bins

    return bins.Versions.resolve(kubernetes=version).kubernetes


def kwok_stages(version: str | None) -> Path:
    """kwok's stage file (node heartbeats, pods Running) for the kwok pinned with Kubernetes ``version``."""
    import pytest_k8sstate.binaries as bins

    return bins.kwok_stages(bins.Versions.resolve(kubernetes=version).kwok)
