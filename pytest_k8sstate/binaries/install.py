"""Make sure the pinned binaries are installed: the cache first, then the official download, then a build.

Per version dir (one component at one version) and under its lock: cache hits (adopting a usable binary that
has no manifest entry yet), then :mod:`~pytest_k8sstate.binaries.download` with checksums (5 s connect
timeout; after the first network failure no further download is tried), then
:mod:`~pytest_k8sstate.binaries.gobuild` from the Go module proxy. CoreDNS and crictl are only built on demand
(kind node images), never downloaded.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_k8sstate.binaries.cache import Manifest, cache_os_error, version_dir, version_lock
from pytest_k8sstate.binaries.download import (
    DOWNLOAD_TIMEOUT,
    DOWNLOADABLE,
    DownloadUnavailable,
    download_release,
)
from pytest_k8sstate.binaries.gobuild import build_component, find_go
from pytest_k8sstate.binaries.versions import BINARY_COMPONENT, INSTALL_ORDER, Versions, expand_components
from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.util.files import cache_dir
from pytest_k8sstate.util.progress import prefixed
from pytest_k8sstate.util.progress import progress as live_progress

__all__ = ["BinarySet", "ProgressFn", "ensure_binaries"]

ProgressFn = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class BinarySet:
    """Paths of installed binaries by name (``kube-apiserver``, ..., ``etcd``, ``kwok``, ``kind``)."""

    versions: Versions
    paths: Mapping[str, Path]
    sources: Mapping[str, str] = field(default_factory=dict)  # name -> "cache" | "download" | "build"
    seconds: float = 0.0

    def __getitem__(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise BinaryError(
                f"binary {name!r} was not requested; have {', '.join(self.paths) or 'none'} "
                f"(pass components=[{name!r}] to ensure_binaries)"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def get(self, name: str) -> Path | None:
        return self.paths.get(name)

    def path_env(self) -> str:
        """A ``PATH`` value with the directories of these binaries first."""
        dirs: list[str] = []
        for p in self.paths.values():
            if str(p.parent) not in dirs:
                dirs.append(str(p.parent))
        return os.pathsep.join([*dirs, os.environ.get("PATH", os.defpath)])


def _stderr_progress(line: str) -> None:
    print(prefixed(line), file=sys.stderr, flush=True)


@dataclass
class _Installer:
    versions: Versions
    cache: Path
    progress: ProgressFn
    download: bool
    build: bool
    download_timeout: float
    downloads_failed: str | None = None  # after the first network failure, don't retry per binary
    go: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def install(self, component: str, names: list[str]) -> None:
        """One component (one version dir), under its lock when anything is missing."""
        version = self.versions.of(component)
        vdir = version_dir(component, version, self.cache)
        missing = self._cache_hits(vdir, version, names, adopt=False)
        if not missing:
            return
        with version_lock(vdir, f"{component} {version}", self.progress):
            missing = self._cache_hits(vdir, version, missing, adopt=True)
            if missing and self.download and component in DOWNLOADABLE:
                missing = self._download(component, version, vdir, missing)
            if not missing:
                return
            if not self.build:
                raise BinaryError(
                    f"{', '.join(missing)} {version} not in the cache ({vdir}) and not downloadable "
                    f"({self.downloads_failed or 'downloads disabled'}); building was disabled (--no-build): "
                    f"run `k8sstate binaries install` without --no-build"
                )
            if self.go is None:
                self.go = find_go()
            build_component(
                component,
                version,
                missing,
                vdir,
                go=self.go,
                cache=self.cache,
                say=self._say(version),
                installed=self._installer(vdir, "build"),
            )

    def _say(self, version: str) -> Callable[[str, str], None]:
        def say(name: str, text: str) -> None:
            self.progress(f"{name} {version}: {text}")

        return say

    def _installer(self, vdir: Path, source: str) -> Callable[[str, Path, str, float], None]:
        def installed(name: str, tmp: Path, detail: str, seconds: float) -> None:
            self.paths[name] = Manifest(vdir).install(
                name, tmp, source=source, detail=detail, seconds=seconds
            )
            self.sources[name] = source

        return installed

    def _cache_hits(self, vdir: Path, version: str, names: list[str], *, adopt: bool) -> list[str]:
        say = self._say(version)
        manifest = Manifest(vdir)
        missing: list[str] = []
        t0 = time.monotonic()
        for name in names:
            path = manifest.lookup(name, adopt=adopt)
            if path is None:
                missing.append(name)
                continue
            self.paths[name] = path
            self.sources[name] = "cache"
            say(name, f"cache hit ({time.monotonic() - t0:.1f}s)")
            t0 = time.monotonic()
        manifest.save()
        return missing

    def _download(self, component: str, version: str, vdir: Path, names: list[str]) -> list[str]:
        """Official downloads of ``names``; returns those still missing (all of them after a failure)."""
        if self.downloads_failed is not None:
            return names
        try:
            download_release(
                component,
                version,
                names,
                vdir,
                timeout=self.download_timeout,
                say=self._say(version),
                installed=self._installer(vdir, "download"),
            )
        except DownloadUnavailable as exc:
            self.downloads_failed = str(exc)
            missing = [n for n in names if n not in self.paths]
            then = "building from the Go module proxy" if self.build else "and building is disabled"
            self._say(version)(missing[0], f"download unavailable ({exc}), {then}")
            return missing
        return [n for n in names if n not in self.paths]


def ensure_binaries(
    components: Iterable[str] | None = None,
    versions: Versions | None = None,
    progress: ProgressFn | None = None,
    *,
    cache: Path | None = None,
    download: bool = True,
    build: bool = True,
    download_timeout: float = DOWNLOAD_TIMEOUT,
) -> BinarySet:
    """Make sure the binaries are installed; returns their paths.

    ``components``: binary names (``kube-apiserver``, ``etcd``, ...), groups (``kubernetes`` = the five
    default Kubernetes binaries, ``etcd``, ``kwok``, ``kind``) or ``all`` (adds kubelet, kubeadm); default:
    every binary of :data:`DEFAULT_BINARIES`. ``versions``: default :meth:`Versions.resolve` (pins + env).
    ``progress``: receives one line per binary (default: stderr). While a download or a build runs, a live
    line (:mod:`pytest_k8sstate.util.progress`) shows the step and the elapsed time.
    """
    t0 = time.monotonic()
    wanted = expand_components(components)
    v = versions or Versions.resolve()
    with live_progress("binaries", sink=progress or _stderr_progress) as live:
        inst = _Installer(
            v,
            cache or cache_dir(),
            live.emit,
            download=download,
            build=build,
            download_timeout=download_timeout,
        )
        for component in INSTALL_ORDER:
            names = [n for n in wanted if BINARY_COMPONENT[n] == component]
            if names:
                try:
                    inst.install(component, names)
                except OSError as exc:  # writing the cache (ENOSPC, EACCES, ...): one message, no traceback
                    raise cache_os_error(exc, version_dir(component, v.of(component), inst.cache)) from None
    paths = {n: inst.paths[n] for n in wanted}
    sources = {n: inst.sources[n] for n in wanted}
    return BinarySet(versions=v, paths=paths, sources=sources, seconds=time.monotonic() - t0)
