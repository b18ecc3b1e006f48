"""The standalone HTML report of two snapshots (``k8sstate report BEFORE AFTER -o diff.html``, and
``report.html`` among a failed test's artifacts): etcd changes as a tree with old → new values, and per
changed Service the graph of its kube-proxy path per node with the traced outcome distribution. One
self-contained file; pytest-free. See ``docs/report.md``."""

from __future__ import annotations

from pytest_k8sstate.report.graph import ServiceGraph, service_graph
from pytest_k8sstate.report.html import render_report, write_report

__all__ = ["ServiceGraph", "render_report", "service_graph", "write_report"]
