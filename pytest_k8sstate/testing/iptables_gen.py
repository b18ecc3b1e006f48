"""Generate kube-proxy (iptables mode, 1.3x) rule sets in real ``iptables-save`` format.

The output is what ``iptables-save`` prints on a node where kube-proxy synced the given services
(filter + nat tables): ``KUBE-SERVICES`` → ``KUBE-SVC-*`` (``! -s CLUSTER_CIDR`` masquerade rule,
one ``-m statistic --mode random --probability 1/(n-i)`` jump per endpoint, an unconditional last
jump) → ``KUBE-SEP-*`` (hairpin ``-s POD -j KUBE-MARK-MASQ``, ``DNAT``), NodePorts through
``KUBE-NODEPORTS`` → ``KUBE-EXT-*``, ``KUBE-MARK-MASQ``/``KUBE-POSTROUTING`` masquerading, filter
``KUBE-SERVICES``/``KUBE-EXTERNAL-SERVICES`` ``REJECT`` for services without endpoints,
``KUBE-FORWARD`` and ``KUBE-PROXY-FIREWALL``. Chain names are kube-proxy's hashes.

The text loads with ``iptables-restore``. With ``saved=True`` it is byte-for-byte what
``iptables-save`` (nf_tables backend, without ``-c``) prints back for it, apart from the
``# Generated``/``# Completed`` comment lines: probabilities as stored by ``xt_statistic`` (p·2³¹,
``%.11f``), ``MARK --or-mark``/``--xor-mark`` as ``--set-xmark``, chains sorted. Without it,
probabilities are written the way kube-proxy writes them (``%0.10f``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field

__all__ = ["KubeService", "kube_proxy_iptables", "make_services", "sep_chain", "svc_chain"]

MASQ_MARK = 0x4000


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(port_name: str, protocol: str = "tcp", prefix: str = "KUBE-SVC-") -> str:
    """``KUBE-SVC-`` (or ``KUBE-EXT-``/``KUBE-FW-``/``KUBE-SVL-``) + base32(sha256(portName + proto))[:16]."""
    return prefix + _hash16(port_name + protocol)


def sep_chain(port_name: str, protocol: str, endpoint: str) -> str:
    """``KUBE-SEP-`` + base32(sha256(portName + proto + "IP:port"))[:16]."""
    return "KUBE-SEP-" + _hash16(port_name + protocol + endpoint)


@dataclass(frozen=True)
class KubeService:
    """One service port as kube-proxy sees it."""

    namespace: str
    name: str
    cluster_ip: str
    port: int
    endpoints: tuple[str, ...] = ()  # "IP:PORT"
    protocol: str = "tcp"
    port_name: str = ""  # the Service port's name ("" for a single unnamed port)
    node_port: int | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def port_id(self) -> str:
        """kube-proxy's ServicePortName string: ``ns/name:portname`` (``ns/name`` without a port name)."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def svc_chain(self) -> str:
        return svc_chain(self.port_id, self.protocol)

    @property
    def ext_chain(self) -> str:
        return svc_chain(self.port_id, self.protocol, "KUBE-EXT-")

    def sep_chains(self) -> list[str]:
        return [sep_chain(self.port_id, self.protocol, ep) for ep in self.endpoints]


def make_services(
    n_services: int,
    endpoints: int | list[int] = 3,
    *,
    namespace: str = "default",
    service_cidr: str = "10.96.0.0/12",
    pod_cidr: str = "10.244.0.0/16",
    target_port: int = 8080,
    node_ports: int = 0,
    first_node_port: int = 30000,
    protocol: str = "tcp",
) -> list[KubeService]:
    """``n_services`` services ``svc-<i>`` (port ``http``: 80 → ``target_port``).

    ``endpoints`` is a count for every service or one count per service (0 = no endpoints);
    the first ``node_ports`` services also get a NodePort (``first_node_port + i``).
    Cluster IPs start at the 11th address of ``service_cidr``; endpoint IPs are consecutive
    addresses of ``pod_cidr`` from its 2nd address.
    """
    counts = [endpoints] * n_services if isinstance(endpoints, int) else list(endpoints)
    if len(counts) != n_services:
        raise ValueError(f"endpoints: {len(counts)} counts for {n_services} services")
    svc_net = ipaddress.IPv4Network(service_cidr)
    pod_net = ipaddress.IPv4Network(pod_cidr)
    if n_services + 10 >= svc_net.num_addresses or sum(counts) + 2 >= pod_net.num_addresses:
        raise ValueError("service_cidr/pod_cidr too small for that many services/endpoints")
    if node_ports > 2768 or node_ports > n_services:
        raise ValueError("node_ports: at most min(2768, n_services) NodePorts (30000-32767)")
    out: list[KubeService] = []
    svc_base = int(svc_net.network_address) + 10
    pod_next = int(pod_net.network_address) + 2
    for i, n in enumerate(counts):
        eps = []
        for _ in range(n):
            eps.append(f"{ipaddress.IPv4Address(pod_next)}:{target_port}")
            pod_next += 1
        out.append(
            KubeService(
                namespace=namespace,
                name=f"svc-{i}",
                cluster_ip=str(ipaddress.IPv4Address(svc_base + i)),
                port=80,
                endpoints=tuple(eps),
                protocol=protocol,
                port_name="http",
                node_port=first_node_port + i if i < node_ports else None,
            )
        )
    return out


def _prob(p: float, saved: bool) -> str:
    if not saved:
        return f"{p:0.10f}"
    # what xt_statistic keeps (round(p * 2^31)) printed back by iptables-save ("%.11f")
    stored = round(float(f"{p:0.10f}") * 0x80000000)
    return f"{stored / 0x80000000:.11f}"


def _q(comment: str) -> str:
    """Quote a --comment value the way iptables-save (nf_tables) prints it."""
    return '"' + comment.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kube_proxy_iptables(
    services: list[KubeService],
    *,
    cluster_cidr: str | None = "10.244.0.0/16",
    saved: bool = False,
    nfacct: bool = False,
    masquerade_all: bool = False,
) -> str:
    """The filter and nat tables kube-proxy writes for ``services`` (see module doc)."""
    mark = f"{MASQ_MARK:#x}"
    filt: dict[str, list[str]] = {
        "INPUT": [],
        "FORWARD": [],
        "OUTPUT": [],
        "KUBE-EXTERNAL-SERVICES": [],
        "KUBE-FORWARD": [],
        "KUBE-NODEPORTS": [],
        "KUBE-PROXY-FIREWALL": [],
        "KUBE-SERVICES": [],
    }
    nat: dict[str, list[str]] = {
        "PREROUTING": [],
        "INPUT": [],
        "OUTPUT": [],
        "POSTROUTING": [],
        "KUBE-MARK-MASQ": [],
        "KUBE-NODEPORTS": [],
        "KUBE-POSTROUTING": [],
        "KUBE-SERVICES": [],
    }
    ct_new = "-m conntrack --ctstate NEW"
    filt["INPUT"] += [
        f'{ct_new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        f'{ct_new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
    ]
    filt["FORWARD"] += [
        f'{ct_new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        f'{ct_new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        f'{ct_new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
    ]
    filt["OUTPUT"] += [
        f'{ct_new} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        f'{ct_new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    ]
    invalid = "-m conntrack --ctstate INVALID"
    if nfacct:
        invalid += " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts"
    filt["KUBE-FORWARD"] += [
        f"{invalid} -j DROP",
        f'-m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT',
        '-m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    nat["PREROUTING"].append('-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    nat["OUTPUT"].append('-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')
    nat["POSTROUTING"].append('-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING')
    nat["KUBE-MARK-MASQ"].append(
        f"-j MARK --set-xmark {mark}/{mark}" if saved else f"-j MARK --or-mark {mark}"
    )
    nat["KUBE-POSTROUTING"] += [
        f"-m mark ! --mark {mark}/{mark} -j RETURN",
        f"-j MARK --set-xmark {mark}/0x0" if saved else f"-j MARK --xor-mark {mark}",
        '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    ]
    for s in services:
        p = s.protocol
        pid = s.port_id
        if not s.endpoints:
            filt["KUBE-SERVICES"].append(
                f"-d {s.cluster_ip}/32 -p {p} -m comment --comment {_q(pid + ' has no endpoints')} "
                f"-m {p} --dport {s.port} -j REJECT --reject-with icmp-port-unreachable"
            )
            if s.node_port is not None:
                filt["KUBE-EXTERNAL-SERVICES"].append(
                    f"-p {p} -m comment --comment {_q(pid + ' has no endpoints')} "
                    f"-m addrtype --dst-type LOCAL -m {p} --dport {s.node_port} "
                    "-j REJECT --reject-with icmp-port-unreachable"
                )
            continue
        svc = s.svc_chain
        nat[svc] = []
        nat["KUBE-SERVICES"].append(
            f"-d {s.cluster_ip}/32 -p {p} -m comment --comment {_q(pid + ' cluster IP')} "
            f"-m {p} --dport {s.port} -j {svc}"
        )
        if masquerade_all:
            nat[svc].append(
                f"-d {s.cluster_ip}/32 -p {p} -m comment --comment {_q(pid + ' cluster IP')} "
                f"-m {p} --dport {s.port} -j KUBE-MARK-MASQ"
            )
        elif cluster_cidr:
            nat[svc].append(
                f"! -s {cluster_cidr} -d {s.cluster_ip}/32 -p {p} -m comment "
                f"--comment {_q(pid + ' cluster IP')} -m {p} --dport {s.port} -j KUBE-MARK-MASQ"
            )
        if s.node_port is not None:
            ext = s.ext_chain
            nat[ext] = [
                f"-m comment --comment {_q('masquerade traffic for ' + pid + ' external destinations')} "
                "-j KUBE-MARK-MASQ",
                f"-j {svc}",
            ]
            nat["KUBE-NODEPORTS"].append(
                f"-p {p} -m comment --comment {_q(pid)} -m {p} --dport {s.node_port} -j {ext}"
            )
        n = len(s.endpoints)
        for i, (ep, sep) in enumerate(zip(s.endpoints, s.sep_chains(), strict=True)):
            ip = ep.rpartition(":")[0]
            stat = ""
            if i < n - 1:
                stat = f" -m statistic --mode random --probability {_prob(1.0 / (n - i), saved)}"
            nat[svc].append(f"-m comment --comment {_q(pid + ' -> ' + ep)}{stat} -j {sep}")
            nat[sep] = [
                f"-s {ip}/32 -m comment --comment {_q(pid)} -j KUBE-MARK-MASQ",
                f"-p {p} -m comment --comment {_q(pid)} -m {p} -j DNAT --to-destination {ep}",
            ]
    nat["KUBE-SERVICES"].append(
        '-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
        "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    )
    return _render("filter", filt) + _render("nat", nat)


def _render(table: str, chains: dict[str, list[str]]) -> str:
    from pytest_k8sstate.parse.iptables import BUILTIN_CHAINS

    builtin = [c for c in BUILTIN_CHAINS[table] if c in chains]
    user = sorted(c for c in chains if c not in BUILTIN_CHAINS[table])
    out = [f"*{table}"]
    out += [f":{c} ACCEPT [0:0]" for c in builtin]
    out += [f":{c} - [0:0]" for c in user]
    for c in builtin + user:
        out += [f"-A {c} {r}" for r in chains[c]]
    out.append("COMMIT")
    return "\n".join(out) + "\n"
