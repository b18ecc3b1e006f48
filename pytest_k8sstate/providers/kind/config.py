"""kind's cluster config and command lines, built from a :class:`~pytest_k8sstate.providers.base.ClusterSpec`
plus :class:`KindOptions` (pure: no Docker, no kind binary).

:func:`kind_config` is kind's ``kind.x-k8s.io/v1alpha4`` Cluster (one control-plane, ``spec.nodes`` workers,
``kubeProxyMode``, ``ipFamily`` (ipv6 / dual), ``disableDefaultCNI``, pod/service subnets, node image,
kubeadm patches);
:func:`create_argv` is the ``kind create cluster`` command line; :func:`node_image` picks the node image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.providers.base import PROXY_MODES, ClusterSpec

__all__ = [
    "CGROUP_V1_PATCH",
    "CLUSTER_LABEL",
    "DEFAULT_WAIT",
    "IMAGE_ENV",
    "ROLE_LABEL",
    "KindOptions",
    "create_argv",
    "host_cgroup_v1",
    "kind_config",
    "kind_error_summary",
    "kind_node_names",
    "merge_user_config",
    "node_image",
    "read_user_config",
    "render_config",
]

CLUSTER_LABEL = "io.x-k8s.kind.cluster"
ROLE_LABEL = "io.x-k8s.kind.role"
KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
IMAGE_ENV = "K8SSTATE_KIND_IMAGE"
DEFAULT_WAIT = 300.0
CGROUP_V1_PATCH = "kind: KubeletConfiguration\nfailCgroupV1: false\n"
_CIDR_RE = re.compile(r"^[0-9a-fA-F:.]+/\d{1,3}(,[0-9a-fA-F:.]+/\d{1,3})?$")  # dual-stack: "v4,v6"


@dataclass(frozen=True)
class KindOptions:
    """kind-specific options besides :class:`~pytest_k8sstate.providers.base.ClusterSpec`."""

    image: str | None = None
    """Node image (``kindest/node:v1.37.1`` or a locally built one); default ``$K8SSTATE_KIND_IMAGE``, then
    ``kindest/node:<spec.version>`` when a version is given, else kind's own default."""
    disable_default_cni: bool = False
    pod_subnet: str | None = None
    service_subnet: str | None = None
    kubeadm_config_patches: tuple[str, ...] = ()
    """Cluster-wide kubeadm patches (YAML strategic-merge documents, as in kind's config)."""
    control_plane_patches: tuple[str, ...] = ()
    """kubeadm patches of the control-plane node only."""
    allow_cgroup_v1: bool | None = None
    """Add ``failCgroupV1: false`` to every kubelet's config (kubelet >= 1.35 refuses cgroup v1 hosts
    otherwise). None = when this host has cgroup v1 (:func:`host_cgroup_v1`)."""
    wait: float = DEFAULT_WAIT
    """``kind create cluster --wait`` (control-plane Ready) in seconds; 0 = don't wait."""
    kind_binary: str | None = None
    kind_version: str | None = None
    docker_host: str | None = None
    """``DOCKER_HOST`` for docker and kind; default ``$DOCKER_HOST``, else the project's engine if running."""
    docker_netns: str | None = None
    """Network namespace of the engine's containers (auto: the project engine's ``k8ss-docker``)."""
    artifacts_dir: Path | None = None
    """Where ``kind export logs`` goes when create fails (default ``<cache>/kind-logs``)."""
    config_file: Path | None = None
    """The user's kind Cluster config, merged into the generated one (:func:`merge_user_config`)."""

    def __post_init__(self) -> None:
        for name in ("pod_subnet", "service_subnet"):
            v = getattr(self, name)
            if v is not None and not _CIDR_RE.match(v):
                raise ConfigError(
                    f"kind option {name}={v!r}: expected a CIDR like 10.244.0.0/16 "
                    "(dual-stack: two, comma-separated: 10.244.0.0/16,fd00:10:244::/56)"
                )
        for i, patch in enumerate((*self.kubeadm_config_patches, *self.control_plane_patches)):
            try:
                doc = yaml.safe_load(patch)
            except yaml.YAMLError as exc:
                raise ConfigError(f"kind kubeadm patch #{i + 1} is not valid YAML: {exc}") from exc
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ConfigError(
                    f"kind kubeadm patch #{i + 1} must be a YAML mapping with a 'kind' "
                    "(e.g. 'kind: ClusterConfiguration'), got {patch[:60]!r}"
                )
        if self.wait < 0:
            raise ConfigError(f"kind option wait={self.wait!r}: expected seconds >= 0")


def node_image(spec: ClusterSpec, opts: KindOptions, env: Mapping[str, str] | None = None) -> str | None:
    """The node image to use (None: kind's default)."""
    environ = os.environ if env is None else env
    if opts.image:
        return opts.image
    from_env = environ.get(IMAGE_ENV, "").strip()
    if from_env:
        return from_env
    if spec.version:
        return f"kindest/node:v{spec.version.removeprefix('v')}"
    return None


def kind_config(spec: ClusterSpec, opts: KindOptions, image: str | None = None) -> dict[str, Any]:
    """kind's Cluster config for ``spec`` (one control-plane + ``spec.nodes`` workers)."""
    if spec.proxy_mode not in PROXY_MODES:  # pragma: no cover - ClusterSpec validates
        raise ConfigError(f"proxy mode {spec.proxy_mode!r}")
    cp: dict[str, Any] = {"role": "control-plane"}
    if opts.control_plane_patches:
        cp["kubeadmConfigPatches"] = list(opts.control_plane_patches)
    nodes = [cp] + [{"role": "worker"} for _ in range(spec.nodes)]
    if image:
        for n in nodes:
            n["image"] = image
    networking: dict[str, Any] = {"kubeProxyMode": spec.proxy_mode}
    if spec.ip_family != "ipv4":
        # kind's defaults per family: pods fd00:10:244::/56, Services fd00:10:96::/112 (IPv4 first in dual)
        networking["ipFamily"] = spec.ip_family
    if opts.disable_default_cni:
        networking["disableDefaultCNI"] = True
    if opts.pod_subnet:
        networking["podSubnet"] = opts.pod_subnet
    if opts.service_subnet:
        networking["serviceSubnet"] = opts.service_subnet
    cfg: dict[str, Any] = {
        "kind": "Cluster",
        "apiVersion": KIND_API_VERSION,
        "name": spec.name,
        "networking": networking,
        "nodes": nodes,
    }
    patches = list(opts.kubeadm_config_patches)
    if opts.allow_cgroup_v1:
        patches.append(CGROUP_V1_PATCH)
    if patches:
        cfg["kubeadmConfigPatches"] = patches
    if opts.config_file is not None:
        cfg = merge_user_config(cfg, read_user_config(Path(opts.config_file)), str(opts.config_file))
    return cfg


def read_user_config(path: Path) -> dict[str, Any]:
    """A user's kind config file (one YAML mapping of kind ``Cluster``); a clear error naming the file."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"kind config {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"kind config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"kind config {path}: expected a mapping (kind: Cluster), got {type(doc).__name__}")
    return doc


_LIST_KEYS = ("kubeadmConfigPatches", "kubeadmConfigPatchesJSON6902", "containerdConfigPatches")


def merge_user_config(cfg: Mapping[str, Any], user: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``cfg`` (generated) with the user's kind config merged in.

    The plugin's own settings stay: ``name``, the node count and roles (``--k8sstate-nodes``), the kube-proxy
    mode (``--k8sstate-proxy-mode``) and the node image; a user value that contradicts one is a ConfigError
    naming the option to use instead. Patch lists are appended after the generated ones; ``networking``,
    ``featureGates`` and ``runtimeConfig`` are merged key by key; per-node settings (``extraMounts``,
    ``labels``, ``extraPortMappings``, node patches) are taken from ``nodes`` when the user lists them; any
    other key is the user's.
    """
    out: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in cfg.items()}
    for key, want in (("kind", "Cluster"), ("apiVersion", KIND_API_VERSION)):
        if key in user and user[key] != want:
            raise ConfigError(f"kind config {source}: {key} is {user[key]!r}; expected {want!r}")
    for key, value in user.items():
        if key in ("kind", "apiVersion", "name"):
            continue
        if key in _LIST_KEYS:
            if not isinstance(value, list):
                raise ConfigError(f"kind config {source}: {key} must be a list")
            out[key] = [*out.get(key, []), *value]
        elif key in ("networking", "featureGates", "runtimeConfig"):
            if not isinstance(value, dict):
                raise ConfigError(f"kind config {source}: {key} must be a mapping")
            mode = out.get("networking", {}).get("kubeProxyMode")
            if key == "networking" and value.get("kubeProxyMode", mode) != mode:
                raise ConfigError(
                    f"kind config {source}: networking.kubeProxyMode is {value['kubeProxyMode']!r} but the "
                    f"cluster's is {mode!r}; set it with --k8sstate-proxy-mode instead"
                )
            out[key] = {**out.get(key, {}), **value}
        elif key == "nodes":
            out["nodes"] = _merge_nodes(out["nodes"], value, source)
        else:
            out[key] = value
    return out


def _merge_nodes(ours: list[dict[str, Any]], theirs: object, source: str) -> list[dict[str, Any]]:
    if not isinstance(theirs, list) or not all(isinstance(n, dict) for n in theirs):
        raise ConfigError(f"kind config {source}: nodes must be a list of mappings")
    roles = [str(n.get("role", "control-plane")) for n in theirs]
    want = [str(n["role"]) for n in ours]
    if sorted(roles) != sorted(want):
        raise ConfigError(
            f"kind config {source}: nodes has {roles.count('control-plane')} control-plane and "
            f"{roles.count('worker')} worker node(s); this cluster has 1 and {want.count('worker')} "
            "(set the workers with --k8sstate-nodes; one control-plane node)"
        )
    merged = []
    for mine, user_node in zip(
        sorted(ours, key=lambda n: n["role"]),
        sorted(theirs, key=lambda n: n.get("role", "control-plane")),
        strict=True,
    ):
        node = {**user_node, **{k: v for k, v in mine.items() if k != "kubeadmConfigPatches"}}
        patches = [*mine.get("kubeadmConfigPatches", []), *user_node.get("kubeadmConfigPatches", [])]
        if patches:
            node["kubeadmConfigPatches"] = patches
        merged.append(node)
    return merged


def host_cgroup_v1(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """True when ``cgroup_root`` is not a unified (v2) hierarchy."""
    return not (cgroup_root / "cgroup.controllers").exists()


def render_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=False)


def create_argv(
    kind: str,
    name: str,
    config: Path,
    kubeconfig: Path,
    *,
    image: str | None = None,
    wait: float = DEFAULT_WAIT,
    retain: bool = True,
) -> list[str]:
    """``kind create cluster`` for ``name`` (``--retain``: keep failed nodes so logs can be exported)."""
    argv = [
        kind,
        "create",
        "cluster",
        "--name",
        name,
        "--config",
        str(config),
        "--kubeconfig",
        str(kubeconfig),
    ]
    if image:
        argv += ["--image", image]
    if wait > 0:
        argv += ["--wait", f"{round(wait)}s"]
    if retain:
        argv.append("--retain")
    return argv


def kind_error_summary(stderr: str, limit: int = 3) -> str:
    """The useful lines of a failed kind command (``ERROR: ...``, ``Command Output: ...``), not its stack."""
    keep = [ln.strip() for ln in stderr.splitlines() if ln.startswith(("ERROR:", "Command Output:"))]
    if not keep:
        keep = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("\t", " "))][
            -1:
        ]
    text = " | ".join(keep[:limit]) or "(no output)"
    return text if len(text) <= 600 else text[:597] + "..."


def kind_node_names(cluster: str, workers: int) -> list[str]:
    """Container names kind gives the nodes: ``C-control-plane``, ``C-worker``, ``C-worker2``, ..."""
    return [f"{cluster}-control-plane"] + [
        f"{cluster}-worker" + ("" if i == 1 else str(i)) for i in range(1, workers + 1)
    ]
