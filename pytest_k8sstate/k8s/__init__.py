"""The ``k8s`` helper: apply manifests, wait for readiness, read pods and Services."""

from __future__ import annotations

from pytest_k8sstate.k8s.helper import K8sHelper, pod_ip

__all__ = ["K8sHelper", "pod_ip"]
