#!/bin/bash
# k8sstate-node-routes: pod networking for kind nodes without kindnetd (providers/kind/noderoutes.py).
# Every 2-10 s: this node's CNI config from its spec.podCIDRs (one range per family: IPv4, IPv6 or both),
# and a route to every other node's pod CIDRs via that node's InternalIP of the same family. Acts only while kube-system/k8sstate-node-routes exists. In mode flannel it
# keeps the real flanneld running instead (which owns the routes) and writes the config flannel's CNI
# plugin would delegate to.
set -u
kubeconfig=${K8SSTATE_KUBECONFIG:-/etc/kubernetes/kubelet.conf}
conf_dir=${K8SSTATE_CNI_CONF_DIR:-/etc/cni/net.d}
node=${K8SSTATE_NODE_NAME:-$(cat /proc/sys/kernel/hostname)}
conf="$conf_dir/10-k8sstate.conflist"
flannel_bin=${K8SSTATE_FLANNELD:-/usr/local/bin/flanneld}
flannel_dir=/run/k8sstate-flannel

kc() { timeout 20 kubectl --kubeconfig="$kubeconfig" "$@"; }

# $1: this node's pod CIDRs (comma-separated, one per family), $2: the mode the ConfigMap names (data.mode: ptp, the default, bridge or
# flannel; flannel also reads FLANNEL_NETWORK and FLANNEL_MTU from /run/flannel/subnet.env)
conflist() {
  local main routes ranges mtu=1500
  ranges=$(jq -cn --arg c "$1" '[$c | split(",")[] | [{subnet: .}]]')
  # a default route per family the node has a pod range of
  routes=$(jq -cn --arg c "$1" '[$c | split(",")[] | if test(":") then {dst: "::/0"} else {dst: "0.0.0.0/0"} end]')
  if [ "$2" = "bridge" ]; then
    # minikube's default bridge CNI: every pod's veth on cni0 (the gateway), masquerade off-subnet traffic
    main='"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,'
  elif [ "$2" = "flannel" ]; then
    # what flannel's CNI plugin delegates to (that plugin's module is not on the Go module proxy): the
    # bridge plugin on cni0 with the subnet flanneld leased; flanneld masquerades (--ip-masq), not the bridge
    main='"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,'
    main="$main \"ipMasq\": false, \"hairpinMode\": true,"
    routes="[{\"dst\": \"$FLANNEL_NETWORK\"}]"
    mtu=$FLANNEL_MTU
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
      "mtu": $mtu,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": $routes,
        "ranges": $ranges
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# kube-proxy has programmed the kubernetes Service on this node (iptables or nftables mode)
proxy_ready() {
  local fam
  for fam in iptables ip6tables; do
    "$fam" -w 5 -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https' && return 0
  done
  for fam in ip ip6; do
    nft list table "$fam" kube-proxy 2>/dev/null | grep -q 'default/kubernetes:https' && return 0
  done
  return 1
}

# $1: pod CIDRs, $2: mode. Pods started before kube-proxy's first sync cannot reach the API (CoreDNS then
# stays unready for up to a minute): the first config waits for it, 30 s at most (other proxies, ipvs)
write_conf() {
  if [ ! -f "$conf" ] && ! proxy_ready; then
    first_seen=${first_seen:-$SECONDS}
    [ $((SECONDS - first_seen)) -lt 30 ] && return 1
  fi
  mkdir -p "$conf_dir"
  conflist "$1" "$2" > "$conf.tmp"
  if cmp -s "$conf.tmp" "$conf"; then rm -f "$conf.tmp"; else mv -f "$conf.tmp" "$conf"; fi
}

# mode flannel: keep the real flanneld running (kube subnet manager, this node's own credentials; the
# kind provider copies the binary in). $1: the cluster's pod network, $2: the backend (vxlan, host-gw)
flannel_up() {
  local want pid
  if [ ! -x "$flannel_bin" ]; then
    echo "k8sstate-node-routes: mode flannel, but $flannel_bin is missing (the kind provider copies it in)" >&2
    return 1
  fi
  want="{\"Network\": \"$1\", \"Backend\": {\"Type\": \"$2\"}}"
  mkdir -p "$flannel_dir"
  pid=$(cat "$flannel_dir/flanneld.pid" 2>/dev/null)
  if [ "$(cat "$flannel_dir/net-conf.json" 2>/dev/null)" != "$want" ]; then
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    pid=
    printf '%s\n' "$want" > "$flannel_dir/net-conf.json"
  fi
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
  NODE_NAME=$node "$flannel_bin" --kube-subnet-mgr --kubeconfig-file="$kubeconfig" --ip-masq --iface=eth0 \
    --net-config-path="$flannel_dir/net-conf.json" --subnet-file=/run/flannel/subnet.env \
    >> /var/log/k8sstate-flanneld.log 2>&1 &
  echo $! > "$flannel_dir/flanneld.pid"
}

# 10.244.1.1/24 -> 10.244.1.0/24 (subnet.env holds flannel's gateway address; host-local wants the network)
network_of() {
  local a b c d len=${1#*/} n
  IFS=. read -r a b c d <<<"${1%/*}"
  n=$(( ((a << 24) | (b << 16) | (c << 8) | d) & ((0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF) ))
  echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))/$len"
}

# $1: this node's pod CIDRs. This node routes traffic to and from pods (its own, and those a Service it
# DNATs picks on another node): forwarding on for each family it has a range of, in the node's own netns
# only. A new network namespace starts with forwarding off, and the CNI plugins turn it on only when they
# set up a pod here, so a node without pods (often the control plane) dropped what it DNATed to a pod on
# another node: a NodePort of that node timed out (seen in finding 5's observed half).
forward() {
  case "$1" in *.*) echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null ;; esac
  case "$1" in *:*) echo 1 > /proc/sys/net/ipv6/conf/all/forwarding 2>/dev/null ;; esac
  return 0
}

sync_flannel() {
  flannel_up "$(jq -r '.data.network // "10.244.0.0/16"' <<<"$1")" "$(jq -r '.data.backend // "vxlan"' <<<"$1")" \
    || return 1
  [ -r /run/flannel/subnet.env ] || return 1
  # FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ: what flanneld leased for this node
  # shellcheck disable=SC1091
  . /run/flannel/subnet.env
  forward "$FLANNEL_SUBNET"
  write_conf "$(network_of "$FLANNEL_SUBNET")" flannel
}

sync_once() {
  [ -r "$kubeconfig" ] || return 1
  # --raw: no API discovery, half the time of `kubectl get` (the agent shares the node's CPU)
  local cm mode nodes name cidrs cidr ip4 ip6 via ranges
  cm=$(kc get --raw /api/v1/namespaces/kube-system/configmaps/k8sstate-node-routes 2>/dev/null) || return 1
  mode=$(jq -r '.data.mode // "ptp"' <<<"$cm")
  if [ "$mode" = "flannel" ]; then
    sync_flannel "$cm"
    return $?
  fi
  nodes=$(kc get --raw /api/v1/nodes) || return 1
  # name, podCIDRs (comma-separated), first IPv4 and first IPv6 InternalIP ("-" when not known yet)
  while IFS=$'\t' read -r name cidrs ip4 ip6; do
    [ "$cidrs" = "-" ] && continue
    if [ "$name" = "$node" ]; then
      forward "$cidrs"
      write_conf "$cidrs" "$mode"
      continue
    fi
    IFS=, read -ra ranges <<<"$cidrs"
    for cidr in "${ranges[@]}"; do
      case "$cidr" in
        *:*) via=$ip6 ;;
        *) via=$ip4 ;;
      esac
      [ "$via" = "-" ] && continue
      ip route replace "$cidr" via "$via" || echo "k8sstate-node-routes: no route $cidr via $via" >&2
    done
  done < <(jq -r '.items[] | [.metadata.name,
      ((.spec.podCIDRs // [.spec.podCIDR // empty]) | if length > 0 then join(",") else "-" end),
      ([.status.addresses[]? | select(.type == "InternalIP") | .address | select(test(":") | not)][0] // "-"),
      ([.status.addresses[]? | select(.type == "InternalIP") | .address | select(test(":"))][0] // "-")]
      | @tsv' <<<"$nodes")
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
