"""IP families without a cluster: the local provider's command lines, Node objects and state per family,
kind's config, ClusterSpec / provider checks and skip reasons. (The clusters themselves: finding 33 and
``tests/test_dual_stack_local.py``.)"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

import pytest_k8sstate.providers.local.components as comp
from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.providers.base import ClusterSpec, family_capabilities
from pytest_k8sstate.providers.kind import noderoutes
from pytest_k8sstate.providers.kind.config import KindOptions, kind_config
from pytest_k8sstate.providers.kind.provider import KindProvider
from pytest_k8sstate.providers.local.addons import node_object
from pytest_k8sstate.providers.local.create import node_ips
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.providers.local.state import ClusterState, NodeRecord
from pytest_k8sstate.providers.minikube import MinikubeProvider

PATHS = {n: Path(f"/bin/{n}") for n in ("kube-apiserver", "kube-controller-manager", "kube-proxy", "kwok")}
NODE = NodeRecord(
    name="c-worker",
    role="worker",
    ip="172.31.0.3",
    netns="k8ss-c-worker",
    pod_cidr="10.244.1.0/24",
    ip6="fd00:172:31::3",
    pod_cidr6="fd00:10:244:1::/64",
)


def _flag(argv: list[str | Path], name: str) -> list[str]:
    return [str(a).split("=", 1)[1] for a in argv if str(a).startswith(f"--{name}=")]


@pytest.mark.parametrize(
    ("family", "services", "pods"),
    [
        ("ipv4", ["10.96.0.0/12"], ["10.244.0.0/16"]),
        ("ipv6", ["fd00:10:96::/112"], ["fd00:10:244::/56"]),
        ("dual", ["10.96.0.0/12", "fd00:10:96::/112"], ["10.244.0.0/16", "fd00:10:244::/56"]),
    ],
)
def test_ranges_per_family_primary_first(family: str, services: list[str], pods: list[str]) -> None:
    assert comp.service_cidrs(family).split(",") == services
    assert comp.cluster_cidrs(family).split(",") == pods
    for cidr in (*services, *pods):
        assert str(ipaddress.ip_network(cidr)) == cidr  # canonical, as the apiserver echoes them


def test_controller_manager_mask_flags_only_of_the_clusters_families() -> None:
    """kube-controller-manager exits on a mask flag of a family the cluster lacks (setNodeCIDRMaskSizes)."""

    def masks(family: str) -> list[str]:
        argv = comp.controller_manager_argv(PATHS, _FakePki(), Path("/kc"), "c", family)
        return sorted(str(a).split("=")[0] for a in argv if "node-cidr-mask-size" in str(a))

    assert masks("ipv4") == ["--node-cidr-mask-size"]
    assert masks("ipv6") == ["--node-cidr-mask-size-ipv6"]
    assert masks("dual") == ["--node-cidr-mask-size-ipv4", "--node-cidr-mask-size-ipv6"]


def test_kube_proxy_binds_the_primary_family_with_bracketed_ports() -> None:
    v6 = comp.kube_proxy_argv(PATHS, Path("/kc"), NODE, "iptables", "ipv6")
    assert _flag(v6, "bind-address") == ["fd00:172:31::3"]
    assert _flag(v6, "healthz-bind-address") == ["[fd00:172:31::3]:10256"]
    assert _flag(v6, "cluster-cidr") == ["fd00:10:244::/56"]
    dual = comp.kube_proxy_argv(PATHS, Path("/kc"), NODE, "nftables", "dual")
    assert _flag(dual, "bind-address") == ["172.31.0.3"]
    assert _flag(dual, "cluster-cidr") == ["10.244.0.0/16,fd00:10:244::/56"]
    assert comp.api_url(NODE, "ipv6") == "https://[fd00:172:31::3]:6443"
    assert comp.api_url(NODE, "dual") == "https://172.31.0.3:6443"


def test_node_pod_cidrs_inside_the_cluster_ranges() -> None:
    for k in (0, 1, 15, 64):
        v4, v6 = comp.node_pod_cidrs(k, "dual")
        assert ipaddress.ip_network(v4).subnet_of(ipaddress.IPv4Network(comp.CLUSTER_CIDR))
        assert ipaddress.ip_network(v6).subnet_of(ipaddress.IPv6Network(comp.CLUSTER_CIDR6))
        assert ipaddress.ip_network(v6).prefixlen == comp.NODE_MASK6
    assert len({comp.node_pod_cidrs(k, "ipv6")[0] for k in range(65)}) == 65


def test_node_object_lists_both_internal_ips_and_pod_cidrs() -> None:
    obj = node_object(
        "c-worker",
        role="worker",
        ip=NODE.ip,
        pod_cidr=NODE.pod_cidr,
        version="v1.37.1",
        ips=node_ips(NODE, "dual"),
        pod_cidrs=comp.node_pod_cidrs(1, "dual"),
    )
    internal = [a["address"] for a in obj["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == ["172.31.0.3", "fd00:172:31::3"]
    assert obj["spec"]["podCIDRs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert obj["spec"]["podCIDR"] == "10.244.1.0/24"
    assert node_ips(NODE, "ipv6") == ["fd00:172:31::3"]


def test_state_records_the_family_and_reads_older_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    st = ClusterState(
        "c",
        3,
        "172.31.3.0/24",
        "iptables",
        "v1.37.1",
        None,
        None,
        ip_family="dual",
        subnet6="fd00:172:31:3::/64",
        nodes=[NODE],
    )
    back = ClusterState.from_json(json.loads(json.dumps(st.to_json())))
    assert back.ip_family == "dual"
    assert back.nodes[0].ip6 == "fd00:172:31::3"
    old = st.to_json()
    for k in ("ip_family", "subnet6"):
        del old[k]
    for k in ("ip6", "pod_cidr6"):
        del old["nodes"][0][k]
    assert ClusterState.from_json(old).ip_family == "ipv4"
    with pytest.raises(ValueError, match="ip_family"):
        ClusterState.from_json({**st.to_json(), "ip_family": "ipv5"})


def test_cluster_spec_refuses_an_unknown_family() -> None:
    with pytest.raises(
        ConfigError, match=r"ip_family='ipv5' for cluster 'c': expected one of ipv4, ipv6, dual"
    ):
        ClusterSpec(name="c", ip_family="ipv5")


def test_capabilities_and_skip_reasons_per_family() -> None:
    assert family_capabilities("ipv4") == frozenset()
    assert family_capabilities("ipv6") == {"ipv6"}
    assert family_capabilities("dual") == {"ipv6", "dual-stack"}
    pre = LocalProvider.precheck_capability
    assert (
        pre("dual-stack", proxy_mode="iptables", static=LocalProvider.capabilities, ip_family="dual") is None
    )
    assert pre("ipv6", proxy_mode="iptables", static=LocalProvider.capabilities, ip_family="dual") is None
    why = pre("dual-stack", proxy_mode="iptables", static=LocalProvider.capabilities, ip_family="ipv6")
    assert why == (
        "needs dual-stack: the cluster is IPv6-only; use --k8sstate-ip-family dual or "
        '@pytest.mark.k8sstate(ip_family="dual")'
    )
    # a provider that offers no IPv6 at all says so, whatever the family asked for
    why = MinikubeProvider.precheck_capability(
        "ipv6", proxy_mode="iptables", static=MinikubeProvider.capabilities or frozenset(), ip_family="ipv4"
    )
    assert why is not None
    assert why.startswith("needs ipv6: ")


def test_providers_without_ipv6_refuse_the_family() -> None:
    for cls in (LocalProvider, KindProvider):
        for family in ("ipv4", "ipv6", "dual"):
            cls.check_ip_family(family)
    MinikubeProvider.check_ip_family("ipv4")
    with pytest.raises(ConfigError, match="the minikube provider cannot create a 'dual' cluster"):
        MinikubeProvider.check_ip_family("dual")


def test_kind_config_ip_family() -> None:
    opts = KindOptions(
        pod_subnet="10.244.0.0/16,fd00:10:244::/56", service_subnet="10.96.0.0/16,fd00:10:96::/112"
    )
    cfg = kind_config(ClusterSpec(name="k", nodes=1, ip_family="dual"), opts)
    assert cfg["networking"]["ipFamily"] == "dual"
    assert cfg["networking"]["podSubnet"] == "10.244.0.0/16,fd00:10:244::/56"
    assert "ipFamily" not in kind_config(ClusterSpec(name="k"), KindOptions())["networking"]
    assert (
        kind_config(ClusterSpec(name="k", ip_family="ipv6"), KindOptions())["networking"]["ipFamily"]
        == "ipv6"
    )
    with pytest.raises(ConfigError, match="comma-separated"):
        KindOptions(pod_subnet="10.244.0.0/16;fd00::/56")


class _FakePki:
    """Only the file names the controller-manager's argv mentions (no certificates are made)."""

    def __getattr__(self, name: str) -> Path:
        return Path(f"/pki/{name}")


def test_kind_dual_stack_needs_a_cni_of_both_families() -> None:
    """ptp and bridge (the node-routes agent: a host-local range per family) and kindnet may run IPv6-only
    and dual-stack kind clusters; flannel here leases IPv4 subnets only and is refused before any create."""
    kind = KindProvider()
    for cni in ("ptp", "bridge", "kindnet"):
        kind._check_family_cni(ClusterSpec(name="d", ip_family="dual", cni=cni), KindOptions(), "img")
    with pytest.raises(ConfigError, match=r"'ipv6' needs a pod network .*--k8sstate-cni ptp or bridge"):
        kind._check_family_cni(ClusterSpec(name="d", ip_family="ipv6", cni="flannel"), KindOptions(), "img")
    # the agent's CNI config (its conflist function, run by bash): a host-local range and a default route
    # per family of the node's podCIDRs
    script = (Path(noderoutes.__file__).parent / "data" / "node-routes.sh").read_text()
    func = script[script.index("conflist() {") : script.index("\nEOF\n}\n") + 6]
    for cidrs, routes in (
        ("10.244.1.0/24,fd00:10:244:1::/64", ["0.0.0.0/0", "::/0"]),
        ("fd00:10:244:2::/64", ["::/0"]),
        ("10.244.3.0/24", ["0.0.0.0/0"]),
    ):
        out = subprocess.run(  # noqa: S603 - bash and our own script
            ["bash", "-c", func + '\nconflist "$1" ptp', "bash", cidrs],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        ipam = json.loads(out)["plugins"][0]["ipam"]
        assert ipam["ranges"] == [[{"subnet": c}] for c in cidrs.split(",")], out
        assert [r["dst"] for r in ipam["routes"]] == routes, out
