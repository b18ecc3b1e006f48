"""Pinned Kubernetes, etcd, kwok, kind (+ CoreDNS, crictl) binaries: cache, downloads, or a Go proxy build.

Layout under :func:`cache_dir` (``user_cache_dir("pytest-k8sstate")`` or ``$K8SSTATE_CACHE_DIR``)::

    bin/<component>-<version>/<binary>         installed binaries (``kubernetes-v1.37.1/kube-apiserver``)
    bin/<component>-<version>/manifest.json    source, sha256, size and install time of each binary
    bin/<component>-<version>/.lock            fcntl lock: one installer per version (xdist workers)
    build/<component>-<version>/               generated Go wrapper modules (go.mod, tools.go, main.go)
    logs/<component>-<version>.log             output of every go command run for that version

Sources, in order, per binary: the cache; the official release download (dl.k8s.io, GitHub releases) with its
published checksum, 5 s connect timeout; a build from the Go module proxy (``go build`` in a generated
wrapper module for Kubernetes, etcd and crictl, ``go install pkg@version`` for kwok, kind and CoreDNS).
CoreDNS and crictl are only built on demand (kind node images, :mod:`.kindimage`), never downloaded.
Go's own build and module caches make a rebuild after the first one fast.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from platformdirs import user_cache_dir

from pytest_k8sstate.errors import BinaryError, ConfigError, ParseError

__all__ = [
    "ALL_BINARIES",
    "DEFAULT_BINARIES",
    "BinarySet",
    "ModuleInfo",
    "Versions",
    "add_cli",
    "cache_dir",
    "ensure_binaries",
    "etcd_wrapper_gomod",
    "find_binary",
    "find_go",
    "kubernetes_wrapper_gomod",
    "module_info",
    "normalize_version",
    "staging_modules",
]

log = logging.getLogger(__name__)

# --- pinned versions ---
# Kubernetes: the newest stable release the Go module proxy can serve. v1.37.2 is newer, but proxy.golang.org
# serves only its .mod: the source zip answers 403 "This module version is not available", so it cannot be
# built here (checked 2026-11-22). v1.37.1 builds. Revisit when the proxy serves v1.37.2's zip.
DEFAULT_KUBERNETES_VERSION = "v1.37.1"
# etcd: kubeadm 1.37 pins etcd 3.7.0; v3.7.3 is the newest 3.7 patch of go.etcd.io/etcd/{server,etcdctl}/v3.
DEFAULT_ETCD_VERSION = "v3.7.3"
# kwok and kind: newest releases on the proxy (sigs.k8s.io/kwok, sigs.k8s.io/kind).
DEFAULT_KWOK_VERSION = "v0.8.0"
DEFAULT_KIND_VERSION = "v0.33.0"
# kind node images only (providers.kind.image), build only (no download): CoreDNS is the version kubeadm
# v1.37 names (`kubeadm config images list`); crictl: cri-tools v1.36.0 is the newest the proxy serves here
# (v1.37.0 answers 403 "This module version is not available", checked 2026-11-22).
DEFAULT_COREDNS_VERSION = "v1.14.6"
DEFAULT_CRICTL_VERSION = "v1.36.0"

KUBERNETES_BINARIES: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
)
# Needed for kind node images only; never built unless asked for.
KUBERNETES_OPTIONAL_BINARIES: tuple[str, ...] = ("kubelet", "kubeadm")
COMPONENT_BINARIES: dict[str, tuple[str, ...]] = {
    "kubernetes": KUBERNETES_BINARIES + KUBERNETES_OPTIONAL_BINARIES,
    "etcd": ("etcd", "etcdctl"),
    "kwok": ("kwok",),
    "kind": ("kind",),
    "coredns": ("coredns",),
    "crictl": ("crictl",),
}
BINARY_COMPONENT: dict[str, str] = {b: c for c, bs in COMPONENT_BINARIES.items() for b in bs}
DEFAULT_BINARIES: tuple[str, ...] = (*KUBERNETES_BINARIES, "etcd", "etcdctl", "kwok", "kind")
ALL_BINARIES: tuple[str, ...] = tuple(BINARY_COMPONENT)
# Small first: the local provider needs etcd and kwok long before a cold Kubernetes build finishes.
_INSTALL_ORDER = ("etcd", "kwok", "kind", "crictl", "coredns", "kubernetes")

CACHE_ENV = "K8SSTATE_CACHE_DIR"
GO_ENV = "K8SSTATE_GO"
DOWNLOAD_TIMEOUT = 5.0  # connect (and per-read) timeout of official downloads
BUILD_TIMEOUT = 3600.0  # any single go command (a cold kube-apiserver build takes minutes on 2 cores)
LOCK_TIMEOUT = 3 * BUILD_TIMEOUT  # waiting for another process that installs the same version dir
_LOCK_POLL = 0.25
_TAIL_LINES = 25

ProgressFn = Callable[[str], None]

_VERSION_RE = re.compile(
    r"v?(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})(-[0-9A-Za-z][0-9A-Za-z.-]{0,40})?"
)


# --- versions ---
def normalize_version(value: object, *, what: str = "version") -> str:
    """``"1.37.1"`` or ``"v1.37.1"`` (optionally ``-rc.0``) → ``"v1.37.1"``; else :class:`ConfigError`."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _VERSION_RE.fullmatch(text):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else repr(value[:57] + "...")
        raise ConfigError(f"{what}: {shown} is not a release version; expected X.Y.Z or vX.Y.Z (e.g. 1.37.1)")
    return "v" + text.removeprefix("v")


def _version_parts(version: str) -> tuple[int, int, int, str]:
    m = _VERSION_RE.fullmatch(version)
    if m is None:  # pragma: no cover - versions are normalised on construction
        raise ConfigError(f"{version!r} is not a release version")
    return int(m[1]), int(m[2]), int(m[3]), m[4] or ""


def staging_version(kubernetes_version: str) -> str:
    """Version of the staging modules (k8s.io/api, ...) of ``k8s.io/kubernetes vX.Y.Z``: ``v0.Y.Z``."""
    _, minor, patch, pre = _version_parts(normalize_version(kubernetes_version, what="kubernetes version"))
    return f"v0.{minor}.{patch}{pre}"


@dataclass(frozen=True)
class Versions:
    """Pinned versions; each accepts ``1.37.1`` or ``v1.37.1`` and is stored as ``v1.37.1``."""

    kubernetes: str = DEFAULT_KUBERNETES_VERSION
    etcd: str = DEFAULT_ETCD_VERSION
    kwok: str = DEFAULT_KWOK_VERSION
    kind: str = DEFAULT_KIND_VERSION
    coredns: str = DEFAULT_COREDNS_VERSION
    crictl: str = DEFAULT_CRICTL_VERSION

    def __post_init__(self) -> None:
        for f in fields(self):
            value = normalize_version(getattr(self, f.name), what=f"{f.name} version")
            object.__setattr__(self, f.name, value)

    @staticmethod
    def env_var(component: str) -> str:
        return f"K8SSTATE_{component.upper()}_VERSION"

    @classmethod
    def resolve(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        kubernetes: str | None = None,
        etcd: str | None = None,
        kwok: str | None = None,
        kind: str | None = None,
        coredns: str | None = None,
        crictl: str | None = None,
    ) -> Versions:
        """Defaults, overridden by ``K8SSTATE_<COMPONENT>_VERSION`` in ``env``, overridden by arguments."""
        environ = os.environ if env is None else env
        given = {
            "kubernetes": kubernetes,
            "etcd": etcd,
            "kwok": kwok,
            "kind": kind,
            "coredns": coredns,
            "crictl": crictl,
        }
        chosen: dict[str, str] = {}
        for f in fields(cls):
            arg = given[f.name]
            if arg is not None and str(arg).strip():
                chosen[f.name] = normalize_version(arg, what=f"{f.name} version")
                continue
            var = cls.env_var(f.name)
            from_env = environ.get(var, "").strip()
            if from_env:
                chosen[f.name] = normalize_version(from_env, what=f"environment variable {var}")
        return cls(**chosen)

    def of(self, component: str) -> str:
        if component not in COMPONENT_BINARIES:
            raise ConfigError(
                f"unknown component {component!r}; expected one of {', '.join(COMPONENT_BINARIES)}"
            )
        value: str = getattr(self, component)
        return value

    def to_json(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Versions:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# --- cache layout ---
def cache_dir() -> Path:
    """The cache root: ``$K8SSTATE_CACHE_DIR`` or platformdirs' ``user_cache_dir("pytest-k8sstate")``."""
    override = os.environ.get(CACHE_ENV, "").strip()
    return Path(override).expanduser() if override else Path(user_cache_dir("pytest-k8sstate"))


def version_dir(component: str, version: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "bin" / f"{component}-{version}"


def _build_dir(component: str, version: str, cache: Path) -> Path:
    return cache / "build" / f"{component}-{version}"


def _log_path(component: str, version: str, cache: Path) -> Path:
    return cache / "logs" / f"{component}-{version}.log"


def _read_manifest(vdir: Path) -> dict[str, Any]:
    path = vdir / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"binaries": {}}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s); entries will be recomputed", path, exc)
        return {"binaries": {}}
    if not isinstance(data, dict) or not isinstance(data.get("binaries"), dict):
        return {"binaries": {}}
    return data


def _write_manifest(vdir: Path, data: Mapping[str, Any]) -> None:
    path = vdir / "manifest.json"
    tmp = vdir / f".manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _usable(path: Path, entry: Mapping[str, Any] | None) -> bool:
    """An executable regular file whose size matches its manifest entry (when it has one)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    return not (entry and isinstance(entry.get("size"), int) and entry["size"] != st.st_size)


def find_binary(name: str, versions: Versions | None = None, *, cache: Path | None = None) -> Path | None:
    """The cached binary ``name`` of the pinned (or given) version, or ``None``. Never downloads or builds."""
    component = _component_of(name)
    v = versions or Versions.resolve()
    vdir = version_dir(component, v.of(component), cache)
    entry = _read_manifest(vdir)["binaries"].get(name)
    path = vdir / name
    return path if _usable(path, entry if isinstance(entry, dict) else None) else None


def _component_of(name: str) -> str:
    try:
        return BINARY_COMPONENT[name]
    except KeyError:
        raise ConfigError(f"unknown binary {name!r}; expected one of {', '.join(ALL_BINARIES)}") from None


def _expand_components(components: Iterable[str] | None) -> list[str]:
    if components is None:
        return list(DEFAULT_BINARIES)
    if isinstance(components, str):
        components = [components]
    wanted: list[str] = []
    for raw in components:
        for item in (p.strip() for p in raw.split(",")):
            if not item:
                continue
            if item == "all":
                names: Sequence[str] = ALL_BINARIES
            elif item == "kubernetes":
                names = KUBERNETES_BINARIES
            elif item in COMPONENT_BINARIES:
                names = COMPONENT_BINARIES[item]
            elif item in BINARY_COMPONENT:
                names = (item,)
            else:
                raise ConfigError(
                    f"unknown component {item!r}; expected binaries ({', '.join(ALL_BINARIES)}), "
                    f"groups ({', '.join(COMPONENT_BINARIES)}) or 'all'"
                )
            wanted.extend(n for n in names if n not in wanted)
    return wanted


# --- result ---
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


# --- progress ---
def _stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _line(name: str, version: str, text: str) -> str:
    return f"[k8sstate] {name} {version}: {text}"


# --- locking ---
@contextlib.contextmanager
def _version_lock(
    vdir: Path, what: str, progress: ProgressFn, timeout: float = LOCK_TIMEOUT
) -> Iterator[None]:
    """Exclusive fcntl lock on ``vdir/.lock`` (released when the process dies), waited for with a deadline."""
    vdir.mkdir(parents=True, exist_ok=True)
    lock_path = vdir / ".lock"
    fh = lock_path.open("a+")
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    progress(
                        f"[k8sstate] {what}: waiting for another process installing it (lock {lock_path})"
                    )
                    announced = True
                if time.monotonic() >= deadline:
                    raise BinaryError(
                        f"{what}: another process held {lock_path} for more than {timeout:g}s; "
                        f"if no install is running, delete {vdir} and retry"
                    ) from None
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


# --- downloads ---
# Mirrors of the official download sites (same paths below them); also used by the tests (a loopback server).
KUBERNETES_RELEASE_URL_ENV = "K8SSTATE_KUBERNETES_RELEASE_URL"  # default https://dl.k8s.io/release
GITHUB_URL_ENV = "K8SSTATE_GITHUB_URL"  # default https://github.com


def _mirror(var: str, default: str) -> str:
    return (os.environ.get(var, "").strip() or default).rstrip("/")


class _DownloadUnavailable(Exception):
    """The official download could not be used (network, HTTP error, checksum mismatch)."""


def _goarch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _open_url(url: str, timeout: float) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": "pytest-k8sstate"})
    try:
        resp: http.client.HTTPResponse = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _DownloadUnavailable(f"HTTP {exc.code} for {url}") from exc
    except urllib.error.URLError as exc:
        raise _DownloadUnavailable(f"{url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _DownloadUnavailable(f"{url}: {exc}") from exc
    return resp


def _fetch_text(url: str, timeout: float) -> str:
    with contextlib.closing(_open_url(url, timeout)) as resp:
        try:
            return resp.read(1 << 20).decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise _DownloadUnavailable(f"{url}: {exc}") from exc


def _fetch_file(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest``; returns the sha256."""
    h = hashlib.sha256()
    with contextlib.closing(_open_url(url, timeout)) as resp, dest.open("wb") as out:
        try:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            raise _DownloadUnavailable(f"{url}: {exc}") from exc
    return h.hexdigest()


def _checksum_from(text: str, filename: str | None, source: str) -> str:
    """The hex sha256 from a ``.sha256`` file (just the hash) or a ``SHA256SUMS`` listing (hash, filename)."""
    for raw in text.splitlines():
        parts = raw.split()
        if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            continue
        if filename is None or (len(parts) >= 2 and parts[-1].lstrip("*").rsplit("/", 1)[-1] == filename):
            return parts[0].lower()
    raise _DownloadUnavailable(f"{source}: no sha256 for {filename or 'the file'}")


def _verify(url: str, got: str, want: str) -> None:
    if got != want:
        raise _DownloadUnavailable(f"checksum mismatch for {url}: got sha256 {got}, published {want}")


# --- the go command ---
GO_FALLBACKS: tuple[str, ...] = (
    "/usr/local/go/bin/go",
    "~/go/bin/go",
    "/usr/lib/go/bin/go",
    "~/sdk/go/bin/go",
)


def find_go(env: Mapping[str, str] | None = None, fallbacks: Sequence[str] | None = None) -> Path:
    """The ``go`` command: ``$K8SSTATE_GO``, then ``go`` on ``PATH``, then :data:`GO_FALLBACKS`."""
    environ = os.environ if env is None else env
    if fallbacks is None:
        fallbacks = GO_FALLBACKS
    explicit = environ.get(GO_ENV, "").strip()
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise BinaryError(f"{GO_ENV}={explicit!r} is not an executable go command; point it at .../go/bin/go")
    path_value = environ.get("PATH", "")
    found = shutil.which("go", path=path_value) if path_value else None
    if found:
        return Path(found)
    for cand in fallbacks:
        p = Path(cand).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            return p
    raise BinaryError(
        "the Go toolchain is needed to build binaries that are neither cached nor downloadable, and it "
        f"was not found (checked ${GO_ENV}, 'go' on PATH={path_value!r}, {', '.join(fallbacks)}); "
        "install Go >= 1.26 (https://go.dev/dl/ or apt-get install golang-go) or set "
        f"{GO_ENV}=/path/to/go/bin/go, or run where dl.k8s.io and github.com are reachable"
    )


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOWORK"] = "off"  # a user's go.work must not leak into our wrapper modules
    env.pop("GOOS", None)
    env.pop("GOARCH", None)
    return env


def _tail(path: Path, n: int = _TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in lines[-n:])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _run_logged(
    argv: Sequence[str | Path],
    *,
    cwd: Path,
    log_path: Path,
    what: str,
    timeout: float = BUILD_TIMEOUT,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | None = None,
) -> None:
    """Run ``argv`` with a timeout, its output appended to ``log_path`` (stdout to ``stdout`` if given).

    The command runs in its own process group; on timeout, failure or Ctrl-C the group is killed.
    Raises :class:`BinaryError` with the command and the last lines of the log.
    """
    args = [str(a) for a in argv]
    cmd = " ".join(args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as logf:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        logf.write(f"\n[{stamp}] $ {cmd}   (cwd {cwd})\n".encode())
        logf.flush()
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                args,
                cwd=cwd,
                env=dict(env) if env is not None else _go_env(),
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else logf,
                stderr=logf,
                start_new_session=True,
            )
        except OSError as exc:
            raise BinaryError(f"{what}: cannot run {args[0]!r}: {exc}") from exc
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            logf.flush()
            raise BinaryError(
                f"{what}: `{cmd}` did not finish within {timeout:g}s; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    if rc != 0:
        raise BinaryError(f"{what}: `{cmd}` exited {rc}; last lines of {log_path}:\n{_tail(log_path)}")


@dataclass(frozen=True)
class ModuleInfo:
    path: str
    version: str
    gomod: Path
    dir: Path | None


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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".stages-{os.getpid()}.yaml")
    tmp.write_text("\n---\n".join(docs) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def module_info(
    module: str,
    version: str,
    *,
    go: Path | None = None,
    cache: Path | None = None,
    timeout: float = BUILD_TIMEOUT,
) -> ModuleInfo:
    """``go mod download -json module@version``: fetches the module (zip and .mod) from the Go module proxy.

    A version the proxy refuses raises :class:`BinaryError` carrying go's exact error.
    """
    go = go or find_go()
    root = cache or cache_dir()
    work = root / "build"
    work.mkdir(parents=True, exist_ok=True)
    log_path = root / "logs" / "go-mod-download.log"
    out_path = work / f".mod-download-{os.getpid()}.json"
    try:
        with out_path.open("wb") as out:
            try:
                _run_logged(
                    [go, "mod", "download", "-json", f"{module}@{version}"],
                    cwd=work,
                    log_path=log_path,
                    what=f"{module}@{version}",
                    timeout=timeout,
                    stdout=out,
                )
                failed: BinaryError | None = None
            except BinaryError as exc:
                failed = exc
        text = out_path.read_text(errors="replace")
    finally:
        out_path.unlink(missing_ok=True)
    try:
        info = json.loads(text) if text.strip() else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    go_error = info.get("Error")
    if go_error or failed is not None:
        detail = str(go_error) if go_error else str(failed)
        raise BinaryError(
            f"the Go module proxy cannot serve {module}@{version}: go mod download said: {detail}\n"
            "choose another version (e.g. --kubernetes / K8SSTATE_KUBERNETES_VERSION) or set GOPROXY"
        )
    gomod = info.get("GoMod")
    if not isinstance(gomod, str) or not gomod:
        raise BinaryError(f"go mod download -json {module}@{version} returned no GoMod path: {text[:200]!r}")
    mod_dir = info.get("Dir")
    return ModuleInfo(
        module, version, Path(gomod), Path(mod_dir) if isinstance(mod_dir, str) and mod_dir else None
    )


# --- wrapper modules ---
_GOMOD_GO = re.compile(r"go\s+(\d+\.\d+(?:\.\d+)?)")


def _strip_comment(line: str) -> str:
    return line.split("//", 1)[0].strip()


def _parse_gomod(text: str, source: str) -> tuple[str, str, list[str], list[tuple[str, str, int]]]:
    """(module path, go version, godebug lines, replaces [(old module, new path-or-module, line)])."""
    module = go_version = ""
    godebug: list[str] = []
    replaces: list[tuple[str, str, int]] = []
    block: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        if block is not None:
            if line == ")":
                block = None
                continue
            directive, rest = block, line
        else:
            directive, _, rest = line.partition(" ")
            rest = rest.strip()
            if rest == "(":
                block = directive
                continue
        if directive == "module":
            module = rest.strip('"')
        elif directive == "go":
            m = _GOMOD_GO.fullmatch(f"go {rest}")
            if m is None:
                raise ParseError(source, lineno, "a go directive like 'go 1.26.0'", raw)
            go_version = m[1]
        elif directive == "godebug":
            godebug.append(rest)
        elif directive == "replace":
            left, arrow, right = rest.partition("=>")
            if not arrow:
                raise ParseError(source, lineno, "a replace directive 'OLD [VERSION] => NEW [VERSION]'", raw)
            old = left.split()
            new = right.split()
            if not old or not new:
                raise ParseError(source, lineno, "a replace directive 'OLD [VERSION] => NEW [VERSION]'", raw)
            replaces.append((old[0], new[0], lineno))
    if not module:
        raise ParseError(source, None, "a 'module' directive", None)
    if not go_version:
        raise ParseError(source, None, "a 'go' directive", None)
    return module, go_version, godebug, replaces


def staging_modules(gomod_text: str, source: str = "k8s.io/kubernetes go.mod") -> list[str]:
    """Modules that kubernetes' own go.mod replaces with ``./staging/src/...`` directories."""
    module, _, _, replaces = _parse_gomod(gomod_text, source)
    if module != "k8s.io/kubernetes":
        raise ParseError(source, None, "module k8s.io/kubernetes", module)
    staged = [old for old, new, _ in replaces if new.startswith("./staging/")]
    if not staged:
        raise ParseError(source, None, "replace directives 'k8s.io/X => ./staging/src/k8s.io/X'", None)
    return staged


KUBE_WRAPPER_MODULE = "k8sstate.local/kubebuild"


def kubernetes_wrapper_gomod(gomod_text: str, version: str, source: str = "k8s.io/kubernetes go.mod") -> str:
    """go.mod requiring ``k8s.io/kubernetes version`` that maps each staging module to ``v0.Y.Z``."""
    version = normalize_version(version, what="kubernetes version")
    _, go_version, godebug, _ = _parse_gomod(gomod_text, source)
    staged = staging_modules(gomod_text, source)
    sv = staging_version(version)
    lines = [
        f"// Generated by pytest-k8sstate: builds k8s.io/kubernetes {version} from the Go module proxy.",
        f"module {KUBE_WRAPPER_MODULE}",
        "",
        f"go {go_version}",
        "",
    ]
    lines += [f"godebug {d}" for d in godebug]
    if godebug:
        lines.append("")
    lines += [f"require k8s.io/kubernetes {version}", "", "replace ("]
    lines += [f"\t{m} => {m} {sv}" for m in staged]
    lines += [")", ""]
    return "\n".join(lines)


def _kubernetes_tools_go() -> str:
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in COMPONENT_BINARIES["kubernetes"])
    return f"//go:build tools\n\npackage kubebuild\n\nimport (\n{imports}\n)\n"


def etcd_wrapper_gomod(gomods: Mapping[str, str], version: str) -> str:
    """go.mod requiring each module of ``gomods`` (path → its go.mod text) at ``version``.

    Their ``=> ../x`` replaces (local directories of etcd's repo) become ``=> <same module> version``.
    """
    version = normalize_version(version, what="etcd version")
    go_version = "1.21"
    replaced: list[str] = []
    for mod_path, text in gomods.items():
        _, gv, _, replaces = _parse_gomod(text, f"{mod_path}@{version} go.mod")
        if tuple(int(x) for x in gv.split(".")) > tuple(int(x) for x in go_version.split(".")):
            go_version = gv
        for old, new, _ in replaces:
            if new.startswith("../") and old not in replaced:
                replaced.append(old)
    lines = [
        f"// Generated by pytest-k8sstate: builds etcd {version} from the Go module proxy.",
        "module k8sstate.local/etcdbuild",
        "",
        f"go {go_version}",
        "",
        "require (",
        *(f"\t{m} {version}" for m in gomods),
        ")",
        "",
    ]
    if replaced:
        lines += ["replace (", *(f"\t{m} => {m} {version}" for m in replaced), ")", ""]
    return "\n".join(lines)


ETCD_MAIN_GO = """// Generated by pytest-k8sstate: the etcd server command (as etcd's own server/main.go).
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""

ETCD_TOOLS_GO = """//go:build tools

package main

import _ "go.etcd.io/etcd/etcdctl/v3"
"""


def _prepare_wrapper(bdir: Path, files: Mapping[str, str], *, go: Path, log_path: Path, what: str) -> None:
    """Write the wrapper module and ``go mod tidy`` it, unless the same inputs were already tidied."""
    stamp = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()
    stamp_path = bdir / ".k8sstate-inputs"
    try:
        if stamp_path.read_text().strip() == stamp and (bdir / "go.sum").exists():
            return
    except OSError:
        pass
    bdir.mkdir(parents=True, exist_ok=True)
    for old in bdir.glob("*.go"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (bdir / name).write_text(text)
    (bdir / "go.sum").unlink(missing_ok=True)
    stamp_path.unlink(missing_ok=True)
    _run_logged([go, "mod", "tidy"], cwd=bdir, log_path=log_path, what=what)
    stamp_path.write_text(stamp + "\n")


# --- installer ---
class _Installer:
    def __init__(
        self,
        versions: Versions,
        cache: Path,
        progress: ProgressFn,
        *,
        download: bool,
        build: bool,
        download_timeout: float,
    ) -> None:
        self.versions = versions
        self.cache = cache
        self.progress = progress
        self.download = download
        self.build = build
        self.download_timeout = download_timeout
        self.downloads_failed: str | None = None  # after the first network failure, don't retry per binary
        self.go: Path | None = None
        self.paths: dict[str, Path] = {}
        self.sources: dict[str, str] = {}

    # one component (one version dir) under its lock
    def install(self, component: str, names: list[str]) -> None:
        version = self.versions.of(component)
        vdir = version_dir(component, version, self.cache)
        what = f"{component} {version}"
        missing = self._cache_hits(vdir, version, names, adopt=False)
        if not missing:
            return
        with _version_lock(vdir, what, self.progress):
            missing = self._cache_hits(vdir, version, missing, adopt=True)
            if not missing:
                return
            if self.download:
                missing = self._download(component, version, vdir, missing)
            if not missing:
                return
            if not self.build:
                raise BinaryError(
                    f"{', '.join(missing)} {version} not in the cache ({vdir}) and not downloadable "
                    f"({self.downloads_failed or 'downloads disabled'}); building was disabled (--no-build): "
                    f"run `k8sstate binaries install` without --no-build"
                )
            self._build(component, version, vdir, missing)

    def _cache_hits(self, vdir: Path, version: str, names: list[str], *, adopt: bool) -> list[str]:
        t0 = time.monotonic()
        manifest = _read_manifest(vdir)
        entries: dict[str, Any] = manifest["binaries"]
        missing: list[str] = []
        changed = False
        for name in names:
            path = vdir / name
            entry = entries.get(name)
            entry = entry if isinstance(entry, dict) else None
            if entry is None and not adopt:
                missing.append(name)  # maybe present without a manifest entry: adopt it under the lock
                continue
            if not _usable(path, entry):
                missing.append(name)
                continue
            if entry is None:  # e.g. built by hand into the cache layout: record it once
                st = path.stat()
                entries[name] = {
                    "source": "adopted",
                    "sha256": _sha256_file(path),
                    "size": st.st_size,
                    "installed_at": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds"),
                    "seconds": 0.0,
                }
                changed = True
            self.paths[name] = path
            self.sources[name] = "cache"
            self.progress(_line(name, version, f"cache hit ({time.monotonic() - t0:.1f}s)"))
            t0 = time.monotonic()
        if changed:
            _write_manifest(vdir, manifest)
        return missing

    def _record(self, vdir: Path, name: str, tmp: Path, source: str, detail: str, seconds: float) -> Path:
        """Atomically install ``tmp`` as ``vdir/name`` and record it in the manifest."""
        tmp.chmod(0o755)
        digest = _sha256_file(tmp)
        size = tmp.stat().st_size
        final = vdir / name
        os.replace(tmp, final)
        manifest = _read_manifest(vdir)
        manifest["binaries"][name] = {
            "source": source,
            "detail": detail,
            "sha256": digest,
            "size": size,
            "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
        }
        _write_manifest(vdir, manifest)
        self.paths[name] = final
        self.sources[name] = source
        return final

    def _tmp(self, vdir: Path, name: str) -> Path:
        return vdir / f".tmp-{name}-{os.getpid()}"

    # --- downloads
    def _download(self, component: str, version: str, vdir: Path, names: list[str]) -> list[str]:
        if self.downloads_failed is not None:
            return names
        arch = _goarch()
        missing = list(names)
        try:
            if component == "kubernetes":
                release = _mirror(KUBERNETES_RELEASE_URL_ENV, "https://dl.k8s.io/release")
                for name in names:
                    t0 = time.monotonic()
                    url = f"{release}/{version}/bin/linux/{arch}/{name}"
                    want = _checksum_from(
                        _fetch_text(url + ".sha256", self.download_timeout), None, url + ".sha256"
                    )
                    self.progress(_line(name, version, f"downloading {url}…"))
                    tmp = self._tmp(vdir, name)
                    try:
                        _verify(url, _fetch_file(url, tmp, self.download_timeout), want)
                        self._record(vdir, name, tmp, "download", url, time.monotonic() - t0)
                    finally:
                        tmp.unlink(missing_ok=True)
                    missing.remove(name)
                    self.progress(_line(name, version, f"downloaded ({time.monotonic() - t0:.1f}s)"))
            elif component == "etcd":
                self._download_etcd(version, vdir, names, arch)
                missing = []
            elif component == "kind":
                t0 = time.monotonic()
                asset = f"kind-linux-{arch}"
                github = _mirror(GITHUB_URL_ENV, "https://github.com")
                url = f"{github}/kubernetes-sigs/kind/releases/download/{version}/{asset}"
                want = _checksum_from(_fetch_text(url + ".sha256sum", self.download_timeout), asset, url)
                self.progress(_line("kind", version, f"downloading {url}…"))
                tmp = self._tmp(vdir, "kind")
                try:
                    _verify(url, _fetch_file(url, tmp, self.download_timeout), want)
                    self._record(vdir, "kind", tmp, "download", url, time.monotonic() - t0)
                finally:
                    tmp.unlink(missing_ok=True)
                missing = []
                self.progress(_line("kind", version, f"downloaded ({time.monotonic() - t0:.1f}s)"))
            else:
                # kwok publishes no checksums for its release binaries; coredns and crictl (node images
                # only) are not downloaded either: build them (go checks go.sum/sumdb)
                return missing
        except _DownloadUnavailable as exc:
            self.downloads_failed = str(exc)
            then = "building from the Go module proxy" if self.build else "and building is disabled"
            self.progress(_line(missing[0], version, f"download unavailable ({exc}), {then}"))
        return missing

    def _download_etcd(self, version: str, vdir: Path, names: list[str], arch: str) -> None:
        t0 = time.monotonic()
        stem = f"etcd-{version}-linux-{arch}"
        github = _mirror(GITHUB_URL_ENV, "https://github.com")
        base = f"{github}/etcd-io/etcd/releases/download/{version}"
        url = f"{base}/{stem}.tar.gz"
        want = _checksum_from(_fetch_text(f"{base}/SHA256SUMS", self.download_timeout), f"{stem}.tar.gz", url)
        self.progress(_line("etcd", version, f"downloading {url}…"))
        tarball = vdir / f".tmp-{stem}-{os.getpid()}.tar.gz"
        try:
            _verify(url, _fetch_file(url, tarball, self.download_timeout), want)
            with tarfile.open(tarball, "r:gz") as tar:
                for name in names:
                    try:
                        member = tar.getmember(f"{stem}/{name}")
                    except KeyError:
                        raise _DownloadUnavailable(f"{url} has no {stem}/{name}") from None
                    src = tar.extractfile(member)
                    if src is None:
                        raise _DownloadUnavailable(f"{url}: {stem}/{name} is not a file")
                    tmp = self._tmp(vdir, name)
                    try:
                        with src, tmp.open("wb") as out:
                            shutil.copyfileobj(src, out)
                        self._record(vdir, name, tmp, "download", url, time.monotonic() - t0)
                    finally:
                        tmp.unlink(missing_ok=True)
                    self.progress(_line(name, version, f"downloaded ({time.monotonic() - t0:.1f}s)"))
        except (tarfile.TarError, OSError) as exc:
            raise _DownloadUnavailable(f"{url}: {exc}") from exc
        finally:
            tarball.unlink(missing_ok=True)

    # --- builds
    def _build(self, component: str, version: str, vdir: Path, names: list[str]) -> None:
        if self.go is None:
            self.go = find_go()
        log_path = _log_path(component, version, self.cache)
        bdir = _build_dir(component, version, self.cache)
        if component == "kubernetes":
            self._build_kubernetes(version, vdir, bdir, names, log_path)
        elif component == "etcd":
            self._build_etcd(version, vdir, bdir, names, log_path)
        elif component == "crictl":
            self._build_crictl(version, vdir, bdir, log_path)
        else:
            pkg = {
                "kwok": "sigs.k8s.io/kwok/cmd/kwok",
                "kind": "sigs.k8s.io/kind",
                "coredns": "github.com/coredns/coredns",
            }[component]
            name = names[0]
            self._timed(
                name,
                version,
                log_path,
                lambda tmp: self._go_install(f"{pkg}@{version}", name, tmp, vdir, log_path, bdir.parent),
                vdir,
                f"go install {pkg}@{version}",
            )

    def _timed(
        self, name: str, version: str, log_path: Path, make: Callable[[Path], None], vdir: Path, detail: str
    ) -> None:
        t0 = time.monotonic()
        self.progress(_line(name, version, f"building from the Go module proxy… (log: {log_path})"))
        tmp = self._tmp(vdir, name)
        try:
            make(tmp)
            if not tmp.is_file():
                raise BinaryError(f"{name} {version}: the build produced no binary at {tmp}; see {log_path}")
            self._record(vdir, name, tmp, "build", detail, time.monotonic() - t0)
        finally:
            tmp.unlink(missing_ok=True)
        self.progress(
            _line(name, version, f"building from the Go module proxy… done ({time.monotonic() - t0:.1f}s)")
        )

    def _go_install(self, spec: str, name: str, tmp: Path, vdir: Path, log_path: Path, cwd: Path) -> None:
        assert self.go is not None
        gobin = vdir / f".tmp-gobin-{os.getpid()}"
        shutil.rmtree(gobin, ignore_errors=True)
        gobin.mkdir(parents=True)
        cwd.mkdir(parents=True, exist_ok=True)
        env = _go_env()
        env["GOBIN"] = str(gobin)
        try:
            _run_logged(
                [self.go, "install", "-trimpath", "-ldflags=-s -w", spec],
                cwd=cwd,
                log_path=log_path,
                what=f"{name}: go install {spec}",
                env=env,
            )
            os.replace(gobin / name, tmp)
        except FileNotFoundError as exc:
            raise BinaryError(
                f"{name}: go install {spec} produced no {name} in {gobin}; see {log_path}"
            ) from exc
        finally:
            shutil.rmtree(gobin, ignore_errors=True)

    def _build_kubernetes(
        self, version: str, vdir: Path, bdir: Path, names: list[str], log_path: Path
    ) -> None:
        assert self.go is not None
        go = self.go
        t0 = time.monotonic()
        what = f"kubernetes {version}"
        self.progress(f"[k8sstate] {what}: preparing the wrapper module (go mod download + tidy)…")
        info = module_info("k8s.io/kubernetes", version, go=go, cache=self.cache)
        source = f"{info.gomod} (k8s.io/kubernetes@{version} go.mod)"
        gomod = kubernetes_wrapper_gomod(info.gomod.read_text(errors="replace"), version, source)
        _prepare_wrapper(
            bdir, {"go.mod": gomod, "tools.go": _kubernetes_tools_go()}, go=go, log_path=log_path, what=what
        )
        self.progress(f"[k8sstate] {what}: wrapper module ready ({time.monotonic() - t0:.1f}s)")
        major, minor, _, _ = _version_parts(version)
        xs = {
            "k8s.io/component-base/version": ("gitVersion", "gitMajor", "gitMinor", "gitTreeState"),
            "k8s.io/client-go/pkg/version": ("gitVersion", "gitMajor", "gitMinor"),
        }
        values = {
            "gitVersion": version,
            "gitMajor": str(major),
            "gitMinor": str(minor),
            "gitTreeState": "clean",
        }
        ldflags = " ".join(["-s", "-w"] + [f"-X {pkg}.{v}={values[v]}" for pkg, vs in xs.items() for v in vs])
        for name in names:
            pkg = f"k8s.io/kubernetes/cmd/{name}"

            def make(tmp: Path, pkg: str = pkg, name: str = name) -> None:
                _run_logged(
                    [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", tmp, pkg],
                    cwd=bdir,
                    log_path=log_path,
                    what=f"{name} {version}",
                )

            self._timed(name, version, log_path, make, vdir, f"go build {pkg} (k8s.io/kubernetes {version})")

    def _build_etcd(self, version: str, vdir: Path, bdir: Path, names: list[str], log_path: Path) -> None:
        assert self.go is not None
        go = self.go
        what = f"etcd {version}"
        self.progress(f"[k8sstate] {what}: preparing the wrapper module (go mod download + tidy)…")
        mods = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3")
        texts = {
            m: module_info(m, version, go=go, cache=self.cache).gomod.read_text(errors="replace")
            for m in mods
        }
        files = {
            "go.mod": etcd_wrapper_gomod(texts, version),
            "main.go": ETCD_MAIN_GO,
            "tools.go": ETCD_TOOLS_GO,
        }
        _prepare_wrapper(bdir, files, go=go, log_path=log_path, what=what)
        pkgs = {"etcd": ".", "etcdctl": "go.etcd.io/etcd/etcdctl/v3"}
        for name in names:
            self._go_build(name, version, pkgs[name], vdir, bdir, log_path, f"etcd {version}")

    def _go_build(
        self, name: str, version: str, pkg: str, vdir: Path, bdir: Path, log_path: Path, origin: str
    ) -> None:
        """``go build -trimpath -ldflags='-s -w' PKG`` in wrapper module ``bdir``, installed as ``name``."""
        assert self.go is not None
        go = self.go

        def make(tmp: Path) -> None:
            _run_logged(
                [go, "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, pkg],
                cwd=bdir,
                log_path=log_path,
                what=f"{name} {version}",
            )

        self._timed(name, version, log_path, make, vdir, f"go build {pkg} ({origin})")

    def _build_crictl(self, version: str, vdir: Path, bdir: Path, log_path: Path) -> None:
        """crictl through a wrapper module: ``go install sigs.k8s.io/cri-tools/cmd/crictl@V`` fails here
        because the proxy answers 403 (not 404) for the candidate module paths below the module root."""
        assert self.go is not None
        files = {
            "go.mod": f"module k8sstate/crictl\n\ngo 1.24\n\nrequire sigs.k8s.io/cri-tools {version}\n",
            "tools.go": 'package main\n\nimport _ "sigs.k8s.io/cri-tools/cmd/crictl"\n',
        }
        self.progress(f"[k8sstate] crictl {version}: preparing the wrapper module (go mod tidy)…")
        _prepare_wrapper(bdir, files, go=self.go, log_path=log_path, what=f"crictl {version}")
        self._go_build(
            "crictl",
            version,
            "sigs.k8s.io/cri-tools/cmd/crictl",
            vdir,
            bdir,
            log_path,
            f"cri-tools {version}",
        )


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
    ``progress``: receives one line per binary (default: stderr).
    """
    t0 = time.monotonic()
    wanted = _expand_components(components)
    v = versions or Versions.resolve()
    root = cache or cache_dir()
    inst = _Installer(
        v,
        root,
        progress or _stderr_progress,
        download=download,
        build=build,
        download_timeout=download_timeout,
    )
    for component in _INSTALL_ORDER:
        names = [n for n in wanted if BINARY_COMPONENT[n] == component]
        if names:
            inst.install(component, names)
    paths = {n: inst.paths[n] for n in wanted}
    sources = {n: inst.sources[n] for n in wanted}
    return BinarySet(versions=v, paths=paths, sources=sources, seconds=time.monotonic() - t0)


def list_cached(cache: Path | None = None) -> list[tuple[str, str, str, Path, Mapping[str, Any]]]:
    """(binary, component, version, path, manifest entry) of every binary in the cache."""
    root = (cache or cache_dir()) / "bin"
    found: list[tuple[str, str, str, Path, Mapping[str, Any]]] = []
    if not root.is_dir():
        return found
    for vdir in sorted(p for p in root.iterdir() if p.is_dir()):
        component, sep, version = vdir.name.partition("-v")
        if not sep or component not in COMPONENT_BINARIES:
            continue
        entries = _read_manifest(vdir)["binaries"]
        for name in COMPONENT_BINARIES[component]:
            path = vdir / name
            entry = entries.get(name)
            if _usable(path, entry if isinstance(entry, dict) else None):
                found.append((name, component, "v" + version, path, entry if isinstance(entry, dict) else {}))
    return found


# --- CLI ---
def _version_arg(value: str) -> str:
    try:
        return normalize_version(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_version_args(p: argparse.ArgumentParser) -> None:
    for comp in COMPONENT_BINARIES:
        p.add_argument(
            f"--{comp}",
            type=_version_arg,
            default=None,
            metavar="X.Y.Z",
            help=f"{comp} version (default: ${Versions.env_var(comp)} or {getattr(Versions(), comp)})",
        )


def _versions_from(args: argparse.Namespace) -> Versions:
    return Versions.resolve(**{c: getattr(args, c, None) for c in COMPONENT_BINARIES})


def _fail(exc: Exception) -> int:
    print(f"k8sstate: error: {exc}", file=sys.stderr)
    return 2 if isinstance(exc, ConfigError) else 1


def _cmd_install(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        result = ensure_binaries(
            args.components,
            _versions_from(args),
            progress=lambda line: print(line, flush=True),
            download=not args.no_download,
            build=not args.no_build,
        )
        if "kwok" in result.paths:  # the local provider's kwok stages, from the same module
            kwok_stages(_versions_from(args).kwok)
    except (BinaryError, ConfigError) as exc:
        print(f"[k8sstate] failed after {time.monotonic() - t0:.1f}s", flush=True)
        return _fail(exc)
    for name, path in result.paths.items():
        print(f"{name:<24} {path}")
    print(f"[k8sstate] {len(result.paths)} binaries ready in {time.monotonic() - t0:.1f}s")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        pinned = _versions_from(args)
    except ConfigError as exc:
        return _fail(exc)
    root = cache_dir()
    print(f"cache: {root}")
    rows = list_cached(root)
    have = {(name, version) for name, _, version, _, _ in rows}
    for name, component, version, path, entry in rows:
        mark = "pinned" if pinned.of(component) == version else ""
        size = path.stat().st_size / 1e6
        print(f"{name:<24} {version:<10} {entry.get('source', '?'):<9} {size:7.1f} MB {mark:<7} {path}")
    for name in DEFAULT_BINARIES:
        version = pinned.of(BINARY_COMPONENT[name])
        if (name, version) not in have:
            print(f"{name:<24} {version:<10} {'missing':<9} {'':>10} pinned  (k8sstate binaries install)")
    return 0


def _cmd_path(args: argparse.Namespace) -> int:
    try:
        found = find_binary(args.name, _versions_from(args))
    except ConfigError as exc:
        return _fail(exc)
    if found is None:
        print(
            f"k8sstate: error: {args.name} is not in the cache ({cache_dir()}); "
            f"run `k8sstate binaries install --components {args.name}`",
            file=sys.stderr,
        )
        return 1
    print(found)
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``k8sstate binaries install|list|path``; each sub-command sets ``func(args) -> int``."""
    p = subparsers.add_parser(
        "binaries",
        help="pinned Kubernetes, etcd, kwok and kind binaries (install, list, path)",
        description="Install (cache → official download → build via the Go module proxy) or locate binaries.",
    )
    sub = p.add_subparsers(dest="binaries_command", metavar="COMMAND", required=True)

    inst = sub.add_parser("install", help="install the pinned binaries (on demand it happens automatically)")
    _add_version_args(inst)
    inst.add_argument(
        "--components",
        action="append",
        default=None,
        metavar="NAMES",
        help=f"comma-separated binaries or groups ({', '.join(COMPONENT_BINARIES)}, all); "
        f"default: {', '.join(DEFAULT_BINARIES)}",
    )
    inst.add_argument(
        "--no-build", action="store_true", help="fail instead of building from the Go module proxy"
    )
    inst.add_argument("--no-download", action="store_true", help="skip the official downloads")
    inst.set_defaults(func=_cmd_install)

    lst = sub.add_parser("list", help="list cached binaries and which pinned ones are missing")
    _add_version_args(lst)
    lst.set_defaults(func=_cmd_list)

    path = sub.add_parser("path", help="print the cached path of a binary (exit 1 when not installed)")
    path.add_argument("name", choices=ALL_BINARIES, metavar="NAME", help=", ".join(ALL_BINARIES))
    _add_version_args(path)
    path.set_defaults(func=_cmd_path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_k8sstate.binaries.install install`` (the same as ``k8sstate binaries install``)."""
    parser = argparse.ArgumentParser(prog="k8sstate")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["binaries", *(sys.argv[1:] if argv is None else argv)])
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
