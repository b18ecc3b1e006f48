"""``k8sstate-node-routes``: pod networking for kind node images built without kindnetd.

kind's default CNI is kindnetd. Its source (``sigs.k8s.io/kind/images/kindnetd``, a nested module of the kind
repository) is not on the Go module proxy, and the current version also needs
``sigs.k8s.io/kube-network-policies``, for which the proxy answers 403 "This module version is not available".
A machine that can reach only the registries therefore cannot build it (see
``docs/kind-on-restricted-machines.md``). :mod:`.kindimage` then puts this stand-in into the node image:

* a small agent (bash, ``kubectl``, ``jq`` and ``ip``, all in the node image) run by systemd on every node.
  With the node's own credentials (``/etc/kubernetes/kubelet.conf``) it lists the Nodes and
  - writes ``/etc/cni/net.d/10-k8sstate.conflist``: the reference CNI plugins ``ptp`` + ``host-local`` on
    the node's ``spec.podCIDR`` + ``portmap`` (Debian's containernetworking-plugins, in ``/opt/cni/bin``),
    after which the kubelet reports the node Ready. It waits (30 s at most) until kube-proxy has programmed
    the ``kubernetes`` Service on the node: pods started earlier cannot reach the API, and CoreDNS then
    stayed unready for up to a minute (seen here);
  - keeps one route per other node: ``ip route replace <its podCIDR> via <its InternalIP>``.
* kind's "default CNI manifest" (``/kind/manifests/default-cni.yaml``, applied by ``kind create cluster``
  unless ``networking.disableDefaultCNI``): the ConfigMap ``kube-system/k8sstate-node-routes``, a Role
  that lets ``system:nodes`` read it and a ClusterRole that lets them list Nodes (v1.37's node authorizer
  lets a node read only its own Node object: "node 'x' cannot read all nodes, only its own Node
  object"). The agent acts only while it can read that ConfigMap, so a cluster created with
  ``disableDefaultCNI: true`` is left to the user's own CNI, as with kindnetd.

What it does not do (kindnetd does): masquerade pod traffic leaving the cluster (no ``KIND-MASQ-AGENT``
rules), network policies. Clusters on such an image lack the ``kindnet`` capability; ``cni`` they have.
"""

from __future__ import annotations

__all__ = [
    "AGENT_PATH",
    "AGENT_SCRIPT",
    "CONFIGMAP",
    "IMAGE_LABEL",
    "MANIFEST",
    "UNIT",
    "UNIT_NAME",
]

IMAGE_LABEL = "io.k8sstate.default-cni"
"""Label of node images built by :mod:`.kindimage`: ``kindnet`` or ``k8sstate-node-routes``."""
CONFIGMAP = "k8sstate-node-routes"
AGENT_PATH = "/usr/local/bin/k8sstate-node-routes"
UNIT_NAME = "k8sstate-node-routes.service"

AGENT_SCRIPT = r"""#!/bin/bash
# k8sstate-node-routes: pod networking for kind nodes without kindnetd (providers/kind/noderoutes.py).
# Every 2-10 s: this node's CNI config from its spec.podCIDR, and a route to every other node's pod CIDR
# via that node's InternalIP. Acts only while kube-system/k8sstate-node-routes exists.
set -u
kubeconfig=${K8SSTATE_KUBECONFIG:-/etc/kubernetes/kubelet.conf}
conf_dir=${K8SSTATE_CNI_CONF_DIR:-/etc/cni/net.d}
node=${K8SSTATE_NODE_NAME:-$(cat /proc/sys/kernel/hostname)}
conf="$conf_dir/10-k8sstate.conflist"

kc() { timeout 20 kubectl --kubeconfig="$kubeconfig" "$@"; }

conflist() {
  cat <<EOF
{
  "cniVersion": "0.4.0",
  "name": "k8sstate-node-routes",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": "$1"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# kube-proxy has programmed the kubernetes Service on this node (iptables or nftables mode)
proxy_ready() {
  iptables -w 5 -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https' && return 0
  nft list table ip kube-proxy 2>/dev/null | grep -q 'default/kubernetes:https'
}

sync_once() {
  [ -r "$kubeconfig" ] || return 1
  # --raw: no API discovery, half the time of `kubectl get` (the agent shares the node's CPU)
  kc get --raw /api/v1/namespaces/kube-system/configmaps/k8sstate-node-routes >/dev/null 2>&1 || return 1
  local nodes name cidr ip
  nodes=$(kc get --raw /api/v1/nodes) || return 1
  # name, podCIDR, first IPv4 InternalIP ("-" when not known yet)
  while IFS=$'\t' read -r name cidr ip; do
    [ "$cidr" = "-" ] && continue
    if [ "$name" = "$node" ]; then
      # pods started before kube-proxy's first sync cannot reach the API (CoreDNS then stays unready
      # for up to a minute): the first config waits for it, 30 s at most (other proxies, ipvs)
      if [ ! -f "$conf" ] && ! proxy_ready; then
        first_seen=${first_seen:-$SECONDS}
        [ $((SECONDS - first_seen)) -lt 30 ] && continue
      fi
      mkdir -p "$conf_dir"
      conflist "$cidr" > "$conf.tmp"
      if cmp -s "$conf.tmp" "$conf"; then rm -f "$conf.tmp"; else mv -f "$conf.tmp" "$conf"; fi
    elif [ "$ip" != "-" ]; then
      ip route replace "$cidr" via "$ip" || echo "k8sstate-node-routes: no route $cidr via $ip" >&2
    fi
  done < <(jq -r '.items[] | [.metadata.name, (.spec.podCIDR // "-"),
      ([.status.addresses[]? | select(.type == "InternalIP") | .address | select(test(":") | not)][0]
       // "-")] | @tsv' <<<"$nodes")
  [ -f "$conf" ]
}

if [ "${1:-}" = "--once" ]; then
  sync_once
  exit $?
fi
ok=0
misses=0
while true; do
  if sync_once; then
    misses=0
    ok=$((ok + 1))
    # every 2 s while the cluster forms (nodes join, pod CIDRs are assigned), then every 10 s
    if [ "$ok" -lt 30 ]; then sleep 2; else sleep 10; fi
  else
    ok=0
    misses=$((misses + 1))
    # kind applies the manifest right after kubeadm init; still nothing after ~2 min means the default
    # CNI is disabled (or the API is gone): look every 30 s from then on
    if [ "$misses" -lt 60 ]; then sleep 2; else sleep 30; fi
  fi
done
"""

UNIT = f"""[Unit]
Description=k8sstate node routes (pod networking without kindnetd, see {AGENT_PATH})
After=network.target

[Service]
ExecStart={AGENT_PATH}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

MANIFEST = f"""# kind's default CNI manifest of a k8sstate node image built without kindnetd: it switches
# on the {AGENT_PATH} agent that every node runs (pytest_k8sstate/providers/kind/noderoutes.py).
apiVersion: v1
kind: ConfigMap
metadata:
  name: {CONFIGMAP}
  namespace: kube-system
data:
  plugins: ptp host-local portmap
  routes: one route per other node, its podCIDR via its InternalIP
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {CONFIGMAP}
  namespace: kube-system
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["{CONFIGMAP}"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {CONFIGMAP}
  namespace: kube-system
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {CONFIGMAP}
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:nodes
---
# the node authorizer (v1.37) lets a node read only its own Node object; the agent needs the others' CIDRs
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {CONFIGMAP}
rules:
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {CONFIGMAP}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {CONFIGMAP}
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:nodes
"""
