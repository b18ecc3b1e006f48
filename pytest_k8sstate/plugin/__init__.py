"""The pytest plugin (entry point ``pytest11: k8sstate``): hooks and fixtures over a pytest-free core.

pytest registers this module, so the hooks and fixtures are imported here by name.
"""

from __future__ import annotations

from pytest_k8sstate.plugin.hooks import (
    _k8sstate_markers,
    cluster_state,
    k8s_api,
    k8s_cluster,
    k8s_clusters,
    k8sstate_namespace,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_generate_tests,
    pytest_load_initial_conftests,
    pytest_report_header,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
    pytest_testnodedown,
)

# plugin modules with their own hooks: the traffic report section and the conntrack switch, the footprint
# records, the early delete of marker-spec clusters
pytest_plugins = [
    "pytest_k8sstate.plugin.traffic_report",
    "pytest_k8sstate.plugin.footprints",
    "pytest_k8sstate.plugin.release",  # a marker-spec cluster goes once no test left needs it
]

__all__ = [
    "_k8sstate_markers",
    "cluster_state",
    "k8s_api",
    "k8s_cluster",
    "k8s_clusters",
    "k8sstate_namespace",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_generate_tests",
    "pytest_load_initial_conftests",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "pytest_testnodedown",
]
