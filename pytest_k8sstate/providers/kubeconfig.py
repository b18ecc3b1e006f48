"""Kubeconfig text: read and rewrite the API server a kubeconfig points at, write one privately."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import yaml

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.util.files import atomic_write_text

__all__ = ["copy_kubeconfig", "kubeconfig_server", "rewrite_kubeconfig_server", "write_kubeconfig"]


def rewrite_kubeconfig_server(text: str, server: str, source: str = "kubeconfig") -> str:
    """``text`` with every cluster's ``server`` replaced by ``server``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProviderError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
        raise ProviderError(f"{source}: expected a kubeconfig with a 'clusters' list")
    for c in doc["clusters"]:
        if isinstance(c, dict) and isinstance(c.get("cluster"), dict):
            c["cluster"]["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def kubeconfig_server(text: str) -> str:
    """The first cluster's ``server`` ("" when there is none)."""
    with contextlib.suppress(yaml.YAMLError, KeyError, IndexError, TypeError):
        doc = yaml.safe_load(text)
        return str(doc["clusters"][0]["cluster"]["server"])
    return ""


def write_kubeconfig(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, readable by its owner only (it holds credentials)."""
    atomic_write_text(path, text, mode=0o600)
    return path


def copy_kubeconfig(src: Path, dest: Path | None) -> None:
    """Copy a cluster's kubeconfig to where the user asked for it (``ClusterSpec.kubeconfig_out``)."""
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
