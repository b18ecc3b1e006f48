"""The ``docker`` CLI against one engine, shared by the container providers (kind, minikube, node images).

:func:`connect` picks the engine: an explicit ``DOCKER_HOST``, else ``$DOCKER_HOST``, else the project's own
engine (:mod:`.engine`) when it runs, else docker's default; with the project's engine the containers live
in its network namespace (reached through :mod:`pytest_k8sstate.providers.forwarders`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest_k8sstate.providers.docker.engine as docker_engine
from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.node.exec import CommandResult, run_command

__all__ = ["DockerCli", "connect", "parse_inspect_lines", "resolve_docker"]


@dataclass
class DockerCli:
    """The ``docker`` CLI against one engine (``host`` None: ``$DOCKER_HOST`` or docker's default)."""

    host: str | None = None
    docker: str = "docker"

    def env(self) -> dict[str, str]:
        return docker_engine.docker_env(self.host)

    def argv(self, *args: str) -> list[str]:
        return [self.docker, *(["--host", self.host] if self.host else []), *args]

    def run(self, *args: str, timeout: float = 60.0, check: bool = True) -> CommandResult:
        return run_command(self.argv(*args), timeout=timeout, check=check, where=f"docker ({self.where})")

    @property
    def where(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST") or "default engine"

    def require(self) -> None:
        """Raise ProviderError (with the fix) unless the CLI exists and an engine answers."""
        if shutil.which(self.docker) is None:
            raise ProviderError(
                f"{self.docker!r} not found on PATH; install Docker (Debian: apt-get install docker.io)"
            )
        res = self.run("version", "--format", "{{.Server.Version}}", timeout=20, check=False)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            raise ProviderError(
                f"no Docker engine answers at {self.where} ({err[-1] if err else 'no output'}); start one "
                "(restricted machines: `scripts/docker-setup.sh start`, then export DOCKER_HOST) "
                "or set DOCKER_HOST"
            )

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, timeout=30, check=False).returncode == 0

    def containers(self, label: str, role_label: str | None = None) -> list[dict[str, str]]:
        """``name``, ``role`` (the value of label ``role_label``; ``worker`` without one), ``ip`` (first
        network), ``state`` of the containers with ``label``."""
        res = self.run("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}", timeout=30)
        names = res.text.split()
        if not names:
            return []
        role = '{{index .Config.Labels "' + role_label + '"}}' if role_label else ""
        fmt = (
            "{{.Name}}\t"
            + role
            + "\t{{.State.Status}}\t{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        )
        res = self.run("inspect", "--format", fmt, *names, timeout=30, check=False)
        if res.returncode != 0:
            # a container listed a moment ago may be gone (or not inspectable yet) while kind creates or
            # deletes nodes: inspect one by one and leave those out
            text = ""
            for name in names:
                one = self.run("inspect", "--format", fmt, name, timeout=30, check=False)
                if one.returncode == 0:
                    text += one.text
                elif "No such object" not in one.stderr.decode(errors="replace"):
                    text += self.run("inspect", "--format", fmt, name, timeout=30).text  # or raises
            return parse_inspect_lines(text)
        return parse_inspect_lines(res.text)


def parse_inspect_lines(text: str) -> list[dict[str, str]]:
    """Parse ``NAME\\tROLE\\tSTATE\\tIP ...`` lines from :meth:`DockerCli.containers`."""
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        ips = parts[3].split()
        rows.append(
            {
                "name": parts[0].lstrip("/"),
                "role": parts[1] or "worker",
                "state": parts[2],
                "ip": ips[0] if ips else "",
            }
        )
    return rows


def resolve_docker(host: str | None, netns: str | None) -> tuple[str | None, str | None]:
    """(``DOCKER_HOST``, container network namespace) to use: explicit, ``$DOCKER_HOST``, project engine."""
    proj = docker_engine.EngineConfig()
    if host is None:
        host = os.environ.get("DOCKER_HOST") or None
    if host is None:
        host = docker_engine.detect(proj)
    if netns is None and host == proj.host:
        netns = proj.netns
    return host, netns


def connect(host: str | None, netns: str | None) -> tuple[DockerCli, str | None]:
    """:func:`resolve_docker`, as the CLI of that engine and the network namespace of its containers."""
    host, netns = resolve_docker(host, netns)
    return DockerCli(host), netns
