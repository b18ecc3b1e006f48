"""Helpers for tests of (and with) pytest-k8sstate: generators of real-format node state."""

from __future__ import annotations

from pytest_k8sstate.testing.iptables_gen import (
    KubeService,
    kube_proxy_iptables,
    make_services,
    sep_chain,
    svc_chain,
)

__all__ = ["KubeService", "kube_proxy_iptables", "make_services", "sep_chain", "svc_chain"]
