"""The command lines of a ``local`` cluster's components, flags as kubeadm sets them (deviations noted).

Pure functions: each takes the binary paths, the cluster's PKI and kubeconfigs and returns an argv; the
provider starts them (:class:`~pytest_k8sstate.providers.local.procs.Procs`) in the order it needs.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping
from pathlib import Path

from pytest_k8sstate.etcd.server import EtcdServer
from pytest_k8sstate.pki import Pki
from pytest_k8sstate.providers.local.state import NodeRecord

__all__ = [
    "API_PORT",
    "CLUSTER_CIDR",
    "SERVICE_CIDR",
    "apiserver_argv",
    "controller_manager_argv",
    "etcd_argv",
    "kube_proxy_argv",
    "kwok_argv",
    "portforward_argv",
    "scheduler_argv",
]

SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR6 = "fd00:10:96::/112"
CLUSTER_CIDR6 = "fd00:10:244::/56"
NODE_MASK4, NODE_MASK6 = 24, 64
API_PORT = 6443


def service_cidrs(ip_family: str) -> str:
    """``--service-cluster-ip-range``: the primary family first (IPv4 in a dual-stack cluster, as kubeadm)."""
    return {"ipv4": SERVICE_CIDR, "ipv6": SERVICE_CIDR6}.get(ip_family, f"{SERVICE_CIDR},{SERVICE_CIDR6}")


def cluster_cidrs(ip_family: str) -> str:
    """``--cluster-cidr`` of the controller-manager and kube-proxy (pod ranges), primary family first."""
    return {"ipv4": CLUSTER_CIDR, "ipv6": CLUSTER_CIDR6}.get(ip_family, f"{CLUSTER_CIDR},{CLUSTER_CIDR6}")


def node_pod_cidrs(k: int, ip_family: str) -> list[str]:
    """Node ``k``'s ``spec.podCIDRs`` (the provider sets them; the node IPAM controller keeps them)."""
    v4 = f"10.244.{k}.0/{NODE_MASK4}"
    v6 = (
        str(ipaddress.IPv6Network(CLUSTER_CIDR6).network_address + (k << (128 - NODE_MASK6)))
        + f"/{NODE_MASK6}"
    )
    return {"ipv4": [v4], "ipv6": [v6]}.get(ip_family, [v4, v6])


def node_mask_flags(ip_family: str) -> list[str]:
    """The controller-manager's node mask flags: it refuses a flag of a family the cluster lacks."""
    if ip_family == "ipv4":
        return [f"--node-cidr-mask-size={NODE_MASK4}"]
    if ip_family == "ipv6":
        return [f"--node-cidr-mask-size-ipv6={NODE_MASK6}"]
    return [f"--node-cidr-mask-size-ipv4={NODE_MASK4}", f"--node-cidr-mask-size-ipv6={NODE_MASK6}"]


def primary_ip(node: NodeRecord, ip_family: str) -> str:
    """The node's address of the cluster's primary family (its InternalIP first in Node.status)."""
    return node.ip6 if ip_family == "ipv6" else node.ip


def hostport(ip: str, port: int) -> str:
    """``a.b.c.d:port`` or ``[v6]:port``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def api_url(cp: NodeRecord, ip_family: str) -> str:
    """The apiserver as the components reach it: its advertise address."""
    return f"https://{hostport(primary_ip(cp, ip_family), API_PORT)}"


ETCD_PORT = 2379

Paths = Mapping[str, Path]


def portforward_argv(cp: NodeRecord, ready_file: Path) -> list[str]:
    """The forwarder: root-namespace ``127.0.0.1:<free port>`` to the apiserver and to etcd in ``cp``'s
    namespace; it writes the ports it bound to ``ready_file``."""
    import pytest_k8sstate.providers.portforward as portforward

    return [
        sys.executable,
        str(Path(portforward.__file__).resolve()),
        "--netns",
        cp.netns,
        "--ready-file",
        str(ready_file),
        "--map",
        f"127.0.0.1:0={cp.ip}:{API_PORT}",
        "--map",
        f"127.0.0.1:0=127.0.0.1:{ETCD_PORT}",
    ]


def etcd_argv(binary: Path, data_dir: Path, pki: Pki, cp: NodeRecord) -> list[str]:
    """etcd on the control-plane namespace's 127.0.0.1 (fsync off: the cluster's data is thrown away)."""
    server = EtcdServer(
        binary,
        data_dir,
        pki=pki,
        host="127.0.0.1",
        client_port=ETCD_PORT,
        peer_port=ETCD_PORT + 1,
        name=cp.name,
        extra_args=["--unsafe-no-fsync=true", "--log-level=error"],
    )
    return server.argv()


def apiserver_argv(paths: Paths, pki: Pki, cp: NodeRecord, ip_family: str = "ipv4") -> list[str | Path]:
    return [
        paths["kube-apiserver"],
        f"--advertise-address={primary_ip(cp, ip_family)}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={pki.ca_crt}",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--etcd-cafile={pki.etcd_ca_crt}",
        f"--etcd-certfile={pki.apiserver_etcd_client_crt}",
        f"--etcd-keyfile={pki.apiserver_etcd_client_key}",
        f"--etcd-servers=https://127.0.0.1:{ETCD_PORT}",
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client_crt}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client_key}",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        f"--proxy-client-cert-file={pki.front_proxy_client_crt}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
        "--requestheader-allowed-names=front-proxy-client",
        f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--secure-port={API_PORT}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={service_cidrs(ip_family)}",
        f"--tls-cert-file={pki.apiserver_crt}",
        f"--tls-private-key-file={pki.apiserver_key}",
    ]


def controller_manager_argv(
    paths: Paths, pki: Pki, kubeconfig: Path, cluster_name: str, ip_family: str = "ipv4"
) -> list[str | Path]:
    return [
        paths["kube-controller-manager"],
        "--allocate-node-cidrs=true",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--client-ca-file={pki.ca_crt}",
        f"--cluster-cidr={cluster_cidrs(ip_family)}",
        f"--cluster-name={cluster_name}",
        f"--cluster-signing-cert-file={pki.ca_crt}",
        f"--cluster-signing-key-file={pki.ca_key}",
        "--controllers=*,bootstrapsigner,tokencleaner",
        f"--kubeconfig={kubeconfig}",
        # Not kubeadm's: with --use-service-account-credentials every controller first gets its
        # ServiceAccount and a token; at the default client rate limit (20 qps) that alone
        # delays the controllers by ~5 s. Rate limits change no state.
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
        "--leader-elect=true",
        *node_mask_flags(ip_family),
        f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
        f"--root-ca-file={pki.ca_crt}",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={service_cidrs(ip_family)}",
        "--use-service-account-credentials=true",
    ]


def scheduler_argv(paths: Paths, kubeconfig: Path) -> list[str | Path]:
    return [
        paths["kube-scheduler"],
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=true",
    ]


def kwok_argv(paths: Paths, kubeconfig: Path, stages: Path, ip_family: str = "ipv4") -> list[str | Path]:
    """kwok: node heartbeats (Ready nodes) and pods Running with IPs from each node's podCIDRs (its
    ``PodIPsWith`` stage: one address per podCIDR, so a dual-stack node's pods get one of each family)."""
    return [
        paths["kwok"],
        f"--kubeconfig={kubeconfig}",
        f"--config={stages}",
        "--manage-all-nodes=true",
        "--node-lease-duration-seconds=40",
        f"--cidr={CLUSTER_CIDR6 if ip_family == 'ipv6' else CLUSTER_CIDR}",
    ]


def kube_proxy_argv(
    paths: Paths, kubeconfig: Path, node: NodeRecord, proxy_mode: str, ip_family: str = "ipv4"
) -> list[str | Path]:
    """A real kube-proxy for ``node`` (in its namespace); conntrack sysctls untouched, every sync at once.
    Its primary family is that of ``--bind-address``; it runs both families when the node has ip6tables
    (iptables, ipvs) or nft ``ip6`` tables, as on any node."""
    ip = primary_ip(node, ip_family)
    return [
        paths["kube-proxy"],
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node.name}",
        f"--bind-address={ip}",
        f"--cluster-cidr={cluster_cidrs(ip_family)}",
        f"--proxy-mode={proxy_mode}",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        f"--healthz-bind-address={hostport(ip, 10256)}",
        f"--metrics-bind-address={hostport(ip, 10249)}",
        "--iptables-min-sync-period=0",
        "--v=2",
    ]
