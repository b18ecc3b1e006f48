"""The cluster fixtures on a real ``local`` cluster (few tests: a cluster costs seconds).

Skipped when the local provider cannot run here (not root, binaries missing).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from pytest_k8sstate.node import netns

PluginRunner = Any  # tests/plugin/conftest.py

SESSION_TESTS = """
import pytest
from pytest_k8sstate.assertions import assert_new_keys

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pt-cm"}, "data": {"a": "1"}}


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "pt-pod", "labels": {"app": "pt"}},
    "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10.1"}]},
}
NAMESPACES = []


def test_configmap_adds_one_key(k8s_api, cluster_state, k8sstate_namespace):
    # the test's own namespace (and its default ServiceAccount / root CA) exists before `before`
    assert k8sstate_namespace.startswith("kst-test-configmap-adds-one-key-")
    assert cluster_state.namespace == k8sstate_namespace == k8s_api.namespace
    NAMESPACES.append(k8sstate_namespace)
    k8s_api.apply(CM)
    diff = cluster_state.diff()
    assert_new_keys(diff, f"/registry/configmaps/{k8sstate_namespace}/pt-cm", exact=True)
    scoped = cluster_state.diff(namespace=k8sstate_namespace)
    assert [c.key for c in scoped.etcd_added()] == [f"/registry/configmaps/{k8sstate_namespace}/pt-cm"]
    assert cluster_state.diff(namespace="default").etcd_added() == []


def test_failure_has_a_section(k8s_api, cluster_state, k8sstate_namespace):
    NAMESPACES.append(k8sstate_namespace)
    k8s_api.apply({**CM, "metadata": {"name": "pt-cm-2"}})
    k8s_api.apply(POD)
    k8s_api.wait_ready("pod/pt-pod")
    assert False, "on purpose"


@pytest.mark.k8sstate(namespace="default")
def test_opt_out(k8s_api, k8sstate_namespace):
    assert k8sstate_namespace == k8s_api.namespace == "default"


def test_zz_namespaces_are_deleted_after_their_tests(k8s_api):
    assert len(NAMESPACES) == 2
    namespaces = {ns["metadata"]["name"]: ns for ns in k8s_api.list("namespace")}
    assert k8s_api.namespace in namespaces
    # gone, or (a loaded machine: the namespace controller is slow; the plugin warned) being deleted
    for name in NAMESPACES:
        assert name not in namespaces or namespaces[name]["metadata"].get("deletionTimestamp"), name


@pytest.mark.k8sstate(nodes=0)
def test_own_cluster_for_another_spec(k8s_cluster, k8s_clusters, k8s_api):
    assert [n.role for n in k8s_cluster.nodes] == ["control-plane"]
    assert k8s_cluster.name != k8s_clusters.get().name
    assert k8s_api.nodes() == [k8s_cluster.nodes[0].name]


@pytest.mark.k8sstate_needs("etcd", "iptables")
@pytest.mark.k8sstate(fresh=True)
def test_fresh_cluster(k8s_cluster, cluster_state):
    keys = cluster_state.before.etcd.entries
    assert not [k for k in keys if k.startswith("/registry/configmaps/default/pt-cm")]
    assert "/registry/services/specs/default/kubernetes" in keys
"""


def _provider_delete(name: str) -> None:
    from pytest_k8sstate.providers.registry import get_provider

    get_provider("local", progress=lambda _line: None).delete(name)


def test_session_cluster_failure_section_fresh_keep_and_reuse(
    plugin: PluginRunner, local_provider_ok: None
) -> None:
    plugin.pytester.makepyfile(test_session=SESSION_TESTS)
    name = None
    kept: list[str] = []
    try:
        result = plugin.run_subprocess(
            "--k8sstate-nodes=1",
            "--k8sstate-keep-cluster",
            "--k8sstate-component-logs=always",
            "--junitxml=junit.xml",
            "-o",
            "junit_logging=system-out",
            "-p",
            "no:randomly",
        )
        out = result.stdout.str()
        kept = re.findall(r"kept local cluster (\S+): reuse it with --k8sstate-reuse-cluster \1;", out)
        assert len(kept) == 2, out
        name, other = kept
        result.assert_outcomes(passed=5, failed=1)
        result.stdout.fnmatch_lines(
            [
                f"[[]k8sstate[]] creating local cluster {name} (local, 1 control plane + 1 workers*",
                f"[[]k8sstate[]] creating local cluster {other} (local, 1 control plane + 0 workers*",
                f"[[]k8sstate[]] reset cluster {name} in *s",
                "*- k8sstate -*",
                "k8sstate: * etcd keys added*(namespace kst-test-failure-has-a-section-*: "
                "* etcd keys added*); artifacts: */.k8sstate/test_session.py__test_failure_has_a_section",
                "*+ /registry/configmaps/kst-test-failure-has-a-section-*/pt-cm-2*",
                "*= k8sstate: kept clusters =*",
                f"kept local cluster {name}: reuse it with --k8sstate-reuse-cluster {name}; "
                f"delete it with: k8sstate cluster delete --provider local --name {name}",
            ]
        )
        result.stdout.fnmatch_lines(
            [
                "*- k8sstate diagnostics -*",
                "namespace kst-test-failure-has-a-section-*:",
                "events (*):",
                "*Scheduled pod/pt-pod: Successfully assigned kst-test-failure-has-a-section-*/pt-pod to *",
                "pods:",
                "  pod/pt-pod Running Ready on *, IP *",
                "    container web: running since *, image registry.k8s.io/pause:3.10.1",
            ]
        )
        artifacts = plugin.pytester.path / ".k8sstate" / "test_session.py__test_failure_has_a_section"
        names = sorted(p.name for p in artifacts.iterdir())
        # step-logs.txt: component log lines between the snapshots, written only when there were any
        if "step-logs.txt" in names:
            names.remove("step-logs.txt")
            assert (artifacts / "step-logs.txt").read_text().strip()
        assert names == ["after.json", "before.json", "diagnostics.txt", "diff.json", "logs", "report.html"]
        assert "pod/pt-pod Running Ready" in (artifacts / "diagnostics.txt").read_text()
        junit = ElementTree.parse(plugin.pytester.path / "junit.xml").getroot()
        case = next(c for c in junit.iter("testcase") if c.get("name") == "test_failure_has_a_section")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["k8sstate_artifacts"] == str(artifacts)
        assert props["k8sstate_file_diff.json"] == str(artifacts / "diff.json")
        assert props["k8sstate_file_diagnostics.txt"] == str(artifacts / "diagnostics.txt")
        system_out = "".join(e.text or "" for e in case.iter("system-out"))
        assert f"[[ATTACHMENT|{artifacts / 'diff.json'}]]" in system_out
        logs = sorted(p.name for p in (artifacts / "logs").iterdir())  # every component's log
        assert {"etcd.log", "kube-apiserver.log", "kwok.log"} <= set(logs), logs
        assert any(n.startswith("kube-proxy-") for n in logs), logs

        plugin.pytester.makepyfile(test_reuse="def test_reused(k8s_cluster):\n    assert k8s_cluster.nodes\n")
        again = plugin.run_subprocess("test_reuse.py", f"--k8sstate-reuse-cluster={name}")
        again.assert_outcomes(passed=1)
        again.stdout.fnmatch_lines(
            [f"[[]k8sstate[]] reusing local cluster {name} (--k8sstate-reuse-cluster)"]
        )
        assert "creating local cluster" not in again.stdout.str()
        assert any(ns.startswith(f"k8ss-{name}-") for ns in netns.list_ours())  # still there: reused, kept

        import pytest_k8sstate.providers.local.state as local_state

        kubeconfig = local_state.cluster_dir(name) / "kubeconfig" / "admin.conf"
        plugin.pytester.makepyfile(
            test_existing="""
            def test_attached(k8s_cluster, k8s_api):
                assert k8s_cluster.provider == "existing"
                k8s_api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pt-existing"}})
                assert k8s_api.get("cm/pt-existing")["metadata"]["name"] == "pt-existing"
            """
        )
        attached = plugin.run_subprocess(
            "test_existing.py", "--k8sstate-provider=existing", f"--k8sstate-kubeconfig={kubeconfig}"
        )
        attached.assert_outcomes(passed=1)
        attached.stdout.fnmatch_lines([f"[[]k8sstate[]] attached to cluster *@{name} of {kubeconfig}"])
        assert any(ns.startswith(f"k8ss-{name}-") for ns in netns.list_ours())  # existing: never deleted
    finally:
        for cluster in kept:
            _provider_delete(cluster)
    for cluster in kept:
        assert not any(ns.startswith(f"k8ss-{cluster}-") for ns in netns.list_ours())


def _our_processes(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_ctrl_c_during_cluster_create_leaves_nothing(plugin: PluginRunner, local_provider_ok: None) -> None:
    import pytest_k8sstate.providers.local.state as local_state

    plugin.pytester.makepyfile(test_slow="def test_needs_cluster(k8s_cluster):\n    pass\n")
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    argv = [sys.executable, "-m", "pytest", *plugin.plugin_args, "-p", "no:cacheprovider", "test_slow.py"]
    proc = subprocess.Popen(  # noqa: S603 - argv list
        argv, cwd=plugin.pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    name = f"pt{proc.pid % 100000}m"  # the session cluster's name in that process
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(ns.startswith(f"k8ss-{name}-") for ns in netns.list_ours()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "pytest ended before the cluster was being created"
        assert time.monotonic() < deadline, "the cluster's node namespaces never appeared"
        time.sleep(1.0)  # inside create: etcd and the apiserver are starting
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    text = out.decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text
    assert [ns for ns in netns.list_ours() if ns.startswith(f"k8ss-{name}-")] == []
    assert _our_processes(f"/clusters/{name}/") == []
    assert not local_state.cluster_dir(name).exists()


SHARED_TESTS = """
import os
from pathlib import Path


def test_in_a_shared_cluster(k8s_cluster, k8s_api, k8sstate_namespace):
    k8s_api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same-name"}})
    assert k8s_api.get("cm/same-name")["metadata"]["namespace"] == k8sstate_namespace
    worker = os.environ["PYTEST_XDIST_WORKER"]
    Path(f"seen-{worker}").write_text(f"{k8s_cluster.name} {k8sstate_namespace}")
"""


@pytest.mark.usefixtures("local_provider_ok")
def test_xdist_workers_share_one_cluster(plugin: PluginRunner) -> None:
    """``--k8sstate-share-cluster -n 2``: one cluster, created once, each worker in its own namespaces
    (the same object name in both), deleted by the controller at the end."""
    from pytest_k8sstate.providers.registry import get_provider

    plugin.pytester.makepyfile(test_shared=SHARED_TESTS)
    result = plugin.run_subprocess(
        "-n", "2", "--dist", "each", "--k8sstate-share-cluster", "--k8sstate-nodes=0", "-p", "no:randomly"
    )
    seen = {p.name: p.read_text().split() for p in plugin.pytester.path.glob("seen-gw*")}
    names = {cluster for cluster, _ in seen.values()}
    try:
        result.assert_outcomes(passed=2)
        assert sorted(seen) == ["seen-gw0", "seen-gw1"], result.stdout.str()
        assert len(names) == 1, seen
        assert next(iter(names)).endswith("sh")
        assert len({ns for _, ns in seen.values()}) == 2, seen
        assert not names & set(get_provider("local", progress=lambda _l: None).list())  # deleted at the end
    finally:
        for name in names:
            _provider_delete(name)
