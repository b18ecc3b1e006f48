"""The ``minikube`` provider (docker driver): same contract and capture as :mod:`.kind.provider`.

``minikube start -p NAME --driver=docker --nodes K --kubernetes-version V --container-runtime=containerd
--extra-config=kube-proxy.mode=MODE --wait=all`` (:func:`start_argv`, pure and unit-tested). The kubeconfig
goes to the provider's state dir (``KUBECONFIG`` is set for minikube), never to ``~/.kube/config``.

Nodes are the containers ``NAME``, ``NAME-m02``, ... (``minikube node list``); node exec = ``docker exec``;
etcd = the primary node's kubeadm etcd with the certificates minikube keeps under
``/var/lib/minikube/certs`` (``etcd/ca.crt``, ``apiserver-etcd-client.{crt,key}``), copied out read-only
and reached at ``<node IP>:2379`` (through the port forwarder when the engine is the project's own).

minikube needs its ``kicbase`` image and preloaded Kubernetes images from the internet; on a machine
without a registry it cannot start (the tests skip with that reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import CommandError, ConfigError, ProviderError
from pytest_k8sstate.node.exec import CommandResult, DockerExec, run_command
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, NodeInfo, Progress
from pytest_k8sstate.providers.docker.nodes import DockerNodesProvider
from pytest_k8sstate.providers.forwarders import stop_forwarder
from pytest_k8sstate.providers.kubeadm import (
    NodeCerts,
    attach_control_plane,
    ipvs_in_kernel,
    node_capabilities,
)
from pytest_k8sstate.providers.kubeconfig import copy_kubeconfig
from pytest_k8sstate.providers.statefile import StateFile

__all__ = [
    "MINIKUBE_CERTS",
    "MinikubeOptions",
    "MinikubeProvider",
    "minikube_node_names",
    "parse_node_list",
    "parse_profile_list",
    "provider",
    "start_argv",
]

MINIKUBE_CERT_DIR = "/var/lib/minikube/certs"
MINIKUBE_CERTS = NodeCerts(
    ca=f"{MINIKUBE_CERT_DIR}/etcd/ca.crt",
    cert=f"{MINIKUBE_CERT_DIR}/apiserver-etcd-client.crt",
    key=f"{MINIKUBE_CERT_DIR}/apiserver-etcd-client.key",
)
API_PORT = 8443
DEFAULT_WAIT = 600.0
MEMORY_RE = re.compile(r"[1-9][0-9]{0,7}([kmgt]b?)?|max|no-limit", re.IGNORECASE)
NO_REGISTRY_REASON = (
    "minikube cannot run here: its docker driver needs the kicbase image (gcr.io/k8s-minikube/kicbase) and "
    "preloaded Kubernetes images from a registry, and no registry is reachable from this machine"
)


def provider(**options: Any) -> MinikubeProvider:
    return MinikubeProvider(**options)


@dataclass(frozen=True)
class MinikubeOptions:
    minikube_binary: str | None = None
    driver: str = "docker"
    """``--driver``; node state is read with ``docker exec``, so ``create`` refuses any other."""
    container_runtime: str = "containerd"
    base_image: str | None = None
    cni: str | None = None
    """``--cni`` (auto, bridge, calico, cilium, flannel, kindnet, false, or a manifest path)."""
    extra_config: tuple[str, ...] = ()
    """More ``--extra-config=component.key=value`` settings."""
    cpus: int | None = None
    memory: str | None = None
    wait: float = DEFAULT_WAIT
    docker_host: str | None = None
    docker_netns: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", self.driver):
            raise ConfigError(f"minikube driver={self.driver!r}: expected a driver name such as docker")
        if self.cpus is not None and (isinstance(self.cpus, bool) or not 1 <= self.cpus <= 1024):
            raise ConfigError(f"minikube cpus={self.cpus!r}: expected a whole number of CPUs from 1")
        if self.memory is not None and not MEMORY_RE.fullmatch(str(self.memory)):
            raise ConfigError(
                f"minikube memory={self.memory!r}: expected megabytes or a size like 4096, 4096mb, 4g"
            )
        if self.container_runtime not in ("containerd", "docker", "cri-o"):
            raise ConfigError(
                f"minikube container_runtime={self.container_runtime!r}: expected containerd, docker or cri-o"
            )
        for item in self.extra_config:
            comp, dot, rest = item.partition(".")
            if not comp or not dot or "=" not in rest:
                raise ConfigError(
                    f"minikube extra_config {item!r}: expected component.key=value "
                    "(e.g. kubelet.max-pods=100)"
                )
        if self.wait < 0:
            raise ConfigError(f"minikube option wait={self.wait!r}: expected seconds >= 0")


def start_argv(minikube: str, spec: ClusterSpec, opts: MinikubeOptions) -> list[str]:
    """``minikube start`` for ``spec`` (1 control-plane + ``spec.nodes`` workers)."""
    argv = [
        minikube,
        "start",
        "-p",
        spec.name,
        f"--driver={opts.driver}",
        f"--nodes={spec.nodes + 1}",
        f"--container-runtime={opts.container_runtime}",
        f"--extra-config=kube-proxy.mode={spec.proxy_mode}",
        "--interactive=false",
        "--keep-context=true",
    ]
    if spec.version:
        argv.append(f"--kubernetes-version=v{spec.version.removeprefix('v')}")
    for item in opts.extra_config:
        argv.append(f"--extra-config={item}")
    if opts.base_image:
        argv.append(f"--base-image={opts.base_image}")
    if opts.cni:
        argv.append(f"--cni={opts.cni}")
    if opts.cpus:
        argv.append(f"--cpus={opts.cpus}")
    if opts.memory:
        argv.append(f"--memory={opts.memory}")
    if opts.wait > 0:
        argv += ["--wait=all", f"--wait-timeout={round(opts.wait)}s"]
    else:
        argv.append("--wait=none")
    return argv


def minikube_node_names(profile: str, nodes: int) -> list[str]:
    """Node (= container) names minikube gives: ``P``, ``P-m02``, ``P-m03``, ..."""
    return [profile] + [f"{profile}-m{i:02d}" for i in range(2, nodes + 2)]


def parse_node_list(text: str) -> list[tuple[str, str]]:
    """``minikube node list`` (``NAME\\tIP`` lines) → [(name, ip)]."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1]))
        elif len(parts) == 1:
            out.append((parts[0], ""))
    return out


def parse_profile_list(text: str) -> list[str]:
    """Profile names from ``minikube profile list -o json`` (valid and invalid)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    names: list[str] = []
    if isinstance(doc, dict):
        for key in ("valid", "invalid"):
            for p in doc.get(key) or []:
                if isinstance(p, dict) and isinstance(p.get("Name"), str):
                    names.append(p["Name"])
    return names


class MinikubeProvider(DockerNodesProvider):
    name = "minikube"
    capabilities = node_capabilities("iptables", ipvs_kernel=False, extra={"cni"})

    def __init__(
        self, options: MinikubeOptions | None = None, progress: Progress | None = None, **kw: Any
    ) -> None:
        self.options = options or MinikubeOptions(**kw)
        self._attach(progress, self.options.docker_host, self.options.docker_netns)

    def minikube_binary(self) -> str:
        path = self.options.minikube_binary or shutil.which("minikube")
        if not path:
            raise ProviderError(
                "minikube not found on PATH; install it (https://minikube.sigs.k8s.io/docs/start/) or pass "
                "minikube_binary=PATH. " + NO_REGISTRY_REASON
            )
        return path

    def _mk(self, *args: str, timeout: float = 120.0, check: bool = True, name: str = "") -> CommandResult:
        env = self.docker.env()
        if name:
            env["KUBECONFIG"] = str(self.root / name / "kubeconfig.minikube")
        return run_command(
            [self.minikube_binary(), *args], timeout=timeout, check=check, env=env, where="minikube"
        )

    def list(self) -> list[str]:
        res = self._mk("profile", "list", "-o", "json", timeout=60, check=False)
        return parse_profile_list(res.text)

    def create(self, spec: ClusterSpec) -> Cluster:
        if self.options.driver != "docker":
            raise ProviderError(
                f"minikube driver {self.options.driver!r} is not supported: node state is read with "
                "`docker exec` into the node containers; use --k8sstate-minikube-driver docker"
            )
        self._precheck_create(spec)
        if spec.name in self.list():
            raise ProviderError(
                f"minikube profile {spec.name!r} already exists; delete it or pick another name"
            )
        st = StateFile.fresh(spec.name, self.root)  # leftovers of an earlier cluster of this name go
        st.data = {
            "name": spec.name,
            "proxy_mode": spec.proxy_mode,
            "netns": self.netns,
            "docker_host": self.docker.host,
            "persistent": spec.persistent,
            "owner_pid": None if spec.persistent else os.getpid(),
        }
        st.save()
        argv = start_argv(self.minikube_binary(), spec, self.options)
        self.progress(f"minikube: {' '.join(argv)}")
        t0 = time.monotonic()
        try:
            try:
                self._mk(*argv[1:], timeout=self.options.wait + 900.0, name=spec.name)
            except CommandError as exc:
                logs = st.dir / "minikube-logs.txt"
                with contextlib.suppress(CommandError):
                    self._mk("logs", "-p", spec.name, f"--file={logs}", timeout=120, check=False)
                raise ProviderError(f"minikube start -p {spec.name} failed: {exc}; logs: {logs}") from exc
            cluster = self._cluster(st)
            copy_kubeconfig(cluster.kubeconfig, spec.kubeconfig_out)
        except BaseException:
            self._delete(spec.name, st.dir)
            raise
        self.progress(f"minikube cluster {spec.name!r} ready ({time.monotonic() - t0:.1f}s)")
        return cluster

    def get(self, name: str) -> Cluster:
        self._require_listed(name, "minikube profile")
        st = StateFile.load(name, self.root)
        if not st.data:
            st.data = {"name": name, "netns": self.netns, "docker_host": self.docker.host}
        kc = st.dir / "kubeconfig.minikube"
        if not kc.exists():
            st.dir.mkdir(parents=True, exist_ok=True)
            self._mk("update-context", "-p", name, timeout=60, name=name)
        return self._cluster(st)

    def export_logs(self, name: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / f"minikube-{name}.log"
        self._mk("logs", "-p", name, f"--file={out}", timeout=300, check=False)
        return out

    def _delete(self, name: str, state_dir: Path) -> None:
        stop_forwarder(state_dir)
        with contextlib.suppress(CommandError, ProviderError):
            self._mk("delete", "-p", name, timeout=300, check=False, name=name)
        shutil.rmtree(state_dir, ignore_errors=True)

    def _cluster(self, st: StateFile) -> Cluster:
        listed = parse_node_list(self._mk("node", "list", "-p", st.name, timeout=60, name=st.name).text)
        if not listed:
            raise ProviderError(f"minikube profile {st.name!r} has no nodes")
        nodes = [
            NodeInfo(n, "control-plane" if i == 0 else "worker", DockerExec(n, host=self.docker.host), ip)
            for i, (n, ip) in enumerate(listed)
        ]
        cp = nodes[0]
        netns = st.data.get("netns")
        kc, api_server, etcd = attach_control_plane(
            st.dir, netns, cp, MINIKUBE_CERTS, st.dir / "kubeconfig.minikube", api_port=API_PORT
        )
        mode = str(st.data.get("proxy_mode") or "iptables")
        st.save()
        caps = node_capabilities(mode, ipvs_kernel=ipvs_in_kernel(), extra={"cni"})
        return Cluster(
            name=st.name,
            provider=self.name,
            kubeconfig=kc,
            api_server=api_server,
            nodes=nodes,
            etcd=etcd,
            capabilities=caps,
            proxy_mode=mode,
            details={"dir": str(st.dir), "docker_host": self.docker.host, "netns": netns},
        )
