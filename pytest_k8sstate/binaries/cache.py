"""The binaries cache: its layout, each version dir's manifest, the per-version install lock, lookups.

Layout under :func:`~pytest_k8sstate.util.files.cache_dir` (``$K8SSTATE_CACHE_DIR`` or the user cache dir)::

    bin/<component>-<version>/<binary>         installed binaries (``kubernetes-v1.37.1/kube-apiserver``)
    bin/<component>-<version>/manifest.json    source, sha256, size and install time of each binary
    bin/<component>-<version>/.lock            fcntl lock: one installer per version (xdist workers)
    build/<component>-<version>/               generated Go wrapper modules (go.mod, tools.go, main.go)
    logs/<component>-<version>.log             output of every go command run for that version
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_k8sstate.binaries.versions import COMPONENT_BINARIES, Versions, component_of
from pytest_k8sstate.errors import BinaryError, ConfigError
from pytest_k8sstate.util.files import CACHE_ENV, atomic_write_json, cache_dir
from pytest_k8sstate.util.inputs import read_input
from pytest_k8sstate.util.poll import wait_until

__all__ = [
    "LOCK_TIMEOUT",
    "Manifest",
    "build_dir",
    "cache_os_error",
    "find_binary",
    "is_no_space",
    "list_cached",
    "log_path",
    "no_space_error",
    "sha256_file",
    "temp_path",
    "version_dir",
    "version_lock",
]

log = logging.getLogger(__name__)

# waiting for another process that installs the same version dir: three times the longest go command
LOCK_TIMEOUT = 3 * 3600.0
_LOCK_POLL = 0.25


# --- layout ---
def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space_error(path: Path | str) -> BinaryError:
    """The one message for a full cache disk while writing ``path``."""
    return BinaryError(
        f"{path}: no space left on device; free space there or point {CACHE_ENV} at a directory on a "
        f"disk with room (the Kubernetes binaries and their build need a few GB)"
    )


def cache_os_error(exc: OSError, where: Path, *, file: Path | None = None) -> BinaryError:
    """An OSError writing the binaries cache at ``where`` as one message naming the file (``file``, else
    the error's own file name, else ``where``)."""
    path = file or exc.filename or where
    if is_no_space(exc):
        return no_space_error(path)
    return BinaryError(
        f"{path}: {exc.strerror or exc}; check the binaries cache {where} (or point {CACHE_ENV} elsewhere)"
    )


def version_dir(component: str, version: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "bin" / f"{component}-{version}"


def build_dir(component: str, version: str, cache: Path) -> Path:
    return cache / "build" / f"{component}-{version}"


def log_path(component: str, version: str, cache: Path) -> Path:
    return cache / "logs" / f"{component}-{version}.log"


def temp_path(vdir: Path, name: str) -> Path:
    """Where ``name`` is written before it is installed (inside ``vdir``, under its lock)."""
    return vdir / f".tmp-{name}-{os.getpid()}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- manifest ---
class Manifest:
    """``manifest.json`` of one version dir: what each installed binary is and where it came from."""

    def __init__(self, vdir: Path) -> None:
        self.vdir = vdir
        self.path = vdir / "manifest.json"
        self.data = self._read()
        self.changed = False

    def _read(self) -> dict[str, Any]:
        """The manifest, checked; an unreadable or malformed one is ignored with one warning naming it
        (its entries are recomputed from the files). Bounded: at most :data:`MANIFEST_MAX_BYTES`, a regular
        file, and only the schema's flat entries are kept (a deeply nested file cannot crash a later save)."""
        try:
            raw = read_input(str(self.path), "binaries manifest", limit=MANIFEST_MAX_BYTES)
        except ConfigError as exc:
            if not self.path.exists() and not self.path.is_symlink():
                return {"binaries": {}}
            log.warning("ignoring %s; entries will be recomputed", exc)
            return {"binaries": {}}
        problem: str | None
        try:
            data = json.loads(raw)
        except RecursionError:
            problem = "JSON nested too deeply"
        except ValueError as exc:
            problem = f"not valid JSON: {str(exc)[:100]}"
        else:
            problem = _manifest_problem(data)
        if problem is not None:
            log.warning("ignoring %s (%s); entries will be recomputed", self.path, problem)
            return {"binaries": {}}
        return {"binaries": dict(data["binaries"])}

    def entry(self, name: str) -> dict[str, Any] | None:
        entry = self.data["binaries"].get(name)
        return entry if isinstance(entry, dict) else None

    def usable(self, name: str) -> Path | None:
        """``vdir/name`` if it is an executable regular file whose size matches its entry (if any)."""
        path = self.vdir / name
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file() or not os.access(path, os.X_OK):
            return None
        entry = self.entry(name)
        if entry and isinstance(entry.get("size"), int) and entry["size"] != st.st_size:
            return None
        return path

    def lookup(self, name: str, *, adopt: bool) -> Path | None:
        """A cache hit for ``name``. A usable file without an entry counts only with ``adopt`` (under the
        lock): e.g. built by hand into the cache layout, it is then recorded once (call :meth:`save`)."""
        if self.entry(name) is None and not adopt:
            return None
        path = self.usable(name)
        if path is not None and self.entry(name) is None:
            st = path.stat()
            self.data["binaries"][name] = {
                "source": "adopted",
                "sha256": sha256_file(path),
                "size": st.st_size,
                "installed_at": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds"),
                "seconds": 0.0,
            }
            self.changed = True
        return path

    def install(self, name: str, tmp: Path, *, source: str, detail: str, seconds: float) -> Path:
        """Atomically install ``tmp`` as ``vdir/name`` (executable) and record it; saves the manifest."""
        tmp.chmod(0o755)
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        final = self.vdir / name
        os.replace(tmp, final)
        self.data["binaries"][name] = {
            "source": source,
            "detail": detail,
            "sha256": digest,
            "size": size,
            "installed_at": _now(),
            "seconds": round(seconds, 1),
        }
        self.changed = True
        self.save()
        return final

    def save(self) -> None:
        if self.changed:
            try:
                atomic_write_json(self.path, self.data, indent=2)  # removes its temp file on failure
            except OSError as exc:
                raise cache_os_error(exc, self.vdir, file=self.path) from None
            self.changed = False


MANIFEST_MAX_BYTES = 16 << 20
# manifest entry field → accepted types (every field optional; anything else makes the manifest malformed)
_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "source": (str,),
    "detail": (str,),
    "sha256": (str,),
    "size": (int,),
    "installed_at": (str,),
    "seconds": (int, float),
}


def _manifest_problem(data: Any) -> str | None:
    """Why ``data`` is not a manifest (``{"binaries": {name: {field: scalar}}}``), or None."""
    if not isinstance(data, dict) or not isinstance(data.get("binaries"), dict):
        return 'expected an object with "binaries": {name: entry}'
    for name, entry in data["binaries"].items():
        if not isinstance(entry, dict):
            return f"binaries.{name}: expected an object"
        for key, value in entry.items():
            types = _ENTRY_FIELDS.get(key)
            if types is None:
                return f"binaries.{name}.{key}: unknown field"
            if not isinstance(value, types) or isinstance(value, bool):
                return f"binaries.{name}.{key}: expected {types[0].__name__}, got {type(value).__name__}"
            if isinstance(value, int | float) and not 0 <= value < 2**63:
                return f"binaries.{name}.{key}: expected a non-negative number below 2**63"
    return None


# --- lookups ---
def find_binary(name: str, versions: Versions | None = None, *, cache: Path | None = None) -> Path | None:
    """The cached binary ``name`` of the pinned (or given) version, or ``None``. Never downloads or builds."""
    component = component_of(name)
    v = versions or Versions.resolve()
    return Manifest(version_dir(component, v.of(component), cache)).usable(name)


def list_cached(cache: Path | None = None) -> list[tuple[str, str, str, Path, dict[str, Any]]]:
    """(binary, component, version, path, manifest entry) of every binary in the cache."""
    root = (cache or cache_dir()) / "bin"
    found: list[tuple[str, str, str, Path, dict[str, Any]]] = []
    if not root.is_dir():
        return found
    for vdir in sorted(p for p in root.iterdir() if p.is_dir()):
        component, sep, version = vdir.name.partition("-v")
        if not sep or component not in COMPONENT_BINARIES:
            continue
        manifest = Manifest(vdir)
        for name in COMPONENT_BINARIES[component]:
            path = manifest.usable(name)
            if path is not None:
                found.append((name, component, "v" + version, path, manifest.entry(name) or {}))
    return found


# --- locking ---
@contextlib.contextmanager
def version_lock(
    vdir: Path, what: str, progress: Callable[[str], None], timeout: float = LOCK_TIMEOUT
) -> Iterator[None]:
    """Exclusive fcntl lock on ``vdir/.lock`` (released when the process dies), waited for with a deadline."""
    vdir.mkdir(parents=True, exist_ok=True)
    lock_path = vdir / ".lock"
    with lock_path.open("a+") as fh:
        announced = False

        def take() -> str | None:
            nonlocal announced
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                if not announced:
                    progress(f"{what}: waiting for another process installing it (lock {lock_path})")
                    announced = True
                return (
                    f"another process held {lock_path} for more than {timeout:g}s; "
                    f"if no install is running, delete {vdir} and retry"
                )

        wait_until(
            f"the install lock of {what}",
            take,
            timeout=timeout,
            error=BinaryError,
            interval=_LOCK_POLL,
            max_interval=_LOCK_POLL,
        )
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
