"""pytest-k8sstate: capture etcd and node network state of real Kubernetes clusters, diff it, assert on it."""

from __future__ import annotations

from .errors import K8sStateError

__version__ = "0.1.0"

__all__ = ["K8sStateError", "__version__"]
