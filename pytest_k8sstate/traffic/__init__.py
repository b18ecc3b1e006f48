"""Real traffic, checked against the trace: probes through agnhost workloads and a statistical comparison.

``probe`` (the busybox probe client, its output parser, :class:`ProbeResult`), ``targets`` (``--to`` /
``--from`` parsing, Service resolution, :func:`probe` on a cluster), ``stats`` (chi-square goodness of fit
with a stated false-failure rate), ``compare`` (:func:`assert_traffic_matches_trace`: traced vs observed).
The workload image itself is built by :mod:`pytest_k8sstate.providers.kind.image.agnhost`.
"""

from __future__ import annotations

from pytest_k8sstate.traffic.compare import TrafficComparison, assert_traffic_matches_trace, traced_outcomes
from pytest_k8sstate.traffic.probe import Connection, PodExec, ProbeResult, run_probe
from pytest_k8sstate.traffic.stats import DEFAULT_ALPHA, SplitTest, chi2_sf, split_test
from pytest_k8sstate.traffic.targets import Source, Target, parse_source, parse_target, probe

__all__ = [
    "DEFAULT_ALPHA",
    "Connection",
    "PodExec",
    "ProbeResult",
    "Source",
    "SplitTest",
    "Target",
    "TrafficComparison",
    "assert_traffic_matches_trace",
    "chi2_sf",
    "parse_source",
    "parse_target",
    "probe",
    "run_probe",
    "split_test",
    "traced_outcomes",
]
