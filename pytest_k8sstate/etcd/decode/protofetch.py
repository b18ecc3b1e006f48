"""The ``generated.proto`` files (and the Go sources beside them) of the Kubernetes API modules.

Sources, in order: the Go module cache (``$GOMODCACHE``, else ``$GOPATH/pkg/mod``, else ``~/go/pkg/mod``) —
an unpacked ``<module>@<version>/`` directory or its downloaded ``cache/download/.../@v/<version>.zip`` —
then the Go module proxy over plain HTTPS (``$GOPROXY``, default ``https://proxy.golang.org``;
``<proxy>/<module>/@v/<version>.zip``; ``direct`` entries are skipped, ``off`` stops). No Go toolchain is
needed. A downloaded zip is kept under ``<cache>/decode/modules/``. Failing every source raises one
:class:`~pytest_k8sstate.errors.BinaryError` that names each place tried and the fix.

Only what the descriptor generator reads is returned: every ``generated.proto`` and, in the directories
that hold one, the non-test ``.go`` files (JSON tags, pointer fields, ``+groupName``).
"""

from __future__ import annotations

import contextlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.util.files import atomic_write_bytes, cache_dir

__all__ = ["API_MODULES", "MAX_ZIP_BYTES", "gomodcache", "module_files", "proxy_list"]

#: The modules whose generated.proto files describe every built-in type.
API_MODULES = (
    "k8s.io/apimachinery",
    "k8s.io/api",
    "k8s.io/apiextensions-apiserver",
    "k8s.io/kube-aggregator",
)
MAX_ZIP_BYTES = 256 << 20
_TIMEOUT = 60.0


def gomodcache(env: dict[str, str] | None = None) -> Path:
    environ = os.environ if env is None else env
    explicit = environ.get("GOMODCACHE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    gopath = environ.get("GOPATH", "").strip()
    if gopath:
        return Path(gopath.split(os.pathsep)[0]).expanduser() / "pkg" / "mod"
    return Path.home() / "go" / "pkg" / "mod"


def _escape(module: str) -> str:
    """Go's module path escaping: an upper-case letter becomes ``!`` + its lower case."""
    return "".join("!" + c.lower() if c.isupper() else c for c in module)


def proxy_list(env: dict[str, str] | None = None) -> list[str]:
    """The HTTP(S) proxies of ``$GOPROXY`` in order (``direct`` skipped; nothing after ``off``)."""
    environ = os.environ if env is None else env
    raw = environ.get("GOPROXY", "").strip() or "https://proxy.golang.org,direct"
    out: list[str] = []
    for item in raw.replace("|", ",").split(","):
        item = item.strip()
        if item == "off":
            break
        if item.startswith(("https://", "http://")):
            out.append(item.rstrip("/"))
    return out


def _wanted(names: list[str]) -> list[str]:
    dirs = {n.rsplit("/", 1)[0] for n in names if n.endswith("/generated.proto")}
    return [
        n
        for n in names
        if n.endswith("/generated.proto")
        or (
            n.endswith(".go")
            and not n.endswith(("_test.go", ".pb.go", "_generated.go"))
            and not n.rsplit("/", 1)[-1].startswith("zz_generated")
            and n.rsplit("/", 1)[0] in dirs
        )
    ]


def _from_dir(root: Path) -> dict[str, bytes]:
    names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".proto", ".go")]
    return {n: (root / n).read_bytes() for n in _wanted(names)}


def _from_zip(data: bytes, prefix: str, source: str) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n[len(prefix) :] for n in z.namelist() if n.startswith(prefix)]
            return {n: z.read(prefix + n) for n in _wanted(names)}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BinaryError(f"{source}: not a readable module zip ({exc}); delete it and retry") from None


def _download(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "pytest-k8sstate"})
    with contextlib.closing(urllib.request.urlopen(req, timeout=_TIMEOUT)) as resp:
        data: bytes = resp.read(MAX_ZIP_BYTES + 1)
    if len(data) > MAX_ZIP_BYTES:
        raise OSError(f"larger than {MAX_ZIP_BYTES >> 20} MiB")
    return data


def module_files(
    module: str, version: str, env: dict[str, str] | None = None
) -> tuple[dict[str, bytes], str]:
    """``(relative path → content, where it came from)`` of ``module@version`` (see module doc)."""
    prefix = f"{module}@{version}/"
    tried: list[str] = []
    modcache = gomodcache(env)
    unpacked = modcache / f"{_escape(module)}@{version}"
    if (unpacked / "go.mod").is_file():
        files = _from_dir(unpacked)
        if files:
            return files, str(unpacked)
    tried.append(str(unpacked))
    for zpath in (
        modcache / "cache" / "download" / _escape(module) / "@v" / f"{version}.zip",
        cache_dir(env) / "decode" / "modules" / f"{_escape(module).replace('/', '+')}@{version}.zip",
    ):
        if zpath.is_file():
            return _from_zip(zpath.read_bytes(), prefix, str(zpath)), str(zpath)
        tried.append(str(zpath))
    saved = cache_dir(env) / "decode" / "modules" / f"{_escape(module).replace('/', '+')}@{version}.zip"
    for proxy in proxy_list(env):
        url = f"{proxy}/{_escape(module)}/@v/{version}.zip"
        try:
            data = _download(url)
        except urllib.error.HTTPError as exc:
            tried.append(f"{url} (HTTP {exc.code})")
            continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            tried.append(f"{url} ({reason})")
            continue
        files = _from_zip(data, prefix, url)
        with contextlib.suppress(OSError):  # a read-only cache only costs a download next time
            atomic_write_bytes(saved, data)
        return files, url
    raise BinaryError(
        f"cannot read the .proto files of {module} {version} for full etcd value decoding: tried "
        + "; ".join(tried)
        + ". Fix: make the Go module proxy reachable (or set GOPROXY to a mirror), or put the module in the "
        "Go module cache (go mod download " + f"{module}@{version}); values are decoded with field numbers "
        "until then"
    )
