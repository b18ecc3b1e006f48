"""kube-proxy's rule changes summarised per Service port: ``default/web:http: endpoints 3 → 2, removed
10.244.1.4:8080`` instead of a dozen unpaired −/+ rules.

Who a rule belongs to is read the way kube-proxy writes it:

- **iptables** (``nat`` and ``filter``): the comment ``-m comment --comment "default/web:http …"`` (its first
  word is the Service port, ``ns/name:port`` or ``ns/name`` for an unnamed port) and the chains
  ``KUBE-SVC-…``, ``KUBE-SVL-…``, ``KUBE-EXT-…``, ``KUBE-FW-…``, ``KUBE-SEP-…`` whose rules carry it.
  Endpoints are the ``DNAT --to-destination`` of the ``KUBE-SEP-…`` chains; addresses the ``-d IP --dport P``
  of the ``KUBE-SERVICES`` jumps and the ``--dport`` of the ``KUBE-NODEPORTS`` ones.
- **nftables**: the chain names ``service-HASH-ns/name/proto/port``, ``external-…``, ``firewall-…`` and
  ``endpoint-HASH-ns/name/proto/port__IP/PORT`` (kube-proxy < 1.33); endpoints are those chains' addresses
  and the service chain's own ``dnat to IP:PORT`` / ``dnat ip to numgen … map { n : IP . PORT }``
  (kube-proxy ≥ 1.33); addresses are the ``service-ips`` and ``service-nodeports`` map elements that jump to
  the service's chains.

:func:`summarize_services` compares both sides' per-service state for the services the diff touched and
returns one :class:`ServiceChange` each; :class:`ServiceIndex` tells the renderer which raw rule,
chain and element changes the summary stands for (the rest are shown as before).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from pytest_k8sstate.state.nodediff import NodeDiff

__all__ = [
    "RAW_KINDS",
    "ServiceChange",
    "ServiceIndex",
    "ServiceState",
    "endpoint_text",
    "summarize_services",
]

Pair = tuple[str, str]
Triple = tuple[str, str, str]
Groups = Mapping[Pair, list[str]]

IPTABLES = "iptables"
_IPT_SERVICE_CHAINS = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')
_TO_DEST = re.compile(r"--to-destination (\S+)")
_DEST = re.compile(r"(?:^| )-d (\S+)")
_DPORT = re.compile(r"--dport (\d+)")
_PROTO = re.compile(r"(?:^| )-p (\S+)")
_JUMP = re.compile(r"(?:^| )-[jg] (\S+)")
_NFT_CHAIN = re.compile(
    r"^(?P<kind>service|external|firewall|endpoint)-[A-Z0-9]+-(?P<ns>[^/]+)/(?P<name>[^/]+)/"
    r"(?P<proto>[a-z]+)/(?P<port>[^_/]*)(?:__(?P<ep>.+))?$"
)
_NFT_PREFIXES = ("service-", "external-", "firewall-", "endpoint-")
_NFT_DNAT_MAP = re.compile(r"dnat (?:ip6? )?to numgen [^{]*\{([^}]*)\}")
_NFT_MAP_ENTRY = re.compile(r"\d+ : (\S+) \. (\d+)")
_NFT_DNAT = re.compile(r"dnat (?:ip6? )?to (\S+)")
_NFT_GOTO = re.compile(r"(?:goto|jump) (\S+)")
_VIP_SETS = frozenset({"cluster-ips", "no-endpoint-services", "firewall-ips"})
"""kube-proxy nft sets/maps keyed by a Service address (``IP`` or ``IP . proto . port``)."""
SHOW = 4
"""Endpoints named per direction in a summary line (the rest are counted)."""


def endpoint_text(ip: str, port: str) -> str:
    """``10.244.1.4:8080``; IPv6 as ``[fd00::4]:8080``."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _comment_service(spec: str) -> str | None:
    """The Service port a kube-proxy comment names (its first word, when it has a ``/``)."""
    m = _COMMENT.search(spec)
    if m is None:
        return None
    text = m.group(1) if m.group(1) is not None else m.group(2)
    first = text.split(" ", 1)[0]
    return first if "/" in first and not first.startswith("/") else None


@dataclass
class ServiceState:
    """One Service port as one side's rules program it."""

    endpoints: set[str] = field(default_factory=set)
    vips: set[str] = field(default_factory=set)
    chains: set[str] = field(default_factory=set)


def _host(d: str) -> str:
    ip = d.split("/", 1)[0]
    return f"[{ip}]" if ":" in ip else ip


def _own_chain(
    chain: str, specs: list[str], out: dict[str, ServiceState], only: set[str] | None, inherited: str | None
) -> tuple[str | None, list[str]]:
    """Record a ``KUBE-SVC/SVL/EXT/FW/SEP-`` chain: its owner is the Service its rules' comments start with
    (``inherited``, the Service of the chain that jumps here, when none does — ``KUBE-EXT-`` chains say
    "masquerade LOCAL traffic for ns/svc:p LB IP"); endpoints from its DNATs. Returns (owner, the
    service chains it jumps to)."""
    owner = next((svc for spec in specs if (svc := _comment_service(spec)) is not None), inherited)
    jumps = [
        j.group(1)
        for spec in specs
        if (j := _JUMP.search(spec)) and j.group(1).startswith(_IPT_SERVICE_CHAINS)
    ]
    if owner is None or (only is not None and owner not in only):
        return owner, jumps
    st = out.setdefault(owner, ServiceState())
    st.chains.add(chain)
    if chain.startswith("KUBE-SEP-"):
        for spec in specs:
            to = _TO_DEST.search(spec)
            if to is not None:
                st.endpoints.add(to.group(1))
    return owner, jumps


def _entry_rule(chain: str, spec: str, st: ServiceState) -> str | None:
    """A ``KUBE-SERVICES`` / ``KUBE-NODEPORTS`` rule: record its address; the service chain it jumps to."""
    jump = _JUMP.search(spec)
    if jump is None or not jump.group(1).startswith(("KUBE-SVC-", "KUBE-EXT-", "KUBE-FW-")):
        return None
    port = _DPORT.search(spec)
    proto = _PROTO.search(spec)
    p = f"/{proto.group(1)}" if proto else ""
    if chain == "KUBE-NODEPORTS":
        if port:
            st.vips.add(f"nodePort {port.group(1)}{p}")
    else:
        dest = _DEST.search(spec)
        if dest and port:
            st.vips.add(f"{_host(dest.group(1))}:{port.group(1)}{p}")
    return jump.group(1)


def iptables_services(
    groups: Groups, only: set[str] | None = None, chains: Iterable[str] = ()
) -> dict[str, ServiceState]:
    """Per Service port: endpoints, addresses and chains, from ``(table, chain) -> [Rule.spec]`` (nat).

    ``only``: just these Service ports, found from their ``KUBE-SERVICES`` / ``KUBE-NODEPORTS`` rules and
    the service chains reachable from there or named in ``chains`` (the chains of the changed rules) —
    the rest of a 100,000-rule dump is not read."""
    out: dict[str, ServiceState] = {}
    todo: list[tuple[str, str | None]] = [(c, None) for c in chains if c.startswith(_IPT_SERVICE_CHAINS)]
    prefilter = only is not None and len(only) <= 16
    for entry in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
        for spec in groups.get(("nat", entry), ()):
            if prefilter and not any(n in spec for n in only or ()):
                continue
            svc = _comment_service(spec)
            if svc is None or (only is not None and svc not in only):
                continue
            target = _entry_rule(entry, spec, out.setdefault(svc, ServiceState()))
            if target is not None:
                todo.append((target, svc))
    if only is None:  # every service chain; those reached from an entry rule first (they inherit)
        todo = [(c, None) for t, c in groups if t == "nat" and c.startswith(_IPT_SERVICE_CHAINS)] + todo
    seen: set[str] = set()
    while todo:
        chain, inherited = todo.pop()
        if chain in seen:
            continue
        seen.add(chain)
        owner, jumps = _own_chain(chain, groups.get(("nat", chain), []), out, only, inherited)
        todo.extend((j, owner) for j in jumps)
    return out


def _nft_service(m: re.Match[str]) -> str:
    base = f"{m['ns']}/{m['name']}"
    return f"{base}:{m['port']}" if m["port"] else base


def _nft_endpoint(ep: str) -> str:
    ip, _, port = ep.rpartition("/")
    return endpoint_text(ip, port) if ip else ep


def nft_services(
    groups: Groups, elements: Iterable[Triple], only: set[tuple[str, str]] | None = None
) -> dict[tuple[str, str], ServiceState]:
    """Per (nft table, Service port): endpoints, addresses and chains of kube-proxy's nft tables;
    ``only``: just these (table, Service port)."""
    out: dict[tuple[str, str], ServiceState] = {}
    chain_svc: dict[Pair, str] = {}
    for (table, chain), texts in groups.items():
        if not chain.startswith(_NFT_PREFIXES):
            continue
        m = _NFT_CHAIN.match(chain)
        if m is None:
            continue
        svc = _nft_service(m)
        if only is not None and (table, svc) not in only:
            continue
        chain_svc[(table, chain)] = svc
        st = out.setdefault((table, svc), ServiceState())
        st.chains.add(chain)
        if m["ep"]:
            st.endpoints.add(_nft_endpoint(m["ep"]))
        if m["kind"] != "service":
            continue
        for text in texts:
            mm = _NFT_DNAT_MAP.search(text)
            if mm is not None:
                st.endpoints.update(
                    endpoint_text(ip, port) for ip, port in _NFT_MAP_ENTRY.findall(mm.group(1))
                )
                continue
            d = _NFT_DNAT.search(text)
            if d is not None and not d.group(1).startswith("numgen"):
                st.endpoints.add(d.group(1).rstrip(","))
    for table, sname, text in elements:
        if sname not in ("service-ips", "service-nodeports"):
            continue
        g = _NFT_GOTO.search(text)
        owner = chain_svc.get((table, g.group(1))) if g else None
        if owner is None:
            continue
        key = [p.strip() for p in text.rsplit(" : ", 1)[0].split(" . ")]
        st = out[(table, owner)]
        if sname == "service-ips" and len(key) == 3:
            st.vips.add(f"{_host(key[0])}:{key[2]}/{key[1]}")
        elif sname == "service-nodeports" and len(key) == 2:
            st.vips.add(f"nodePort {key[1]}/{key[0]}")
    return out


@dataclass
class ServiceChange:
    """What changed for one Service port in one backend (``iptables`` or an nft table such as
    ``ip kube-proxy``) on one node."""

    service: str
    """kube-proxy's name of the Service port: ``default/web:http`` (``default/web`` if unnamed)."""
    backend: str
    endpoints_before: list[str] = field(default_factory=list)
    endpoints_after: list[str] = field(default_factory=list)
    vips_before: list[str] = field(default_factory=list)
    """``10.96.0.5:80/tcp``, ``nodePort 30080/tcp``, ``[fd00::5]:80/tcp``."""
    vips_after: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    """The Service port's own chains (either side): the changes in them are what this summary stands for."""
    changes: int = 0
    """How many raw rule / chain / element changes this summary stands for."""

    @property
    def endpoints_added(self) -> list[str]:
        b = set(self.endpoints_before)
        return [e for e in self.endpoints_after if e not in b]

    @property
    def endpoints_removed(self) -> list[str]:
        a = set(self.endpoints_after)
        return [e for e in self.endpoints_before if e not in a]

    @property
    def change(self) -> str:
        """``added`` (no rules before), ``removed`` (none after) or ``changed``."""
        if not self.vips_before and not self.endpoints_before and (self.vips_after or self.endpoints_after):
            return "added"
        if not self.vips_after and not self.endpoints_after and (self.vips_before or self.endpoints_before):
            return "removed"
        return "changed"

    def text(self) -> str:
        """``default/web:http: endpoints 3 → 2, removed 10.244.1.4:8080 (iptables, 5 changes)``."""
        parts: list[str] = []
        vb, va = self.vips_before, self.vips_after
        if self.change == "added":
            parts.append("added" + (f" {', '.join(va)}" if va else ""))
        elif self.change == "removed":
            parts.append("removed" + (f" {', '.join(vb)}" if vb else ""))
        elif vb != va:
            parts.append(f"addresses {', '.join(vb) or '(none)'} → {', '.join(va) or '(none)'}")
        nb, na = len(self.endpoints_before), len(self.endpoints_after)
        if set(self.endpoints_before) != set(self.endpoints_after):
            ep = f"endpoints {nb} → {na}"
            for word, items in (("added", self.endpoints_added), ("removed", self.endpoints_removed)):
                if items:
                    more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
                    ep += f", {word} {', '.join(items[:SHOW])}{more}"
            parts.append(ep)
        elif self.change == "changed" and vb == va:
            parts.append(f"rules changed, endpoints {na}")
        noun = "change" if self.changes == 1 else "changes"
        return f"{self.service}: {'; '.join(parts)} ({self.backend}, {self.changes} {noun})"

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "backend": self.backend,
            "endpoints_before": list(self.endpoints_before),
            "endpoints_after": list(self.endpoints_after),
            "vips_before": list(self.vips_before),
            "vips_after": list(self.vips_after),
            "chains": list(self.chains),
            "changes": self.changes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        def strs(k: str) -> list[str]:
            return [str(x) for x in d.get(k) or []]

        return cls(
            service=str(d["service"]),
            backend=str(d["backend"]),
            endpoints_before=strs("endpoints_before"),
            endpoints_after=strs("endpoints_after"),
            vips_before=strs("vips_before"),
            vips_after=strs("vips_after"),
            chains=strs("chains"),
            changes=int(d.get("changes", 0)),
        )


RAW_KINDS = {
    IPTABLES: ("rules_added", "rules_removed", "chains_added", "chains_removed"),
    "nft": (
        "nft_rules_added",
        "nft_rules_removed",
        "nft_chains_added",
        "nft_chains_removed",
        "nft_elements_added",
        "nft_elements_removed",
    ),
}
"""The :class:`NodeDiff` lists a service summary can stand for, per backend."""


class ServiceIndex:
    """Which :class:`ServiceChange` (if any) stands for a raw change of a :class:`NodeDiff` list."""

    def __init__(self, changes: Iterable[ServiceChange]) -> None:
        self._by_chain: dict[Pair, ServiceChange] = {}
        self._by_comment: dict[str, ServiceChange] = {}
        self._by_vip: dict[Pair, ServiceChange] = {}
        for sc in changes:
            for c in sc.chains:
                self._by_chain[(sc.backend, c)] = sc
            if sc.backend == IPTABLES:
                self._by_comment[sc.service] = sc
                continue
            for vip in (*sc.vips_before, *sc.vips_after):
                if not vip.startswith("nodePort"):  # "IP:PORT/proto": IP and "IP . proto . PORT" keys
                    host, _, rest = vip.rpartition(":")
                    port, _, proto = rest.partition("/")
                    ip = host.strip("[]")
                    self._by_vip.setdefault((sc.backend, ip), sc)
                    self._by_vip.setdefault((sc.backend, f"{ip} . {proto} . {port}"), sc)

    def __bool__(self) -> bool:
        return bool(self._by_chain or self._by_comment)

    def owner(self, kind: str, item: Any) -> ServiceChange | None:
        """The summary standing for ``item`` of the list ``kind`` (``rules``, ``chains``, ``nft_rules``,
        ``nft_chains``, ``nft_elements``), or None."""
        if kind in ("rules", "chains"):
            sc = self._by_chain.get((IPTABLES, item[1]))
            if sc is None and kind == "rules":
                svc = _comment_service(item[2])
                sc = self._by_comment.get(svc) if svc is not None else None
            return sc
        if kind in ("nft_rules", "nft_chains"):
            return self._by_chain.get((item[0], item[1]))
        if kind == "nft_elements":
            g = _NFT_GOTO.search(item[2])
            sc = self._by_chain.get((item[0], g.group(1))) if g is not None else None
            if sc is None and item[1] in _VIP_SETS:
                sc = self._by_vip.get((item[0], item[2].rsplit(" : ", 1)[0].strip()))
            return sc
        return None


def _count(candidates: list[ServiceChange], nd: NodeDiff, backend: str) -> list[ServiceChange]:
    """The candidates that stand for at least one raw change, with :attr:`ServiceChange.changes` set."""
    index = ServiceIndex(candidates)
    for name in RAW_KINDS[backend]:
        kind = name.rsplit("_", 1)[0]
        for item in getattr(nd, name):
            sc = index.owner(kind, item)
            if sc is not None:
                sc.changes += 1
    return [sc for sc in candidates if sc.changes]


def _addr_key(text: str) -> tuple[int, int, str, int, str]:
    """Sort key of ``IP:PORT`` / ``[IP]:PORT`` / ``IP:PORT/proto`` / ``nodePort N/proto``: numeric order."""
    host, _, rest = text.rpartition(":")
    port = rest.split("/", 1)[0]
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return (9, 0, text, 0, text)
    return (ip.version, int(ip), "", int(port) if port.isdigit() else 0, text)


def _sorted(items: set[str]) -> list[str]:
    return sorted(items, key=_addr_key)


def _change(service: str, backend: str, b: ServiceState | None, a: ServiceState | None) -> ServiceChange:
    b, a = b or ServiceState(), a or ServiceState()
    return ServiceChange(
        service=service,
        backend=backend,
        endpoints_before=_sorted(b.endpoints),
        endpoints_after=_sorted(a.endpoints),
        vips_before=_sorted(b.vips),
        vips_after=_sorted(a.vips),
        chains=sorted(b.chains | a.chains),
    )


def summarize_services(
    nd: NodeDiff,
    ipt: tuple[Groups, Groups] | None = None,
    nft: tuple[Groups, Groups, list[Triple], list[Triple]] | None = None,
) -> list[ServiceChange]:
    """One :class:`ServiceChange` per Service port whose kube-proxy rules changed in ``nd``.

    ``ipt``: the iptables rule groups before and after; ``nft``: the nft rule groups and set/map elements
    before and after (as :mod:`~pytest_k8sstate.state.nodediff` builds them)."""
    out: list[ServiceChange] = []
    if ipt is not None and any(getattr(nd, k) for k in RAW_KINDS[IPTABLES]):
        changed = (*nd.rules_added, *nd.rules_removed)
        touched = {svc for _t, _c, spec in changed if (svc := _comment_service(spec))}
        chains = {c for t, c, _s in changed if t == "nat"} | {
            c for t, c in nd.chains_added + nd.chains_removed
        }
        sb = iptables_services(ipt[0], touched, chains)
        sa = iptables_services(ipt[1], touched, chains)
        cands = [_change(svc, IPTABLES, sb.get(svc), sa.get(svc)) for svc in sorted(sb.keys() | sa.keys())]
        out.extend(_count(cands, nd, IPTABLES))
    if nft is not None and any(getattr(nd, k) for k in RAW_KINDS["nft"]):
        ntouched = _nft_touched(nd)
        nb, na = nft_services(nft[0], nft[2], ntouched), nft_services(nft[1], nft[3], ntouched)
        cands = [
            _change(svc, table, nb.get((table, svc)), na.get((table, svc)))
            for table, svc in sorted(nb.keys() | na.keys())
        ]
        out.extend(_count(cands, nd, "nft"))
    return out


def _nft_touched(nd: NodeDiff) -> set[tuple[str, str]]:
    """(table, Service port) of every service chain a changed nft rule, chain or map element names."""
    chains: set[Pair] = {(t, c) for t, c, _x in (*nd.nft_rules_added, *nd.nft_rules_removed)}
    chains |= {(t, c) for t, c in (*nd.nft_chains_added, *nd.nft_chains_removed)}
    for t, _s, text in (*nd.nft_elements_added, *nd.nft_elements_removed):
        g = _NFT_GOTO.search(text)
        if g is not None:
            chains.add((t, g.group(1)))
    out: set[tuple[str, str]] = set()
    for t, c in chains:
        m = _NFT_CHAIN.match(c) if c.startswith(_NFT_PREFIXES) else None
        if m is not None:
            out.add((t, _nft_service(m)))
    return out
