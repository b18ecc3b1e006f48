"""Failure reporting: the one-line summary, artifacts on disk, the report section, assertion rewriting.

The state comes from real capture: a network namespace the test creates, with real iptables rules, seen
through a real :class:`~pytest_k8sstate.providers.base.Cluster` handle that has nodes but no control plane
(``etcd=None``) — the plugin's reporting does not need Kubernetes, only snapshots.
"""

from __future__ import annotations

import base64
import html
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from pypi_access import pypi_unreachable

from pytest_k8sstate.node import netns
from pytest_k8sstate.plugin.state import artifact_dir_for, sanitize_nodeid, summarize_diff, write_artifacts
from pytest_k8sstate.state import EtcdDiff, KeyChange, NodeDiff, Snapshot, StateDiff

PluginRunner = Any  # tests/plugin/conftest.py

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and iptables")


def test_summary_counts_the_default_view_and_says_what_is_hidden() -> None:
    rule = ("nat", "KUBE-SERVICES", "-d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j KUBE-SVC-X")
    diff = StateDiff(
        etcd=EtcdDiff(
            added=[
                KeyChange("/registry/pods/default/web", "Pod", "default", "web"),
                KeyChange("/registry/services/specs/default/web", "Service", "default", "web"),
                KeyChange("/registry/events/default/web.1"),
            ],
            modified=[KeyChange("/registry/leases/kube-node-lease/node-1")],
        ),
        nodes={
            "node-1": NodeDiff(rules_added=[rule, rule], chains_added=[("nat", "KUBE-SVC-X")]),
            "node-2": NodeDiff(rules_added=[rule]),
            "node-3": NodeDiff(),
        },
    )
    assert summarize_diff(diff) == (
        "2 etcd keys added (2 more hidden by ignore patterns); "
        "3 rules added on 2 nodes, 1 chains added on 1 node"
    )
    assert summarize_diff(StateDiff()) == "no etcd key changed; no node state changed"
    one = StateDiff(etcd=EtcdDiff(removed=[KeyChange("/registry/pods/default/web")]))
    assert summarize_diff(one) == "1 etcd key removed; no node state changed"


def test_artifact_dirs_are_sanitised_node_ids(tmp_path: Any) -> None:
    assert sanitize_nodeid("tests/test_a.py::TestX::test_y[1-a/b]") == "tests_test_a.py__TestX__test_y_1-a_b"
    long_id = "tests/test_a.py::test_" + "x" * 300
    name = sanitize_nodeid(long_id)
    assert len(name) == 120
    assert name != sanitize_nodeid(long_id + "y")
    assert artifact_dir_for(tmp_path, "t.py::test_z") == tmp_path / "t.py__test_z"


@needs_root
def test_write_artifacts_from_real_snapshots(tmp_path: Any) -> None:
    with netns.temporary("h7art") as ns:
        before = Snapshot.capture("before", nodes=[ns], ipvs=False)
        ns.run(["iptables", "-t", "nat", "-N", "KUBE-SVC-TEST"])
        ns.run(["iptables", "-t", "nat", "-A", "KUBE-SVC-TEST", "-p", "tcp", "-j", "RETURN"])
        middle = Snapshot.capture("middle", nodes=[ns], ipvs=False)
        after = Snapshot.capture("after", nodes=[ns], ipvs=False)
    diff = before.diff(after)
    written = write_artifacts(tmp_path / "a", before=before, after=after, diff=diff, extra={"middle": middle})
    assert sorted(p.name for p in written) == ["after.json", "before.json", "diff.json", "middle.json"]
    assert Snapshot.load(tmp_path / "a" / "before.json") == before
    assert Snapshot.load(tmp_path / "a" / "middle.json") == middle
    saved = StateDiff.from_json(json.loads((tmp_path / "a" / "diff.json").read_text()))
    assert ("nat", "KUBE-SVC-TEST", "-p tcp -j RETURN") in saved.nodes[ns.node].rules_added
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]


NETNS_CLUSTER_CONFTEST = """
import pytest
from pathlib import Path
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.providers.base import Cluster, NodeInfo


@pytest.fixture(scope="session")
def k8s_cluster():
    # a real Cluster handle over one network namespace: real node capture, no control plane
    with netns.temporary("h7rep") as ns:
        for table in ("nat", "filter"):  # load the tables so only the tests' own chains show as added
            ns.run(["iptables", "-t", table, "-N", "WARMUP"])
            ns.run(["iptables", "-t", table, "-X", "WARMUP"])
        yield Cluster(
            name="netns-only", provider="local", kubeconfig=Path("/nonexistent"), api_server="",
            nodes=[NodeInfo("node-1", "worker", NetnsExec(ns.netns, node="node-1"), "")], etcd=None,
            capabilities=frozenset({"iptables"}), proxy_mode="iptables",
        )
"""

NETNS_CLUSTER_TESTS = """
def test_adds_a_chain_then_fails(k8s_cluster, cluster_state):
    node = k8s_cluster.nodes[0].exec
    node.run(["iptables", "-t", "nat", "-N", "KUBE-SVC-TEST"])
    node.run(["iptables", "-t", "nat", "-A", "KUBE-SVC-TEST", "-p", "tcp", "-j", "RETURN"])
    cluster_state.snapshot("after-rules")
    assert False, "boom"


def test_diff_and_pass(k8s_cluster, cluster_state):
    node = k8s_cluster.nodes[0].exec
    node.run(["iptables", "-t", "filter", "-N", "MINE"])
    diff = cluster_state.diff()
    assert diff.nodes["node-1"].chains_added == [("filter", "MINE")]
    assert cluster_state.after is not None
"""


@pytest.fixture(scope="module")
def pytest_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest-html (and what it needs besides pytest) from PyPI into a directory of its own."""
    reason = pypi_unreachable()
    if reason is not None:
        pytest.skip(reason)
    target = tmp_path_factory.mktemp("pytest-html")
    packages = ["pytest-html>=4", "pytest-metadata", "jinja2", "markupsafe"]
    result = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *packages],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@needs_root
def test_failure_reaches_junit_xml_and_pytest_html(plugin: PluginRunner, pytest_html: Path) -> None:
    """JUnit: the artifact paths as properties and ``[[ATTACHMENT|…]]`` lines in ``<system-out>``;
    pytest-html: the ``k8sstate`` section as a text extra of the failed test (and nothing for the passed)."""
    plugin.pytester.makeconftest(NETNS_CLUSTER_CONFTEST)
    plugin.pytester.makepyfile(test_netns=NETNS_CLUSTER_TESTS)
    root = Path(__file__).resolve().parents[2]
    plugin.pytester._monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(pytest_html), str(root), os.environ.get("PYTHONPATH", "")])
    )
    result = plugin.run_subprocess(
        "--k8sstate-artifacts=arts",
        "--junitxml=junit.xml",
        "-o",
        "junit_logging=system-out",
        "--html=report.html",
        "--self-contained-html",
    )
    result.assert_outcomes(passed=1, failed=1)
    artifacts = plugin.pytester.path / "arts" / "test_netns.py__test_adds_a_chain_then_fails"

    junit = ElementTree.parse(plugin.pytester.path / "junit.xml").getroot()
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_adds_a_chain_then_fails"].iter("property")}
    assert props == {
        "k8sstate_artifacts": str(artifacts),
        **{
            f"k8sstate_file_{n}": str(artifacts / n)
            for n in ("before.json", "after.json", "after-rules.json")
        },
        "k8sstate_file_diff.json": str(artifacts / "diff.json"),
        "k8sstate_file_report.html": str(artifacts / "report.html"),
    }
    out = "".join(e.text or "" for e in cases["test_adds_a_chain_then_fails"].iter("system-out"))
    for name in ("before.json", "after.json", "after-rules.json", "diff.json", "report.html"):
        assert f"[[ATTACHMENT|{artifacts / name}]]" in out
    assert not list(cases["test_diff_and_pass"].iter("property"))

    page = html.unescape((plugin.pytester.path / "report.html").read_text())
    blob = json.loads(page.split('data-jsonblob="', 1)[1].split('"></div>', 1)[0])
    extras = {
        test_id: [e for result in results for e in result.get("extras", [])]
        for test_id, results in blob["tests"].items()
    }
    failed = next(v for k, v in extras.items() if k.endswith("test_adds_a_chain_then_fails"))
    passed = next(v for k, v in extras.items() if k.endswith("test_diff_and_pass"))
    assert [e["name"] for e in failed] == ["k8sstate"]
    text = base64.b64decode(failed[0]["content"].split("base64,", 1)[-1]).decode()
    assert text.startswith("k8sstate: no etcd key changed; 1 rules added on 1 node, 1 chains added on 1 node")
    assert "KUBE-SVC-TEST" in text
    assert passed == []


@needs_root
def test_failure_writes_artifacts_and_a_report_section(plugin: PluginRunner) -> None:
    plugin.pytester.makeconftest(NETNS_CLUSTER_CONFTEST)
    plugin.pytester.makepyfile(test_netns=NETNS_CLUSTER_TESTS)
    result = plugin.run("--k8sstate-artifacts=arts")
    result.assert_outcomes(passed=1, failed=1)
    artifacts = plugin.pytester.path / "arts" / "test_netns.py__test_adds_a_chain_then_fails"
    result.stdout.fnmatch_lines(
        [
            "*- k8sstate -*",
            f"k8sstate: no etcd key changed; 1 rules added on 1 node, 1 chains added on 1 node; "
            f"artifacts: {artifacts}",
            "diff before → after*",
            "node node-1:",
            "*KUBE-SVC-TEST*",
        ]
    )
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "after-rules.json",
        "after.json",
        "before.json",
        "diff.json",
        "report.html",
    ]
    diff = json.loads((artifacts / "diff.json").read_text())
    assert diff["nodes"]["node-1"]["chains_added"] == [["nat", "KUBE-SVC-TEST"]]
    assert not (plugin.pytester.path / "arts" / "test_netns.py__test_diff_and_pass").exists()


def test_the_plugin_does_not_reexport_the_assertion_helpers() -> None:
    """One public path for the helpers (``pytest_k8sstate`` / ``pytest_k8sstate.assertions``), not a second
    one through the plugin module."""
    import pytest_k8sstate.plugin as plugin_package
    import pytest_k8sstate.plugin.hooks as hooks

    for module in (hooks, plugin_package):
        for name in ("assert_new_keys", "assert_dnat_to"):
            assert not hasattr(module, name), f"{module.__name__}.{name}"


def test_assertion_helpers_are_rewritten_and_reexported(plugin: PluginRunner) -> None:
    plugin.pytester.makepyfile(
        """
        import pytest_k8sstate.assertions.keys as helpers
        from pytest_k8sstate import assert_new_keys
        from pytest_k8sstate.state import EtcdDiff, KeyChange, StateDiff

        def test_rewritten():
            assert type(helpers.__loader__).__name__ == "AssertionRewritingHook"
            assert assert_new_keys is helpers.assert_new_keys

        def test_helper_failure_message():
            web = KeyChange("/registry/pods/default/web", "Pod", "default", "web")
            diff = StateDiff(etcd=EtcdDiff(added=[web]))
            assert_new_keys(diff, "/registry/pods/default/wbe")
        """
    )
    result = plugin.run_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*did you mean /registry/pods/default/web*", "*run pytest -v for the full diff*"]
    )
    verbose = plugin.run("-v", "-k", "failure_message")  # -v reaches the helpers: full diff in the message
    verbose.assert_outcomes(failed=1)
    verbose.stdout.fnmatch_lines(["*did you mean /registry/pods/default/web*", "*diff before → after*"])
    assert "run pytest -v for the full diff" not in verbose.stdout.str()


def test_a_failed_capture_at_failure_keeps_what_was_captured(tmp_path: Any) -> None:
    """etcd dies during the test: the capture at failure raises (a real gRPC connect to a closed port), yet
    the before snapshot and the intermediate ones are written, with the reason in errors.txt."""
    import dataclasses
    import socket

    from pytest_k8sstate.etcd.target import EtcdTarget
    from pytest_k8sstate.node.exec import NetnsExec
    from pytest_k8sstate.plugin.state import ClusterState
    from pytest_k8sstate.providers.base import Cluster, NodeInfo

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with netns.temporary("h7cap") as ns:
        cluster = Cluster(
            name="netns-only",
            provider="local",
            kubeconfig=Path("/nonexistent"),
            api_server="",
            nodes=[NodeInfo("node-1", "worker", NetnsExec(ns.netns, node="node-1"), "")],
            etcd=None,
            capabilities=frozenset({"iptables"}),
            proxy_mode="iptables",
        )
        state = ClusterState(cluster)
        state.snapshot("middle")
        state.cluster = dataclasses.replace(cluster, etcd=EtcdTarget((dead,)))
        text = state.save_failure(tmp_path / "art")
    assert "capturing the cluster state at failure failed" in text
    names = sorted(p.name for p in (tmp_path / "art").iterdir())
    assert "before.json" in names
    assert "middle.json" in names
    assert "after.json" not in names
    assert Snapshot.load(tmp_path / "art" / "before.json") == state.before
    assert "after.json: not captured:" in (tmp_path / "art" / "errors.txt").read_text()
