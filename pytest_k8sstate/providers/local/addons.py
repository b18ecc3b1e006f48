"""API objects of a ``local`` cluster: Nodes as kubelet/kubeadm register them and kubeadm's add-ons.

The add-ons follow kubeadm's manifests (cmd/kubeadm/app/phases/addons/{dns,proxy}) where it matters to
the etcd keys and kube-proxy rules of a fresh cluster: the ``kube-dns`` Service at 10.96.0.10 with ports
``dns``/``dns-tcp``/``metrics`` in front of a 2-replica ``coredns`` Deployment (its pods are simulated by
kwok) and the ``kube-proxy`` ConfigMap + DaemonSet (pods simulated by kwok; the real kube-proxy processes
are run by the provider inside each node's network namespace).
"""

from __future__ import annotations

from typing import Any

import yaml

DNS_IP = "10.96.0.10"
DNS_IP6 = "fd00:10:96::a"
"""kube-dns in an IPv6-only cluster (the tenth address of the IPv6 Service range, as kubeadm picks it)."""
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.12.4"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"

Obj = dict[str, Any]

COREFILE = """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


def node_object(
    name: str,
    *,
    role: str,
    ip: str,
    pod_cidr: str,
    version: str,
    ips: list[str] | None = None,
    pod_cidrs: list[str] | None = None,
) -> Obj:
    """A Node as the kubelet registers it (labels, addresses) plus kubeadm's control-plane role/taint.

    ``ips`` / ``pod_cidrs`` (primary family first): a dual-stack or IPv6 node's InternalIPs and podCIDRs
    instead of ``ip`` / ``pod_cidr``."""
    ips = ips or [ip]
    pod_cidrs = pod_cidrs or [pod_cidr]
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    spec: Obj = {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs)}
    if role == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "addresses": [
                *({"type": "InternalIP", "address": a} for a in ips),
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "kwok",
                "kernelVersion": "",
                "osImage": "pytest-k8sstate local node",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        },
    }


def _meta(name: str, namespace: str | None = "kube-system", labels: dict[str, str] | None = None) -> Obj:
    m: Obj = {"name": name}
    if namespace:
        m["namespace"] = namespace
    if labels:
        m["labels"] = labels
    return m


def kube_proxy_config(mode: str, cluster_cidr: str) -> str:
    """The ``config.conf`` kubeadm puts into the kube-proxy ConfigMap (documentation of the settings)."""
    cfg = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "bindAddress": "0.0.0.0",
        "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"},
        "clusterCIDR": cluster_cidr,
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"minSyncPeriod": "0s"},
        "mode": mode,
    }
    return yaml.safe_dump(cfg, sort_keys=True)


def addons(
    *, proxy_mode: str, cluster_cidr: str, api_server: str, version: str, dns_ip: str = DNS_IP
) -> list[Obj]:
    """kubeadm's add-on objects, in creation order."""
    kp_labels = {"k8s-app": "kube-proxy"}
    dns_labels = {"k8s-app": "kube-dns"}
    kubeconfig = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "default",
                    "cluster": {
                        "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                        "server": api_server,
                    },
                }
            ],
            "contexts": [
                {
                    "name": "default",
                    "context": {"cluster": "default", "namespace": "default", "user": "default"},
                }
            ],
            "current-context": "default",
            "users": [
                {
                    "name": "default",
                    "user": {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"},
                }
            ],
        },
        sort_keys=False,
    )
    objs: list[Obj] = [
        # --- kube-proxy ---
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("kube-proxy")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("kubeadm:node-proxier", None),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:node-proxier",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta("kube-proxy"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["kube-proxy"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta("kube-proxy"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kube-proxy"},
            "subjects": [{"kind": "Group", "name": "system:bootstrappers:kubeadm:default-node-token"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("kube-proxy", labels={"app": "kube-proxy"}),
            "data": {
                "config.conf": kube_proxy_config(proxy_mode, cluster_cidr),
                "kubeconfig.conf": kubeconfig,
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": _meta("kube-proxy", labels=kp_labels),
            "spec": {
                "selector": {"matchLabels": kp_labels},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": kp_labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "kube-proxy",
                                "image": f"registry.k8s.io/kube-proxy:{version}",
                                "imagePullPolicy": "IfNotPresent",
                                "command": [
                                    "/usr/local/bin/kube-proxy",
                                    "--config=/var/lib/kube-proxy/config.conf",
                                    "--hostname-override=$(NODE_NAME)",
                                ],
                                "env": [
                                    {
                                        "name": "NODE_NAME",
                                        "valueFrom": {
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}
                                        },
                                    }
                                ],
                                "securityContext": {"privileged": True},
                                "volumeMounts": [
                                    {"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"},
                                    {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                                    {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
                                ],
                            }
                        ],
                        "hostNetwork": True,
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "priorityClassName": "system-node-critical",
                        "serviceAccountName": "kube-proxy",
                        "tolerations": [{"operator": "Exists"}],
                        "volumes": [
                            {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                            {
                                "name": "xtables-lock",
                                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                            },
                            {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                        ],
                    },
                },
            },
        },
        # --- CoreDNS ---
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("coredns")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta("system:coredns", None),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("system:coredns", None),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("coredns"),
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                **_meta(
                    "kube-dns",
                    labels={
                        "k8s-app": "kube-dns",
                        "kubernetes.io/cluster-service": "true",
                        "kubernetes.io/name": "CoreDNS",
                    },
                ),
                "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
            },
            "spec": {
                "clusterIP": dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
                "selector": dns_labels,
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("coredns", labels=dns_labels),
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "selector": {"matchLabels": dns_labels},
                "template": {
                    "metadata": {"labels": dns_labels},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "coredns",
                        "affinity": {
                            "podAntiAffinity": {
                                "preferredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "weight": 100,
                                        "podAffinityTerm": {
                                            "labelSelector": {
                                                "matchExpressions": [
                                                    {
                                                        "key": "k8s-app",
                                                        "operator": "In",
                                                        "values": ["kube-dns"],
                                                    }
                                                ]
                                            },
                                            "topologyKey": "kubernetes.io/hostname",
                                        },
                                    }
                                ]
                            }
                        },
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                        ],
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "containers": [
                            {
                                "name": "coredns",
                                "image": COREDNS_IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                                "resources": {
                                    "limits": {"memory": "170Mi"},
                                    "requests": {"cpu": "100m", "memory": "70Mi"},
                                },
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "volumeMounts": [
                                    {"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                                "ports": [
                                    {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                    {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                    {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                                ],
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                                    "initialDelaySeconds": 60,
                                    "timeoutSeconds": 5,
                                    "successThreshold": 1,
                                    "failureThreshold": 5,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True,
                                },
                            }
                        ],
                        "dnsPolicy": "Default",
                        "volumes": [
                            {
                                "name": "config-volume",
                                "configMap": {
                                    "name": "coredns",
                                    "items": [{"key": "Corefile", "path": "Corefile"}],
                                },
                            }
                        ],
                    },
                },
            },
        },
    ]
    return objs


_CORE_PLURALS = {
    "Node": "nodes",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Service": "services",
    "Namespace": "namespaces",
}
_OTHER_PLURALS = {
    "ClusterRoleBinding": "clusterrolebindings",
    "ClusterRole": "clusterroles",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "DaemonSet": "daemonsets",
    "Deployment": "deployments",
}


def collection_path(obj: Obj) -> str:
    """The REST collection a POST of ``obj`` goes to."""
    api_version: str = obj["apiVersion"]
    kind: str = obj["kind"]
    plural = _CORE_PLURALS.get(kind) or _OTHER_PLURALS[kind]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    ns = obj.get("metadata", {}).get("namespace")
    return f"{base}/namespaces/{ns}/{plural}" if ns else f"{base}/{plural}"
