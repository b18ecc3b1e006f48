"""Official release downloads (dl.k8s.io, GitHub releases), each checked against its published sha256.

Only Kubernetes, etcd and kind are downloaded: kwok publishes no checksums for its release binaries, and
CoreDNS and crictl (kind node images only) are built. The mirrors (same paths below them) are also what the
tests point at a loopback server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import platform
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_k8sstate.binaries.cache import is_no_space, no_space_error, temp_path

__all__ = [
    "DOWNLOADABLE",
    "DOWNLOAD_TIMEOUT",
    "GITHUB_URL_ENV",
    "KUBERNETES_RELEASE_URL_ENV",
    "DownloadUnavailable",
    "checksum_from",
    "download_release",
    "goarch",
]

KUBERNETES_RELEASE_URL_ENV = "K8SSTATE_KUBERNETES_RELEASE_URL"  # default https://dl.k8s.io/release
GITHUB_URL_ENV = "K8SSTATE_GITHUB_URL"  # default https://github.com
DOWNLOAD_TIMEOUT = 5.0  # connect (and per-read) timeout of official downloads
DOWNLOADABLE = ("kubernetes", "etcd", "kind")

#: (binary name, progress text)
Say = Callable[[str, str], None]
#: (binary name, verified file to move into place, source URL, seconds spent)
Installed = Callable[[str, Path, str, float], None]


class DownloadUnavailable(Exception):
    """The official download could not be used (network, HTTP error, checksum mismatch)."""


def goarch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _mirror(var: str, default: str) -> str:
    return (os.environ.get(var, "").strip() or default).rstrip("/")


def _open_url(url: str, timeout: float) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": "pytest-k8sstate"})
    try:
        resp: http.client.HTTPResponse = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadUnavailable(f"HTTP {exc.code} for {url}") from exc
    except urllib.error.URLError as exc:
        raise DownloadUnavailable(f"{url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadUnavailable(f"{url}: {exc}") from exc
    return resp


def _fetch_text(url: str, timeout: float) -> str:
    with contextlib.closing(_open_url(url, timeout)) as resp:
        try:
            return resp.read(1 << 20).decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadUnavailable(f"{url}: {exc}") from exc


def _fetch_file(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest``; returns the sha256."""
    h = hashlib.sha256()
    with contextlib.closing(_open_url(url, timeout)) as resp, dest.open("wb") as out:
        try:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            if is_no_space(exc):
                raise no_space_error(dest) from None
            raise DownloadUnavailable(f"{url}: {exc}") from exc
    return h.hexdigest()


def checksum_from(text: str, filename: str | None, source: str) -> str:
    """The hex sha256 from a ``.sha256`` file (just the hash) or a ``SHA256SUMS`` listing (hash, filename)."""
    for raw in text.splitlines():
        parts = raw.split()
        if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            continue
        if filename is None or (len(parts) >= 2 and parts[-1].lstrip("*").rsplit("/", 1)[-1] == filename):
            return parts[0].lower()
    raise DownloadUnavailable(f"{source}: no sha256 for {filename or 'the file'}")


def _fetch_verified(
    url: str, sums_url: str, filename: str | None, dest: Path, timeout: float, announce: Callable[[], None]
) -> None:
    """Download ``url`` into ``dest`` and check it against the sha256 that ``sums_url`` publishes."""
    want = checksum_from(_fetch_text(sums_url, timeout), filename, sums_url)
    announce()
    got = _fetch_file(url, dest, timeout)
    if got != want:
        raise DownloadUnavailable(f"checksum mismatch for {url}: got sha256 {got}, published {want}")


def _single(
    name: str,
    url: str,
    sums_url: str,
    filename: str | None,
    vdir: Path,
    *,
    timeout: float,
    say: Say,
    installed: Installed,
) -> None:
    t0 = time.monotonic()
    tmp = temp_path(vdir, name)
    try:
        _fetch_verified(url, sums_url, filename, tmp, timeout, lambda: say(name, f"downloading {url}…"))
        installed(name, tmp, url, time.monotonic() - t0)
    finally:
        tmp.unlink(missing_ok=True)
    say(name, f"downloaded ({time.monotonic() - t0:.1f}s)")


def _etcd(
    version: str,
    names: Sequence[str],
    vdir: Path,
    *,
    arch: str,
    timeout: float,
    say: Say,
    installed: Installed,
) -> None:
    """etcd's release tarball (checked against ``SHA256SUMS``); only ``names`` are taken out of it."""
    t0 = time.monotonic()
    stem = f"etcd-{version}-linux-{arch}"
    base = f"{_mirror(GITHUB_URL_ENV, 'https://github.com')}/etcd-io/etcd/releases/download/{version}"
    url = f"{base}/{stem}.tar.gz"
    tarball = temp_path(vdir, f"{stem}.tar.gz")
    try:
        _fetch_verified(
            url,
            f"{base}/SHA256SUMS",
            f"{stem}.tar.gz",
            tarball,
            timeout,
            lambda: say("etcd", f"downloading {url}…"),
        )
        with tarfile.open(tarball, "r:gz") as tar:
            for name in names:
                try:
                    member = tar.getmember(f"{stem}/{name}")
                except KeyError:
                    raise DownloadUnavailable(f"{url} has no {stem}/{name}") from None
                src = tar.extractfile(member)
                if src is None:
                    raise DownloadUnavailable(f"{url}: {stem}/{name} is not a file")
                tmp = temp_path(vdir, name)
                try:
                    with src, tmp.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    installed(name, tmp, url, time.monotonic() - t0)
                finally:
                    tmp.unlink(missing_ok=True)
                say(name, f"downloaded ({time.monotonic() - t0:.1f}s)")
    except (tarfile.TarError, OSError) as exc:
        if is_no_space(exc):
            raise no_space_error(getattr(exc, "filename", None) or vdir) from None
        raise DownloadUnavailable(f"{url}: {exc}") from exc
    finally:
        tarball.unlink(missing_ok=True)


def download_release(
    component: str,
    version: str,
    names: Sequence[str],
    vdir: Path,
    *,
    timeout: float = DOWNLOAD_TIMEOUT,
    say: Say,
    installed: Installed,
) -> None:
    """Download ``names`` of ``component`` (one of :data:`DOWNLOADABLE`) into ``vdir``.

    Each verified binary is handed to ``installed`` as soon as it is ready; the first failure raises
    :class:`DownloadUnavailable` (what was handed over before stays installed).
    """
    arch = goarch()
    if component == "kubernetes":
        release = _mirror(KUBERNETES_RELEASE_URL_ENV, "https://dl.k8s.io/release")
        for name in names:
            url = f"{release}/{version}/bin/linux/{arch}/{name}"
            _single(name, url, url + ".sha256", None, vdir, timeout=timeout, say=say, installed=installed)
    elif component == "kind":
        asset = f"kind-linux-{arch}"
        github = _mirror(GITHUB_URL_ENV, "https://github.com")
        url = f"{github}/kubernetes-sigs/kind/releases/download/{version}/{asset}"
        _single("kind", url, url + ".sha256sum", asset, vdir, timeout=timeout, say=say, installed=installed)
    elif component == "etcd":
        _etcd(version, names, vdir, arch=arch, timeout=timeout, say=say, installed=installed)
    else:
        raise ValueError(f"{component} is not downloadable; expected one of {', '.join(DOWNLOADABLE)}")
