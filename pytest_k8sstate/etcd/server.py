"""A real etcd process on loopback (or inside a network namespace) with kubeadm-style client-cert TLS.

Used by the ``local`` provider (the cluster's etcd) and by the tests (a throwaway etcd)::

    pki = generate_pki(tmp / "pki", apiserver_sans=[], etcd_sans=[])
    with EtcdServer(find_etcd_binary(), tmp / "etcd", pki=pki) as server:
        state = collect_etcd(server.target)

``start()`` waits until ``/health`` answers over TLS with the healthcheck client certificate; on any failure
(timeout, early exit, Ctrl-C) it kills what it started and raises. Ports 0 pick free loopback ports (retried
when the port was taken between picking and binding); inside a network namespace 0 means 2379/2380 (the
namespace is private).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from pytest_k8sstate.errors import BinaryError, ProviderError
from pytest_k8sstate.etcd.target import EtcdTarget
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.util.files import cache_dir
from pytest_k8sstate.util.poll import wait_until
from pytest_k8sstate.util.procs import kill_group

if TYPE_CHECKING:
    from pytest_k8sstate.pki import Pki

__all__ = ["ENV_BINARY", "EtcdServer", "find_etcd_binary"]

ENV_BINARY = "K8SSTATE_ETCD"
_ERROR_LINE = re.compile(r"error|fatal|panic|not defined|invalid|address already in use", re.IGNORECASE)


def _version_key(path: Path) -> tuple[tuple[int, ...], float]:
    nums = tuple(int(n) for n in re.findall(r"\d+", path.name))
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return nums, mtime


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_etcd_binary() -> Path:
    """Locate an etcd binary, read at call time: ``$K8SSTATE_ETCD``, the binaries cache, then PATH.

    The cache is ``<cache_dir()>/bin/etcd-*/etcd`` (``$K8SSTATE_CACHE_DIR`` honoured), newest version first.
    """
    checked: list[str] = []
    env = os.environ.get(ENV_BINARY)
    if env:
        p = Path(env).expanduser()
        if _executable(p):
            return p
        raise BinaryError(
            f"${ENV_BINARY}={env!r} is not an executable file; point it at an etcd binary or unset it"
        )
    checked.append(f"${ENV_BINARY} (unset)")

    bin_dir = cache_dir() / "bin"
    candidates = sorted(
        (d for d in bin_dir.glob("etcd-*") if _executable(d / "etcd")), key=_version_key, reverse=True
    )
    if candidates:
        return candidates[0] / "etcd"
    checked.append(f"{bin_dir}/etcd-*/etcd")

    which = shutil.which("etcd")
    if which:
        return Path(which)
    checked.append("PATH")
    raise BinaryError(
        "etcd binary not found; checked " + ", ".join(checked) + ". Fix: "
        f"`k8sstate binaries install --components etcd`, or set ${ENV_BINARY}=/path/to/etcd"
    )


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_HEALTH_SCRIPT = """
import json, ssl, sys, urllib.request
url, ca, crt, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(crt, key)
try:
    body = urllib.request.urlopen(url, context=ctx, timeout=2).read()
    sys.exit(0 if json.loads(body).get("health") == "true" else 1)
except Exception as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


class EtcdServer:
    """One etcd member. Not started until :meth:`start` (or ``with``)."""

    def __init__(
        self,
        binary: str | os.PathLike[str],
        data_dir: str | os.PathLike[str],
        *,
        pki: Pki,
        host: str = "127.0.0.1",
        client_port: int = 0,
        peer_port: int = 0,
        name: str = "default",
        netns: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.pki = pki
        self.host = host
        self.name = name
        self.netns = netns
        self.extra_args = list(extra_args)
        self._want_client_port = client_port
        self._want_peer_port = peer_port
        self.client_port = client_port
        self.peer_port = peer_port
        self._proc: subprocess.Popen[bytes] | None = None

    # --- properties -------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    @property
    def client_url(self) -> str:
        return f"https://{_hostport(self.host, self.client_port)}"

    @property
    def peer_url(self) -> str:
        return f"https://{_hostport(self.host, self.peer_port)}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def target(self) -> EtcdTarget:
        """How clients (the collector, kube-apiserver) reach this member: the apiserver-etcd-client cert."""
        return EtcdTarget(
            endpoints=(self.client_url,),
            ca=self.pki.etcd_ca_crt,
            cert=self.pki.apiserver_etcd_client_crt,
            key=self.pki.apiserver_etcd_client_key,
        )

    def argv(self) -> list[str]:
        p = self.pki
        args = [
            str(self.binary),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.name}={self.peer_url}",
            "--initial-cluster-state=new",
            f"--cert-file={p.etcd_server_crt}",
            f"--key-file={p.etcd_server_key}",
            "--client-cert-auth=true",
            f"--trusted-ca-file={p.etcd_ca_crt}",
            f"--peer-cert-file={p.etcd_peer_crt}",
            f"--peer-key-file={p.etcd_peer_key}",
            "--peer-client-cert-auth=true",
            f"--peer-trusted-ca-file={p.etcd_ca_crt}",
            "--snapshot-count=10000",
            "--log-level=warn",
            *self.extra_args,
        ]
        if self.netns:
            args = ["ip", "netns", "exec", self.netns, *args]
        return args

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> EtcdServer:
        """Start etcd and wait (≤ ``timeout`` s) until it is healthy; on failure nothing is left running."""
        if self.running:
            return self
        auto_ports = self._want_client_port == 0 or self._want_peer_port == 0
        attempts = 3 if auto_ports and not self.netns else 1
        for attempt in range(attempts):
            self._pick_ports()
            try:
                self._spawn()
                self._wait_healthy(timeout)
                return self
            except ProviderError as exc:
                self.stop()
                if attempt + 1 < attempts and "address already in use" in self._log_tail().lower():
                    continue
                raise exc
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _pick_ports(self) -> None:
        if self.netns:
            self.client_port = self._want_client_port or 2379
            self.peer_port = self._want_peer_port or 2380
            return
        self.client_port = self._want_client_port or _free_port(self.host)
        self.peer_port = self._want_peer_port or _free_port(self.host)
        while self.peer_port == self.client_port:
            self.peer_port = _free_port(self.host)

    def _spawn(self) -> None:
        if not _executable(self.binary):
            raise ProviderError(
                f"etcd binary {self.binary} is missing or not executable; see find_etcd_binary() "
                "(`k8sstate binaries install --components etcd`, or $K8SSTATE_ETCD)"
            )
        for f in (self.pki.etcd_server_crt, self.pki.etcd_ca_crt, self.pki.etcd_peer_crt):
            if not f.is_file():
                raise ProviderError(f"etcd certificate {f} is missing; generate the PKI with generate_pki()")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # etcd ≥ 3.4 insists on 0700
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(self.argv())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches us, not etcd; we stop it
            )

    def _log_tail(self, lines: int = 4) -> str:
        """This run's log: its error-looking lines (at most 4) and its last ``lines`` lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        run = text.rsplit("\n--- ", 1)[-1].split("\n", 1)[-1] if "--- " in text else text
        all_lines = [ln for ln in run.strip().splitlines() if ln.strip()]
        important = [ln for ln in all_lines if _ERROR_LINE.search(ln)][:4]
        shown = important + [ln for ln in all_lines[-lines:] if ln not in important]
        return "\n".join(ln if len(ln) <= 400 else ln[:397] + "..." for ln in shown)

    def _check_health(self) -> bool:
        url = f"{self.client_url}/health"
        p = self.pki
        if self.netns:
            res = run_command(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    sys.executable,
                    "-c",
                    _HEALTH_SCRIPT,
                    url,
                    str(p.etcd_ca_crt),
                    str(p.etcd_healthcheck_client_crt),
                    str(p.etcd_healthcheck_client_key),
                ],
                timeout=10,
                check=False,
                where=f"netns {self.netns}",
            )
            return res.returncode == 0
        ctx = ssl.create_default_context(cafile=str(p.etcd_ca_crt))
        ctx.load_cert_chain(str(p.etcd_healthcheck_client_crt), str(p.etcd_healthcheck_client_key))
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                body = resp.read()
            return bool(json.loads(body).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _wait_healthy(self, timeout: float) -> None:
        def alive() -> None:
            proc = self._proc
            assert proc is not None
            if proc.poll() is not None:
                raise ProviderError(
                    f"etcd ({self.binary}) exited with code {proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )

        wait_until(
            f"etcd at {self.client_url}",
            lambda: None if self._check_health() else f"not healthy within {timeout:g}s",
            timeout=timeout,
            error=ProviderError,
            interval=0.05,
            max_interval=0.5,
            check=alive,
            details=lambda: f"log {self.log_path}:\n{self._log_tail()}",
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call twice or when never started."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            kill_group(proc, sig=signal.SIGTERM, grace=timeout)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EtcdServer({self.client_url}, {state})"
