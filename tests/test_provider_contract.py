"""Provider contract: create, node exec, snapshot, get, delete, no leftovers, two clusters, Ctrl-C.

Runs against every provider in ``$K8SSTATE_CONTRACT_PROVIDERS`` (comma-separated, default ``local``);
a provider that cannot run here (no root, binaries not installed, no docker) is skipped with the reason.
Real clusters: these tests are slow (a cluster create each) and need root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, Provider
from pytest_k8sstate.providers.registry import get_provider

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = [
    p.strip() for p in os.environ.get("K8SSTATE_CONTRACT_PROVIDERS", "local").split(",") if p.strip()
]

pytestmark = [pytest.mark.needs_root, pytest.mark.slow]


def unavailable(provider: str) -> str | None:
    """Why ``provider`` cannot run here, or None."""
    if provider == "local":
        if os.geteuid() != 0:
            return "the local provider needs root (network namespaces, netfilter): run as root"
        import pytest_k8sstate.binaries as bins

        missing = []
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
            if bins.find_binary(name) is None:
                missing.append(name)
        if bins.find_binary("kwok") is None and shutil.which("kwok") is None:
            missing.append("kwok")
        if missing:
            return f"binaries not installed: {', '.join(missing)}; run `k8sstate binaries install`"
        return None
    if provider == "kind":
        if shutil.which("docker") is None:
            return "the kind provider needs docker"
    return None


def leftovers(provider: str, name: str, pids: Sequence[int] = ()) -> list[str]:
    """Everything of cluster ``name`` still present after delete (empty when clean)."""
    left: list[str] = []
    if provider == "local":
        import pytest_k8sstate.providers.local.state as local_state
        from pytest_k8sstate.node import netns

        if local_state.cluster_dir(name).exists():
            left.append(f"directory {local_state.cluster_dir(name)}")
        left += [f"netns {ns}" for ns in netns.list_ours() if ns.startswith(f"k8ss-{name}-")]
    else:
        if name in get_provider(provider).list():
            left.append(f"{provider} still lists {name}")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(f"process {pid}")
        except OSError:
            pass
    return left


def recorded_pids(cluster: Cluster) -> list[int]:
    if cluster.provider != "local":
        return []
    import pytest_k8sstate.providers.local.state as local_state

    st = local_state.load_state(cluster.name)
    return [p.pid for p in st.processes] if st else []


@pytest.fixture(scope="module", params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> Provider:
    why = unavailable(request.param)
    if why:
        pytest.skip(f"{request.param}: {why}")
    return get_provider(request.param)


@pytest.fixture(scope="module")
def cluster(provider: Provider) -> Iterator[Cluster]:
    name = f"ct{os.getpid() % 100000}"
    c = provider.create(ClusterSpec(name=name, nodes=2, proxy_mode="iptables"))
    try:
        yield c
    finally:
        provider.delete(name)


def test_create_gives_control_plane_and_workers(cluster: Cluster) -> None:
    roles = [(n.name, n.role) for n in cluster.nodes]
    assert roles == [
        (f"{cluster.name}-control-plane", "control-plane"),
        (f"{cluster.name}-worker", "worker"),
        (f"{cluster.name}-worker2", "worker"),
    ]
    assert cluster.kubeconfig.is_file()
    assert cluster.proxy_mode == "iptables"
    assert "iptables" in cluster.capabilities


def test_node_exec_runs_in_each_node(cluster: Cluster) -> None:
    seen = set()
    for node in cluster.nodes:
        res = node.exec.run(["ip", "-j", "addr"])
        addrs = {a["local"] for link in json.loads(res.text) for a in link.get("addr_info", [])}
        assert node.ip in addrs, f"{node.name}: {node.ip} not in {addrs}"
        seen.add(frozenset(addrs))
    assert len(seen) == len(cluster.nodes), "nodes must have distinct network contexts"


def test_kube_api_sees_ready_nodes(cluster: Cluster) -> None:
    from kubernetes import client

    api = client.CoreV1Api(cluster.kube_api())
    nodes = api.list_node().items
    ready = {
        n.metadata.name
        for n in nodes
        for c in n.status.conditions or []
        if c.type == "Ready" and c.status == "True"
    }
    assert ready == {n.name for n in cluster.nodes}
    cp = api.read_node(cluster.control_plane.name)
    assert any(t.key == "node-role.kubernetes.io/control-plane" for t in cp.spec.taints or [])
    eps = client.DiscoveryV1Api(cluster.kube_api()).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    )
    addrs = [a for s in eps.items for e in s.endpoints or [] for a in e.addresses]
    assert addrs == [cluster.control_plane.ip]


def test_snapshot_has_etcd_and_every_node(cluster: Cluster) -> None:
    snap = cluster.snapshot("contract")
    assert snap.etcd is not None
    assert "/registry/services/specs/default/kubernetes" in snap.etcd.entries
    assert "/registry/services/specs/kube-system/kube-dns" in snap.etcd.entries
    assert set(snap.nodes) == {n.name for n in cluster.nodes}
    for name, ns in snap.nodes.items():
        assert ns.iptables is not None, f"{name}: {ns.errors}"
        specs = [r.spec for ch in ns.iptables.tables["nat"].chains.values() for r in ch.rules]
        assert any("default/kubernetes:https" in s for s in specs), f"{name}: no kubernetes service rule"


def test_pods_are_reachable_from_every_node(cluster: Cluster) -> None:
    """The cluster's pod network (kindnet, or k8sstate-node-routes on images built without kindnetd): from
    every node, each CoreDNS pod answers on its readiness port, including pods on other nodes."""
    if "cni" not in cluster.capabilities:
        pytest.skip(f"{cluster.provider}: no pod network (capability 'cni')")
    from kubernetes import client

    pods = client.CoreV1Api(cluster.kube_api()).list_namespaced_pod(
        "kube-system", label_selector="k8s-app=kube-dns"
    )
    targets = {p.status.pod_ip: p.spec.node_name for p in pods.items if p.status.pod_ip}
    assert targets, "no CoreDNS pod has an IP"
    failures = []
    for node in cluster.nodes:
        for ip, where in targets.items():
            res = node.exec.run(
                ["curl", "-sS", "--max-time", "5", f"http://{ip}:8181/ready"], check=False, timeout=15
            )
            if res.returncode != 0 or res.text.strip() != "OK":
                failures.append(f"{node.name} -> {ip} (on {where}): {res.stderr.decode(errors='replace')}")
    assert not failures, "\n".join(failures)


def test_every_node_forwards_ipv4(cluster: Cluster) -> None:
    """A node routes what a Service of it DNATs to a pod on another node, pods of its own or not (a kind
    node without pods had forwarding off, so its NodePort timed out)."""
    if "cni" not in cluster.capabilities:
        pytest.skip(f"{cluster.provider}: no pod network (capability 'cni')")
    off = [
        n.name
        for n in cluster.nodes
        if n.exec.run(["cat", "/proc/sys/net/ipv4/ip_forward"], timeout=15).text.strip() != "1"
    ]
    assert not off, f"IPv4 forwarding off on {', '.join(off)}"


def test_get_attaches_to_running_cluster(provider: Provider, cluster: Cluster) -> None:
    again = provider.get(cluster.name)
    assert [n.name for n in again.nodes] == [n.name for n in cluster.nodes]
    assert again.api_server == cluster.api_server
    assert cluster.name in provider.list()
    with pytest.raises(ProviderError, match="no-such-cluster"):
        provider.get("no-such-cluster")


def test_second_cluster_side_by_side_then_delete_leaves_nothing(provider: Provider, cluster: Cluster) -> None:
    name = f"cu{os.getpid() % 100000}"
    other = provider.create(ClusterSpec(name=name, nodes=0))
    try:
        assert other.api_server != cluster.api_server
        assert other.control_plane.ip != cluster.control_plane.ip
        # both answer, each its own
        for c in (cluster, other):
            res = c.control_plane.exec.run(["ip", "-j", "addr"])
            assert c.control_plane.ip in res.text
        pids = recorded_pids(other)
    finally:
        t0 = time.monotonic()
        provider.delete(name)
        took = time.monotonic() - t0
    assert leftovers(provider.name, name, pids) == []
    assert name not in provider.list()
    print(f"delete took {took:.2f}s")
    # the first cluster is unaffected
    assert provider.get(cluster.name).api_server == cluster.api_server


_CREATE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from pytest_k8sstate.providers.base import ClusterSpec
    from pytest_k8sstate.providers.registry import get_provider
    get_provider({provider!r}).create(ClusterSpec(name={name!r}, nodes=1))
    print("CREATED", flush=True)
    """
)


def _create_under_way(provider: Provider, name: str) -> list[int] | None:
    """None until the create of ``name`` has started its cluster (local: kube-apiserver running; kind: a
    node container exists); then the pids to check afterwards."""
    if provider.name == "local":
        import pytest_k8sstate.providers.local.state as local_state

        st = local_state.load_state(name) if local_state.cluster_dir(name).exists() else None
        if st is not None and any(p.name == "kube-apiserver" for p in st.processes):
            return [p.pid for p in st.processes]
        return None
    if provider.name == "kind":
        from pytest_k8sstate.providers.kind.config import CLUSTER_LABEL
        from pytest_k8sstate.providers.kind.provider import KindProvider

        assert isinstance(provider, KindProvider)
        return [] if provider.docker.containers(f"{CLUSTER_LABEL}={name}") else None
    pytest.skip(f"{provider.name}: no way to see a create under way")


def _start_create(provider: Provider, name: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    script = tmp_path / "create.py"
    script.write_text(_CREATE_SCRIPT.format(root=str(ROOT), provider=provider.name, name=name))
    proc = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pids = _create_under_way(provider, name)
            if pids is not None:
                return proc, pids
            if proc.poll() is not None:
                _out, err = proc.communicate()
                pytest.fail(f"create exited {proc.returncode} early: {err.decode(errors='replace')[-2000:]}")
            time.sleep(0.05 if provider.name == "local" else 0.5)
        pytest.fail("create did not get under way within 180s")
    except BaseException:
        # stop the create the way a user would (Ctrl-C: it cleans up after itself), then make sure
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        if name in provider.list():
            provider.delete(name)
        raise


def test_a_stopped_node_fails_the_next_snapshot(provider: Provider) -> None:
    """kind: a node container that stopped mid-test is named at the next snapshot (liveness), instead of
    a diff that silently shows no change there; the broken cluster can still be deleted.
    (local: tests/test_liveness.py kills kube-proxy, the apiserver and etcd.)"""
    if provider.name != "kind":
        pytest.skip("kind's node containers; the local provider's components: tests/test_liveness.py")
    from pytest_k8sstate.providers.kind.provider import KindProvider

    assert isinstance(provider, KindProvider)
    name = f"cl{os.getpid() % 100000}"
    c = provider.create(ClusterSpec(name=name, nodes=0, proxy_mode="iptables"))
    try:
        c.snapshot("alive")
        provider.docker.run("stop", "-t", "1", c.control_plane.name, timeout=60)
        with pytest.raises(
            ProviderError, match=rf"node container\(s\) not running: {name}-control-plane \(exited\)"
        ):
            c.snapshot("dead")
    finally:
        provider.delete(name)
    assert leftovers(provider.name, name) == []


def test_ctrl_c_during_create_leaves_nothing(provider: Provider, tmp_path: Path) -> None:
    name = f"cc{os.getpid() % 100000}"
    proc, pids = _start_create(provider, name, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        assert proc.returncode != 0
        assert b"KeyboardInterrupt" in err
        assert leftovers(provider.name, name, pids) == []
    finally:
        if provider.name != "local" and name in provider.list():
            provider.delete(name)  # don't leave a failure's cluster behind


def test_cluster_of_a_killed_session_is_reaped(provider: Provider, tmp_path: Path) -> None:
    """The creating process dies without any teardown (SIGKILL): the next create (here: ``reap()``) deletes
    what it left. (local: tests/test_provider_local.py covers its reaper.)"""
    if provider.name != "kind":
        pytest.skip("kind's reaper; the local provider's is tested in test_provider_local.py")
    from pytest_k8sstate.providers.kind.provider import KindProvider
    from pytest_k8sstate.providers.kind.reaper import kind_create_running

    assert isinstance(provider, KindProvider)
    name = f"ck{os.getpid() % 100000}"
    proc, _ = _start_create(provider, name, tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    # `kind create cluster` runs in its own session and goes on; wait until it is done with the cluster
    deadline = time.monotonic() + 600
    while kind_create_running(name):
        assert time.monotonic() < deadline, f"kind create of {name} still running after 600s"
        time.sleep(1)
    try:
        assert name in provider.orphans()
        assert name in provider.reap()
        assert leftovers(provider.name, name) == []
        assert name not in provider.orphans()
    finally:
        if name in provider.list():
            provider.delete(name)
