"""Service ports as kube-proxy programmed them (iptables comments, nft sets) or etcd stores them.

:func:`find_services` lists every :class:`ServiceVip`; :func:`resolve_service` turns ``ns/name[:port]`` into
one, with "did you mean" when it cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_k8sstate.assertions._common import SHORT_LIST, did_you_mean, nodes_of
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import IptablesRuleset, Rule
from pytest_k8sstate.parse.nft import NftRuleset
from pytest_k8sstate.state import Snapshot

__all__ = ["KUBE_PROXY_NFT", "ServiceVip", "find_services", "resolve_service", "rule_comment"]

KUBE_PROXY_NFT = ("ip", "kube-proxy")


@dataclass(frozen=True)
class ServiceVip:
    """One service port: ``port_id`` is kube-proxy's ``ns/name:portname`` (``ns/name`` if unnamed)."""

    port_id: str
    ip: str
    port: int
    proto: str
    has_endpoints: bool = True

    @property
    def service(self) -> str:
        return self.port_id.split(":", 1)[0]

    @property
    def port_name(self) -> str:
        return self.port_id.split(":", 1)[1] if ":" in self.port_id else ""


_CLUSTER_IP_SUFFIX = " cluster IP"


_NO_EP_SUFFIX = " has no endpoints"


_NFT_CHAIN_RE = re.compile(r"^(?:goto|jump) service-[A-Z0-9]+-([^/]+)/([^/]+)/([a-z]+)/(.*)$")


def rule_comment(rule: Rule) -> str | None:
    for m in rule.matches:
        if m.module == "comment":
            o = m.get("--comment")
            if o is not None:
                return o.value
    return None


def _rule_vip(rule: Rule, port_id: str, has_endpoints: bool) -> ServiceVip | None:
    d = rule.basic("-d")
    p = rule.basic("-p")
    if d is None or p is None or d.value is None or p.value is None:
        return None
    dport = None
    for m in rule.matches:
        o = m.get("--dport")
        if o is not None and o.value is not None and o.value.isdigit():
            dport = int(o.value)
    if dport is None:
        return None
    ip = d.value.removesuffix("/32")
    return ServiceVip(port_id, ip, dport, p.value, has_endpoints)


def _iptables_services(rs: IptablesRuleset) -> tuple[ServiceVip, ...]:
    """Service ports from kube-proxy's KUBE-SERVICES comments (cached on the ruleset)."""
    cached = rs.cache.get(_CACHE_KEY)
    if cached is None:
        cached = rs.cache[_CACHE_KEY] = tuple(_scan_iptables_services(rs))
    return cached


_CACHE_KEY = "pytest_k8sstate.assertions.services"


def _scan_iptables_services(rs: IptablesRuleset, only: str | None = None) -> Iterator[ServiceVip]:
    """``only``: just the rules whose text names that ``namespace/name`` (no other rule is parsed)."""
    for table, suffix, has_eps in (("nat", _CLUSTER_IP_SUFFIX, True), ("filter", _NO_EP_SUFFIX, False)):
        chain = rs.chain(table, "KUBE-SERVICES")
        if chain is None:
            continue
        for rule in chain.rules if only is None else chain.rules_with(only):
            if suffix.strip() not in rule.spec:
                continue
            c = rule_comment(rule)
            if c is None or not c.endswith(suffix):
                continue
            if table == "filter" and rule.basic("-d") is None:
                continue  # NodePort reject rules
            vip = _rule_vip(rule, c[: -len(suffix)], has_eps)
            if vip is not None:
                yield vip


def _nft_services(rs: NftRuleset) -> Iterator[ServiceVip]:
    t = rs.table(*KUBE_PROXY_NFT)
    if t is None:
        return
    for set_name, has_eps in (("service-ips", True), ("no-endpoint-services", False)):
        s = t.lookup_set(set_name)
        if s is None:
            continue
        for el in s.elements:
            if len(el.key) != 3 or not el.key[2].isdigit():
                continue
            ip, proto, port = el.key
            port_id: str | None = None
            if has_eps and el.value is not None:
                m = _NFT_CHAIN_RE.match(el.value)
                if m:
                    ns_, name, _proto, pname = m.groups()
                    port_id = f"{ns_}/{name}" + (f":{pname}" if pname else "")
            elif el.comment:
                port_id = el.comment
            if port_id is not None:
                yield ServiceVip(port_id, ip, int(port), proto, has_eps)


def _etcd_services(snap: Snapshot, only: str | None = None) -> Iterator[ServiceVip]:
    """ClusterIPs from Service objects whose decoded fields are named (JSON storage); ``only``
    (``namespace/name``): that Service's key alone."""
    if snap.etcd is None:
        return
    if only is not None:
        key = f"/registry/services/specs/{only}"
        one = snap.etcd.entries.get(key)
        items: Iterable[tuple[str, Any]] = [] if one is None else [(key, one)]
    else:
        items = snap.etcd.entries.items()
    for key, entry in items:
        if not key.startswith("/registry/services/specs/"):
            continue
        f = entry.decoded.fields
        spec = f.get("spec") if isinstance(f, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        ip = spec.get("clusterIP")
        if not isinstance(ip, str) or ip in ("", "None"):
            continue
        ns_, name = entry.decoded.namespace, entry.decoded.name
        for port in spec.get("ports") or []:
            if not isinstance(port, Mapping) or not isinstance(port.get("port"), int):
                continue
            pname = port.get("name") or ""
            yield ServiceVip(
                f"{ns_}/{name}" + (f":{pname}" if pname else ""),
                ip,
                port["port"],
                str(port.get("protocol") or "TCP").lower(),
            )


def find_services(
    state: Snapshot | NodeState, node: str | None = None, *, only: str | None = None
) -> list[ServiceVip]:
    """Every service port found in etcd (JSON-stored Services) and in kube-proxy's rules; ``only``
    (``namespace/name``): just that Service's ports (without parsing every other Service's rules)."""
    found: dict[tuple[str, str], ServiceVip] = {}
    if isinstance(state, Snapshot):
        for v in _etcd_services(state, only):
            found.setdefault((v.port_id, v.proto), v)
    for ns in nodes_of(state, node).values():
        for rs in (ns.iptables, ns.nft):
            if isinstance(rs, IptablesRuleset):
                if only is not None and _CACHE_KEY not in rs.cache:
                    vips: Iterable[ServiceVip] = _scan_iptables_services(rs, only)
                else:
                    vips = _iptables_services(rs)
                if only is not None:
                    vips = [v for v in vips if v.service == only]
            elif isinstance(rs, NftRuleset):
                vips = _nft_services(rs)
                if only is not None:
                    vips = [v for v in vips if v.service == only]
            else:
                continue
            for v in vips:
                prev = found.get((v.port_id, v.proto))
                if prev is None or (prev.has_endpoints is False and v.has_endpoints):
                    found[(v.port_id, v.proto)] = v
    return list(found.values())


def resolve_service(state: Snapshot | NodeState, service: str, proto: str, node: str | None) -> ServiceVip:
    if "/" not in service:
        raise ValueError(f"service={service!r}: expected 'namespace/name' or 'namespace/name:port'")
    base, _, port = service.partition(":")
    vips = find_services(state, node, only=base)  # this Service's rules only
    if not vips:
        vips = find_services(state, node)  # every Service: for the "did you mean" of the message
    same = [v for v in vips if v.service == base and v.proto == proto]
    if port:
        same = [v for v in same if v.port_name == port or str(v.port) == port]
    if len(same) == 1:
        return same[0]
    if len(same) > 1:
        opts = ", ".join(f"{v.port_id} ({v.port}/{v.proto})" for v in same)
        raise AssertionError(
            f"service {service!r} has several ports: {opts}; pass service='{same[0].port_id}'"
        )
    others = [v for v in vips if v.service == base]
    if others:
        opts = ", ".join(f"{v.port_id} ({v.port}/{v.proto})" for v in others)
        raise AssertionError(
            f"service {service!r} has no {proto} port {port or ''}: it has {opts}".replace("  ", " ")
        )
    names = sorted({v.service for v in vips} | {v.port_id for v in vips})
    near = did_you_mean(service, names)
    msg = f"service {service!r} not found in etcd or kube-proxy rules"
    if near:
        msg += f"; did you mean {' or '.join(near)}?"
    elif names:
        msg += f" ({len(names)} known, e.g. {', '.join(names[:SHORT_LIST])})"
    else:
        msg += " (no kube-proxy service rules captured)"
    raise AssertionError(msg)
