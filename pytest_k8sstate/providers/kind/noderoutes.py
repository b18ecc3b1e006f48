"""``k8sstate-node-routes``: pod networking for kind node images built without kindnetd.

kind's default CNI is kindnetd. Its source (``sigs.k8s.io/kind/images/kindnetd``, a nested module of the kind
repository) is not on the Go module proxy, and the current version also needs
``sigs.k8s.io/kube-network-policies``, for which the proxy answers 403 "This module version is not available".
A machine that can reach only the registries therefore cannot build it (see
``docs/kind-on-restricted-machines.md``). :mod:`.image` then puts this stand-in into the node image:

* a small agent (bash, ``kubectl``, ``jq`` and ``ip``, all in the node image) run by systemd on every node.
  With the node's own credentials (``/etc/kubernetes/kubelet.conf``) it lists the Nodes and
  - writes ``/etc/cni/net.d/10-k8sstate.conflist``: the reference CNI plugins ``ptp`` + ``host-local`` on
    the node's ``spec.podCIDR`` + ``portmap`` (Debian's containernetworking-plugins, in ``/opt/cni/bin``),
    after which the kubelet reports the node Ready. It waits (30 s at most) until kube-proxy has programmed
    the ``kubernetes`` Service on the node: pods started earlier cannot reach the API, and CoreDNS then
    stayed unready for up to a minute (seen here);
  - keeps one route per other node: ``ip route replace <its podCIDR> via <its InternalIP>``;
  - turns forwarding on in the node's own namespace for each family it has a pod range of (a new namespace
    starts with it off, and the CNI plugins turn it on only once they set up a pod there: a node without
    pods, often the control plane, dropped what its NodePort DNATed to a pod on another node).
* kind's "default CNI manifest" (``/kind/manifests/default-cni.yaml``, applied by ``kind create cluster``
  unless ``networking.disableDefaultCNI``): the ConfigMap ``kube-system/k8sstate-node-routes``, a Role
  that lets ``system:nodes`` read it and a ClusterRole that lets them list Nodes (v1.37's node authorizer
  lets a node read only its own Node object: "node 'x' cannot read all nodes, only its own Node
  object"). The agent acts only while it can read that ConfigMap, so a cluster created with
  ``disableDefaultCNI: true`` is left to the user's own CNI, as with kindnetd.

What it does not do (kindnetd does): masquerade pod traffic leaving the cluster (no ``KIND-MASQ-AGENT``
rules), network policies. Clusters on such an image lack the ``kindnet`` capability; ``cni`` they have.

The agent, its systemd unit and the manifest are package data (``data/node-routes.{sh,service,yaml}``).
"""

from __future__ import annotations

import ipaddress
from importlib import resources

__all__ = [
    "AGENT_PATH",
    "AGENT_SCRIPT",
    "CONFIGMAP",
    "FLANNEL_BACKENDS",
    "IMAGE_LABEL",
    "MANIFEST",
    "MODES",
    "UNIT",
    "UNIT_NAME",
    "cni_name",
    "data_files",
    "manifest",
    "missing_capability_notes",
]

IMAGE_LABEL = "io.k8sstate.default-cni"
"""Label of node images built by :mod:`.image`: ``kindnet`` or ``k8sstate-node-routes``."""
CONFIGMAP = "k8sstate-node-routes"
"""Name of the ConfigMap (and RBAC objects) of :data:`MANIFEST` that switches the agent on."""
AGENT_PATH = "/usr/local/bin/k8sstate-node-routes"
UNIT_NAME = "k8sstate-node-routes.service"
DATA_FILES = ("node-routes.sh", "node-routes.service", "node-routes.yaml")
MODES = ("ptp", "bridge", "flannel")
"""What the agent sets up (the ConfigMap's ``data.mode``): ``ptp`` (kindnet's layout: a veth and a /32 route
per pod), ``bridge`` (minikube's default: every pod's veth on ``cni0``, ``ipMasq``) or ``flannel`` (the real
flanneld, which the kind provider copies into the nodes, with ``data.backend`` ``vxlan`` or ``host-gw`` on
``data.network``; the agent writes the bridge config flannel's CNI plugin would delegate to)."""
DUAL_STACK_MODES = ("ptp", "bridge")
"""The modes that give pods an address per family of the node's podCIDRs (IPv6-only, dual-stack)."""
FLANNEL_BACKENDS = ("vxlan", "host-gw")


def _data(name: str) -> str:
    return (
        resources.files("pytest_k8sstate.providers.kind").joinpath("data", name).read_text(encoding="utf-8")
    )


def data_files() -> dict[str, str]:
    """Every file of the agent that goes into a node image (name -> text): part of the image key."""
    return {name: _data(name) for name in DATA_FILES}


AGENT_SCRIPT = _data("node-routes.sh")
"""The agent (bash), installed at :data:`AGENT_PATH`."""
UNIT = _data("node-routes.service")
"""Its systemd unit :data:`UNIT_NAME` (``ExecStart`` = :data:`AGENT_PATH`)."""
MANIFEST = _data("node-routes.yaml")
"""kind's default CNI manifest (``/kind/manifests/default-cni.yaml``): the ConfigMap :data:`CONFIGMAP` (mode
``ptp``) and the RBAC that lets ``system:nodes`` read it and list Nodes."""


def manifest(mode: str = "ptp", *, backend: str | None = None, network: str | None = None) -> str:
    """:data:`MANIFEST` with the agent switched to ``mode`` (one of :data:`MODES`); mode ``flannel`` also
    takes ``backend`` (:data:`FLANNEL_BACKENDS`, default ``vxlan``) and ``network`` (the cluster's pod
    network, default kind's ``10.244.0.0/16``)."""
    if mode not in MODES:
        raise ValueError(f"k8sstate-node-routes mode {mode!r}: expected one of {', '.join(MODES)}")
    line = "  mode: ptp\n"
    if line not in MANIFEST:  # pragma: no cover - the package data and this module go together
        raise ValueError(f"package data node-routes.yaml lost its {line.strip()!r} line")
    data = f"  mode: {mode}\n"
    if mode == "flannel":
        backend = backend or "vxlan"
        if backend not in FLANNEL_BACKENDS:
            raise ValueError(f"flannel backend {backend!r}: expected one of {', '.join(FLANNEL_BACKENDS)}")
        net = ipaddress.ip_network(network or "10.244.0.0/16")  # ValueError for anything but a CIDR
        data += f"  backend: {backend}\n  network: {net}\n"
    elif backend is not None or network is not None:
        raise ValueError(f"backend/network are settings of mode flannel, not of {mode!r}")
    return MANIFEST.replace(line, data, 1)


def cni_name(installed: str | None) -> str | None:
    """The user-facing CNI name of what a cluster runs: ``kindnet``, ``ptp`` (the node-routes agent's
    default, also as recorded by earlier versions: ``k8sstate-node-routes``) or ``bridge``."""
    if installed == CONFIGMAP:
        return "ptp"
    return installed


def missing_capability_notes(image: str, default_cni: str | None) -> dict[str, str]:
    """Why a cluster lacks a capability its provider usually has (``cluster.details``, for skip messages)."""
    if cni_name(default_cni) in MODES:
        return {
            "kindnet": f"{image} has {CONFIGMAP} as its default CNI, not kindnetd (it was built "
            "without a kindnetd binary, which cannot be built from the Go module proxy); build the image "
            "with --kindnetd PATH, see docs/kind-on-restricted-machines.md"
        }
    return {}
