"""k8sstate-node-routes (kind node images without kindnetd): its manifest, and its agent run for real.

The agent is run against a real ``local`` cluster (real kube-apiserver, the manifest applied with kubectl,
node credentials replaced by the admin kubeconfig: ``local`` nodes are kwok's and have no kubelet
certificates) inside the control-plane node's network namespace, so the routes it adds land in a project
namespace. On kind it runs under systemd in every node: tests/test_provider_contract.py
(``test_pods_are_reachable_from_every_node``) and scripts/kind-e2e.sh.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pytest_k8sstate.node.exec import NetnsExec, run_command
from pytest_k8sstate.providers.base import Cluster, ClusterSpec
from pytest_k8sstate.providers.kind import noderoutes
from pytest_k8sstate.providers.kubeconfig import rewrite_kubeconfig_server
from pytest_k8sstate.providers.registry import get_provider


def test_manifest_switches_the_agent_on_for_nodes() -> None:
    docs = list(yaml.safe_load_all(noderoutes.MANIFEST))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    name = noderoutes.CONFIGMAP
    assert kinds == {
        ("ConfigMap", name),
        ("Role", name),
        ("RoleBinding", name),
        ("ClusterRole", name),
        ("ClusterRoleBinding", name),
    }
    for d in docs:
        if d["kind"].endswith("Binding"):
            assert d["subjects"] == [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
            ]
    assert noderoutes.AGENT_PATH in noderoutes.UNIT


def test_agent_script_is_valid_bash(tmp_path: Path) -> None:
    script = tmp_path / "agent"
    script.write_text(noderoutes.AGENT_SCRIPT)
    run_command(["bash", "-n", str(script)], timeout=10)


# --------------------------------------------------------------------------------------------------
# the agent against a real API server
# --------------------------------------------------------------------------------------------------
def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("jq") is None:
        return "needs jq (apt-get install jq; kind nodes have it)"
    import pytest_k8sstate.binaries as bins

    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl"):
        if bins.find_binary(name) is None:
            return f"{name} not installed: run `k8sstate binaries install`"
    return None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    why = _why_not()
    if why:
        pytest.skip(why)
    prov = get_provider("local")
    name = f"nr{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=2))
    try:
        yield c
    finally:
        prov.delete(name)


def _agent(cluster: Cluster, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """argv + env that run the agent once as the control-plane node, inside its network namespace."""
    import pytest_k8sstate.binaries as bins

    kc = cluster.kubeconfig.read_text()
    # inside the node's namespace the API is the node's own address, not the host's forwarder
    inner = tmp_path / "kubeconfig"
    inner.write_text(rewrite_kubeconfig_server(kc, f"https://{cluster.control_plane.ip}:6443"))
    script = tmp_path / "k8sstate-node-routes"
    script.write_text(noderoutes.AGENT_SCRIPT)
    kubectl = bins.find_binary("kubectl")
    assert kubectl is not None
    env = {
        "K8SSTATE_KUBECONFIG": str(inner),
        "K8SSTATE_CNI_CONF_DIR": str(tmp_path / "net.d"),
        "K8SSTATE_NODE_NAME": cluster.control_plane.name,
        "PATH": f"{kubectl.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
    }
    node_exec = cluster.control_plane.exec
    assert isinstance(node_exec, NetnsExec)
    return node_exec.command(["bash", str(script), "--once"]), env


def _kubectl(cluster: Cluster, *args: str, stdin: bytes | None = None) -> str:
    import pytest_k8sstate.binaries as bins

    kubectl = bins.find_binary("kubectl")
    assert kubectl is not None
    res = run_command(
        [str(kubectl), f"--kubeconfig={cluster.kubeconfig}", *args], timeout=60, input=stdin, check=False
    )
    assert res.returncode == 0 or "NotFound" in res.stderr.decode(), res.stderr.decode()
    return res.text


def test_agent_writes_cni_config_and_routes_only_when_switched_on(cluster: Cluster, tmp_path: Path) -> None:
    argv, env = _agent(cluster, tmp_path)
    nodes = json.loads(_kubectl(cluster, "get", "nodes", "-o", "json"))["items"]
    cidr = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in nodes}
    worker = cluster.nodes[1]
    conf = tmp_path / "net.d" / "10-k8sstate.conflist"

    def routes() -> dict[str, str]:
        out = cluster.control_plane.exec.run(["ip", "-j", "route"]).text
        return {r["dst"]: r.get("gateway", "") for r in json.loads(out)}

    def forwarding() -> str:
        return cluster.control_plane.exec.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).text.strip()

    assert cidr[worker.name] not in routes()
    # as in a fresh kind node container (a new namespace starts with forwarding off; `local` turns it on)
    cluster.control_plane.exec.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    # not switched on (the ConfigMap is absent, as with disableDefaultCNI): nothing happens
    _kubectl(cluster, "-n", "kube-system", "delete", "configmap", noderoutes.CONFIGMAP, "--ignore-not-found")
    off = run_command(argv, env=env, timeout=60, check=False)
    assert off.returncode != 0
    assert not conf.exists()
    assert cidr[worker.name] not in routes()
    assert forwarding() == "0"

    _kubectl(cluster, "apply", "-f", "-", stdin=noderoutes.MANIFEST.encode())
    on = run_command(argv, env=env, timeout=60, check=False)
    assert on.returncode == 0, on.stderr.decode()
    doc = json.loads(conf.read_text())
    assert [p["type"] for p in doc["plugins"]] == ["ptp", "portmap"]
    assert doc["plugins"][0]["ipam"]["ranges"] == [[{"subnet": cidr[cluster.control_plane.name]}]]
    assert routes()[cidr[worker.name]] == worker.ip
    # the node forwards, pods of its own or not: what it DNATs to a pod on another node (a NodePort) leaves
    assert forwarding() == "1"
    # idempotent: a second pass changes nothing
    mtime = conf.stat().st_mtime_ns
    again = run_command(argv, env=env, timeout=60, check=False)
    assert again.returncode == 0
    assert conf.stat().st_mtime_ns == mtime
    assert routes()[cidr[worker.name]] == worker.ip

    # the bridge mode (minikube's default CNI): cni0 as the pods' gateway, masquerade, same routes
    _kubectl(cluster, "apply", "-f", "-", stdin=noderoutes.manifest("bridge").encode())
    bridged = run_command(argv, env=env, timeout=60, check=False)
    assert bridged.returncode == 0, bridged.stderr.decode()
    main = json.loads(conf.read_text())["plugins"][0]
    assert (main["type"], main["bridge"], main["isGateway"], main["ipMasq"]) == ("bridge", "cni0", True, True)
    assert main["ipam"]["ranges"] == [[{"subnet": cidr[cluster.control_plane.name]}]]
    assert routes()[cidr[worker.name]] == worker.ip


def test_manifest_modes() -> None:
    for mode in noderoutes.MODES:
        [cm] = [d for d in yaml.safe_load_all(noderoutes.manifest(mode)) if d["kind"] == "ConfigMap"]
        assert cm["data"]["mode"] == mode
    assert noderoutes.manifest() == noderoutes.MANIFEST
    with pytest.raises(ValueError, match="expected one of ptp, bridge, flannel"):
        noderoutes.manifest("calico")


def test_manifest_flannel_settings() -> None:
    def data(text: str) -> dict[str, str]:
        [cm] = [d for d in yaml.safe_load_all(text) if d["kind"] == "ConfigMap"]
        return dict(cm["data"])

    got = data(noderoutes.manifest("flannel"))
    assert (got["mode"], got["backend"], got["network"]) == ("flannel", "vxlan", "10.244.0.0/16")
    got = data(noderoutes.manifest("flannel", backend="host-gw", network="10.100.0.0/16"))
    assert (got["backend"], got["network"]) == ("host-gw", "10.100.0.0/16")
    with pytest.raises(ValueError, match="expected one of vxlan, host-gw"):
        noderoutes.manifest("flannel", backend="udp")
    with pytest.raises(ValueError):
        noderoutes.manifest("flannel", network="10.244.0.0/16; rm -rf /")
    with pytest.raises(ValueError, match="settings of mode flannel"):
        noderoutes.manifest("ptp", backend="vxlan")
    # the agent may watch Nodes (flanneld's informer), nothing more
    [role] = [d for d in yaml.safe_load_all(noderoutes.MANIFEST) if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}]
