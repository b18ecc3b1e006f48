"""``local`` provider specifics: port forwarder, reaper, ipvs refusal, nftables mode, reset, CLI.

The forwarder and reaper tests use real network namespaces and real processes (no binaries needed);
the cluster tests need root and the Kubernetes binaries (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_provider_contract import leftovers, unavailable  # tests/ is on sys.path (rootdir-less layout)

import pytest_k8sstate.providers.local.addons as local_addons
import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.node import netns
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, get_provider
from pytest_k8sstate.providers.local.provider import LocalProvider, check_ipvs_support

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def _skip_without_cluster() -> None:
    why = unavailable("local")
    if why:
        pytest.skip(why)


# ------------------------------------------------------------------------------------------------
# no root needed
# ------------------------------------------------------------------------------------------------
def test_cluster_spec_validates_name_nodes_and_mode() -> None:
    with pytest.raises(ConfigError, match="cluster name 'Bad_Name'"):
        ClusterSpec(name="Bad_Name")
    with pytest.raises(ConfigError, match="nodes=-1"):
        ClusterSpec(name="ok", nodes=-1)
    with pytest.raises(ConfigError, match="expected one of iptables, nftables, ipvs"):
        ClusterSpec(name="ok", proxy_mode="userspace")
    assert ClusterSpec(name="a-1").nodes == 2


def test_get_provider_names_unknown_providers() -> None:
    assert get_provider("local").name == "local"
    with pytest.raises(ConfigError, match="unknown provider 'nosuch'"):
        get_provider("nosuch")


def test_addons_collection_paths() -> None:
    objs = local_addons.addons(
        proxy_mode="iptables", cluster_cidr="10.244.0.0/16", api_server="https://x", version="v1"
    )
    paths = {(o["kind"], local_addons.collection_path(o)) for o in objs}
    assert ("Service", "/api/v1/namespaces/kube-system/services") in paths
    assert ("Deployment", "/apis/apps/v1/namespaces/kube-system/deployments") in paths
    assert ("ClusterRoleBinding", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings") in paths
    svc = next(o for o in objs if o["kind"] == "Service")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert [p["name"] for p in svc["spec"]["ports"]] == ["dns", "dns-tcp", "metrics"]
    node = local_addons.node_object(
        "c-control-plane", role="control-plane", ip="1.2.3.4", pod_cidr="10.244.0.0/24", version="v1"
    )
    assert node["spec"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert local_addons.collection_path(node) == "/api/v1/nodes"


def test_state_claim_picks_distinct_subnets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(local_state.ENV_CACHE, str(tmp_path))
    a = local_state.claim("a", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    b = local_state.claim("b", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    assert a.subnet != b.subnet
    with pytest.raises(ProviderError, match="already exists"):
        local_state.claim("a", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    loaded = local_state.load_state("b")
    assert loaded is not None
    assert loaded.subnet == b.subnet


# ------------------------------------------------------------------------------------------------
# root: forwarder, reaper, ipvs
# ------------------------------------------------------------------------------------------------
_ECHO = (
    "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('127.0.0.1',int(sys.argv[1])));s.listen(4)\nwhile True:\n c,_=s.accept();d=c.recv(100)\n"
    " c.sendall(b'echo:'+d);c.close()\n"
)


@needs_root
def test_portforward_reaches_a_server_inside_the_namespace(tmp_path: Path) -> None:
    with netns.temporary("pf") as ns:
        server = subprocess.Popen(["ip", "netns", "exec", ns.netns, sys.executable, "-c", _ECHO, "7777"])  # noqa: S603
        ready = tmp_path / "ready.json"
        fwd = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                str(ROOT / "pytest_k8sstate" / "providers" / "portforward.py"),
                "--netns",
                ns.netns,
                "--ready-file",
                str(ready),
                "--map",
                "127.0.0.1:0=127.0.0.1:7777",
            ]
        )
        try:
            deadline = time.monotonic() + 20
            while not ready.exists():
                assert time.monotonic() < deadline, "forwarder did not start"
                time.sleep(0.02)
            port = json.loads(ready.read_text())["ports"][0]
            # the server listens on the namespace's loopback only: the root namespace cannot reach it directly
            reply = b""
            while time.monotonic() < deadline:
                # until the echo server listens, the forwarder closes (or resets) the connection
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                        s.sendall(b"hi")
                        reply = s.recv(100)
                except OSError:
                    reply = b""
                if reply:
                    break
                time.sleep(0.05)
            assert reply == b"echo:hi"
        finally:
            for p in (fwd, server):
                p.kill()
                p.wait()


@needs_root
def test_reaper_removes_clusters_whose_owner_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_k8sstate.providers.local.reaper import reap

    monkeypatch.setenv(local_state.ENV_CACHE, str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st = local_state.claim(
        f"rp{os.getpid() % 100000}",
        proxy_mode="iptables",
        version="v1",
        owner_pid=dead.pid,
        owner_start=12345,
    )
    ns_name = f"k8ss-{st.name}-net"
    st.netns = [ns_name]
    st.save()
    netns.create(ns_name)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns_name, "sleep", "300"], start_new_session=True)  # noqa: S603
    st.processes.append(
        local_state.ProcRecord("sleeper", sleeper.pid, local_state.proc_start_time(sleeper.pid), ns_name)
    )
    st.save()
    # a cluster whose owner lives (this process) is kept
    keep = local_state.claim(
        f"rk{os.getpid() % 100000}",
        proxy_mode="iptables",
        version="v1",
        owner_pid=os.getpid(),
        owner_start=local_state.proc_start_time(os.getpid()),
    )
    try:
        assert reap() == [st.name]
        sleeper.wait(timeout=10)
        assert not netns.exists(ns_name)
        assert not st.dir.exists()
        assert keep.dir.exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        netns.delete(ns_name)


@needs_root
def test_ipvs_mode_is_refused_with_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        check_ipvs_support()
    except ProviderError:
        pass
    else:
        pytest.skip("this kernel supports IPVS")
    monkeypatch.setenv(local_state.ENV_CACHE, str(tmp_path))
    with pytest.raises(ProviderError, match=r"IPVS support.*--proxy-mode iptables or nftables"):
        LocalProvider().create(ClusterSpec(name="ipvs-refused", nodes=0, proxy_mode="ipvs"))
    assert not (tmp_path / "clusters" / "ipvs-refused").exists()


# ------------------------------------------------------------------------------------------------
# real clusters
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    _skip_without_cluster()
    prov = LocalProvider()
    name = f"lt{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=1))
    try:
        yield c
    finally:
        prov.delete(name)


def _api(cluster: Cluster) -> object:
    from kubernetes import client

    return client.CoreV1Api(cluster.kube_api())


def test_pod_ips_come_from_each_nodes_pod_cidr(cluster: Cluster) -> None:
    import ipaddress

    from kubernetes import client

    api = client.CoreV1Api(cluster.kube_api())
    cidrs = {n.metadata.name: n.spec.pod_cidr for n in api.list_node().items}
    pods = api.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns").items
    assert len(pods) == 2
    for p in pods:
        assert p.status.phase == "Running"
        assert ipaddress.ip_address(p.status.pod_ip) in ipaddress.ip_network(cidrs[p.spec.node_name])


def test_reset_restores_etcd_and_rules(cluster: Cluster) -> None:
    from kubernetes import client

    from pytest_k8sstate.providers.local.reset import rules_text

    api = client.CoreV1Api(cluster.kube_api())
    before = cluster.snapshot("before")
    rules_before = {n.name: rules_text(n.exec, cluster.proxy_mode) for n in cluster.nodes}
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="reset-me")))
    api.create_namespaced_service(
        "reset-me",
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80)]),
        ),
    )
    api.patch_node(cluster.workers[0].name, {"metadata": {"labels": {"reset": "me"}}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any("reset-me/web" in ln for ln in rules_text(cluster.workers[0].exec, cluster.proxy_mode)):
            break
        time.sleep(0.1)
    else:
        pytest.fail("kube-proxy never programmed the new service")
    t0 = time.monotonic()
    LocalProvider().reset(cluster)
    print(f"reset took {time.monotonic() - t0:.2f}s")
    after = cluster.snapshot("after")
    diff = before.diff(after)
    keys = [k.key for k in diff.etcd.added + diff.etcd.removed]
    assert not [k for k in keys if "reset-me" in k or "/minions/" in k], keys
    assert "reset" not in (api.read_node(cluster.workers[0].name).metadata.labels or {})
    for n in cluster.nodes:
        assert rules_text(n.exec, cluster.proxy_mode) == rules_before[n.name]


def test_cli_list_and_node_exec(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_k8sstate.cli.cluster import main

    assert main(["cluster", "list", "--provider", "local"]) == 0
    assert f"{cluster.name}\tlocal" in capsys.readouterr().out
    rc = main(
        [
            "node",
            "exec",
            "--cluster",
            cluster.name,
            "--node",
            cluster.workers[0].name,
            "--",
            "ip",
            "-br",
            "addr",
        ]
    )
    assert rc == 0
    assert cluster.workers[0].ip in capsys.readouterr().out
    assert main(["node", "exec", "--cluster", cluster.name, "--node", "nope", "--", "true"]) == 1
    assert "has no node 'nope'" in capsys.readouterr().err


def test_cli_snapshot_writes_a_loadable_file(cluster: Cluster, tmp_path: Path) -> None:
    from pytest_k8sstate.cli.cluster import main
    from pytest_k8sstate.state.model import Snapshot

    out = tmp_path / "snap.json"
    assert main(["snapshot", "--cluster", cluster.name, "-o", str(out)]) == 0
    snap = Snapshot.load(out)
    assert snap.etcd is not None
    assert set(snap.nodes) == {n.name for n in cluster.nodes}


def test_nftables_mode() -> None:
    _skip_without_cluster()
    prov = LocalProvider()
    name = f"nf{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=1, proxy_mode="nftables"))
    try:
        assert c.proxy_mode == "nftables"
        for n in c.nodes:
            text = n.exec.run(["nft", "list", "table", "ip", "kube-proxy"]).text
            assert "default/kubernetes/tcp/https" in text
            assert f"{c.control_plane.ip}:6443" in text or f"https__{c.control_plane.ip}/6443" in text
        snap = c.snapshot("nft")
        for name_, ns in snap.nodes.items():
            assert ns.nft is not None, f"{name_}: {ns.errors}"
            assert ("ip", "kube-proxy") in ns.nft.tables
        # reset in nftables mode: kube-proxy leaves the deleted Service's chains empty until a later full
        # sync; reset must still converge
        from kubernetes import client

        from pytest_k8sstate.providers.local.reset import rules_text

        pristine = {n.name: rules_text(n.exec, "nftables") for n in c.nodes}
        api = client.CoreV1Api(c.kube_api())
        svc = api.create_namespaced_service(
            "default",
            client.V1Service(
                metadata=client.V1ObjectMeta(name="np"),
                spec=client.V1ServiceSpec(
                    type="NodePort", selector={"k8s-app": "kube-dns"}, ports=[client.V1ServicePort(port=53)]
                ),
            ),
        )
        deadline = time.monotonic() + 60
        ip = svc.spec.cluster_ip  # no endpoints: only an element of the no-endpoint-services map
        while not any(ip in ln for ln in rules_text(c.workers[0].exec, "nftables")):
            assert time.monotonic() < deadline, "kube-proxy never programmed default/np"
            time.sleep(0.1)
        prov.reset(c)
        for n in c.nodes:
            assert rules_text(n.exec, "nftables") == pristine[n.name]
    finally:
        prov.delete(name)
    assert leftovers("local", name) == []


class _FakeExec:
    """A fake NodeExec for the rule-text checks only (canned ``nft`` output; no netns needed)."""

    node = "fake"

    def __init__(self, text: str) -> None:
        self.text = text

    def run(
        self, argv: object, *, timeout: float = 0, input: bytes | None = None, check: bool = True
    ) -> object:
        from pytest_k8sstate.node.exec import CommandResult

        return CommandResult(("nft",), 0, self.text.encode(), b"")

    def which(self, program: str) -> bool:
        return True


_NFT_137 = """table ip kube-proxy {
\tchain service-2QRHZV4L-default/kubernetes/tcp/https {
\t\tmeta l4proto tcp dnat to 172.31.0.2:6443
\t}

\tchain service-NWBZK7IH-kube-system/kube-dns/tcp/dns-tcp {
\t\tmeta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.244.0.1 . 53, 1 : 10.244.1.1 . 53 }
\t}

\tchain service-PFISGYVC-default/web/tcp/ {
\t}
}
"""


def test_proxy_rules_check_reads_the_137_nftables_layout() -> None:
    from pytest_k8sstate.providers.local.provider import proxy_rules_missing

    ex = _FakeExec(_NFT_137)
    want = [
        ("default", "kubernetes", "https", "tcp", "172.31.0.2", 6443),
        ("kube-system", "kube-dns", "dns-tcp", "tcp", "10.244.1.1", 53),
    ]
    assert proxy_rules_missing(ex, "nftables", want) is None  # type: ignore[arg-type]
    missing = proxy_rules_missing(
        ex, "nftables", [("kube-system", "kube-dns", "dns-tcp", "tcp", "10.244.2.1", 53)]
    )  # type: ignore[arg-type]
    assert missing is not None
    assert "kube-system/kube-dns:dns-tcp -> 10.244.2.1:53" in missing


def test_rules_text_ignores_empty_nft_chains() -> None:
    from pytest_k8sstate.providers.local.reset import rules_text

    lines = rules_text(_FakeExec(_NFT_137), "nftables")  # type: ignore[arg-type]
    assert not any("default/web" in ln for ln in lines)
    assert "meta l4proto tcp dnat to 172.31.0.2:6443" in lines
