"""Help texts of the provider-specific options (``--k8sstate-kind-*``, ``--k8sstate-minikube-*``,
``--k8sstate-pool``)."""

from __future__ import annotations

HELP_KIND_CONFIG = (
    "kind: your kind Cluster config (YAML), merged into the generated one (extra mounts, port mappings, "
    "patches, networking); node count, roles, kube-proxy mode and node image stay the plugin's options"
)
HELP_KIND_IMAGE = (
    "kind: the node image, e.g. kindest/node:v1.37.1 (env K8SSTATE_KIND_IMAGE; default kind's own)"
)
HELP_MINIKUBE_DRIVER = "minikube: --driver (default docker, the only one whose nodes can be captured)"
HELP_MINIKUBE_CNI = (
    "minikube: --cni (auto, bridge, calico, cilium, flannel, kindnet, false or a manifest path)"
)
HELP_MINIKUBE_CPUS = "minikube: --cpus per node (a whole number)"
HELP_MINIKUBE_MEMORY = "minikube: --memory per node (megabytes, or a size like 4g)"
HELP_POOL = (
    "local: take each cluster from a warm pool of N ready clusters of its shape, started in the "
    "background if none runs (`k8sstate pool start`; it outlives the session until unused for "
    "$K8SSTATE_POOL_IDLE seconds, default 900, or `k8sstate pool stop`); 0 (default): create every cluster"
)
