"""``<cache>/<provider>-clusters/<name>/state.json``: what a container provider recorded about one cluster.

The directory also holds that cluster's kubeconfigs, copied certificates and forwarder record
(:mod:`pytest_k8sstate.providers.forwarders`). ``state.json`` is written atomically (a unique temp name, then
a rename): concurrent xdist workers never read half a file.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_k8sstate.providers.forwarders import stop_forwarder
from pytest_k8sstate.util.files import atomic_write_json, cache_dir

__all__ = ["StateFile", "state_root"]


def state_root(provider: str) -> Path:
    """``<cache>/<provider>-clusters`` (the cache dir read now: ``$K8SSTATE_CACHE_DIR`` may have changed)."""
    return cache_dir() / f"{provider}-clusters"


@dataclass
class StateFile:
    """``<root>/<name>/state.json``: what the provider recorded about one cluster."""

    name: str
    dir: Path
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        atomic_write_json(self.dir / "state.json", self.data)

    @classmethod
    def load(cls, name: str, root: Path) -> StateFile:
        """The record of ``name`` under ``root`` (empty ``data`` when there is none or it is unreadable)."""
        d = root / name
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads((d / "state.json").read_text())
            if isinstance(loaded, dict):
                data = loaded
        return cls(name, d, data)

    @classmethod
    def fresh(cls, name: str, root: Path) -> StateFile:
        """An empty state dir for a new cluster ``name``: what an earlier cluster of that name left (its
        forwarder included) is removed first."""
        d = root / name
        stop_forwarder(d)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)
        return cls(name, d)
