"""``local`` provider specifics: port forwarder, reaper, ipvs refusal, nftables mode, reset, CLI.

The forwarder and reaper tests use real network namespaces and real processes (no binaries needed);
the cluster tests need root and the Kubernetes binaries (skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_provider_contract import leftovers, unavailable  # tests/ is on sys.path (rootdir-less layout)

import pytest_k8sstate.providers.host as host
import pytest_k8sstate.providers.local.addons as local_addons
import pytest_k8sstate.providers.local.state as local_state
import pytest_k8sstate.providers.pristine as local_reset
from pytest_k8sstate.errors import CommandError, ConfigError, ProviderError
from pytest_k8sstate.node import netns
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, NodeInfo, Provider
from pytest_k8sstate.providers.host import check_ipvs_support
from pytest_k8sstate.providers.local.create import early_controllers
from pytest_k8sstate.providers.local.procs import Procs
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.providers.registry import REGISTRY, get_provider, provider_class
from pytest_k8sstate.util.files import CACHE_ENV

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
    with pytest.raises(ConfigError, match="unknown provider 'nosuch'; known providers: local, kind"):
        provider_class("nosuch")


def test_provider_class_is_the_registered_class_without_an_instance() -> None:
    assert provider_class("local") is LocalProvider
    for name in REGISTRY:
        cls = provider_class(name)
        assert issubclass(cls, Provider)
        assert cls.name == name


class _Bare(Provider):
    """A provider that says nothing about what it lacks (abstract: only its classmethods are used)."""

    name = "bare"


def _cluster_handle(name: str = "c", details: dict[str, object] | None = None) -> Cluster:
    return Cluster(
        name=name,
        provider="local",
        kubeconfig=Path("/nonexistent"),
        api_server="https://127.0.0.1:1",
        nodes=[],
        etcd=None,
        capabilities=frozenset({"etcd", "iptables"}),
        proxy_mode="iptables",
        details=dict(details or {}),
    )


def test_missing_reasons_of_the_local_provider() -> None:
    """The exact texts of the plugin's ``needs`` skips (tests/plugin/test_markers.py matches them too)."""
    reason = LocalProvider.missing_reason
    assert reason("container-runtime", proxy_mode="iptables") == (
        "needs container-runtime: the local provider runs pods with kwok (no container runtime); "
        "use --k8sstate-provider kind"
    )
    assert reason("kubelet", proxy_mode="iptables") == (
        "needs kubelet: the local provider's nodes are kwok nodes (no kubelet); use --k8sstate-provider kind"
    )
    assert reason("cni", proxy_mode="nftables") == (
        "needs cni: the local provider has no CNI plugin (kwok assigns pod IPs); use --k8sstate-provider kind"
    )
    assert reason("kindnet", proxy_mode="iptables") == (
        "needs kindnet: kindnet runs only on kind clusters; use --k8sstate-provider kind"
    )
    assert reason("ipvs", proxy_mode="nftables") == (
        "needs ipvs: the cluster's kube-proxy runs in nftables mode; use --k8sstate-proxy-mode ipvs "
        'or @pytest.mark.k8sstate(proxy_mode="ipvs")'
    )
    # no note of its own: the generic reason, naming the cluster when there is one
    assert reason("ipvs", proxy_mode="ipvs") == "needs ipvs: the local provider does not provide it"
    assert reason("etcd", proxy_mode="ipvs", cluster=_cluster_handle("c1")) == (
        "needs etcd: the local provider (cluster c1) does not provide it"
    )
    assert LocalProvider.shares_host_kernel is True


def test_missing_reason_prefers_the_clusters_own_note() -> None:
    cluster = _cluster_handle(details={"missing_capabilities": {"kindnet": "built without kindnetd"}})
    assert LocalProvider.missing_reason("kindnet", proxy_mode="iptables", cluster=cluster) == (
        "needs kindnet: built without kindnetd"
    )
    # other capabilities keep their reason; a note that is not text is ignored
    assert "kwok" in LocalProvider.missing_reason("kubelet", proxy_mode="iptables", cluster=cluster)
    odd = _cluster_handle(details={"missing_capabilities": {"kindnet": 1}})
    assert LocalProvider.missing_reason("kindnet", proxy_mode="iptables", cluster=odd).endswith(
        "kindnet runs only on kind clusters; use --k8sstate-provider kind"
    )
    # a provider without notes: the generic reason, still with the alternative
    assert _Bare.missing_reason("cni", proxy_mode="iptables") == (
        "needs cni: the bare provider does not provide it; use --k8sstate-provider kind"
    )
    assert _Bare.shares_host_kernel is False


def _no_ipvs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Make this kernel lack IPVS: /proc/net/ip_vs missing and ``modprobe ip_vs`` failing."""
    calls: list[list[str]] = []

    def modprobe(argv: list[str], **_kwargs: object) -> object:
        calls.append(list(argv))
        raise CommandError("modprobe: FATAL: Module ip_vs not found")

    monkeypatch.setattr("pytest_k8sstate.providers.host.IP_VS_PROC", tmp_path / "ip_vs")
    monkeypatch.setattr("pytest_k8sstate.providers.host.run_command", modprobe)
    return calls


def test_precheck_capability_before_any_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    static = LocalProvider.capabilities
    pre = LocalProvider.precheck_capability
    assert pre("etcd", proxy_mode="iptables", static=static) is None
    assert pre("kubelet", proxy_mode="iptables", static=None) is None  # unknown before a cluster
    assert pre("kubelet", proxy_mode="iptables", static=static) == LocalProvider.missing_reason(
        "kubelet", proxy_mode="iptables"
    )
    assert pre("ipvs", proxy_mode="iptables", static=static) == (
        "needs ipvs: the cluster's kube-proxy runs in iptables mode; use --k8sstate-proxy-mode ipvs "
        'or @pytest.mark.k8sstate(proxy_mode="ipvs")'
    )
    # ipvs mode: the nodes share this kernel, so its IPVS support decides
    calls = _no_ipvs(monkeypatch, tmp_path)
    reason = pre("ipvs", proxy_mode="ipvs", static=static)
    assert reason is not None
    assert reason.startswith("needs ipvs: kube-proxy --proxy-mode=ipvs needs the kernel's IPVS support")
    assert "use --proxy-mode iptables or nftables" in reason
    assert calls == [["modprobe", "ip_vs"]]
    # a provider whose nodes have their own kernel is not judged by this one
    assert _Bare.precheck_capability("ipvs", proxy_mode="ipvs", static=None) is None
    assert calls == [["modprobe", "ip_vs"]]
    (tmp_path / "ip_vs").write_text("")
    assert pre("ipvs", proxy_mode="ipvs", static=static) is None


def test_check_ipvs_support_loads_the_module_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proc = tmp_path / "ip_vs"

    def modprobe(argv: list[str], **_kwargs: object) -> object:
        proc.write_text("")  # the module loaded
        return None

    monkeypatch.setattr("pytest_k8sstate.providers.host.IP_VS_PROC", proc)
    monkeypatch.setattr("pytest_k8sstate.providers.host.run_command", modprobe)
    host.check_ipvs_support()
    assert proc.exists()


def test_early_controllers_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: the switch was read once at import; setting it later had no effect."""
    monkeypatch.delenv("K8SSTATE_LOCAL_EARLY_CONTROLLERS", raising=False)
    assert early_controllers() is False
    monkeypatch.setenv("K8SSTATE_LOCAL_EARLY_CONTROLLERS", "1")
    assert early_controllers() is True
    monkeypatch.setenv("K8SSTATE_LOCAL_EARLY_CONTROLLERS", "0")
    assert early_controllers() is False
    import pytest_k8sstate.providers.local.create as local_create
    import pytest_k8sstate.providers.local.provider as local_provider

    assert not hasattr(local_provider, "EARLY_CONTROLLERS")
    assert not hasattr(local_create, "EARLY_CONTROLLERS")


def _etcd_reads(
    monkeypatch: pytest.MonkeyPatch, reads: list[dict[bytes, tuple[bytes, int]]]
) -> list[dict[bytes, tuple[bytes, int]]]:
    """``_read_etcd`` returns ``reads`` one after another, then the last one forever."""
    seen: list[dict[bytes, tuple[bytes, int]]] = []

    def read(_cluster: Cluster) -> dict[bytes, tuple[bytes, int]]:
        snap = reads[min(len(seen), len(reads) - 1)]
        seen.append(snap)
        return snap

    monkeypatch.setattr("pytest_k8sstate.providers.pristine._read_etcd", read)
    monkeypatch.setattr("pytest_k8sstate.providers.pristine.SETTLE_GAP", 0.01)
    return seen


def test_pristine_capture_waits_for_etcd_to_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = b"/registry/services/specs/default/web"
    lease = b"/registry/leases/kube-node-lease/n1"
    reads = [
        {svc: (b"v1", 10), lease: (b"l", 11)},
        {svc: (b"v2", 12), lease: (b"l", 13)},
        {svc: (b"v2", 12), lease: (b"l", 14)},  # only the heartbeat moved: settled
    ]
    seen = _etcd_reads(monkeypatch, reads)
    assert local_reset._settled(_cluster_handle(), timeout=5) == {svc: b"v2", lease: b"l"}
    assert len(seen) == 3


def test_pristine_capture_fails_when_etcd_never_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2: on timeout the last read was returned as the pristine baseline; now it is an error."""
    counter = iter(range(10**6))
    svc = b"/registry/services/specs/default/web"

    def read(_cluster: Cluster) -> dict[bytes, tuple[bytes, int]]:
        rev = next(counter)
        return {svc: (b"v%d" % rev, rev), b"/registry/events/default/e": (b"e", rev)}

    monkeypatch.setattr("pytest_k8sstate.providers.pristine._read_etcd", read)
    monkeypatch.setattr("pytest_k8sstate.providers.pristine.SETTLE_GAP", 0.01)
    with pytest.raises(
        ProviderError, match=r"etcd of cluster 'c' to settle.*1 keys changed.*specs/default/web"
    ):
        local_reset._settled(_cluster_handle(), timeout=0.2)


def test_reset_fails_naming_the_node_whose_rules_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = _cluster_handle("rs")
    cluster.nodes.append(NodeInfo("rs-worker", "worker", _FakeExec(_NFT_137), "172.31.0.3"))  # type: ignore[arg-type]
    monkeypatch.setitem(local_reset._cache, "rs", ({}, {"rs-worker": ["table ip kube-proxy {", "}"]}))
    monkeypatch.setattr("pytest_k8sstate.providers.pristine.restore_etcd", lambda _c, _p: 0)
    st = local_state.ClusterState("rs", 0, "172.31.0.0/24", "nftables", "v1", None, None)
    cluster.proxy_mode = "nftables"
    with pytest.raises(ProviderError) as err:
        local_reset.reset_cluster(cluster, st.dir, ip6=False, timeout=0.2)
    msg = str(err.value)
    assert "kube-proxy rules of cluster 'rs' to return to the pristine state" in msg
    assert "node rs-worker: rules differ" in msg
    assert "recreate the cluster (`k8sstate cluster delete --name rs`)" in msg
    # rules equal to the pristine ones: done
    want = local_reset.rules_text(_FakeExec(_NFT_137), "nftables")  # type: ignore[arg-type]
    monkeypatch.setitem(local_reset._cache, "rs", ({}, {"rs-worker": want}))
    assert local_reset.reset_cluster(cluster, st.dir, ip6=False, timeout=0.2)["passes"] == 1.0


def test_state_lock_times_out_naming_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with local_state.global_lock():
        pass  # creates the lock file
    fd = os.open(tmp_path / "clusters" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ProviderError, match=r"\.lock after .*another k8sstate process holds it"):
            with local_state.global_lock(timeout=0.1):
                pytest.fail("got a lock another holder has")
    finally:
        os.close(fd)


def test_state_file_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    st = local_state.claim("at", proxy_mode="nftables", version="v1", owner_pid=None, owner_start=None)
    st.ports = {"api": 1}
    st.save()
    assert sorted(p.name for p in st.dir.iterdir()) == ["state.json"]  # no temp files left
    loaded = local_state.load_state("at")
    assert loaded is not None
    assert loaded.ports == {"api": 1}
    assert loaded.dir == tmp_path / "clusters" / "at"


def test_procs_records_and_reports_an_exited_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    st = local_state.claim("pr", proxy_mode="iptables", version="v1", owner_pid=None, owner_start=None)
    procs = Procs(st)
    rec = procs.start(
        "quitter", [sys.executable, "-c", "print('bye from quitter'); raise SystemExit(3)"], None
    )
    sleeper = procs.start("sleeper", ["sleep", "300"], None)
    try:
        loaded = local_state.load_state("pr")
        assert loaded is not None
        assert [p.name for p in loaded.processes] == ["quitter", "sleeper"]  # recorded at once
        procs.popen["quitter"].wait(timeout=30)
        procs.check(["sleeper"])  # the running one is fine
        with pytest.raises(
            ProviderError, match=r"quitter exited with code 3 while cluster 'pr' was starting"
        ):
            procs.check()
        assert "bye from quitter" in procs.logs("quitter")()
        assert rec.log is not None
    finally:
        procs.reap()
    assert procs.popen["sleeper"].returncode is not None
    assert not host.alive(sleeper.pid, sleeper.start)


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
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
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

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
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
    procs = Procs(st)  # recorded (pid, start time, executable) and marked as the provider does
    rec = procs.start("sleeper", ["sleep", "300"], ns_name)
    sleeper = procs.popen["sleeper"]
    loaded = local_state.load_state(st.name)
    assert loaded is not None
    assert loaded.processes[0].pid == rec.pid > 0
    assert loaded.processes[0].exe == os.path.realpath(shutil.which("sleep") or "sleep")
    # a cluster whose owner lives (this process) is kept
    keep = local_state.claim(
        f"rk{os.getpid() % 100000}",
        proxy_mode="iptables",
        version="v1",
        owner_pid=os.getpid(),
        owner_start=host.proc_start_time(os.getpid()),
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
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(ProviderError, match=r"IPVS support.*--proxy-mode iptables or nftables"):
        LocalProvider().create(ClusterSpec(name="ipvs-refused", nodes=0, proxy_mode="ipvs"))
    assert not (tmp_path / "clusters" / "ipvs-refused").exists()


# ------------------------------------------------------------------------------------------------
# real clusters
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def local_cluster(prefix: str, nodes: int = 1) -> Iterator[Cluster]:
    """A real local cluster, deleted at the end: nothing of it may be left (even with components dead)."""
    _skip_without_cluster()
    prov = LocalProvider()
    name = f"{prefix}{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=nodes))
    try:
        yield c
    finally:
        prov.delete(name)
        assert leftovers("local", name) == []


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with local_cluster("lt") as c:
        yield c


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

    from pytest_k8sstate.providers.pristine import rules_text

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
    from pytest_k8sstate.cli import main

    assert main(["cluster", "list", "--provider", "local"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    assert [cluster.name, "local"] in [r[:2] for r in rows], rows
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
    from pytest_k8sstate.cli import main
    from pytest_k8sstate.state import Snapshot

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

        from pytest_k8sstate.providers.pristine import rules_text

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
    from pytest_k8sstate.providers.local.readiness import proxy_rules_missing

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
    from pytest_k8sstate.providers.pristine import rules_text

    lines = rules_text(_FakeExec(_NFT_137), "nftables")  # type: ignore[arg-type]
    assert not any("default/web" in ln for ln in lines)
    assert "meta l4proto tcp dnat to 172.31.0.2:6443" in lines
