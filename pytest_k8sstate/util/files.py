"""Atomic file writes (unique temp names: xdist workers write concurrently) and the cache dir."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "K8SSTATE_CACHE_DIR"


def cache_dir(env: dict[str, str] | None = None) -> Path:
    """The cache root, read at call time: ``$K8SSTATE_CACHE_DIR``, else the platform user cache dir."""
    override = (os.environ if env is None else env).get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("pytest-k8sstate"))


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The temporary file is unique (``mkstemp`` in the same directory) and removed on any failure; ``mode`` sets
    its permissions before the rename (e.g. ``0o600`` for state files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str, *, mode: int | None = None, fsync: bool = False) -> None:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, fsync=fsync)


def atomic_write_json(path: Path, data: Any, *, mode: int | None = None, indent: int | None = 1) -> None:
    """:func:`atomic_write_text` of ``data`` as sorted JSON (non-JSON values via ``str``)."""
    text = json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n"
    atomic_write_text(path, text, mode=mode)
