"""Clusters of kubeadm nodes in Docker containers (kind, minikube): etcd certificates, endpoints, facts.

* :func:`copy_node_certs` reads the etcd CA and an etcd client certificate out of the control-plane node
  (read-only: nothing is added to the cluster);
* :func:`attach_endpoints` gives the API server and etcd endpoints of a node container and a kubeconfig for
  them: through a loopback forwarder (:mod:`.forwarders`) when the containers live in the project engine's
  network namespace, else the container IP as it is;
* :func:`proxy_mode_from_kubeadm_conf` (also used by the ``existing`` provider on kube-proxy's ConfigMap),
  :func:`ipvs_in_kernel` and :func:`node_capabilities`: what such a cluster can do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.etcd.target import EtcdTarget
from pytest_k8sstate.node.exec import DockerExec
from pytest_k8sstate.providers.base import NodeInfo
from pytest_k8sstate.providers.forwarders import ensure_forwarder
from pytest_k8sstate.providers.kubeconfig import (
    kubeconfig_server,
    rewrite_kubeconfig_server,
    write_kubeconfig,
)
from pytest_k8sstate.util.files import atomic_write_bytes

__all__ = [
    "BASE_CAPABILITIES",
    "KUBEADM_CERTS",
    "KUBEADM_PKI",
    "NodeCerts",
    "attach_control_plane",
    "attach_endpoints",
    "copy_node_certs",
    "ipvs_in_kernel",
    "node_capabilities",
    "proxy_mode_from_kubeadm_conf",
]

KUBEADM_PKI = "/etc/kubernetes/pki"
ETCD_PORT = 2379
BASE_CAPABILITIES = frozenset({"container-runtime", "kubelet", "iptables", "nftables", "etcd"})
"""What every cluster of kubeadm node containers has (whatever its CNI and proxy mode)."""


@dataclass
class NodeCerts:
    """Where the etcd CA and a client certificate live inside the control-plane node."""

    ca: str
    cert: str
    key: str


KUBEADM_CERTS = NodeCerts(
    ca=f"{KUBEADM_PKI}/etcd/ca.crt",
    cert=f"{KUBEADM_PKI}/apiserver-etcd-client.crt",
    key=f"{KUBEADM_PKI}/apiserver-etcd-client.key",
)
"""kubeadm's layout (kind nodes): the apiserver's own etcd client certificate."""


def attach_endpoints(
    state_dir: Path, netns: object, node_ip: str, tool_kubeconfig: Path, *, api_port: int
) -> tuple[Path, str, str]:
    """The API server and etcd endpoints of a node container, and a kubeconfig for them.

    With a project-owned engine (``netns`` set) the container IPs exist only inside that namespace, so a
    loopback forwarder (``portforward.py``) is started and the tool's kubeconfig is rewritten to it;
    otherwise the tool's kubeconfig and the container IP are used as they are. Returns
    ``(kubeconfig path, api server URL, etcd endpoint)``."""
    tool_kc = tool_kubeconfig.read_text()
    if netns:
        api, etcd = ensure_forwarder(
            state_dir, str(netns), [f"{node_ip}:{api_port}", f"{node_ip}:{ETCD_PORT}"]
        )
        api_server, etcd_ep = f"https://127.0.0.1:{api}", f"https://127.0.0.1:{etcd}"
        kc_text = rewrite_kubeconfig_server(tool_kc, api_server, str(tool_kubeconfig))
    else:
        api_server, etcd_ep, kc_text = kubeconfig_server(tool_kc), f"https://{node_ip}:{ETCD_PORT}", tool_kc
    return write_kubeconfig(state_dir / "kubeconfig", kc_text), api_server, etcd_ep


def attach_control_plane(
    state_dir: Path, netns: object, node: NodeInfo, certs: NodeCerts, tool_kubeconfig: Path, *, api_port: int
) -> tuple[Path, str, EtcdTarget]:
    """:func:`copy_node_certs` + :func:`attach_endpoints` for the control-plane ``node`` (a container):
    ``(kubeconfig path, api server URL, how to reach its etcd)``."""
    if not isinstance(node.exec, DockerExec):
        raise ProviderError(f"node {node.name} is not a Docker container ({type(node.exec).__name__})")
    ca, cert, key = copy_node_certs(node.exec, certs, state_dir / "pki")
    kc, api_server, etcd_ep = attach_endpoints(state_dir, netns, node.ip, tool_kubeconfig, api_port=api_port)
    return kc, api_server, EtcdTarget(endpoints=(etcd_ep,), ca=ca, cert=cert, key=key)


def copy_node_certs(node: DockerExec, certs: NodeCerts, dest: Path) -> tuple[Path, Path, Path]:
    """Read the etcd CA + client cert/key out of ``node`` into ``dest`` (keys 0600). Read-only on the node."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = []
    for src, fname in (
        (certs.ca, "etcd-ca.crt"),
        (certs.cert, "etcd-client.crt"),
        (certs.key, "etcd-client.key"),
    ):
        res = node.run(["cat", src], timeout=20, check=False)
        if res.returncode != 0 or not res.stdout:
            raise ProviderError(
                f"cannot read {src} on node {node.node}: {res.stderr.decode(errors='replace').strip()}; "
                "is this a kubeadm control-plane node?"
            )
        p = dest / fname
        atomic_write_bytes(p, res.stdout, mode=0o600)
        out.append(p)
    return out[0], out[1], out[2]


def proxy_mode_from_kubeadm_conf(text: str, source: str = "/kind/kubeadm.conf") -> str:
    """kube-proxy's mode from a kubeadm config (a ``KubeProxyConfiguration`` document; default iptables)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        docs = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "KubeProxyConfiguration":
            mode = d.get("mode") or "iptables"
            return str(mode)
    return "iptables"


def ipvs_in_kernel(proc: Path = Path("/proc"), sys_module: Path = Path("/sys/module")) -> bool:
    """True when this kernel has IPVS (``/proc/net/ip_vs`` exists or the module is loaded). Node containers
    share the host's kernel: kube-proxy's ipvs mode works in them only then."""
    return (proc / "net" / "ip_vs").exists() or (sys_module / "ip_vs").exists()


def node_capabilities(proxy_mode: str, *, ipvs_kernel: bool, extra: Iterable[str] = ()) -> frozenset[str]:
    """:data:`BASE_CAPABILITIES` + ``extra`` (the CNI's) + ``ipvs`` when kube-proxy runs in ipvs mode on a
    kernel that has it."""
    caps = set(BASE_CAPABILITIES) | set(extra)
    if ipvs_kernel and proxy_mode == "ipvs":
        caps.add("ipvs")
    return frozenset(caps)
