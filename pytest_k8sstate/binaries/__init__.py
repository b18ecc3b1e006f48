"""Pinned Kubernetes, etcd, kwok, kind (+ CoreDNS, crictl) binaries: cache, official downloads, Go builds.

``versions`` (pins, tables), ``cache`` (layout, manifest, lock, lookups), ``download`` (official releases +
checksums), ``gomod`` (go.mod reader, wrapper modules as text), ``gobuild`` (the go command, builds; the
missing Kubernetes binaries in one ``go build``), ``kwokstages`` (kwok's default stages) and ``install``
(:func:`ensure_binaries`: cache → download → build, with a live progress line). The CLI is
:mod:`pytest_k8sstate.cli.binaries`.
"""

from __future__ import annotations

from pytest_k8sstate.binaries.cache import find_binary, list_cached, sha256_file, version_dir
from pytest_k8sstate.binaries.gobuild import ModuleInfo, find_go, module_info
from pytest_k8sstate.binaries.gomod import etcd_wrapper_gomod, kubernetes_wrapper_gomod, staging_modules
from pytest_k8sstate.binaries.install import BinarySet, ProgressFn, ensure_binaries
from pytest_k8sstate.binaries.kwokstages import kwok_stages
from pytest_k8sstate.binaries.versions import (
    ALL_BINARIES,
    BINARY_COMPONENT,
    COMPONENT_BINARIES,
    DEFAULT_BINARIES,
    DEFAULT_COREDNS_VERSION,
    DEFAULT_CRICTL_VERSION,
    DEFAULT_ETCD_VERSION,
    DEFAULT_KIND_VERSION,
    DEFAULT_KUBERNETES_VERSION,
    DEFAULT_KWOK_VERSION,
    KUBERNETES_BINARIES,
    KUBERNETES_OPTIONAL_BINARIES,
    Versions,
    normalize_version,
    staging_version,
)
from pytest_k8sstate.util.files import cache_dir

__all__ = [
    "ALL_BINARIES",
    "BINARY_COMPONENT",
    "COMPONENT_BINARIES",
    "DEFAULT_BINARIES",
    "DEFAULT_COREDNS_VERSION",
    "DEFAULT_CRICTL_VERSION",
    "DEFAULT_ETCD_VERSION",
    "DEFAULT_KIND_VERSION",
    "DEFAULT_KUBERNETES_VERSION",
    "DEFAULT_KWOK_VERSION",
    "KUBERNETES_BINARIES",
    "KUBERNETES_OPTIONAL_BINARIES",
    "BinarySet",
    "ModuleInfo",
    "ProgressFn",
    "Versions",
    "cache_dir",
    "ensure_binaries",
    "etcd_wrapper_gomod",
    "find_binary",
    "find_go",
    "kubernetes_wrapper_gomod",
    "kwok_stages",
    "list_cached",
    "module_info",
    "normalize_version",
    "sha256_file",
    "staging_modules",
    "staging_version",
    "version_dir",
]
