"""The provider contract: a :class:`Cluster` handle and the :class:`Provider` interface.

A provider creates, finds, resets and deletes clusters; the handle it returns is provider-neutral:
the kubeconfig, the nodes (each with a :class:`~pytest_k8sstate.node.exec.NodeExec`), how to reach etcd
(when the provider can) and the capabilities tests may require. ``cluster.snapshot(label)`` captures
etcd and every node concurrently into a :class:`~pytest_k8sstate.state.Snapshot`.

A provider also says, without any cluster, why it lacks a capability (:meth:`Provider.missing_reason`,
the text of a ``needs`` skip) and what is certainly missing before a cluster exists
(:meth:`Provider.precheck_capability`). :mod:`pytest_k8sstate.providers.registry` loads providers by name.
"""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pytest_k8sstate.errors import ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.node.exec import NodeExec

Progress = Callable[[str], None]
"""Receives one progress line at a time (without the ``[k8sstate]`` prefix)."""


def stderr_progress(line: str) -> None:
    """The default :data:`Progress`: ``[k8sstate] <line>`` on stderr."""
    print(f"[k8sstate] {line}", file=sys.stderr, flush=True)


if TYPE_CHECKING:
    from pytest_k8sstate.etcd.target import EtcdTarget
    from pytest_k8sstate.state import Snapshot

__all__ = [
    "CAPABILITIES",
    "IP_FAMILIES",
    "PROXY_MODES",
    "UNAVAILABLE_CNIS",
    "Cluster",
    "ClusterSpec",
    "NodeInfo",
    "Provider",
    "validate_cluster_name",
]

CAPABILITIES = frozenset(
    {
        "container-runtime",
        "kubelet",
        "ipvs",
        "cni",
        "kindnet",
        "nftables",
        "iptables",
        "etcd",
        "ipv6",
        "dual-stack",
    }
)
PROXY_MODES = ("iptables", "nftables", "ipvs")
CNIS = ("ptp", "bridge", "flannel", "flannel-host-gw", "kindnet", "cilium")
"""Pod networks a provider may offer (each says which: :attr:`Provider.cnis`). ``flannel`` is flannel's
``vxlan`` backend, ``flannel-host-gw`` its ``host-gw`` backend. ``cilium`` is named so that asking for it
gets the reason it cannot run (:data:`UNAVAILABLE_CNIS`), not "unknown"."""
UNAVAILABLE_CNIS: dict[str, str] = {
    "cilium": (
        "not wired up: cilium v1.20.2 builds from the Go module proxy only with two local "
        "replacements (github.com/osrg/gobgp/v4 pinned at a refused pseudo-version, "
        "sigs.k8s.io/mcs-api/controllers refused at every version; ~35 min cold on 2 cores), and running "
        "it needs locally built agent/operator images with clang >= 18 and its BPF sources; on hosts whose "
        "kind nodes share the host's cgroup2 root its socket load balancer would attach to the host. "
        "See docs/cnis.md"
    ),
}
ProxyMode = Literal["iptables", "nftables", "ipvs"]
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
IP_FAMILIES = ("ipv4", "ipv6", "dual")
"""A cluster's IP families: IPv4 only, IPv6 only, or dual-stack (IPv4 primary, as kubeadm/kind order it).
Capabilities: ``ipv6`` (an IPv6 or dual-stack cluster) and ``dual-stack`` (both families)."""


def family_capabilities(ip_family: str) -> frozenset[str]:
    """The capabilities an ``ip_family`` cluster has: ``ipv6`` for ipv6 and dual, ``dual-stack`` for dual."""
    return frozenset(
        {"ipv6", "dual-stack"} if ip_family == "dual" else {"ipv6"} if ip_family == "ipv6" else ()
    )


def family_missing_reason(capability: str, ip_family: str) -> str:
    """Why an ``ip_family`` cluster lacks ``ipv6`` / ``dual-stack``, with the option that gives it."""
    have = {"ipv4": "IPv4-only", "ipv6": "IPv6-only", "dual": "dual-stack"}.get(ip_family, ip_family)
    want = "dual" if capability == "dual-stack" else "ipv6"
    return (
        f"needs {capability}: the cluster is {have}; use --k8sstate-ip-family {want} or "
        f'@pytest.mark.k8sstate(ip_family="{want}")'
    )


def validate_cluster_name(name: str) -> str:
    """Cluster names become node names, namespace and file names: a short DNS label."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"cluster name {name!r} is invalid: use 1-32 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'k8ss' or 'test-1')"
        )
    return name


@dataclass(frozen=True)
class ClusterSpec:
    """What to create. ``nodes`` counts the workers (besides the control-plane node)."""

    name: str
    nodes: int = 2
    proxy_mode: str = "iptables"
    version: str | None = None
    kubeconfig_out: Path | None = None
    cni: str | None = None
    """The pod network; None: the provider's default. A provider refuses one it cannot set up
    (``Provider.cnis``)."""
    ip_family: str = "ipv4"
    """``ipv4``, ``ipv6`` or ``dual`` (:data:`IP_FAMILIES`); a provider that cannot refuses it."""
    persistent: bool = False
    """Survive the creating process (``k8sstate cluster create``, ``--k8sstate-keep-cluster``); otherwise the
    reaper removes the cluster once its creator has exited."""

    def __post_init__(self) -> None:
        validate_cluster_name(self.name)
        if not isinstance(self.nodes, int) or not 0 <= self.nodes <= 64:
            raise ConfigError(f"nodes={self.nodes!r} for cluster {self.name!r}: expected 0..64 workers")
        if self.proxy_mode not in PROXY_MODES:
            raise ConfigError(
                f"proxy_mode={self.proxy_mode!r} for cluster {self.name!r}: "
                f"expected one of {', '.join(PROXY_MODES)}"
            )
        if self.ip_family not in IP_FAMILIES:
            raise ConfigError(
                f"ip_family={self.ip_family!r} for cluster {self.name!r}: "
                f"expected one of {', '.join(IP_FAMILIES)}"
            )


@dataclass(frozen=True)
class NodeInfo:
    name: str
    role: str  # "control-plane" | "worker"
    exec: NodeExec
    ip: str


@dataclass
class Cluster:
    """A running cluster. Cheap to build; holds no open connections."""

    name: str
    provider: str
    kubeconfig: Path
    api_server: str
    nodes: list[NodeInfo]
    etcd: EtcdTarget | None
    capabilities: frozenset[str]
    proxy_mode: str
    version: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    """Provider specifics (state dir, ports, ...); JSON-able."""
    check_alive: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Set by the provider: raises ProviderError naming each dead component (with its last log lines);
    called by :meth:`snapshot` before capturing, so a dead component fails the snapshot instead of
    showing up as "no change". Cheap (no API call)."""

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes) or "(none)"
        raise ProviderError(f"cluster {self.name!r} has no node {name!r}; its nodes: {known}")

    @property
    def control_plane(self) -> NodeInfo:
        for n in self.nodes:
            if n.role == "control-plane":
                return n
        raise ProviderError(f"cluster {self.name!r} has no control-plane node")

    @property
    def workers(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.role != "control-plane"]

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def describe(self) -> dict[str, Any]:
        """JSON-able summary stored in snapshots (``Snapshot.cluster``)."""
        return {
            "name": self.name,
            "provider": self.provider,
            "api_server": self.api_server,
            "proxy_mode": self.proxy_mode,
            "version": self.version,
            "capabilities": sorted(self.capabilities),
            "nodes": [{"name": n.name, "role": n.role, "ip": n.ip} for n in self.nodes],
        }

    def snapshot(
        self,
        label: str = "snapshot",
        *,
        include_secrets: bool = False,
        logs: bool = False,
        pods: bool = False,
    ) -> Snapshot:
        """Capture etcd (if reachable) and every node concurrently, after checking that every component of
        the cluster runs (:attr:`check_alive`). ``logs``: also each component log's cursor
        (:mod:`pytest_k8sstate.providers.logsources`); ``pods``: each pod's network namespace (crictl)."""
        from pytest_k8sstate.providers.logsources import log_sources
        from pytest_k8sstate.state import Snapshot

        if self.check_alive is not None:
            self.check_alive()
        ipvs = "ipvs" in self.capabilities or self.proxy_mode == "ipvs"
        return Snapshot.capture(
            label,
            etcd=self.etcd,
            nodes=[n.exec for n in self.nodes],
            cluster=self.describe(),
            include_secrets=include_secrets,
            ipvs=ipvs,
            logs=log_sources(self) if logs else False,  # h-logs: optional log cursors / pod netns
            pods=pods,
        )

    def kube_api(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (imports the client lazily)."""
        from kubernetes import config as kconfig

        return kconfig.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]


#: What to use instead of a provider that lacks a capability (the end of a ``needs`` skip reason).
ALTERNATIVES: Mapping[str, str] = {
    "container-runtime": "use --k8sstate-provider kind",
    "kubelet": "use --k8sstate-provider kind",
    "cni": "use --k8sstate-provider kind",
    "kindnet": "use --k8sstate-provider kind",
}


class Provider(ABC):
    """Creates and manages clusters of one kind."""

    name: str = ""
    capabilities: frozenset[str] = frozenset()
    missing_reasons: ClassVar[Mapping[str, str]] = {}
    """Capability -> why this provider lacks it (the alternative from :data:`ALTERNATIVES` is appended)."""
    shares_host_kernel: ClassVar[bool] = False
    """The nodes run on this machine's kernel: kernel features (IPVS) can be checked here, before create."""
    cnis: ClassVar[tuple[str, ...]] = ()
    """The pod networks ``ClusterSpec.cni`` may name for this provider (besides None: its default)."""

    ip_families: ClassVar[tuple[str, ...]] = ("ipv4",)
    """The :data:`IP_FAMILIES` this provider can create clusters of."""

    @classmethod
    def check_ip_family(cls, ip_family: str) -> None:
        """ConfigError unless this provider can create an ``ip_family`` cluster."""
        if ip_family in cls.ip_families:
            return
        raise ConfigError(
            f"the {cls.name} provider cannot create a {ip_family!r} cluster: it offers "
            f"{', '.join(cls.ip_families)}; use --k8sstate-provider local or kind for ipv6 / dual"
        )

    @classmethod
    def check_cni(cls, cni: str | None) -> None:
        """ConfigError unless this provider can set up ``cni`` (None: its default pod network)."""
        if cni is None or cni in cls.cnis:
            return
        if cni in UNAVAILABLE_CNIS:
            raise ConfigError(f"the {cls.name} provider cannot use CNI {cni!r}: {UNAVAILABLE_CNIS[cni]}")
        offered = f"it offers {', '.join(cls.cnis)}" if cls.cnis else "it sets up no pod network"
        hint = "" if cls.cnis else "; use --k8sstate-provider kind"
        raise ConfigError(f"the {cls.name} provider cannot use CNI {cni!r}: {offered}{hint}")

    @classmethod
    def missing_reason(
        cls, capability: str, *, proxy_mode: str, cluster: Cluster | None = None, ip_family: str | None = None
    ) -> str:
        """The skip reason of a test that needs ``capability``, which this provider's cluster lacks.

        The cluster's own note comes first (``details["missing_capabilities"]``: kind's node image built
        without kindnetd), then ipvs under another proxy mode, then :attr:`missing_reasons`.
        """
        notes = cluster.details.get("missing_capabilities") if cluster is not None else None
        if isinstance(notes, dict) and isinstance(notes.get(capability), str):
            return f"needs {capability}: {notes[capability]}"
        family = cluster.details.get("ip_family") if cluster is not None else ip_family
        if (
            capability in ("ipv6", "dual-stack")
            and capability in cls.capabilities
            and isinstance(family, str)
        ):
            return family_missing_reason(capability, family)
        if capability == "ipvs" and proxy_mode != "ipvs":
            return (
                f"needs ipvs: the cluster's kube-proxy runs in {proxy_mode} mode; "
                'use --k8sstate-proxy-mode ipvs or @pytest.mark.k8sstate(proxy_mode="ipvs")'
            )
        why = cls.missing_reasons.get(capability)
        if why is None:
            on = f" (cluster {cluster.name})" if cluster is not None else ""
            why = f"the {cls.name} provider{on} does not provide it"
        alternative = ALTERNATIVES.get(capability)
        return f"needs {capability}: {why}" + (f"; {alternative}" if alternative else "")

    @classmethod
    def precheck_capability(
        cls, capability: str, *, proxy_mode: str, static: frozenset[str] | None, ip_family: str | None = None
    ) -> str | None:
        """A skip reason when ``capability`` is certainly missing before any cluster exists, else None.

        ``static`` is what the provider offers at most (None: unknown until a cluster exists).
        """
        if capability == "ipvs":
            if proxy_mode != "ipvs":
                return cls.missing_reason(capability, proxy_mode=proxy_mode)
            if cls.shares_host_kernel:
                from pytest_k8sstate.providers.host import check_ipvs_support

                try:
                    check_ipvs_support()
                except K8sStateError as exc:
                    return f"needs ipvs: {exc}"
            return None
        if static is not None and capability not in static:
            return cls.missing_reason(capability, proxy_mode=proxy_mode)
        if capability in ("ipv6", "dual-stack") and ip_family is not None:
            if capability not in family_capabilities(ip_family):
                return cls.missing_reason(capability, proxy_mode=proxy_mode, ip_family=ip_family)
        return None

    @abstractmethod
    def create(self, spec: ClusterSpec) -> Cluster:
        """Create and wait until ready; on failure or Ctrl-C nothing is left behind."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Delete the cluster ``name`` and everything it left; no error when it does not exist."""

    @abstractmethod
    def list(self) -> list[str]:
        """Names of this provider's clusters."""

    @abstractmethod
    def get(self, name: str) -> Cluster:
        """Attach to the running cluster ``name`` (ProviderError naming the known clusters otherwise)."""

    def export_logs(self, name: str, dest: Path) -> Path | None:
        """Copy the logs of cluster ``name``'s components into ``dest`` (None: this provider keeps none)."""
        return None

    def reset(self, cluster: Cluster) -> None:
        """Bring ``cluster`` back to its state right after create (for fresh-cluster tests)."""
        raise ProviderError(
            f"provider {self.name!r} cannot reset cluster {cluster.name!r}; delete and create it instead"
        )
