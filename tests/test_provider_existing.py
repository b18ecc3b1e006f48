"""The existing-cluster provider: debug-pod manifest, exec command, node/kubeconfig parsing, etcd options.

Pod exec needs real kubelets; the ``local`` provider's nodes are kwok-simulated (no exec): node exec through
debug pods runs on kind in ``tests/test_provider_existing_kind.py`` (``scripts/existing-on-kind.sh``).
``get`` (nodes, kube-proxy mode, the "etcd skipped" message) runs against a real apiserver when a ``local``
cluster can be created (as root; ``K8SSTATE_EXISTING_TEST=0`` leaves these out).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.providers.existing import (
    DEBUG_NAMESPACE,
    ExistingOptions,
    ExistingProvider,
    debug_pod_manifest,
    debug_pod_name,
    etcd_skip_reason,
    exec_argv,
    kubeconfig_contexts,
    namespace_manifest,
    nodes_from_json,
)


def test_debug_pod_manifest_is_a_privileged_host_pod_pinned_to_the_node() -> None:
    m = debug_pod_manifest("worker-1", image="busybox:1.36", deadline=600)
    assert m["metadata"]["name"] == "k8sstate-debug-worker-1"
    assert m["metadata"]["namespace"] == DEBUG_NAMESPACE
    spec = m["spec"]
    assert spec["nodeName"] == "worker-1"
    assert spec["hostNetwork"] is spec["hostPID"] is spec["hostIPC"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["activeDeadlineSeconds"] == 600
    (c,) = spec["containers"]
    assert c["securityContext"] == {"privileged": True}
    assert c["image"] == "busybox:1.36"
    assert c["command"] == ["sleep", "600"]
    assert c["env"] == [
        {"name": "PATH", "value": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    ]
    assert c["volumeMounts"] == [{"name": "host-root", "mountPath": "/host"}]
    assert spec["volumes"] == [{"name": "host-root", "hostPath": {"path": "/"}}]


def test_namespace_admits_privileged_pods() -> None:
    ns = namespace_manifest("dbg")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("node-1", "k8sstate-debug-node-1"),
        ("ip-10-0-0-1.ec2.internal", "k8sstate-debug-ip-10-0-0-1-ec2-internal"),
        ("UPPER_case", "k8sstate-debug-upper-case"),
    ],
)
def test_debug_pod_name(node: str, expected: str) -> None:
    assert debug_pod_name(node) == expected


def test_debug_pod_name_long_is_valid_and_distinct() -> None:
    a = debug_pod_name("n" * 80)
    b = debug_pod_name("n" * 81)
    assert len(a) <= 63
    assert len(b) <= 63
    assert a != b
    assert not a.endswith("-")


def test_exec_argv_runs_node_binaries_via_chroot() -> None:
    argv = exec_argv("kubectl", Path("/k/config"), "ctx", "ns", "pod-1", ["iptables-save", "-c"])
    assert argv == [
        "kubectl", "--kubeconfig=/k/config", "--context=ctx", "-n", "ns", "exec", "-i", "pod-1",
        "-c", "debugger", "--", "chroot", "/host", "/usr/bin/env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "iptables-save", "-c",
    ]  # fmt: skip
    assert "--context=ctx" not in exec_argv("kubectl", Path("k"), None, "ns", "p", ["ip"])


def test_nodes_from_json() -> None:
    doc = {
        "items": [
            {
                "metadata": {"name": "w1", "labels": {}},
                "status": {
                    "addresses": [
                        {"type": "Hostname", "address": "w1"},
                        {"type": "InternalIP", "address": "10.0.0.3"},
                    ]
                },
            },
            {
                "metadata": {"name": "cp", "labels": {"node-role.kubernetes.io/control-plane": ""}},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]},
            },
        ]
    }
    assert nodes_from_json(doc) == [("cp", "control-plane", "10.0.0.2"), ("w1", "worker", "10.0.0.3")]
    with pytest.raises(ProviderError, match="items"):
        nodes_from_json({"kind": "Status"})


def test_kubeconfig_contexts() -> None:
    text = "contexts:\n- name: a\n  context: {}\n- name: b\n  context: {}\ncurrent-context: b\n"
    assert kubeconfig_contexts(text) == (["a", "b"], "b")
    with pytest.raises(ProviderError, match="kubeconfig"):
        kubeconfig_contexts("- just\n- a list\n")


def test_options_from_env() -> None:
    env = {
        "KUBECONFIG": f"/a/config{os.pathsep}/b/config",
        "K8SSTATE_ETCD_ENDPOINTS": "https://10.0.0.2:2379, https://10.0.0.3:2379",
        "K8SSTATE_ETCD_CA": "/p/ca.crt",
        "K8SSTATE_ETCD_CERT": "/p/c.crt",
        "K8SSTATE_ETCD_KEY": "/p/c.key",
        "K8SSTATE_DEBUG_IMAGE": "registry.local/tools:1",
    }
    o = ExistingOptions.from_env(env)
    assert o.kubeconfig == Path("/a/config")
    assert o.etcd_endpoints == ("https://10.0.0.2:2379", "https://10.0.0.3:2379")
    assert (o.etcd_ca, o.etcd_cert, o.etcd_key) == (Path("/p/ca.crt"), Path("/p/c.crt"), Path("/p/c.key"))
    assert o.debug_image == "registry.local/tools:1"
    assert ExistingOptions.from_env({}, context="x").kubeconfig_path == Path.home() / ".kube" / "config"


def test_options_reject_cert_without_key() -> None:
    with pytest.raises(ConfigError, match="etcd_cert and etcd_key"):
        ExistingOptions(etcd_endpoints=("https://e:2379",), etcd_cert=Path("c.crt"))


def test_etcd_skip_message_says_how_to_enable() -> None:
    msg = etcd_skip_reason("prod")
    assert "'prod'" in msg
    assert "K8SSTATE_ETCD_ENDPOINTS" in msg
    assert "apiserver-etcd-client" in msg


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    prov = ExistingProvider(ExistingOptions(kubeconfig=tmp_path / "nope"), progress=lambda _l: None)
    with pytest.raises(ProviderError, match="cannot read kubeconfig"):
        prov.list()


def test_unknown_context_names_the_known_ones(tmp_path: Path) -> None:
    kc = tmp_path / "config"
    kc.write_text("contexts:\n- name: only\n  context: {}\ncurrent-context: only\n")
    prov = ExistingProvider(ExistingOptions(kubeconfig=kc), progress=lambda _l: None)
    assert prov.list() == ["only"]
    with pytest.raises(ProviderError, match="contexts: only"):
        prov.get("other")


# --------------------------------------------------------------------------------------------------
# against a real apiserver (the local provider's cluster)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_kubeconfig() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root: attaches to a local cluster created for this test")
    if os.environ.get("K8SSTATE_EXISTING_TEST") == "0":
        pytest.skip("K8SSTATE_EXISTING_TEST=0")
    from pytest_k8sstate.providers.base import ClusterSpec
    from pytest_k8sstate.providers.registry import get_provider

    local = get_provider("local")
    spec = ClusterSpec(name=f"ex{os.getpid() % 100000}", nodes=1)
    cluster = local.create(spec)
    try:
        yield cluster.kubeconfig
    finally:
        local.delete(spec.name)


def test_get_attaches_to_a_real_cluster(local_kubeconfig: Path) -> None:
    seen: list[str] = []
    prov = ExistingProvider(ExistingOptions(kubeconfig=local_kubeconfig), progress=seen.append)
    (ctx,) = prov.list()[:1]
    cluster = prov.get(ctx)
    assert cluster.etcd is None
    assert "etcd capture skipped" in cluster.details["etcd_skipped"]
    assert seen == [cluster.details["etcd_skipped"]]
    assert cluster.nodes[0].role == "control-plane"
    assert len(cluster.nodes) == 2
    assert cluster.proxy_mode in ("iptables", "nftables", "ipvs")


def test_delete_removes_only_the_plugins_own_namespace(local_kubeconfig: Path) -> None:
    """``delete`` never removes the cluster, and removes a namespace only when it carries the plugin's
    ``managed-by`` label: a user's namespace of the same name (here: the debug namespace's name, unlabelled)
    stays; the plugin's own (labelled) one goes."""
    import json
    import subprocess

    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - kubectl with our arguments
            [ExistingOptions().kubectl, "--kubeconfig", str(local_kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def phase(ns: str) -> str | None:
        out = kubectl("get", "namespace", ns, "-o", "json")
        return json.loads(out.stdout)["status"].get("phase") if out.returncode == 0 else None

    prov = ExistingProvider(ExistingOptions(kubeconfig=local_kubeconfig))
    (ctx,) = prov.list()[:1]
    user_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEBUG_NAMESPACE}}
    assert kubectl("apply", "-f", "-", stdin=json.dumps(user_ns)).returncode == 0
    prov.delete(ctx)
    assert phase(DEBUG_NAMESPACE) == "Active", "a namespace the plugin did not label was deleted"
    assert kubectl("delete", "namespace", DEBUG_NAMESPACE, "--wait=true", "--timeout=60s").returncode == 0

    own = namespace_manifest(DEBUG_NAMESPACE)
    assert kubectl("apply", "-f", "-", stdin=json.dumps(own)).returncode == 0
    prov.delete(ctx)
    assert phase(DEBUG_NAMESPACE) in (None, "Terminating"), "the plugin's own namespace was not deleted"
    assert kubectl("get", "nodes").returncode == 0  # the cluster itself is still there


def test_shape_mismatch_names_what_the_marker_asks_for() -> None:
    from pytest_k8sstate.providers.base import Cluster, NodeInfo
    from pytest_k8sstate.providers.existing_shape import shape_mismatch

    nodes = [NodeInfo("cp", "control-plane", None, "10.0.0.2"), NodeInfo("w1", "worker", None, "10.0.0.3")]  # type: ignore[arg-type]
    c = Cluster("prod", "existing", Path("k"), "", nodes, None, frozenset({"cni-ptp"}), "iptables", "1.37.1")
    assert shape_mismatch(c, {}) is None
    assert shape_mismatch(c, {"proxy_mode": "iptables", "nodes": 1, "cni": "ptp", "version": "1.37"}) is None
    reason = shape_mismatch(c, {"proxy_mode": "nftables", "nodes": 2, "cni": "flannel", "version": "v1.36.0"})
    assert reason is not None
    for part in (
        "kube-proxy mode nftables (it runs iptables)",
        "2 worker node(s) (it has 1)",
        "CNI flannel",
        "Kubernetes 1.36.0 (it runs 1.37.1)",
        "cluster 'prod' as it is",
    ):
        assert part in reason
    assert shape_mismatch(c, {"version": "1.3"}) is not None  # 1.37.1 is not a 1.3.x
