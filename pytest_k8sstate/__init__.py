"""pytest-k8sstate: capture etcd and node network state of real Kubernetes clusters, diff it, assert on it.

The assertion helpers, the snapshot model and the tracer are re-exported lazily, so that importing the
package (as pytest does for the plugin) does not import the assertion modules before the plugin
has registered it for assertion rewriting::

    from pytest_k8sstate import assert_new_keys, assert_dnat_to, pod_ip, Snapshot, Packet
    from pytest_k8sstate.trace import trace
"""

from __future__ import annotations

import importlib
from typing import Any

from pytest_k8sstate.errors import K8sStateError

__version__ = "0.1.0"

_LAZY = {
    "assert_dnat_to": "assertions",
    "assert_masquerade": "assertions",
    "assert_modified_keys": "assertions",
    "assert_new_chains": "assertions",
    "assert_new_links": "assertions",
    "assert_new_routes": "assertions",
    "assert_new_addresses": "assertions",
    "assert_removed_links": "assertions",
    "assert_removed_routes": "assertions",
    "assert_removed_addresses": "assertions",
    "assert_new_keys": "assertions",
    "assert_no_netfilter_change": "assertions",
    "assert_no_new_keys": "assertions",
    "assert_removed_keys": "assertions",
    "count_rules": "assertions",
    "service_rules": "assertions",
    "Snapshot": "state",
    "StateDiff": "state",
    "Packet": "trace",
    "K8sHelper": "k8s",
    "pod_ip": "k8s",
}

__all__ = ["K8sStateError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
