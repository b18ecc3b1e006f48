"""Generate a node's state as kube-proxy's IPVS mode (1.3x) leaves it: iptables, ipsets, IPVS.

:func:`kube_proxy_ipvs` returns an :class:`IpvsNode` with three texts in the formats the node capture
reads: ``iptables`` (``iptables-restore`` input, which ``iptables-save`` prints back the same apart
from ordering and spelling), ``ipsets`` (``ipset restore`` input = ``ipset save`` output: every set
kube-proxy creates, empty ones included) and ``ipvs`` (``ipvsadm -Sn``). The rules follow
``pkg/proxy/ipvs/proxier.go``: the jump rules kube-proxy prepends to the built-in chains, the
``-m set`` rules of its set table (only for sets with members), ``KUBE-SERVICES`` with the
cluster-IP masquerade rule (``! -s CLUSTER_CIDR``, or ``masquerade_all``), ``KUBE-NODE-PORT``,
``KUBE-LOAD-BALANCER``, ``KUBE-POSTROUTING`` (``KUBE-LOOP-BACK`` hairpin masquerade, then the mark),
``KUBE-MARK-MASQ``, and in filter ``KUBE-FORWARD``, ``KUBE-NODE-PORT``, ``KUBE-IPVS-FILTER``.
Virtual servers: one per ClusterIP, LoadBalancer IP and node IP × NodePort, ``-p TIMEOUT`` for
``sessionAffinity: ClientIP``, real servers ``-m -w 1`` (kube-proxy's weight) unless
``weights`` says otherwise.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["IpvsNode", "IpvsService", "kube_proxy_ipvs"]

MASQ_MARK = "0x4000"

# kube-proxy's sets: name, type, comment (pkg/proxy/ipvs/ipset.go)
_SETS: tuple[tuple[str, str, str], ...] = (
    ("KUBE-LOOP-BACK", "hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),  # noqa: E501
    ("KUBE-CLUSTER-IP", "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"),
    ("KUBE-EXTERNAL-IP", "hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose"),  # noqa: E501
    ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local"),  # noqa: E501
    ("KUBE-LOAD-BALANCER", "hash:ip,port", "Kubernetes service lb portal"),
    ("KUBE-LOAD-BALANCER-FW", "hash:ip,port", "Kubernetes service load balancer ip + port for load balancer with sourceRange"),  # noqa: E501
    ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port", "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),  # noqa: E501
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip", "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),  # noqa: E501
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net", "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),  # noqa: E501
    ("KUBE-NODE-PORT-TCP", "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),  # noqa: E501
    ("KUBE-NODE-PORT-UDP", "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),  # noqa: E501
    ("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port", "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),  # noqa: E501
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port", "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),  # noqa: E501
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port", "Kubernetes health check node port"),
    ("KUBE-IPVS-IPS", "hash:ip", "Addresses on the ipvs interface"),
)  # fmt: skip
_COMMENT = {name: comment for name, _, comment in _SETS}

# (set, table, from chain, to, match flags, protocol) in kube-proxy's order (ipsetWithIptablesChain)
_SET_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("KUBE-LOOP-BACK", "nat", "KUBE-POSTROUTING", "MASQUERADE", "dst,dst,src", ""),
    ("KUBE-LOAD-BALANCER", "nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER", "dst,dst", ""),
    ("KUBE-LOAD-BALANCER-LOCAL", "nat", "KUBE-LOAD-BALANCER", "RETURN", "dst,dst", ""),
    ("KUBE-NODE-PORT-LOCAL-TCP", "nat", "KUBE-NODE-PORT", "RETURN", "dst", "tcp"),
    ("KUBE-NODE-PORT-TCP", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "tcp"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "nat", "KUBE-NODE-PORT", "RETURN", "dst", "udp"),
    ("KUBE-NODE-PORT-UDP", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "udp"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "nat", "KUBE-NODE-PORT", "RETURN", "dst,dst", "sctp"),
    ("KUBE-NODE-PORT-SCTP-HASH", "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst,dst", "sctp"),
    ("KUBE-LOAD-BALANCER-FW", "filter", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL", "dst,dst", ""),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", "dst,dst,src", ""),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "filter", "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", "dst,dst,src", ""),
)


@dataclass(frozen=True)
class IpvsService:
    """One Service port as kube-proxy's IPVS mode programs it on one node."""

    cluster_ip: str
    port: int
    endpoints: tuple[str, ...] = ()  # "IP:PORT"
    protocol: str = "tcp"
    node_port: int | None = None
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: int | None = None  # sessionAffinity: ClientIP → IPVS persistence
    local_endpoints: tuple[str, ...] = ()  # endpoints on this node ("IP:PORT", a subset of endpoints)
    external_local: bool = False  # externalTrafficPolicy: Local
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges (CIDRs)
    weights: dict[str, int] = field(default_factory=dict, compare=False)  # endpoint → weight (default 1)


@dataclass(frozen=True)
class IpvsNode:
    iptables: str
    ipsets: str
    ipvs: str


def _hp(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _split(ep: str) -> tuple[str, int]:
    host, _, port = ep.rpartition(":")
    return host.strip("[]"), int(port)


def kube_proxy_ipvs(
    services: list[IpvsService],
    *,
    node_ips: tuple[str, ...] = ("192.168.50.2",),
    cluster_cidr: str | None = "10.244.0.0/16",
    scheduler: str = "rr",
    masquerade_all: bool = False,
) -> IpvsNode:
    """The node state (see the module doc). ``cluster_cidr`` None: no local-traffic detector (kube-proxy
    then masquerades traffic *from* a VIP: ``src,dst``). IPv6 Services (an IPv6 ClusterIP) give the
    IPv6 proxier's state: sets ``KUBE-6-…`` of ``family inet6``, ``-s ::1/128 -j RETURN``."""
    v6 = any(":" in s.cluster_ip for s in services)

    def n(name: str) -> str:  # kube-proxy's IPv6 set names: KUBE-6-…, at most 31 characters
        return name.replace("KUBE-", "KUBE-6-", 1)[:31] if v6 else name

    members: dict[str, list[str]] = {name: [] for name, _, _ in _SETS}
    vs_lines: list[str] = []
    bound: list[str] = []
    no_node_access: list[tuple[str, str, int]] = []

    def add_vs(ip: str, port: int, svc: IpvsService, eps: tuple[str, ...]) -> None:
        flag = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[svc.protocol]
        head = f"-A {flag} {_hp(ip, port)} -s {scheduler}"
        if svc.affinity_timeout is not None:
            head += f" -p {svc.affinity_timeout}"
        vs_lines.append(head)
        for ep in eps:
            h, p = _split(ep)
            vs_lines.append(f"-a {flag} {_hp(ip, port)} -r {_hp(h, p)} -m -w {svc.weights.get(ep, 1)}")

    for svc in services:
        proto = svc.protocol
        for ep in svc.local_endpoints:
            h, p = _split(ep)
            members["KUBE-LOOP-BACK"].append(f"{h},{proto}:{p},{h}")
        members["KUBE-CLUSTER-IP"].append(f"{svc.cluster_ip},{proto}:{svc.port}")
        add_vs(svc.cluster_ip, svc.port, svc, svc.endpoints)
        if svc.cluster_ip not in bound:
            bound.append(svc.cluster_ip)
        ext_eps = svc.local_endpoints if svc.external_local and svc.local_endpoints else svc.endpoints
        for lb in svc.load_balancer_ips:
            members["KUBE-LOAD-BALANCER"].append(f"{lb},{proto}:{svc.port}")
            if svc.external_local:
                members["KUBE-LOAD-BALANCER-LOCAL"].append(f"{lb},{proto}:{svc.port}")
            if svc.source_ranges:
                members["KUBE-LOAD-BALANCER-FW"].append(f"{lb},{proto}:{svc.port}")
                for cidr in svc.source_ranges:
                    members["KUBE-LOAD-BALANCER-SOURCE-CIDR"].append(f"{lb},{proto}:{svc.port},{cidr}")
                if any(
                    ipaddress.ip_address(ip) in ipaddress.ip_network(c)
                    for c in svc.source_ranges
                    for ip in node_ips[:1]
                ):
                    members["KUBE-LOAD-BALANCER-SOURCE-IP"].append(f"{lb},{proto}:{svc.port},{lb}")
                else:  # kube-proxy then blocks the node's own access to the LB IP (-m ipvs)
                    no_node_access.append((lb, proto, svc.port))
            add_vs(lb, svc.port, svc, ext_eps)
            if lb not in bound and lb not in node_ips:
                bound.append(lb)
        if svc.node_port is not None:
            suffix = proto.upper()
            if proto == "sctp":
                entries = [f"{ip},sctp:{svc.node_port}" for ip in node_ips]
                suffix = "SCTP-HASH"
            else:
                entries = [str(svc.node_port)]
            members[f"KUBE-NODE-PORT-{suffix}"].extend(entries)
            if svc.external_local:
                members[f"KUBE-NODE-PORT-LOCAL-{suffix}"].extend(entries)
            for ip in node_ips:
                add_vs(ip, svc.node_port, svc, ext_eps)
    members["KUBE-IPVS-IPS"] = bound

    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-NODE-PORT - [0:0]",
        ":KUBE-LOAD-BALANCER - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-SERVICES -s {'::1/128' if v6 else '127.0.0.0/8'} -j RETURN",
    ]
    filt = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":KUBE-FORWARD - [0:0]",
        ":KUBE-NODE-PORT - [0:0]",
        ":KUBE-PROXY-FIREWALL - [0:0]",
        ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]",
        ":KUBE-IPVS-FILTER - [0:0]",
        ":KUBE-IPVS-OUT-FILTER - [0:0]",
        # EnsureRule(Prepend) in kube-proxy's order: the last prepended comes first
        '-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
        '-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT',
        '-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER',
    ]
    for name, table, src, dst, flags, proto in _SET_RULES:
        if not members[name]:
            continue
        pm = f"-p {proto} " if proto else ""
        line = f'-A {src} {pm}-m comment --comment "{_COMMENT[name]}" -m set --match-set {n(name)} {flags} -j {dst}'  # noqa: E501
        (nat if table == "nat" else filt).append(line)
    if members["KUBE-CLUSTER-IP"]:
        head = f'-A KUBE-SERVICES -m comment --comment "{_COMMENT["KUBE-CLUSTER-IP"]}" -m set --match-set {n("KUBE-CLUSTER-IP")}'  # noqa: E501
        if masquerade_all:
            nat.append(f"{head} dst,dst -j KUBE-MARK-MASQ")
        elif cluster_cidr is not None:
            nat.append(f"{head} dst,dst ! -s {cluster_cidr} -j KUBE-MARK-MASQ")
        else:
            nat.append(f"{head} src,dst -j KUBE-MARK-MASQ")
    nat.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT")
    nat.append("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ")
    filt.append("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP")
    for lb, proto, port in no_node_access:
        filt.append(
            f"-A KUBE-IPVS-OUT-FILTER -s {lb} -m ipvs --vaddr {lb} --vproto {proto} --vport {port} -j DROP"
        )
    for name in ("KUBE-CLUSTER-IP", "KUBE-LOAD-BALANCER"):
        if members[name]:
            nat.append(f"-A KUBE-SERVICES -m set --match-set {n(name)} dst,dst -j ACCEPT")
    filt += [
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT',  # noqa: E501
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',  # noqa: E501
        f'-A KUBE-NODE-PORT -m comment --comment "{_COMMENT["KUBE-HEALTH-CHECK-NODE-PORT"]}" -m set --match-set {n("KUBE-HEALTH-CHECK-NODE-PORT")} dst -j ACCEPT',  # noqa: E501
        f"-A KUBE-IPVS-FILTER -m set --match-set {n('KUBE-LOAD-BALANCER')} dst,dst -j RETURN",
        f"-A KUBE-IPVS-FILTER -m set --match-set {n('KUBE-CLUSTER-IP')} dst,dst -j RETURN",
        f"-A KUBE-IPVS-FILTER -m set --match-set {n('KUBE-EXTERNAL-IP')} dst,dst -j RETURN",
        f"-A KUBE-IPVS-FILTER -m set --match-set {n('KUBE-EXTERNAL-IP-LOCAL')} dst,dst -j RETURN",
        f"-A KUBE-IPVS-FILTER -m set --match-set {n('KUBE-HEALTH-CHECK-NODE-PORT')} dst -j RETURN",
        f"-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {n('KUBE-IPVS-IPS')} dst -j REJECT",  # noqa: E501
        "COMMIT",
    ]  # fmt: skip
    nat += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',  # noqa: E501
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        "COMMIT",
    ]  # fmt: skip
    sets: list[str] = []
    for name, typ, _ in _SETS:
        if typ == "bitmap:port":
            sets.append(f"create {n(name)} {typ} range 0-65535")
        else:
            fam = "inet6" if v6 else "inet"
            sets.append(f"create {n(name)} {typ} family {fam} hashsize 1024 maxelem 65536")
        sets.extend(f"add {n(name)} {m}" for m in members[name])
    return IpvsNode(
        iptables="\n".join(nat + filt) + "\n",
        ipsets="\n".join(sets) + "\n",
        ipvs="\n".join(vs_lines) + "\n",
    )
