"""Generate a real-format kube-proxy nftables ruleset (the ``nft -f`` text kube-proxy's proxier writes).

The shape follows the current upstream proxier (pkg/proxy/nftables/proxier.go, as pinned by its
``TestOverallNFTablesRules``): ``table ip kube-proxy`` with the
base chains ``nat-prerouting``/``nat-output``/``nat-postrouting``/``filter-*``, the verdict maps
``service-ips``, ``service-nodeports``, ``no-endpoint-services``, ``no-endpoint-nodeports``,
``firewall-ips``, the sets ``cluster-ips``/``nodeport-ips``, and per service port a
``service-HASH-ns/svc/proto/portname`` chain (``numgen random mod N vmap {...}``), an
``external-HASH-...`` chain for NodePorts / external IPs, and per endpoint an
``endpoint-HASH-...__IP/port`` chain doing ``dnat to IP:port``.

``nodeport_style="fib"`` renders the older NodePort dispatch (before the ``nodeport-ips`` set)
``fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports``;
``"set"`` (default) the newer ``ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports``.

Load the text with ``nft -f -`` **inside a network namespace the test created**.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["GenService", "chain_hash", "generate_services", "render_ruleset"]

TABLE = "kube-proxy"


def chain_hash(name: str) -> str:
    """kube-proxy's ``hashAndTruncate`` prefix: base32(sha256(name))[:8]."""
    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]


@dataclass
class GenService:
    namespace: str
    name: str
    cluster_ip: str
    port: int
    port_name: str = "p80"
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    endpoints: list[tuple[str, int]] = field(default_factory=list)
    node_port: int | None = None
    external_ips: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name}"

    @property
    def service_chain(self) -> str:
        return f"service-{chain_hash(self.base)}-{self.base}"

    @property
    def external_chain(self) -> str:
        return f"external-{chain_hash(self.base)}-{self.base}"

    def endpoint_chain(self, ip: str, port: int) -> str:
        b = f"{self.base}__{ip}/{port}"
        return f"endpoint-{chain_hash(b)}-{b}"

    @property
    def port_string(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name}"


def generate_services(
    n_services: int,
    n_endpoints: int,
    *,
    node_ports: bool = True,
    no_endpoints_every: int = 0,
    service_cidr: str = "172.30.0.0/16",
    pod_cidr: str = "10.180.0.0/16",
    first_node_port: int = 30000,
    target_port: int = 8080,
) -> list[GenService]:
    """``n_services`` services, ``n_endpoints`` endpoints each (every ``no_endpoints_every``-th: none)."""
    svc_net = ipaddress.IPv4Network(service_cidr)
    pod_net = ipaddress.IPv4Network(pod_cidr)
    out: list[GenService] = []
    ep_index = 0
    for i in range(n_services):
        eps: list[tuple[str, int]] = []
        if not (no_endpoints_every and (i + 1) % no_endpoints_every == 0):
            for _ in range(n_endpoints):
                ep_index += 1
                eps.append((str(pod_net.network_address + ep_index), target_port))
        out.append(
            GenService(
                namespace=f"ns{i % 7}",
                name=f"svc{i}",
                cluster_ip=str(svc_net.network_address + 10 + i),
                port=80,
                endpoints=eps,
                node_port=first_node_port + i if node_ports else None,
            )
        )
    return out


def render_ruleset(
    services: list[GenService],
    *,
    cluster_cidr: str = "10.0.0.0/8",
    service_cidr: str = "172.30.0.0/16",
    nodeport_ips: list[str] | None = None,
    nodeport_style: Literal["set", "fib"] = "set",
) -> str:
    """The ``nft -f`` transaction text for ``services`` (one ``add`` statement a line)."""
    t = f"ip {TABLE}"
    lines: list[str] = [f'add table {t} {{ comment "rules for kube-proxy" ; }}']
    a = lines.append
    a(f'add set {t} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}')
    a(f'add set {t} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}')
    vm3 = "type ipv4_addr . inet_proto . inet_service : verdict"
    vm2 = "type inet_proto . inet_service : verdict"
    fw_comment = "destinations that are subject to LoadBalancerSourceRanges"
    a(f'add map {t} firewall-ips {{ {vm3} ; comment "{fw_comment}" ; }}')
    a(
        f"add map {t} no-endpoint-nodeports {{ {vm2} ; "
        'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }'
    )
    a(
        f"add map {t} no-endpoint-services {{ {vm3} ; "
        'comment "vmap to drop or reject packets to services with no endpoints" ; }'
    )
    a(f'add map {t} service-ips {{ {vm3} ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}')
    a(f'add map {t} service-nodeports {{ {vm2} ; comment "NodePort traffic" ; }}')
    for name, spec in [
        ("cluster-ips-check", None),
        ("filter-prerouting-pre-dnat", "type filter hook prerouting priority -110"),
        ("filter-output-pre-dnat", "type filter hook output priority -110"),
        ("filter-forward", "type filter hook forward priority 0"),
        ("filter-input", "type filter hook input priority 0"),
        ("filter-output", "type filter hook output priority 0"),
        ("firewall-check", None),
        ("mark-for-masquerade", None),
        ("masquerading", None),
        ("nat-output", "type nat hook output priority -100"),
        ("nat-postrouting", "type nat hook postrouting priority 100"),
        ("nat-prerouting", "type nat hook prerouting priority -100"),
        ("nodeport-endpoints-check", None),
        ("reject-chain", 'comment "helper for @no-endpoint-services / @no-endpoint-nodeports"'),
        ("services", None),
        ("service-endpoints-check", None),
    ]:
        a(f"add chain {t} {name}" + (f" {{ {spec} ; }}" if spec else ""))
    if nodeport_style == "set":
        np_match = "ip daddr @nodeport-ips"
    else:
        np_match = "fib daddr type local ip daddr != 127.0.0.0/8"
    for chain, rule in [
        (
            "cluster-ips-check",
            'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        ),
        (
            "cluster-ips-check",
            f'ip daddr {{ {service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"',
        ),
        ("filter-prerouting-pre-dnat", "ct state new jump firewall-check"),
        ("filter-forward", "ct state new jump service-endpoints-check"),
        ("filter-forward", "ct state new jump cluster-ips-check"),
        ("filter-input", "ct state new jump nodeport-endpoints-check"),
        ("filter-input", "ct state new jump service-endpoints-check"),
        ("filter-output", "ct state new jump service-endpoints-check"),
        ("filter-output-pre-dnat", "ct state new jump firewall-check"),
        ("filter-output", "ct state new jump cluster-ips-check"),
        ("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips"),
        ("mark-for-masquerade", "mark set mark or 0x4000"),
        ("masquerading", "mark and 0x4000 == 0 return"),
        ("masquerading", "mark set mark xor 0x4000"),
        ("masquerading", "masquerade fully-random"),
        ("nat-output", "jump services"),
        ("nat-postrouting", "jump masquerading"),
        ("nat-prerouting", "jump services"),
        ("nodeport-endpoints-check", f"{np_match} meta l4proto . th dport vmap @no-endpoint-nodeports"),
        ("reject-chain", "reject"),
        ("services", "ip daddr . meta l4proto . th dport vmap @service-ips"),
        ("services", f"{np_match} meta l4proto . th dport vmap @service-nodeports"),
        ("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services"),
    ]:
        a(f"add rule {t} {chain} {rule}")
    for ip in nodeport_ips or []:
        a(f"add element {t} nodeport-ips {{ {ip} }}")

    for svc in services:
        key = f"{svc.cluster_ip} . {svc.protocol} . {svc.port}"
        a(f"add element {t} cluster-ips {{ {svc.cluster_ip} }}")
        if not svc.endpoints:
            comment = f'comment "{svc.port_string}"'
            a(f"add element {t} no-endpoint-services {{ {key} {comment} : goto reject-chain }}")
            for eip in svc.external_ips:
                a(
                    f"add element {t} no-endpoint-services {{ {eip} . {svc.protocol} . {svc.port} {comment} "
                    ": goto reject-chain }"
                )
            if svc.node_port is not None:
                a(
                    f"add element {t} no-endpoint-nodeports {{ {svc.protocol} . {svc.node_port} {comment} "
                    ": goto reject-chain }"
                )
            continue
        sc = svc.service_chain
        externally = svc.node_port is not None or bool(svc.external_ips)
        # chains first: a rule may only reference chains that already exist
        a(f"add chain {t} {sc}")
        if externally:
            a(f"add chain {t} {svc.external_chain}")
        for ip, port in svc.endpoints:
            a(f"add chain {t} {svc.endpoint_chain(ip, port)}")
        a(f"add rule {t} {sc} ip daddr {svc.cluster_ip} ip saddr != {cluster_cidr} jump mark-for-masquerade")
        entries = " , ".join(
            f"{i} : goto {svc.endpoint_chain(ip, port)}" for i, (ip, port) in enumerate(svc.endpoints)
        )
        a(f"add rule {t} {sc} numgen random mod {len(svc.endpoints)} vmap {{ {entries} }}")
        if externally:
            ec = svc.external_chain
            a(f"add rule {t} {ec} jump mark-for-masquerade")
            a(f"add rule {t} {ec} goto {sc}")
        for ip, port in svc.endpoints:
            epc = svc.endpoint_chain(ip, port)
            a(f"add rule {t} {epc} ip saddr {ip} jump mark-for-masquerade")
            a(f"add rule {t} {epc} meta l4proto {svc.protocol} dnat to {ip}:{port}")
        a(f"add element {t} service-ips {{ {key} : goto {sc} }}")
        for eip in svc.external_ips:
            ekey = f"{eip} . {svc.protocol} . {svc.port}"
            a(f"add element {t} service-ips {{ {ekey} : goto {svc.external_chain} }}")
        if svc.node_port is not None:
            nkey = f"{svc.protocol} . {svc.node_port}"
            a(f"add element {t} service-nodeports {{ {nkey} : goto {svc.external_chain} }}")
    return "\n".join(lines) + "\n"
