#!/bin/bash
# k8sstate-node-routes: pod networking for kind nodes without kindnetd (providers/kind/noderoutes.py).
# Every 2-10 s: this node's CNI config from its spec.podCIDR, and a route to every other node's pod CIDR
# via that node's InternalIP. Acts only while kube-system/k8sstate-node-routes exists.
set -u
kubeconfig=${K8SSTATE_KUBECONFIG:-/etc/kubernetes/kubelet.conf}
conf_dir=${K8SSTATE_CNI_CONF_DIR:-/etc/cni/net.d}
node=${K8SSTATE_NODE_NAME:-$(cat /proc/sys/kernel/hostname)}
conf="$conf_dir/10-k8sstate.conflist"

kc() { timeout 20 kubectl --kubeconfig="$kubeconfig" "$@"; }

# $1: this node's pod CIDR, $2: the mode the ConfigMap names (data.mode: ptp, the default, or bridge)
conflist() {
  local main
  if [ "$2" = "bridge" ]; then
    # minikube's default bridge CNI: every pod's veth on cni0 (the gateway), masquerade off-subnet traffic
    main='"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,'
  else
    # kindnet's layout: a veth and a /32 route per pod, no bridge, no rules
    main='"type": "ptp", "ipMasq": false,'
  fi
  cat <<EOF
{
  "cniVersion": "0.4.0",
  "name": "k8sstate-node-routes",
  "plugins": [
    {
      $main
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
  local cm mode nodes name cidr ip
  cm=$(kc get --raw /api/v1/namespaces/kube-system/configmaps/k8sstate-node-routes 2>/dev/null) || return 1
  mode=$(jq -r '.data.mode // "ptp"' <<<"$cm")
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
      conflist "$cidr" "$mode" > "$conf.tmp"
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
