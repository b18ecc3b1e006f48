"""Pinned versions and the binary tables: which binaries each component has, and version validation."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pytest_k8sstate.errors import ConfigError

# --- pinned versions ---
# Kubernetes: the newest stable release the Go module proxy can serve. v1.37.2 is newer, but proxy.golang.org
# serves only its .mod: the source zip answers 403 "This module version is not available", so it cannot be
# built here (checked 2026-11-22). v1.37.1 builds. Revisit when the proxy serves v1.37.2's zip.
DEFAULT_KUBERNETES_VERSION = "v1.37.1"
# etcd: kubeadm 1.37 pins etcd 3.7.0; v3.7.3 is the newest 3.7 patch of go.etcd.io/etcd/{server,etcdctl}/v3.
DEFAULT_ETCD_VERSION = "v3.7.3"
# kwok and kind: newest releases on the proxy (sigs.k8s.io/kwok, sigs.k8s.io/kind).
DEFAULT_KWOK_VERSION = "v0.8.0"
DEFAULT_KIND_VERSION = "v0.33.0"
# kind node images only (providers.kind.image), build only (no download): CoreDNS is the version kubeadm
# v1.37 names (`kubeadm config images list`); crictl: cri-tools v1.36.0 is the newest the proxy serves here
# (v1.37.0 answers 403 "This module version is not available", checked 2026-11-22).
DEFAULT_COREDNS_VERSION = "v1.14.6"
DEFAULT_CRICTL_VERSION = "v1.36.0"
# agnhost (upstream's e2e test workload, k8s.io/kubernetes/test/images/agnhost): built from the same
# k8s.io/kubernetes module version as the cluster, on demand only (the traffic package's workload image).
DEFAULT_AGNHOST_VERSION = DEFAULT_KUBERNETES_VERSION
# flanneld (github.com/flannel-io/flannel, the kind provider's ``cni=flannel``): built on demand only, with a
# local stand-in for the one dependency the proxy refuses (see binaries/flannel.py).
DEFAULT_FLANNEL_VERSION = "v0.28.10"

KUBERNETES_BINARIES: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
)
# Needed for kind node images only; never built unless asked for.
KUBERNETES_OPTIONAL_BINARIES: tuple[str, ...] = ("kubelet", "kubeadm")
COMPONENT_BINARIES: dict[str, tuple[str, ...]] = {
    "kubernetes": KUBERNETES_BINARIES + KUBERNETES_OPTIONAL_BINARIES,
    "etcd": ("etcd", "etcdctl"),
    "kwok": ("kwok",),
    "kind": ("kind",),
    "coredns": ("coredns",),
    "crictl": ("crictl",),
    "agnhost": ("agnhost",),
    "flannel": ("flanneld",),
}
BINARY_COMPONENT: dict[str, str] = {b: c for c, bs in COMPONENT_BINARIES.items() for b in bs}
DEFAULT_BINARIES: tuple[str, ...] = (*KUBERNETES_BINARIES, "etcd", "etcdctl", "kwok", "kind")
ALL_BINARIES: tuple[str, ...] = tuple(BINARY_COMPONENT)
# Small first: the local provider needs etcd and kwok long before a cold Kubernetes build finishes.
INSTALL_ORDER = ("etcd", "kwok", "kind", "crictl", "coredns", "kubernetes", "agnhost", "flannel")

_VERSION_RE = re.compile(
    r"v?(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})(-[0-9A-Za-z][0-9A-Za-z.-]{0,40})?"
)


def normalize_version(value: object, *, what: str = "version") -> str:
    """``"1.37.1"`` or ``"v1.37.1"`` (optionally ``-rc.0``) → ``"v1.37.1"``; else :class:`ConfigError`."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _VERSION_RE.fullmatch(text):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else repr(value[:57] + "...")
        raise ConfigError(f"{what}: {shown} is not a release version; expected X.Y.Z or vX.Y.Z (e.g. 1.37.1)")
    return "v" + text.removeprefix("v")


def version_parts(version: str) -> tuple[int, int, int, str]:
    """``v1.37.1-rc.0`` → ``(1, 37, 1, "-rc.0")``."""
    m = _VERSION_RE.fullmatch(version)
    if m is None:  # pragma: no cover - versions are normalised on construction
        raise ConfigError(f"{version!r} is not a release version")
    return int(m[1]), int(m[2]), int(m[3]), m[4] or ""


def staging_version(kubernetes_version: str) -> str:
    """Version of the staging modules (k8s.io/api, ...) of ``k8s.io/kubernetes vX.Y.Z``: ``v0.Y.Z``."""
    _, minor, patch, pre = version_parts(normalize_version(kubernetes_version, what="kubernetes version"))
    return f"v0.{minor}.{patch}{pre}"


@dataclass(frozen=True)
class Versions:
    """Pinned versions; each accepts ``1.37.1`` or ``v1.37.1`` and is stored as ``v1.37.1``."""

    kubernetes: str = DEFAULT_KUBERNETES_VERSION
    etcd: str = DEFAULT_ETCD_VERSION
    kwok: str = DEFAULT_KWOK_VERSION
    kind: str = DEFAULT_KIND_VERSION
    coredns: str = DEFAULT_COREDNS_VERSION
    crictl: str = DEFAULT_CRICTL_VERSION
    agnhost: str = DEFAULT_AGNHOST_VERSION
    flannel: str = DEFAULT_FLANNEL_VERSION

    def __post_init__(self) -> None:
        for f in fields(self):
            value = normalize_version(getattr(self, f.name), what=f"{f.name} version")
            object.__setattr__(self, f.name, value)

    @staticmethod
    def env_var(component: str) -> str:
        return f"K8SSTATE_{component.upper()}_VERSION"

    @classmethod
    def resolve(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        kubernetes: str | None = None,
        etcd: str | None = None,
        kwok: str | None = None,
        kind: str | None = None,
        coredns: str | None = None,
        crictl: str | None = None,
        agnhost: str | None = None,
        flannel: str | None = None,
    ) -> Versions:
        """Defaults, overridden by ``K8SSTATE_<COMPONENT>_VERSION`` in ``env``, overridden by arguments."""
        environ = os.environ if env is None else env
        given = {
            "kubernetes": kubernetes,
            "etcd": etcd,
            "kwok": kwok,
            "kind": kind,
            "coredns": coredns,
            "crictl": crictl,
            "agnhost": agnhost,
            "flannel": flannel,
        }
        chosen: dict[str, str] = {}
        for f in fields(cls):
            arg = given[f.name]
            if arg is not None and str(arg).strip():
                chosen[f.name] = normalize_version(arg, what=f"{f.name} version")
                continue
            var = cls.env_var(f.name)
            from_env = environ.get(var, "").strip()
            if from_env:
                chosen[f.name] = normalize_version(from_env, what=f"environment variable {var}")
        return cls(**chosen)

    def of(self, component: str) -> str:
        if component not in COMPONENT_BINARIES:
            raise ConfigError(
                f"unknown component {component!r}; expected one of {', '.join(COMPONENT_BINARIES)}"
            )
        value: str = getattr(self, component)
        return value

    def to_json(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Versions:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def component_of(name: str) -> str:
    """The component (``kubernetes``, ``etcd``, ...) that binary ``name`` belongs to."""
    try:
        return BINARY_COMPONENT[name]
    except KeyError:
        raise ConfigError(f"unknown binary {name!r}; expected one of {', '.join(ALL_BINARIES)}") from None


def expand_components(components: Iterable[str] | None) -> list[str]:
    """Binary names of comma-separated binaries, groups and ``all`` (default: :data:`DEFAULT_BINARIES`)."""
    if components is None:
        return list(DEFAULT_BINARIES)
    if isinstance(components, str):
        components = [components]
    wanted: list[str] = []
    for raw in components:
        for item in (p.strip() for p in raw.split(",")):
            if not item:
                continue
            if item == "all":
                names: Sequence[str] = ALL_BINARIES
            elif item == "kubernetes":
                names = KUBERNETES_BINARIES
            elif item in COMPONENT_BINARIES:
                names = COMPONENT_BINARIES[item]
            elif item in BINARY_COMPONENT:
                names = (item,)
            else:
                raise ConfigError(
                    f"unknown component {item!r}; expected binaries ({', '.join(ALL_BINARIES)}), "
                    f"groups ({', '.join(COMPONENT_BINARIES)}) or 'all'"
                )
            wanted.extend(n for n in names if n not in wanted)
    return wanted
