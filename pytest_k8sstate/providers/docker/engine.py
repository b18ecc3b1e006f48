"""A project-owned Docker engine for machines where none runs (CI sandboxes, this test machine).

Opt-in: the ``kind`` and ``minikube`` providers use whatever ``DOCKER_HOST`` (or the default socket)
points at; only when asked (``scripts/docker-setup.sh start``, or
``python -m pytest_k8sstate.providers.docker.engine start``) does the project start its own ``dockerd``,
and then everything it owns is separate from a system docker:

* its own network namespace :data:`NETNS` (``k8ss-docker``): the bridges (``docker0``, kind's ``kind``
  network), their addresses and routes and docker's NAT/filter rules all live there. The root namespace's
  netfilter rules, routes and addresses are never touched (the project's network rule). Docker's iptables
  management stays *on* -- inside that namespace -- because kind's user-defined network and docker's
  embedded DNS need it;
* its own ``--data-root`` (:data:`DATA_ROOT`), ``--exec-root``, pidfile and socket (:data:`SOCKET`); the
  ``containerd`` it starts is managed by it (state under the exec-root);
* ``dockerd`` runs with only its *network* namespace switched (``nsenter --net``): mounts, cgroups and the
  filesystem are the host's, like a normal dockerd;
* on machines whose capability bounding set lacks capabilities (here: ``CAP_SYS_RESOURCE``) the default
  runtime is ``scripts/oci-runtime-wrapper`` (registered as ``k8sstate-runc``), which drops them from the
  container spec before calling runc, so ``docker run --privileged`` works. See
  ``docs/kind-on-restricted-machines.md``.

Consequence of the namespace: container IPs and ports published on ``127.0.0.1`` are reachable only from
inside ``k8ss-docker``; the kind provider reaches the apiserver and etcd through
:mod:`pytest_k8sstate.providers.portforward` (listening on the root namespace's loopback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import run_command

__all__ = [
    "DATA_ROOT",
    "NETNS",
    "SOCKET",
    "DockerEngine",
    "EngineConfig",
    "capabilities_missing",
    "docker_env",
    "dockerd_argv",
    "find_wrapper",
]

NETNS = "k8ss-docker"
RUN_DIR = Path("/run/k8sstate-docker")
SOCKET = RUN_DIR / "docker.sock"
DATA_ROOT = Path("/var/lib/k8sstate-docker")
RUNTIME_NAME = "k8sstate-runc"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
FULL_CAPS = 41  # CAP_CHECKPOINT_RESTORE (40) is the highest capability this project knows
_CAP_NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
    "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
    "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
    "PERFMON BPF CHECKPOINT_RESTORE"
).split()

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"[k8sstate] {line}", file=sys.stderr, flush=True)


def capabilities_missing(status_text: str | None = None) -> list[str]:
    """Capabilities (``CAP_*``) outside this process's bounding set, e.g. ``["CAP_SYS_RESOURCE"]``."""
    if status_text is None:
        status_text = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
    for line in status_text.splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [f"CAP_{n}" for i, n in enumerate(_CAP_NAMES) if not mask >> i & 1]
    return []


def find_wrapper() -> Path:
    """``scripts/oci-runtime-wrapper`` of this checkout (or ``$K8SSTATE_OCI_WRAPPER``)."""
    env = os.environ.get("K8SSTATE_OCI_WRAPPER", "").strip()
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "scripts" / "oci-runtime-wrapper"


@dataclass(frozen=True)
class EngineConfig:
    """Where the project-owned engine keeps its things. Defaults: the fixed paths above."""

    netns: str | None = NETNS
    run_dir: Path = RUN_DIR
    data_root: Path = DATA_ROOT
    wrapper: Path | None = None
    """OCI runtime wrapper made the default runtime; None = plain runc."""
    dockerd: str = "dockerd"
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def log(self) -> Path:
        return self.run_dir / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"


def dockerd_argv(cfg: EngineConfig) -> list[str]:
    """The full command line that starts the project's dockerd (pure: no I/O)."""
    argv: list[str] = []
    if cfg.netns:
        # only the network namespace: mounts/cgroups stay the host's (``ip netns exec`` would also
        # unshare the mount namespace and remount /sys, hiding container mounts from the host)
        argv += ["nsenter", f"--net=/run/netns/{cfg.netns}", "--"]
    argv += [
        cfg.dockerd,
        f"--host={cfg.host}",
        f"--data-root={cfg.data_root}",
        f"--exec-root={cfg.exec_root}",
        f"--pidfile={cfg.pidfile}",
        "--storage-driver=overlay2",
        "--ip6tables=false",
        "--userland-proxy=true",
        "--log-level=warn",
    ]
    if cfg.netns:
        # the namespace is ours: docker's bridge/NAT rules may live there
        argv.append("--iptables=true")
    else:
        # no namespace of our own: never write into the root namespace's netfilter
        argv += ["--iptables=false", "--ip-masq=false"]
    if cfg.wrapper is not None:
        argv += [f"--add-runtime={RUNTIME_NAME}={cfg.wrapper}", f"--default-runtime={RUNTIME_NAME}"]
    argv += list(cfg.extra_args)
    return argv


def docker_env(host: str | None) -> dict[str, str]:
    """Environment additions that point docker/kind/minikube at ``host`` (empty: their defaults)."""
    return {"DOCKER_HOST": host} if host else {}


class DockerEngine:
    """Start, detect and stop the project-owned dockerd described by :class:`EngineConfig`."""

    def __init__(self, config: EngineConfig | None = None, progress: Progress | None = None) -> None:
        self.config = config or EngineConfig()
        self.progress = progress or _stderr

    # --- queries ---------------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.config.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def responding(self, timeout: float = 10.0) -> bool:
        """True when ``docker info`` answers on our socket."""
        if not self.config.socket.exists() or shutil.which("docker") is None:
            return False
        res = run_command(
            ["docker", "--host", self.config.host, "info", "--format", "{{.ServerVersion}}"],
            timeout=timeout,
            check=False,
            where="project dockerd",
        )
        return res.returncode == 0

    def info(self, timeout: float = 10.0) -> dict[str, object]:
        res = run_command(
            ["docker", "--host", self.config.host, "info", "--format", "{{json .}}"],
            timeout=timeout,
            where="project dockerd",
        )
        parsed = json.loads(res.stdout)
        return parsed if isinstance(parsed, dict) else {}

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start dockerd (idempotent); returns the ``DOCKER_HOST`` value. Cleans up on failure/Ctrl-C."""
        import pytest_k8sstate.node.netns as netns_mod

        netns_mod.require_root("starting the project's dockerd")
        if self.pid() is not None and self.responding():
            return self.config.host
        if shutil.which(self.config.dockerd) is None:
            raise ProviderError(
                f"{self.config.dockerd!r} not found; install Debian's docker.io "
                "(`apt-get install docker.io`, or run scripts/docker-setup.sh)"
            )
        cfg = self.config
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.data_root.mkdir(parents=True, exist_ok=True)
        created_ns = False
        proc_pid: int | None = None
        try:
            if cfg.netns and not netns_mod.exists(cfg.netns):
                netns_mod.create(cfg.netns)
                created_ns = True
            argv = dockerd_argv(cfg)
            self.progress(f"starting dockerd: {' '.join(argv)}")
            proc_pid = self._spawn(argv)
            deadline = time.monotonic() + timeout
            while not self.responding(timeout=5):
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"dockerd did not answer on {cfg.socket} within {timeout:g}s; "
                        f"see {cfg.log}:\n{_tail(cfg.log)}"
                    )
                with contextlib.suppress(ChildProcessError):
                    wpid, _status = os.waitpid(proc_pid, os.WNOHANG)
                    if wpid == proc_pid:
                        raise ProviderError(
                            f"dockerd exited during start-up; see {cfg.log}:\n{_tail(cfg.log)}"
                        )
                time.sleep(0.5)
        except BaseException:
            if proc_pid is not None:
                self._kill(proc_pid)
            if created_ns and cfg.netns:
                netns_mod.delete(cfg.netns)
            raise
        self.progress(f"dockerd ready: export DOCKER_HOST={cfg.host}")
        return cfg.host

    def _spawn(self, argv: Sequence[str]) -> int:
        import subprocess

        with open(self.config.log, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this process (a daemon); stopped by stop()
            )
        return proc.pid

    def _kill(self, pid: int, timeout: float = STOP_TIMEOUT) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def stop(self, *, remove_containers: bool = True, purge: bool = False) -> None:
        """Stop dockerd (its containers first), delete its namespace; ``purge`` also removes the data root."""
        import pytest_k8sstate.node.netns as netns_mod

        cfg = self.config
        pid = self.pid()
        if pid is not None and remove_containers and self.responding():
            res = run_command(
                ["docker", "--host", cfg.host, "ps", "-aq"], timeout=30, check=False, where="project dockerd"
            )
            ids = res.text.split()
            if ids:
                with contextlib.suppress(CommandError):
                    run_command(
                        ["docker", "--host", cfg.host, "rm", "-f", "-v", *ids],
                        timeout=120,
                        check=False,
                        where="project dockerd",
                    )
        if pid is not None:
            self._kill(pid)
        kill_shims(cfg.exec_root)
        unmount_under(cfg.exec_root)
        unmount_under(cfg.data_root)
        if cfg.netns:
            netns_mod.delete(cfg.netns)
        with contextlib.suppress(OSError):
            cfg.socket.unlink()
        if purge:
            shutil.rmtree(cfg.data_root, ignore_errors=True)
            shutil.rmtree(cfg.run_dir, ignore_errors=True)


def detect(config: EngineConfig | None = None) -> str | None:
    """``DOCKER_HOST`` of the project's running engine, or None when it is not running."""
    eng = DockerEngine(config)
    return eng.config.host if eng.pid() is not None and eng.responding() else None


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {ln[:300]}" for ln in lines) or "    (empty)"


def kill_shims(exec_root: Path) -> list[int]:
    """SIGKILL the containerd shims of the engine under ``exec_root`` that outlived it (a shim whose
    container died keeps running after dockerd stops); only processes whose command line names this
    engine's containerd socket. Returns their pids."""
    sock = str(exec_root / "containerd" / "containerd.sock")
    killed = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
            with contextlib.suppress(OSError):
                os.kill(int(d.name), signal.SIGKILL)
                killed.append(int(d.name))
    return killed


def unmount_under(root: Path) -> None:
    """Lazily unmount whatever a killed dockerd/containerd left mounted below ``root`` (deepest first)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root).rstrip("/") + "/"
    targets = []
    for line in mounts:
        parts = line.split()
        if len(parts) > 1:
            target = parts[1].replace("\\040", " ")
            if target.startswith(prefix):
                targets.append(target)
    for t in sorted(targets, key=len, reverse=True):
        with contextlib.suppress(CommandError):
            run_command(["umount", "-l", t], timeout=10, check=False, where="cleanup")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pytest_k8sstate.providers.docker.engine",
        description="start/stop/detect the project-owned dockerd (network namespace k8ss-docker)",
    )
    ap.add_argument("command", choices=("start", "stop", "status", "env"))
    ap.add_argument("--no-wrapper", action="store_true", help="plain runc even when capabilities are missing")
    ap.add_argument("--purge", action="store_true", help="stop: also remove the data root")
    args = ap.parse_args(argv)
    wrapper: Path | None = None
    missing = capabilities_missing()
    if missing and not args.no_wrapper:
        wrapper = find_wrapper()
    host: str | None
    eng = DockerEngine(EngineConfig(wrapper=wrapper))
    try:
        if args.command == "start":
            if missing:
                eng.progress(
                    f"capability bounding set lacks {', '.join(missing)}: "
                    f"{'runtime wrapper ' + str(wrapper) if wrapper else 'no wrapper (--no-wrapper)'}"
                )
            host = eng.start()
            print(f"export DOCKER_HOST={host}")
        elif args.command == "stop":
            eng.stop(purge=args.purge)
        elif args.command == "status":
            host = detect(eng.config)
            print(f"running: DOCKER_HOST={host}" if host else "not running")
            return 0 if host else 1
        else:
            print(f"export DOCKER_HOST={eng.config.host}")
    except (ProviderError, CommandError) as exc:
        print(f"docker_engine: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
