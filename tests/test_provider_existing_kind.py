"""The ``existing`` provider end to end on a real multi-node cluster (kind: real kubelets, containerd).

Run by ``scripts/kind-e2e.sh`` (the "existing provider on kind" step) with ``K8SSTATE_EXISTING_KIND=<kind
cluster>`` and the ``K8SSTATE_DEBUG_IMAGE`` / ``K8SSTATE_ETCD_*`` that ``tests/existing_kind.py`` prepares;
run alone, the module prepares them itself from ``K8SSTATE_EXISTING_KIND`` (root and the project's Docker
engine needed). Without it the module skips.

* node state read through privileged debug pods (``kubectl exec`` + ``chroot /host``) equals what ``docker
  exec`` into the same node container reads -- iptables, ip6tables, nft, ipsets, links, addresses, routes;
  nothing is excluded: the debug pod is ``hostNetwork`` (no veth of its own) and counters are not compared;
* etcd captured with the endpoint and certificates taken from the control-plane node;
* attaching and deleting leave everything the plugin did not create as it was;
* the plugin itself (pytester) with ``--k8sstate-provider existing --k8sstate-kubeconfig``: a test's own
  namespace, a Service's etcd key and kube-proxy rules in the diff, nothing of the plugin left afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from existing_kind import debug_image, etcd_files

from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.existing import DEBUG_NAMESPACE, ExistingOptions, ExistingProvider
from pytest_k8sstate.state.nodediff import diff_nodes

NAME = os.environ.get("K8SSTATE_EXISTING_KIND", "")
pytestmark = pytest.mark.skipif(
    not NAME,
    reason="set K8SSTATE_EXISTING_KIND to a kind cluster's name (scripts/kind-e2e.sh does: "
    "`k8sstate cluster create --provider kind --name N` first)",
)


@pytest.fixture(scope="module")
def kind() -> Cluster:
    from pytest_k8sstate.providers.registry import get_provider

    return get_provider("kind").get(NAME)


@pytest.fixture(scope="module")
def options(kind: Cluster, tmp_path_factory: pytest.TempPathFactory) -> ExistingOptions:
    env = dict(os.environ)
    if not env.get("K8SSTATE_DEBUG_IMAGE"):
        env["K8SSTATE_DEBUG_IMAGE"] = debug_image(kind)
    if not env.get("K8SSTATE_ETCD_ENDPOINTS"):
        env.update(etcd_files(kind, tmp_path_factory.mktemp("etcd-pki")))
    return ExistingOptions.from_env(env, kubeconfig=kind.kubeconfig)


@pytest.fixture(scope="module")
def existing(options: ExistingOptions) -> Iterator[tuple[ExistingProvider, Cluster]]:
    prov = ExistingProvider(options, progress=lambda _l: None)
    context = prov.list()[0]
    try:
        yield prov, prov.get(context)
    finally:
        prov.delete(context)


def kubectl_json(kubeconfig: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(  # noqa: S603 - kubectl with our own arguments
        ["kubectl", f"--kubeconfig={kubeconfig}", *args, "-o", "json"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


def _same(docker: NodeState, debug: NodeState) -> str:
    """'' when both captures agree, else what differs."""
    diff = diff_nodes(docker, debug)
    problems = [f"{f}: {v}" for f, v in diff.to_json().items() if v and f not in ("services",)]
    if docker.errors.keys() != debug.errors.keys():
        problems.append(f"errors: docker {sorted(docker.errors)} vs debug pod {sorted(debug.errors)}")
    return "; ".join(problems)


def test_debug_pod_capture_equals_docker_exec_capture(
    kind: Cluster, existing: tuple[ExistingProvider, Cluster]
) -> None:
    _, cluster = existing
    assert sorted(n.name for n in cluster.nodes) == sorted(n.name for n in kind.nodes)
    for node in cluster.nodes:
        docker_exec = kind.node(node.name).exec
        # kube-proxy may resync between two reads: a difference must persist over three tries to count
        for _attempt in range(3):
            via_docker = collect_node(docker_exec, ipvs=False)
            via_pod = collect_node(node.exec, ipvs=False)
            again = collect_node(docker_exec, ipvs=False)
            if _same(via_docker, again):
                time.sleep(2)
                continue
            problems = _same(via_docker, via_pod)
            if not problems:
                break
            time.sleep(2)
        else:
            pytest.fail(f"node {node.name}: debug pod capture != docker exec capture: {problems}")
        assert via_pod.iptables is not None, via_pod.errors
        assert via_pod.nft is not None, via_pod.errors
        assert any(c.rules for t in via_pod.iptables.tables.values() for c in t.chains.values())
        assert node.ip in json.dumps(via_pod.addrs)


def test_etcd_capture_with_the_control_plane_certificates(
    kind: Cluster, existing: tuple[ExistingProvider, Cluster]
) -> None:
    _, cluster = existing
    assert cluster.etcd is not None
    assert "etcd" in cluster.capabilities
    snap = cluster.snapshot("existing")
    assert snap.etcd is not None
    keys = set(snap.etcd.entries)
    assert "/registry/namespaces/kube-system" in keys
    assert f"/registry/namespaces/{DEBUG_NAMESPACE}" in keys  # the debug pods were made before the capture
    assert set(snap.nodes) == {n.name for n in kind.nodes}
    assert all(s.iptables is not None for s in snap.nodes.values())
    # the same etcd the kind provider reads: the same namespaces and Services
    own = kind.snapshot("kind")
    assert own.etcd is not None

    def stable(all_keys: set[str]) -> set[str]:
        return {k for k in all_keys if k.startswith(("/registry/namespaces/", "/registry/services/"))}

    assert stable(keys) == stable(set(own.etcd.entries))


def test_attach_and_delete_change_nothing_else(kind: Cluster, options: ExistingOptions) -> None:
    before_ns = kubectl_json(kind.kubeconfig, "get", "namespaces")
    before_pods = kubectl_json(kind.kubeconfig, "get", "pods", "-A")

    def names(doc: dict[str, object]) -> set[str]:
        items = doc["items"]
        assert isinstance(items, list)
        return {f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in items}

    prov = ExistingProvider(options, progress=lambda _l: None)
    context = prov.list()[0]
    cluster = prov.get(context)
    cluster.nodes[0].exec.run(["true"], timeout=120)  # creates the debug namespace and one debug pod
    prov.delete(context)
    deadline = time.monotonic() + 120
    while DEBUG_NAMESPACE in {n.split("/")[1] for n in names(kubectl_json(kind.kubeconfig, "get", "ns"))}:
        assert time.monotonic() < deadline, f"namespace {DEBUG_NAMESPACE} still there after 120s"
        time.sleep(1)
    existed = DEBUG_NAMESPACE in {n.split("/")[1] for n in names(before_ns)}
    after_ns = names(kubectl_json(kind.kubeconfig, "get", "namespaces"))
    expected = names(before_ns) - {f"/{DEBUG_NAMESPACE}"} if existed else names(before_ns)
    assert after_ns == expected
    after_pods = names(kubectl_json(kind.kubeconfig, "get", "pods", "-A"))
    assert {p for p in after_pods if not p.startswith(DEBUG_NAMESPACE + "/")} == {
        p for p in names(before_pods) if not p.startswith(DEBUG_NAMESPACE + "/")
    }


PLUGIN_TEST = """
import time

SVC = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
}

def test_service_shows_in_the_diff(k8s_cluster, k8s_api, cluster_state):
    assert k8s_cluster.provider == "existing"
    k8s_api.apply(SVC)
    ns = k8s_api.namespace
    assert ns.startswith("kst-")
    key = f"/registry/services/specs/{ns}/web"
    deadline = time.monotonic() + 90
    while True:
        diff = cluster_state.diff()
        added = {c.key for c in diff.etcd.added}
        rules = [r for n in diff.nodes.values() for r in n.rules_added if f"{ns}/web" in r[2]]
        if key in added and len(rules) >= len(k8s_cluster.nodes):
            break
        assert time.monotonic() < deadline, (sorted(added), rules)
        time.sleep(1)
"""


def test_plugin_with_provider_existing(
    pytester: pytest.Pytester, kind: Cluster, options: ExistingOptions
) -> None:
    pytester.makepyfile(test_inner=textwrap.dedent(PLUGIN_TEST))
    env = {
        "K8SSTATE_DEBUG_IMAGE": options.debug_image,
        "K8SSTATE_ETCD_ENDPOINTS": ",".join(options.etcd_endpoints),
        "K8SSTATE_ETCD_CA": str(options.etcd_ca),
        "K8SSTATE_ETCD_CERT": str(options.etcd_cert),
        "K8SSTATE_ETCD_KEY": str(options.etcd_key),
    }
    for k, v in env.items():
        pytester._monkeypatch.setenv(k, v)
    res = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--k8sstate-provider",
        "existing",
        "--k8sstate-kubeconfig",
        str(kind.kubeconfig),
        timeout=600,
    )
    res.assert_outcomes(passed=1)
    # nothing of the plugin left: no test namespace; the debug namespace is going (deleted at session end)
    for item in kubectl_json(kind.kubeconfig, "get", "namespaces")["items"]:  # type: ignore[union-attr]
        name = item["metadata"]["name"]
        assert not name.startswith("kst-") or item["status"]["phase"] == "Terminating", name
        if name == DEBUG_NAMESPACE:
            assert item["status"]["phase"] == "Terminating"


@pytest.mark.skipif(
    not os.environ.get("K8SSTATE_EXISTING_KIND_CONFIG"),
    reason="set K8SSTATE_EXISTING_KIND_CONFIG to the --kind-config file the cluster was created with",
)
def test_kind_config_file_was_applied(kind: Cluster) -> None:
    """``k8sstate cluster create --kind-config FILE --kind-image TAG`` made this cluster: its node labels."""
    import yaml

    wanted = yaml.safe_load(Path(os.environ["K8SSTATE_EXISTING_KIND_CONFIG"]).read_text())["nodes"]
    items = kubectl_json(kind.kubeconfig, "get", "nodes")["items"]
    assert isinstance(items, list)
    by_role: dict[str, dict[str, str]] = {}
    for item in items:
        labels = item["metadata"]["labels"]
        role = "control-plane" if "node-role.kubernetes.io/control-plane" in labels else "worker"
        by_role[role] = labels
    for node in wanted:
        for key, value in node["labels"].items():
            assert by_role[node["role"]].get(key) == value, (node["role"], key)
    image = os.environ.get("K8SSTATE_KIND_IMAGE")
    if image:
        assert kind.details.get("image", image) == image
