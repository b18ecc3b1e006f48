"""Run a command "on a node": the one seam between providers and collectors.

A provider hands collectors a :class:`NodeExec` per node; collectors only ever call ``run``.
The same collectors therefore serve the current network namespace, a network namespace the
``local`` provider created, a kind/minikube node container and a remote node (debug pod).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pytest_k8sstate.errors import CommandError, CommandNotFound, CommandTimeout
from pytest_k8sstate.util.procs import kill_group

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


def run_command(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    where: str = "local",
) -> CommandResult:
    """Run ``argv`` (never through a shell) with a timeout.

    ``env`` is *added* to ``os.environ`` (PATH and friends are kept).
    Raises :class:`CommandError` naming the command and ``where``: :class:`CommandNotFound` for a missing
    program, :class:`CommandTimeout` for a timeout (the process group is killed), plain
    :class:`CommandError` for a non-zero exit (with ``check``).
    """
    args = [str(a) for a in argv]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,  # own process group: a timeout kills grandchildren too
        )
    except FileNotFoundError as exc:
        raise CommandNotFound(
            f"{where}: command {args[0]!r} not found; install it (e.g. apt-get install iptables nftables "
            f"ipset iproute2) or put it on PATH"
        ) from exc
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_group(proc, wait=5)
        raise CommandTimeout(f"{where}: {' '.join(args)!r} did not finish within {timeout:g}s") from exc
    except BaseException:
        kill_group(proc, wait=5)
        raise
    result = CommandResult(tuple(args), proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        err = stderr.decode("utf-8", errors="replace").strip().splitlines()
        tail = err[-1] if err else "(no stderr)"
        raise CommandError(f"{where}: {' '.join(args)!r} exited {proc.returncode}: {tail}")
    return result


@runtime_checkable
class NodeExec(Protocol):
    """Runs a command in a node's context (its network namespace, container, ...)."""

    @property
    def node(self) -> str: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input: bytes | None = None,
        check: bool = True,
    ) -> CommandResult: ...

    def which(self, program: str) -> bool:
        """True when ``program`` can be run on the node."""
        ...


class LocalExec:
    """The current process's own namespaces (used by ``k8sstate snapshot`` without a provider).

    Subclasses only say how a command is wrapped (:meth:`command`) and how the node is named in
    messages (:attr:`where`); running, timeouts and errors stay in :func:`run_command`.
    """

    def __init__(self, node: str = "localhost") -> None:
        self._node = node

    @property
    def node(self) -> str:
        return self._node

    @property
    def where(self) -> str:
        return f"node {self._node}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs ``argv`` on the node."""
        return list(argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        return run_command(self.command(argv), timeout=timeout, input=input, check=check, where=self.where)

    def which(self, program: str) -> bool:
        return shutil.which(program) is not None


class NetnsExec(LocalExec):
    """A named network namespace (``ip netns add NAME``): commands run via ``ip netns exec``."""

    def __init__(self, netns: str, node: str | None = None) -> None:
        super().__init__(node or netns)
        self.netns = netns

    @property
    def where(self) -> str:
        return f"node {self.node} (netns {self.netns})"

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]


class DockerExec(LocalExec):
    """A node container (kind, minikube docker driver): ``docker [--host H] exec -i CONTAINER argv``."""

    def __init__(
        self, container: str, node: str | None = None, docker: str = "docker", host: str | None = None
    ) -> None:
        super().__init__(node or container)
        self.container = container
        self.docker = docker
        self.host = host

    @property
    def where(self) -> str:
        return f"node {self.node} (container {self.container})"

    def command(self, argv: Sequence[str]) -> list[str]:
        host = ["--host", self.host] if self.host else []
        return [self.docker, *host, "exec", "-i", self.container, *argv]

    def run_script(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult | None:
        """``sh`` text run in the node's long-lived shell (:mod:`pytest_k8sstate.node.session`): no
        ``docker exec`` per call. None when sessions are off, the session is busy or could not run it
        (then use :meth:`run`); :class:`CommandTimeout` when the script did not finish in time."""
        from pytest_k8sstate.node import session

        try:
            got = session.run_script(self.command(["sh"]), self.where, script, timeout)
        except CommandTimeout:
            raise
        except CommandError:
            return None
        if got is None:
            return None
        rc, out, err = got
        return CommandResult(("sh", "-c", script), rc, out, err)

    def session_alive(self) -> bool:
        """Whether the node's long-lived shell is running (so is its container, a moment ago)."""
        from pytest_k8sstate.node import session

        return session.is_alive(self.command(["sh"]))

    def which(self, program: str) -> bool:
        res = self.run(["sh", "-c", 'command -v "$0"', program], check=False, timeout=10)
        return res.returncode == 0


class SessionExec:
    """A :class:`DockerExec` whose commands without input run in the node's long-lived shell
    (:meth:`DockerExec.run_script`; ``shlex.join(argv)``, so the same argv), the rest — and any command
    while the shell is busy or gone — by its own ``docker exec``. For short, frequent commands (the
    liveness probe before every snapshot)."""

    def __init__(self, inner: DockerExec) -> None:
        self.inner = inner

    @property
    def node(self) -> str:
        return self.inner.node

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        if input is None:
            res = self.inner.run_script(shlex.join(str(a) for a in argv), timeout=timeout)
            if res is not None:
                res = CommandResult(tuple(str(a) for a in argv), res.returncode, res.stdout, res.stderr)
                if check and res.returncode != 0:
                    err = res.stderr.decode("utf-8", errors="replace").strip().splitlines()
                    raise CommandError(
                        f"{self.inner.where}: {' '.join(res.argv)!r} exited {res.returncode}: "
                        f"{err[-1] if err else '(no stderr)'}"
                    )
                return res
        return self.inner.run(argv, timeout=timeout, input=input, check=check)

    def which(self, program: str) -> bool:
        return self.inner.which(program)
