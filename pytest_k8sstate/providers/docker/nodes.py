"""What the providers whose nodes are containers of one Docker engine (kind, minikube) share: the engine
and its network namespace (:func:`~pytest_k8sstate.providers.docker.cli.connect`), a state dir per cluster
(:mod:`pytest_k8sstate.providers.statefile`), and the checks before a create."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.base import (
    ClusterSpec,
    Progress,
    Provider,
    stderr_progress,
    validate_cluster_name,
)
from pytest_k8sstate.providers.docker.cli import DockerCli, connect
from pytest_k8sstate.providers.kubeadm import ipvs_in_kernel
from pytest_k8sstate.providers.statefile import state_root

__all__ = ["DockerNodesProvider"]


class DockerNodesProvider(Provider):
    """Base of providers whose nodes are Docker containers (subclasses call :meth:`_attach` first)."""

    shares_host_kernel: ClassVar[bool] = True
    """Node containers run on this host's kernel (kube-proxy's ipvs mode needs its ``ip_vs``)."""

    progress: Progress
    docker: DockerCli
    netns: str | None
    """Network namespace of the engine's containers (the project's engine), None: reachable as they are."""
    root: Path
    """``<cache>/<name>-clusters``: one state dir per cluster."""

    def _attach(self, progress: Progress | None, docker_host: str | None, docker_netns: str | None) -> None:
        self.progress = progress or stderr_progress
        self.docker, self.netns = connect(docker_host, docker_netns)
        self.root = state_root(self.name)

    def delete(self, name: str) -> None:
        validate_cluster_name(name)  # a state dir below root, never a path that leaves it
        self._delete(name, self.root / name)

    @abstractmethod
    def _delete(self, name: str, state_dir: Path) -> None:
        """Remove cluster ``name`` (no error when it does not exist), its forwarder and ``state_dir``."""

    def _require_listed(self, name: str, what: str) -> None:
        """ProviderError naming the known ones unless :meth:`list` has ``name`` (``what``: kind cluster)."""
        names = self.list()
        if name not in names:
            raise ProviderError(f"no {what} {name!r}; known {what}s: {', '.join(names) or '(none)'}")

    def _precheck_create(self, spec: ClusterSpec) -> None:
        """An engine answers, and the kernel has what ``spec`` needs (ProviderError naming the fix)."""
        self.docker.require()
        if spec.proxy_mode == "ipvs" and not ipvs_in_kernel():
            raise ProviderError(
                f"{self.name} cluster {spec.name!r}: proxy mode ipvs needs the kernel's ip_vs module, which "
                "this kernel lacks (/proc/net/ip_vs missing); use --proxy-mode iptables or nftables"
            )
