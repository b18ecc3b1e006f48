"""``K8sHelper`` against a real cluster (the session's ``local`` cluster), plus its manifest parser.

The cluster tests use the plugin's ``k8s_api`` fixture; they skip when the local provider cannot run here
(not root, binaries not installed). Pods are kwok pods: Running and Ready with an IP, no containers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import K8sStateError, ParseError
from pytest_k8sstate.k8s import K8sHelper, parse_manifests, parse_ref, pod_ip


def _local_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the local provider needs root (network namespaces)"
    # no `except Exception` here: a bug in the provider or binaries must fail, not skip every test
    import pytest_k8sstate.binaries as binaries
    from pytest_k8sstate.providers.local.binaries import KUBE_BINARIES

    versions = binaries.Versions.resolve()
    missing = [n for n in (*KUBE_BINARIES, "kwok") if binaries.find_binary(n, versions) is None]
    return (
        f"binaries not installed: {', '.join(missing)} (run `k8sstate binaries install`)" if missing else None
    )


cluster = pytest.mark.skipif(_local_unavailable() is not None, reason=str(_local_unavailable()))

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: h7-web
  labels: {app: h7-web}
spec:
  containers:
  - name: web
    image: registry.k8s.io/pause:3.10.1
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: h7-web
spec:
  selector: {app: h7-web}
  ports: [{port: 80, targetPort: 8080}]
"""


def deployment(name: str, replicas: int, **strategy: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.1"}]},
        },
    }
    if strategy:
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": strategy}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


# ----------------------------------------------------------------------------------------- no cluster


def test_parse_ref() -> None:
    assert str(parse_ref("pod/web")) == "pod/web"
    assert parse_ref("Deployment.apps/web").kind == "deployment"
    for bad in ("web", "pod/", "/web", "pod/a/b"):
        with pytest.raises(K8sStateError, match="expected KIND/NAME"):
            parse_ref(bad)


def test_parse_manifests_multi_doc_and_lists() -> None:
    docs = parse_manifests(POD + "\n---\n---\n", "pod.yaml")
    assert [d["kind"] for d in docs] == ["Pod", "Service"]
    items = parse_manifests(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
    )
    assert [d["metadata"]["name"] for d in items] == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "m.yaml:1: expected metadata.name in the Pod object"),
        ("a: [1, 2\n", "m.yaml:2: expected valid YAML"),
        ("- 1\n- 2\n", "m.yaml:1: expected a mapping with apiVersion, kind and metadata, got 'list'"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "m.yaml:1: expected a string field 'kind'"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: Service\n",
            "m.yaml:5: expected a string field 'apiVersion'",
        ),
    ],
)
def test_parse_manifests_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ParseError) as excinfo:
        parse_manifests(text, "m.yaml")
    assert str(excinfo.value).startswith(message)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}\n #&*!|>'\"%@`,?\t.0")), max_size=80))
def test_parse_manifests_fuzz_raises_only_parse_error(text: str) -> None:
    try:
        docs = parse_manifests(text, "fuzz")
    except ParseError:
        return
    assert all(isinstance(d["metadata"]["name"], str) for d in docs)


def test_unknown_manifest_path_says_where_it_looked(tmp_path: Path) -> None:
    helper = K8sHelper(api_client=None, manifests_dir=tmp_path)
    with pytest.raises(K8sStateError, match=r"manifest 'nope.yaml' not found \(looked in .*nope.yaml"):
        helper.apply("nope.yaml")


class _Resources:
    def get(self, api_version: str, kind: str) -> Any:
        return SimpleNamespace(namespaced=True, kind=kind, api_version=api_version)


class _FailingDynamic:
    """A DynamicClient whose every call raises ``error`` (discovery works)."""

    resources = _Resources()

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def server_side_apply(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    get = delete = server_side_apply


CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}


def test_only_connection_errors_say_the_api_server_cannot_be_reached() -> None:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")
    for exc in (
        MaxRetryError(None, "https://127.0.0.1:6443/api", refused),  # type: ignore[arg-type]
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ):
        helper = K8sHelper(api_client=None, dynamic=_FailingDynamic(exc))
        with pytest.raises(K8sStateError, match=r"^applying configmap/c: cannot reach the API server: "):
            helper.apply(CM)
    helper = K8sHelper(api_client=None, dynamic=_FailingDynamic(ApiException(status=403, reason="Forbidden")))
    with pytest.raises(K8sStateError, match=r"^reading cm/c: HTTP 403: "):
        helper.try_get("cm/c")
    helper = K8sHelper(api_client=None, dynamic=_FailingDynamic(ApiException(status=404, reason="NotFound")))
    assert helper.try_get("cm/c") is None


def test_other_exceptions_surface_as_what_they_are() -> None:
    """A bug or a bad object (a ValueError in the client) is not "cannot reach the API server"."""
    helper = K8sHelper(api_client=None, dynamic=_FailingDynamic(ValueError("bad value in body.data")))
    with pytest.raises(ValueError, match=r"bad value in body\.data"):
        helper.apply(CM)
    with pytest.raises(ValueError, match=r"bad value in body\.data"):
        helper.try_get("cm/c")
    # cleanup never raises, and names the type of what went wrong
    applies = _FailingDynamic(ValueError("bad value in body.data"))
    applies.server_side_apply = lambda *a, **k: dict(CM)  # type: ignore[method-assign]
    helper = K8sHelper(api_client=None, dynamic=applies)
    helper.apply(CM)
    assert helper.cleanup(timeout=1) == ["deleting configmap/c failed: ValueError: bad value in body.data"]


# ----------------------------------------------------------------------------------------- real cluster


@cluster
def test_apply_wait_and_read(k8s_api: K8sHelper) -> None:
    applied = k8s_api.apply(POD)
    assert [o["kind"] for o in applied] == ["Pod", "Service"]
    pod = k8s_api.wait_ready("pod/h7-web", timeout=60)
    assert pod["status"]["phase"] == "Running"
    ip = k8s_api.pod_ip("h7-web")
    assert ip == pod_ip(k8s_api, "h7-web") == pod["status"]["podIP"]
    assert k8s_api.pod_ips("app=h7-web") == [ip]
    assert k8s_api.pod_ips({"app": "h7-web"}) == [ip]
    assert k8s_api.wait_endpoints("svc/h7-web", count=1, timeout=60) == [ip]
    assert k8s_api.cluster_ip("svc/h7-web").startswith("10.")
    assert [p["metadata"]["name"] for p in k8s_api.list("pods", "app=h7-web")] == ["h7-web"]
    assert k8s_api.get("svc/h7-web")["spec"]["ports"][0]["port"] == 80
    k8s_api.patch("pod/h7-web", {"metadata": {"labels": {"extra": "yes"}}})
    assert k8s_api.get("po/h7-web")["metadata"]["labels"]["extra"] == "yes"
    assert set(k8s_api.nodes()) >= {n.name for n in k8s_api.cluster.nodes}
    k8s_api.delete("pod/h7-web", wait=True, timeout=60)
    assert not k8s_api.exists("pod/h7-web")
    k8s_api.delete("pod/h7-web")  # already gone: fine
    assert k8s_api.wait_endpoints("svc/h7-web", count=0, timeout=60) == []


@cluster
def test_deployment_scale_and_watch(k8s_api: K8sHelper) -> None:
    k8s_api.apply(deployment("h7-dep", 2, maxSurge="100%", maxUnavailable=0))
    k8s_api.wait_ready("deployment/h7-dep", timeout=90)
    k8s_api.scale("deployment/h7-dep", 3)
    k8s_api.wait_ready("deploy/h7-dep", timeout=90)
    assert len(k8s_api.pod_ips("app=h7-dep")) == 3

    def rollout() -> None:
        k8s_api.patch("deployment/h7-dep", {"spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}})

    def old_pods_gone(events: list[Any]) -> bool:
        return sum(1 for e in events if e.type == "DELETED") >= 3

    events = k8s_api.watch_events("pod", "app=h7-dep", action=rollout, until=old_pods_gone, timeout=120)
    added = [e for e in events if e.type == "ADDED"]
    deleted = [e for e in events if e.type == "DELETED"]
    assert len(added) >= 3
    assert len(deleted) >= 3
    # maxSurge 100%: every new pod is created before the first old pod is deleted
    assert max(e.at for e in added[:3]) <= min(e.at for e in deleted)
    k8s_api.wait_ready("deployment/h7-dep", timeout=90)


@cluster
def test_wait_ready_timeout_explains(k8s_api: K8sHelper) -> None:
    k8s_api.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "h7-stuck"},
            "spec": {
                "nodeSelector": {"no-such-label": "x"},
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.1"}],
            },
        }
    )
    started = time.monotonic()
    with pytest.raises(K8sStateError) as excinfo:
        k8s_api.wait_ready("pod/h7-stuck", timeout=3)
    assert time.monotonic() - started < 30
    message = str(excinfo.value)
    assert message.startswith("pod/h7-stuck not Ready after 3s: phase=Pending, conditions=")
    with pytest.raises(K8sStateError, match=r"svc/none has 0 ready endpoints after 1s, expected at least 1"):
        k8s_api.wait_endpoints("svc/none", timeout=1)


@cluster
def test_errors_are_clear(k8s_api: K8sHelper) -> None:
    with pytest.raises(K8sStateError, match=r"pod/nope not found in namespace kst-test-errors-are-clear-"):
        k8s_api.get("pod/nope")
    with pytest.raises(K8sStateError, match="unknown kind 'gizmo'"):
        k8s_api.get("gizmo/x")
    with pytest.raises(K8sStateError, match=r"applying service/bad: HTTP 422: .*"):
        k8s_api.apply(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"}, "spec": {"ports": []}}
        )


@cluster
def test_relative_manifests_and_cleanup(k8s_api: K8sHelper, tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: h7-cm}\ndata: {a: '1'}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: h7-cm-b}\n")
    helper = K8sHelper(k8s_api.api_client, k8s_api.namespace, manifests_dir=tmp_path)
    try:
        helper.apply("sub")  # a directory: every *.yaml/*.yml/*.json in it
        helper.delete("sub/b.yml", wait=True, timeout=30)  # a manifest path, not kind/name
        assert not k8s_api.exists("cm/h7-cm-b")
        helper.apply("cm.yaml")
        assert k8s_api.get("cm/h7-cm")["data"] == {"a": "1"}
        assert helper.cleanup(timeout=30) == []
        assert not k8s_api.exists("configmap/h7-cm")
    finally:
        helper.close()
