"""Failure diagnostics without a cluster: the per-test namespace name, pod status lines from real
``kubernetes.client`` models, the namespace scope of a diff, when component logs are exported, the
``[[ATTACHMENT|…]]`` lines and the new options' validation. (On a real cluster:
``test_cluster_fixtures.py``.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.k8s.diagnostics import Diagnostics, _pod_lines
from pytest_k8sstate.k8s.namespaces import MAX_NAME, namespace_name
from pytest_k8sstate.plugin.failure import attachment_lines, component_logs
from pytest_k8sstate.plugin.state import scope_to_namespace
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.state import EtcdDiff, KeyChange, StateDiff

PluginRunner = Any  # tests/plugin/conftest.py
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/a.py::test_x",
        "tests/a.py::TestClass::test_Param[1-ipvs/nftables]",
        "t.py::test_" + "x" * 300,
        "t.py::test_ünïcødé[💥]",
        "t.py::___",
        "t.py::test-[--]",
    ],
)
def test_namespace_names_are_valid_unique_dns_labels(nodeid: str) -> None:
    names = {namespace_name(nodeid) for _ in range(20)}
    assert len(names) == 20  # random suffix
    for name in names:
        assert len(name) <= MAX_NAME, name
        assert DNS_LABEL.match(name), name
        assert name.startswith("kst-")


def test_namespace_name_keeps_the_test_name() -> None:
    assert namespace_name("tests/a.py::TestC::test_Web_Pod[3]", suffix="abcde") == "kst-test-web-pod-3-abcde"


def _pod(**status: Any) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="web", namespace="ns1"),
        spec=client.V1PodSpec(node_name="node-1", containers=[client.V1Container(name="app", image="img:1")]),
        status=client.V1PodStatus(**status),
    )


def test_pod_lines_say_why_a_pod_is_not_ready() -> None:
    pod = _pod(
        phase="Running",
        pod_ip="10.244.1.5",
        conditions=[
            client.V1PodCondition(type="Ready", status="False", reason="ContainersNotReady", message="app"),
            client.V1PodCondition(type="PodScheduled", status="True"),
        ],
        container_statuses=[
            client.V1ContainerStatus(
                name="app",
                image="img:1",
                image_id="",
                ready=False,
                restart_count=4,
                state=client.V1ContainerState(
                    waiting=client.V1ContainerStateWaiting(reason="CrashLoopBackOff", message="back-off 40s")
                ),
                last_state=client.V1ContainerState(
                    terminated=client.V1ContainerStateTerminated(exit_code=3, reason="Error")
                ),
            )
        ],
    )
    assert _pod_lines(pod) == [
        "pod/web Running NOT READY on node-1, IP 10.244.1.5",
        "  condition Ready=False (ContainersNotReady: app)",
        "  container app: waiting (CrashLoopBackOff: back-off 40s), 4 restarts, image img:1",
        "    last terminated: Error, exit code 3",
    ]


def test_pod_lines_of_a_running_and_an_unscheduled_pod() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    running = _pod(
        phase="Running",
        pod_ip="10.0.0.1",
        conditions=[client.V1PodCondition(type="Ready", status="True")],
        container_statuses=[
            client.V1ContainerStatus(
                name="app",
                image="img:1",
                image_id="",
                ready=True,
                restart_count=0,
                state=client.V1ContainerState(running=client.V1ContainerStateRunning(started_at=started)),
            )
        ],
    )
    assert _pod_lines(running) == [
        "pod/web Running Ready on node-1, IP 10.0.0.1",
        "  container app: running since 03:04:05, image img:1",
    ]
    pending = _pod(
        phase="Pending",
        conditions=[
            client.V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable", message="0/3 nodes are available"
            )
        ],
    )
    pending.spec.node_name = None
    assert _pod_lines(pending) == [
        "pod/web Pending NOT READY on (not scheduled)",
        "  condition PodScheduled=False (Unschedulable: 0/3 nodes are available)",
    ]


def test_the_rendered_section_keeps_the_last_lines_of_each_log() -> None:
    diag = Diagnostics("ns1", events=["03:04:05 Warning BackOff pod/web: back-off"], pods=["pod/web Running"])
    diag.logs["web/app"] = "".join(f"line {i}\n" for i in range(10))
    diag.problems.append("logs of web/sidecar: Bad Request")
    text = diag.render(log_lines=3)
    assert text.splitlines() == [
        "namespace ns1:",
        "events (1):",
        "  03:04:05 Warning BackOff pod/web: back-off",
        "pods:",
        "  pod/web Running",
        "logs of web/app (last 3 lines):",
        "  | line 7",
        "  | line 8",
        "  | line 9",
        "not collected: logs of web/sidecar: Bad Request",
    ]


def test_scope_to_namespace_keeps_that_namespace_only() -> None:
    diff = StateDiff(
        etcd=EtcdDiff(
            added=[
                KeyChange("/registry/configmaps/ns1/a", "ConfigMap", "ns1", "a"),
                KeyChange("/registry/configmaps/ns2/b", "ConfigMap", "ns2", "b"),
                KeyChange("/registry/ipaddresses/10.96.0.9", "IPAddress", None, "10.96.0.9"),
            ],
            modified=[KeyChange("/registry/pods/ns1/p", "Pod", "ns1", "p", ["status"])],
            removed=[KeyChange("/registry/pods/default/q", "Pod", "default", "q")],
        )
    )
    scoped = scope_to_namespace(diff, "ns1")
    assert [c.key for c in scoped.etcd.added] == ["/registry/configmaps/ns1/a"]
    assert [c.key for c in scoped.etcd.modified] == ["/registry/pods/ns1/p"]
    assert scoped.etcd.removed == []
    assert "etcd changes of namespace ns1 only" in scoped.notes
    assert len(diff.etcd.added) == 3  # the original is untouched


def _cluster(check: Any) -> Cluster:
    return Cluster(
        name="c1",
        provider="no-such-provider",
        kubeconfig=Path("/nonexistent"),
        api_server="",
        nodes=[],
        etcd=None,
        capabilities=frozenset(),
        proxy_mode="iptables",
        check_alive=check,
    )


def test_component_logs_only_when_unhealthy_or_asked(tmp_path: Path) -> None:
    def dead() -> None:
        raise ProviderError("kube-proxy (node-1) is not running")

    healthy = _cluster(lambda: None)
    # exporting fails here (no such provider): the line proves whether an export was attempted
    assert component_logs(healthy, tmp_path, "auto") is None
    assert component_logs(healthy, tmp_path, "never") is None
    assert component_logs(_cluster(dead), tmp_path, "never") is None
    always = component_logs(healthy, tmp_path, "always")
    assert always is not None
    assert always.startswith("component logs not exported: ")
    unhealthy = component_logs(_cluster(dead), tmp_path, "auto")
    assert unhealthy is not None
    assert unhealthy.startswith("component logs not exported: ")
    assert unhealthy.endswith("(a component looks unhealthy: kube-proxy (node-1) is not running)")


def test_attachment_lines_are_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert attachment_lines([Path("a/diff.json"), tmp_path / "b.txt"]) == (
        f"[[ATTACHMENT|{tmp_path / 'a' / 'diff.json'}]]\n[[ATTACHMENT|{tmp_path / 'b.txt'}]]"
    )


def test_new_options_defaults_and_values(plugin: PluginRunner) -> None:
    s = plugin.settings()
    assert (s.test_namespace, s.share_cluster, s.log_lines, s.component_logs) == (True, False, 50, "auto")
    s = plugin.settings(
        "--k8sstate-test-namespace=no",
        "--k8sstate-share-cluster",
        "--k8sstate-log-lines=0",
        "--k8sstate-component-logs=ALWAYS",
    )
    assert (s.test_namespace, s.share_cluster, s.log_lines, s.component_logs) == (False, True, 0, "always")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k8sstate-log-lines=-1"], r"--k8sstate-log-lines: invalid value '-1' \(from command line "),
        (["--k8sstate-log-lines=many"], r"expected a whole number of log lines from 0 to 100000"),
        (["--k8sstate-component-logs=sometimes"], r"expected one of auto, always, never"),
        (["--k8sstate-test-namespace=maybe"], r"--k8sstate-test-namespace: invalid value 'maybe'"),
    ],
)
def test_new_options_reject_bad_values(plugin: PluginRunner, args: list[str], message: str) -> None:
    with pytest.raises(pytest.UsageError, match=message):
        plugin.settings(*args)


def test_existing_always_shares(plugin: PluginRunner, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    assert plugin.settings(
        "--k8sstate-provider=existing", f"--k8sstate-kubeconfig={kubeconfig}"
    ).share_cluster


def test_a_bad_namespace_in_the_marker_is_one_clear_failure(plugin: PluginRunner) -> None:
    plugin.pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def k8s_cluster():
            return object()

        @pytest.fixture(scope="session")
        def k8s_clusters():
            return object()
        """
    )
    plugin.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.k8sstate(namespace="")
        def test_x(k8sstate_namespace):
            pass
        """
    )
    result = plugin.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.k8sstate: invalid namespace=''; expected a namespace name such as 'default'"]
    )
    assert "Traceback" not in result.stdout.str()
