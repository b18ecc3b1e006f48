"""Pure ``assert_*`` helpers over snapshots and diffs (usable without pytest).

Each ``assert_*`` raises :class:`AssertionError` with a short message — what was expected, what was
found, the nearest candidates (``did you mean /registry/endpointslices/default/web-x7k2p?``) — and,
when verbose, the full diff (or the packet paths). ``verbose=None`` (the default) follows the global
verbosity that the pytest plugin sets from ``-v`` via :func:`set_verbosity` (initially from the
``K8SSTATE_VERBOSITY`` environment variable, default 0).

``keys`` (etcd keys of a diff), ``netfilter`` (chains, rule counts, a service's rules), ``services``
(service ports from kube-proxy rules and etcd), ``dataplane`` (DNAT / masquerade by tracing packets),
``links`` (links, addresses and routes added or removed: a CNI's footprint). The plugin registers this
package for assertion rewriting.
"""

from __future__ import annotations

from pytest_k8sstate.assertions._common import get_verbosity, set_verbosity
from pytest_k8sstate.assertions.conntrack import assert_conntrack_dnat, conntrack_entries
from pytest_k8sstate.assertions.dataplane import assert_dnat_to, assert_masquerade, local_ips
from pytest_k8sstate.assertions.keys import (
    assert_modified_keys,
    assert_new_keys,
    assert_no_new_keys,
    assert_removed_keys,
)
from pytest_k8sstate.assertions.links import (
    assert_new_addresses,
    assert_new_links,
    assert_new_routes,
    assert_removed_addresses,
    assert_removed_links,
    assert_removed_routes,
)
from pytest_k8sstate.assertions.netfilter import (
    assert_new_chains,
    assert_no_netfilter_change,
    count_rules,
    service_rules,
)
from pytest_k8sstate.assertions.pods import assert_logs_contain, assert_pod_interface, find_pod
from pytest_k8sstate.assertions.services import ServiceVip, find_services

__all__ = [
    "ServiceVip",
    "assert_conntrack_dnat",
    "assert_dnat_to",
    "assert_logs_contain",
    "assert_masquerade",
    "assert_modified_keys",
    "assert_new_addresses",
    "assert_new_chains",
    "assert_new_keys",
    "assert_new_links",
    "assert_new_routes",
    "assert_no_netfilter_change",
    "assert_no_new_keys",
    "assert_pod_interface",
    "assert_removed_addresses",
    "assert_removed_keys",
    "assert_removed_links",
    "assert_removed_routes",
    "conntrack_entries",
    "count_rules",
    "find_pod",
    "find_services",
    "get_verbosity",
    "local_ips",
    "service_rules",
    "set_verbosity",
]
