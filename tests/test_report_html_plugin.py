"""A failed test gets ``report.html`` beside its other artifacts, listed in the JUnit properties and as a
``[[ATTACHMENT|…]]`` line (pytester; the state comes from a real network namespace where the test loads
kube-proxy-shaped iptables rules with ``iptables-restore``)."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from xml.etree import ElementTree

import pytest

import pytest_k8sstate.plugin.options as k8s_config
from pytest_k8sstate.util.files import cache_dir

REAL_CACHE = str(cache_dir())  # resolved before pytester points HOME at a temp dir

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and iptables")

CONFTEST = """
import pytest
from pathlib import Path
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.providers.base import Cluster, NodeInfo


@pytest.fixture(scope="session")
def k8s_cluster():
    # a real Cluster handle over one network namespace: real node capture, no control plane
    with netns.temporary("hrepp") as ns:
        yield Cluster(
            name="netns-only", provider="local", kubeconfig=Path("/nonexistent"), api_server="",
            nodes=[NodeInfo("node-1", "worker", NetnsExec(ns.netns, node="node-1"), "")], etcd=None,
            capabilities=frozenset({"iptables"}), proxy_mode="iptables",
        )
"""

TESTS = """
from pytest_k8sstate.testing.iptables_gen import KubeService, kube_proxy_iptables

EPS = ("10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.4:8080")


def test_service_then_fails(k8s_cluster, cluster_state):
    web = KubeService("default", "web", "10.96.0.20", 80, endpoints=EPS, port_name="http")
    k8s_cluster.nodes[0].exec.run(["iptables-restore"], input=kube_proxy_iptables([web]).encode())
    assert False, "boom"


def test_passes(k8s_cluster, cluster_state):
    pass
"""


@needs_root
def test_a_failed_test_gets_report_html(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", REAL_CACHE)
    for opt in vars(k8s_config).values():
        if isinstance(opt, k8s_config._Option):
            monkeypatch.delenv(opt.env, raising=False)
    installed = any(ep.value == "pytest_k8sstate.plugin" for ep in entry_points(group="pytest11"))
    plugin_args = () if installed else ("-p", "pytest_k8sstate.plugin")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_svc=TESTS)
    result = pytester.runpytest(
        *plugin_args,
        "-p",
        "no:cacheprovider",
        "--k8sstate-artifacts=arts",
        "--junitxml=junit.xml",
        "-o",
        "junit_logging=system-out",
    )
    result.assert_outcomes(passed=1, failed=1)
    arts = pytester.path / "arts" / "test_svc.py__test_service_then_fails"
    page = arts / "report.html"
    assert page.is_file()
    result.stdout.fnmatch_lines(["*- k8sstate -*", f"report: {page}"])
    text = page.read_text()
    assert "<title>k8sstate: test_svc.py::test_service_then_fails</title>" in text
    assert 'data-service="default/web:http" data-node="node-1"' in text
    for ep in ("10.244.1.2:8080", "10.244.1.3:8080", "10.244.2.4:8080"):
        assert f'data-id="endpoint:{ep}"' in text
    assert not (pytester.path / "arts" / "test_svc.py__test_passes").exists()

    junit = ElementTree.parse(pytester.path / "junit.xml").getroot()
    case = next(c for c in junit.iter("testcase") if c.get("name") == "test_service_then_fails")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["k8sstate_file_report.html"] == str(page)
    out = "".join(e.text or "" for e in case.iter("system-out"))
    assert f"[[ATTACHMENT|{Path(page).resolve()}]]" in out
