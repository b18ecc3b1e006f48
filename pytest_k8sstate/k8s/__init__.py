"""The ``k8s_api`` fixture's helper: apply manifests, wait for readiness, read pods and Services; a
namespace per test and the diagnostics of a failed test's namespace.

``helper`` (K8sHelper), ``manifests`` (parse/load manifests, ``kind/name`` references), ``readiness``
(when an object is ready), ``discovery`` (resources and kinds the server serves), ``watch`` (watch
events), ``api`` (what a failed API call is reported as), ``namespaces`` (create / delete a test's
namespace, bounded), ``diagnostics`` (events, pod states, container log tails).
"""

from __future__ import annotations

from pytest_k8sstate.k8s.helper import K8sHelper, pod_ip
from pytest_k8sstate.k8s.manifests import ObjectRef, parse_manifests, parse_ref
from pytest_k8sstate.k8s.watch import WatchEvent

__all__ = ["K8sHelper", "ObjectRef", "WatchEvent", "parse_manifests", "parse_ref", "pod_ip"]
