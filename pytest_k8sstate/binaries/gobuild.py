"""Builds from the Go module proxy: finding ``go``, running it logged with a timeout, each component's recipe.

``go build`` in a generated wrapper module (:mod:`pytest_k8sstate.binaries.gomod`) for Kubernetes, etcd and
crictl, ``go install pkg@version`` for kwok, kind and CoreDNS. Go's own build and module caches make a rebuild
after the first one fast. kwok's stage definitions (:mod:`.kwokstages`) come through the same proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pytest_k8sstate.binaries.cache import build_dir, log_path, no_space_error, temp_path
from pytest_k8sstate.binaries.flannel import FLANNEL_MODULE, flannel_ldflags, flannel_wrapper_files
from pytest_k8sstate.binaries.gomod import (
    AGNHOST_PACKAGE,
    ETCD_MAIN_GO,
    ETCD_TOOLS_GO,
    agnhost_wrapper_files,
    crictl_wrapper_files,
    etcd_wrapper_gomod,
    kubernetes_ldflags,
    kubernetes_tools_go,
    kubernetes_wrapper_gomod,
)
from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.util.files import cache_dir
from pytest_k8sstate.util.procs import kill_group

__all__ = [
    "BUILD_TIMEOUT",
    "GO_ENV",
    "GO_FALLBACKS",
    "ONE_GO_BUILD",
    "ModuleInfo",
    "build_component",
    "find_go",
    "go_env",
    "module_info",
    "run_logged",
]

GO_ENV = "K8SSTATE_GO"
GO_FALLBACKS: tuple[str, ...] = (
    "/usr/local/go/bin/go",
    "~/go/bin/go",
    "/usr/lib/go/bin/go",
    "~/sdk/go/bin/go",
)
#: the missing Kubernetes binaries are built by one ``go build -o DIR/ PKG…`` (measured:
#: bench/bench_binaries_build.py, docs/install.md), not one ``go build`` each
ONE_GO_BUILD = True
BUILD_TIMEOUT = 3600.0  # any single go command (a cold kube-apiserver build takes minutes on 2 cores)
_TAIL_LINES = 25

# built with `go install PKG@VERSION`
_GO_INSTALL_PACKAGES = {
    "kwok": "sigs.k8s.io/kwok/cmd/kwok",
    "kind": "sigs.k8s.io/kind",
    "coredns": "github.com/coredns/coredns",
}

#: (binary name, progress text)
Say = Callable[[str, str], None]
#: (binary name, built file to move into place, how it was built, seconds spent)
Installed = Callable[[str, Path, str, float], None]


# --- the go command ---
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


def go_env() -> dict[str, str]:
    """The environment of every go command: the caller's, without a go.work or a cross-compile target."""
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


def run_logged(
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
                env=dict(env) if env is not None else go_env(),
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
            kill_group(proc)
            logf.flush()
            raise BinaryError(
                f"{what}: `{cmd}` did not finish within {timeout:g}s; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            ) from None
        except BaseException:
            kill_group(proc)
            raise
    if rc != 0:
        tail = _tail(log_path)
        if "no space left on device" in tail.lower():  # go's and coreutils' ENOSPC text
            raise BinaryError(f"{what}: {no_space_error(cwd)}; see {log_path}")
        raise BinaryError(f"{what}: `{cmd}` exited {rc}; last lines of {log_path}:\n{tail}")


# --- modules from the proxy ---
@dataclass(frozen=True)
class ModuleInfo:
    path: str
    version: str
    gomod: Path
    dir: Path | None


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
    failed: BinaryError | None = None
    with tempfile.TemporaryFile() as out:
        try:
            run_logged(
                [go, "mod", "download", "-json", f"{module}@{version}"],
                cwd=work,
                log_path=root / "logs" / "go-mod-download.log",
                what=f"{module}@{version}",
                timeout=timeout,
                stdout=out,
            )
        except BinaryError as exc:
            failed = exc
        out.seek(0)
        text = out.read().decode(errors="replace")
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


# --- builds ---
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
        (bdir / name).parent.mkdir(parents=True, exist_ok=True)
        (bdir / name).write_text(text)
    (bdir / "go.sum").unlink(missing_ok=True)
    stamp_path.unlink(missing_ok=True)
    run_logged([go, "mod", "tidy"], cwd=bdir, log_path=log_path, what=what)
    stamp_path.write_text(stamp + "\n")


@dataclass(frozen=True)
class _Build:
    """One component version built into ``vdir`` (the caller holds its lock)."""

    go: Path
    component: str
    version: str
    vdir: Path
    cache: Path
    say: Say
    installed: Installed

    @property
    def bdir(self) -> Path:
        return build_dir(self.component, self.version, self.cache)

    @property
    def log(self) -> Path:
        return log_path(self.component, self.version, self.cache)

    def timed(self, name: str, detail: str, make: Callable[[Path], None]) -> None:
        """``make(tmp)`` builds ``name`` into ``tmp``; it is then handed to ``installed``."""
        t0 = time.monotonic()
        self.say(name, f"building from the Go module proxy… (log: {self.log})")
        tmp = temp_path(self.vdir, name)
        try:
            make(tmp)
            if not tmp.is_file():
                raise BinaryError(
                    f"{name} {self.version}: the build produced no binary at {tmp}; see {self.log}"
                )
            self.installed(name, tmp, detail, time.monotonic() - t0)
        finally:
            tmp.unlink(missing_ok=True)
        self.say(name, f"building from the Go module proxy… done ({time.monotonic() - t0:.1f}s)")

    def go_install(self, name: str, pkg: str) -> None:
        """``go install -trimpath PKG@VERSION`` into a private GOBIN."""
        spec = f"{pkg}@{self.version}"

        def make(tmp: Path) -> None:
            gobin = self.vdir / f".tmp-gobin-{os.getpid()}"
            shutil.rmtree(gobin, ignore_errors=True)
            gobin.mkdir(parents=True)
            cwd = self.bdir.parent
            cwd.mkdir(parents=True, exist_ok=True)
            env = go_env()
            env["GOBIN"] = str(gobin)
            try:
                run_logged(
                    [self.go, "install", "-trimpath", "-ldflags=-s -w", spec],
                    cwd=cwd,
                    log_path=self.log,
                    what=f"{name}: go install {spec}",
                    env=env,
                )
                os.replace(gobin / name, tmp)
            except FileNotFoundError as exc:
                raise BinaryError(
                    f"{name}: go install {spec} produced no {name} in {gobin}; see {self.log}"
                ) from exc
            finally:
                shutil.rmtree(gobin, ignore_errors=True)

        self.timed(name, f"go install {spec}", make)

    def prepare(self, files: Mapping[str, str]) -> None:
        """Write and tidy the wrapper module (skipped when the same files were tidied before)."""
        what = f"{self.component} {self.version}"
        _prepare_wrapper(self.bdir, files, go=self.go, log_path=self.log, what=what)

    def go_build(
        self, name: str, pkg: str, origin: str, ldflags: str = "-s -w", env: Mapping[str, str] | None = None
    ) -> None:
        """``go build -trimpath PKG`` in the wrapper module, installed as ``name`` (``env`` added to
        :func:`go_env`)."""

        def make(tmp: Path) -> None:
            run_logged(
                [self.go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", tmp, pkg],
                cwd=self.bdir,
                log_path=self.log,
                what=f"{name} {self.version}",
                env={**go_env(), **(env or {})},
            )

        self.timed(name, f"go build {pkg} ({origin})", make)

    def kubernetes(self, names: Sequence[str]) -> None:
        t0 = time.monotonic()
        version = self.version
        self.say("kubernetes", "preparing the wrapper module (go mod download + tidy)…")
        info = module_info("k8s.io/kubernetes", version, go=self.go, cache=self.cache)
        source = f"{info.gomod} (k8s.io/kubernetes@{version} go.mod)"
        gomod = kubernetes_wrapper_gomod(info.gomod.read_text(errors="replace"), version, source)
        self.prepare({"go.mod": gomod, "tools.go": kubernetes_tools_go()})
        self.say("kubernetes", f"wrapper module ready ({time.monotonic() - t0:.1f}s)")
        ldflags = kubernetes_ldflags(version)
        origin = f"k8s.io/kubernetes {version}"
        if len(names) > 1 and ONE_GO_BUILD:
            self.go_build_many(names, [f"k8s.io/kubernetes/cmd/{n}" for n in names], origin, ldflags)
            return
        for name in names:
            self.go_build(name, f"k8s.io/kubernetes/cmd/{name}", origin, ldflags)

    def go_build_many(self, names: Sequence[str], pkgs: Sequence[str], origin: str, ldflags: str) -> None:
        """One ``go build -o DIR/ PKG…`` for several binaries (go schedules every package of all of them
        at once and links them in parallel); each is installed when the command has finished."""
        t0 = time.monotonic()
        label = ", ".join(names)
        self.say(self.component, f"building {label} in one go build… (log: {self.log})")
        out = self.vdir / f".tmp-build-{os.getpid()}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        try:
            run_logged(
                [self.go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{out}{os.sep}", *pkgs],
                cwd=self.bdir,
                log_path=self.log,
                what=f"{label} {self.version}",
            )
            seconds = time.monotonic() - t0
            for name, pkg in zip(names, pkgs, strict=True):
                if not (out / name).is_file():
                    raise BinaryError(
                        f"{name} {self.version}: the build produced no binary at {out / name}; see {self.log}"
                    )
                self.installed(
                    name, out / name, f"go build {pkg} ({origin}; one go build of {label})", seconds
                )
        finally:
            shutil.rmtree(out, ignore_errors=True)
        self.say(self.component, f"building {label} in one go build… done ({time.monotonic() - t0:.1f}s)")

    def etcd(self, names: Sequence[str]) -> None:
        mods = ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/etcdctl/v3")
        self.say("etcd", "preparing the wrapper module (go mod download + tidy)…")
        texts = {
            m: module_info(m, self.version, go=self.go, cache=self.cache).gomod.read_text(errors="replace")
            for m in mods
        }
        files = {
            "go.mod": etcd_wrapper_gomod(texts, self.version),
            "main.go": ETCD_MAIN_GO,
            "tools.go": ETCD_TOOLS_GO,
        }
        self.prepare(files)
        pkgs = {"etcd": ".", "etcdctl": "go.etcd.io/etcd/etcdctl/v3"}
        for name in names:
            self.go_build(name, pkgs[name], f"etcd {self.version}")

    def agnhost(self) -> None:
        """agnhost from the k8s.io/kubernetes module, static (``CGO_ENABLED=0``, as upstream's image build):
        it runs FROM scratch in the workload image and is copied into kind nodes."""
        self.say("agnhost", "preparing the wrapper module (go mod download + tidy)…")
        info = module_info("k8s.io/kubernetes", self.version, go=self.go, cache=self.cache)
        source = f"{info.gomod} (k8s.io/kubernetes@{self.version} go.mod)"
        self.prepare(agnhost_wrapper_files(info.gomod.read_text(errors="replace"), self.version, source))
        origin = f"k8s.io/kubernetes {self.version}, CGO_ENABLED=0"
        self.go_build("agnhost", AGNHOST_PACKAGE, origin, env={"CGO_ENABLED": "0"})

    def flannel(self) -> None:
        """flanneld with a local stand-in for the refused Tencent VPC SDK (:mod:`.flannel`), cgo, static."""
        self.say("flanneld", "preparing the wrapper module (go mod tidy)…")
        self.prepare(flannel_wrapper_files(self.version))
        origin = f"flannel {self.version}, CGO_ENABLED=1, static; tencent-vpc SDK replaced by a stub"
        self.go_build(
            "flanneld", FLANNEL_MODULE, origin, flannel_ldflags(self.version), env={"CGO_ENABLED": "1"}
        )

    def crictl(self) -> None:
        self.say("crictl", "preparing the wrapper module (go mod tidy)…")
        self.prepare(crictl_wrapper_files(self.version))
        self.go_build("crictl", "sigs.k8s.io/cri-tools/cmd/crictl", f"cri-tools {self.version}")


def build_component(
    component: str,
    version: str,
    names: Sequence[str],
    vdir: Path,
    *,
    go: Path,
    cache: Path,
    say: Say,
    installed: Installed,
) -> None:
    """Build ``names`` of ``component`` at ``version`` from the Go module proxy; each binary is handed to
    ``installed`` as soon as it is built. Raises :class:`BinaryError` with the tail of the build log."""
    build = _Build(go, component, version, vdir, cache, say, installed)
    if component == "kubernetes":
        build.kubernetes(names)
    elif component == "etcd":
        build.etcd(names)
    elif component == "crictl":
        build.crictl()
    elif component == "agnhost":
        build.agnhost()
    elif component == "flannel":
        build.flannel()
    else:
        build.go_install(names[0], _GO_INSTALL_PACKAGES[component])
