"""``<cache>/<provider>-clusters/<name>/state.json``: what a container provider recorded about one cluster.

The directory also holds that cluster's kubeconfigs, copied certificates and forwarder record
(:mod:`pytest_k8sstate.providers.forwarders`). ``state.json`` is written atomically (a unique temp name, then
a rename): concurrent xdist workers never read half a file; 0600 in a 0700 directory. A file that cannot be
read as a JSON object (too large, nested too deeply, not JSON) loads as an empty record with one warning
naming it; a disk error while writing becomes one ProviderError naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.providers.base import validate_cluster_name
from pytest_k8sstate.providers.forwarders import stop_forwarder
from pytest_k8sstate.util.files import atomic_write_json, cache_dir

__all__ = ["StateFile", "state_root", "valid_name", "write_error"]

MAX_STATE_BYTES = 1 << 20
_warned: set[str] = set()


def valid_name(name: object) -> bool:
    """``name`` passes a create's cluster-name check (a short DNS label; no final newline either: the
    check's regex ends in ``$``). A state directory with any other name is never trusted."""
    if not isinstance(name, str) or "\n" in name:
        return False
    try:
        validate_cluster_name(name)
    except ConfigError:
        return False
    return True


def write_error(path: Path, exc: OSError) -> ProviderError:
    """The one message of a failed state write (``no space left on device`` said as such)."""
    if exc.errno == errno.ENOSPC:
        why = "no space left on device; free space there (or point K8SSTATE_CACHE_DIR at another disk)"
    else:
        why = exc.strerror or str(exc)
    return ProviderError(f"{path}: cannot write the cluster state: {why}")


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_STATE_BYTES + 1)
    except OSError:
        return {}
    why = None
    try:
        loaded = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else None
        if loaded is None:
            why = f"larger than {MAX_STATE_BYTES} bytes"
        elif not isinstance(loaded, dict):
            why = "not a JSON object"
        else:
            return loaded
    except RecursionError:
        why = "nested too deeply"
    except ValueError as exc:
        why = str(exc)[:200]
    msg = f"{path}: ignored unreadable cluster state ({why})"
    if msg not in _warned:
        _warned.add(msg)
        print(f"[k8sstate] warning: {msg}", file=sys.stderr)
    return {}


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
        path = self.dir / "state.json"
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            atomic_write_json(path, self.data, mode=0o600)
        except OSError as exc:
            raise write_error(path, exc) from exc

    @classmethod
    def load(cls, name: str, root: Path) -> StateFile:
        """The record of ``name`` under ``root`` (empty ``data`` when there is none or it is unreadable)."""
        d = root / name
        return cls(name, d, _read(d / "state.json"))

    @classmethod
    def fresh(cls, name: str, root: Path) -> StateFile:
        """An empty state dir for a new cluster ``name``: what an earlier cluster of that name left (its
        forwarder included) is removed first."""
        d = root / name
        stop_forwarder(d)
        shutil.rmtree(d, ignore_errors=True)
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(d, exc) from exc
        return cls(name, d)
