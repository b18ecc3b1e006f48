"""The kube-proxy path of one Service on one node, as a graph: chains as nodes, jumps as edges, each edge
with the probability its rule gives (``-m statistic --probability``, nft ``numgen random mod N``) and the
share of all new connections that take it — built from what the tracer (:mod:`pytest_k8sstate.trace`)
says, not from a second reading of the rules.

:func:`service_graph` traces a new connection to the Service's address through the node's captured rules
and turns every outcome's rule path (``TraceResult.path_examples``) into its *spine*: the chains the packet
was in when the DNAT happened (``KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-…``; nft ``services → service-… →
endpoint-…``); chains it returned from (``KUBE-MARK-MASQ``, ``mark-for-masquerade``) are not part of it.
A base chain (one with a hook) starts a new spine. The spines' union is the graph; its last node per
outcome is the DNAT destination (with the pod that has that address, when etcd names one) or the verdict.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.trace import Packet, TraceResult, format_hostport, trace

if TYPE_CHECKING:
    from pytest_k8sstate.node.capture import NodeState
    from pytest_k8sstate.state.kubeproxy import ServiceChange

__all__ = [
    "Edge",
    "GraphNode",
    "ServiceGraph",
    "addr_key",
    "fraction_text",
    "percent_text",
    "pods_by_ip",
    "service_graph",
]

_NUMGEN = re.compile(r"numgen random mod (\d+)")
_VIP = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>\d+)/(?P<proto>[a-z]+)$")
_NODEPORT = re.compile(r"^nodePort (?P<port>\d+)/(?P<proto>[a-z]+)$")
MAX_OUTCOMES = 64
"""Outcomes drawn in one graph (a 1,000-endpoint Service: the rest are counted in the table)."""


@dataclass(frozen=True)
class GraphNode:
    id: str
    label: str
    kind: str
    """``chain``, ``endpoint`` (a DNAT destination) or ``verdict`` (no DNAT: ACCEPT / DROP / REJECT)."""
    depth: int
    detail: str = ""
    """The pod behind an endpoint (``web-7f…``; ``other/web-7f…`` when not in the Service's namespace)."""
    order: int = 0
    """Position in its column: the rank of the first outcome (by destination address) through it."""


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    share: Fraction
    """Share of all new connections to the address that take this jump (summed over outcomes)."""
    rule_probability: Fraction | None
    """The probability the jumping rule itself gives (``--probability 0.5``, ``numgen mod 3`` → 1/3);
    None when the rule is unconditional (shown as 1)."""
    rule: str = ""
    """``table/chain#line`` of the jumping rule."""


@dataclass
class Outcome:
    target: str
    """``10.244.1.2:8080``, or the verdict when nothing DNATed."""
    pod: str
    masquerade: bool
    verdict: str
    share: Fraction
    assumes: tuple[str, ...] = ()


@dataclass
class ServiceGraph:
    """One Service port on one node: what a new connection to ``address`` meets."""

    service: str
    node: str
    backend: str
    side: str
    """``after`` (the Service exists after the change) or ``before`` (it was removed)."""
    address: str = ""
    packet: str = ""
    summary: str = ""
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    hidden_outcomes: int = 0
    error: str | None = None
    notes: tuple[str, ...] = ()


def fraction_text(p: Fraction) -> str:
    """``1/3`` for a value within 1e-9 of a fraction with a denominator ≤ 1000 (kube-proxy writes 1/3 as
    0.3333333333), ``1`` for one, else 4 decimals."""
    if p == 1:
        return "1"
    near = p.limit_denominator(1000)
    if abs(float(p - near)) < 1e-9:
        return "1" if near == 1 else ("0" if near == 0 else f"{near.numerator}/{near.denominator}")
    return f"{float(p):.4f}"


def percent_text(p: Fraction) -> str:
    return f"{float(p) * 100:.2f}%"


def pods_by_ip(snapshot_etcd: Any) -> dict[str, str]:
    """Pod IP → ``namespace/name`` from a snapshot's etcd capture (``status.podIPs``/``status.podIP``)."""
    out: dict[str, str] = {}
    if snapshot_etcd is None:
        return out
    for key, entry in snapshot_etcd.entries.items():
        if not key.startswith("/registry/pods/"):
            continue
        d = entry.decoded
        status = (d.fields or {}).get("status") if isinstance(d.fields, dict) else None
        if not isinstance(status, dict):
            continue
        ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)]
        ips.append(status.get("podIP"))
        for ip in ips:
            if isinstance(ip, str) and ip:
                out.setdefault(ip, f"{d.namespace}/{d.name}")
    return out


def _ruleset(ns: NodeState, backend: str) -> Any:
    if backend == "iptables":
        return ns.iptables
    return ns.nft


def _packet(sc_vips: list[str], ns: NodeState) -> tuple[Packet, str] | None:
    """A new connection from an outside client to the Service's first address (a ClusterIP-style
    ``IP:PORT/proto``, else a NodePort on the node's own address)."""
    local = frozenset(ns.local_ips)
    for vip in sc_vips:
        m = _VIP.match(vip)
        if m is not None:
            host = m["host"].strip("[]")
            return Packet(host, int(m["port"]), m["proto"], local_ips=local), vip  # type: ignore[arg-type]
    for vip in sc_vips:
        m = _NODEPORT.match(vip)
        own = sorted(ip for ip in local if not ip.startswith("127."))
        if m is not None and own:
            pkt = Packet(own[0], int(m["port"]), m["proto"], local_ips=local)  # type: ignore[arg-type]
            return pkt, f"{vip} on {own[0]}"
    return None


def _step(step: str) -> tuple[str, str, str]:
    """``nat/KUBE-SVC-X#51`` → (``nat``, ``KUBE-SVC-X``, ``51``)."""
    table, _, rest = step.partition("/")
    chain, _, ref = rest.rpartition("#")
    return table, chain, ref


class _Rules:
    """Looks up the rule of a path step: is its chain a base chain, does it DNAT, what probability."""

    def __init__(self, ruleset: Any, backend: str) -> None:
        self.ruleset = ruleset
        self.nft = backend != "iptables"
        self.family = backend.split(" ", 1)[0] if self.nft else ""

    def _nft_chain(self, table: str, chain: str) -> Any:
        for (fam, name), t in self.ruleset.tables.items():
            if name == table and (fam == self.family or not self.family) and chain in t.chains:
                return t.chains[chain]
        return None

    def chain(self, table: str, chain: str) -> Any:
        if self.nft:
            return self._nft_chain(table, chain)
        t = self.ruleset.tables.get(table)
        return t.chains.get(chain) if t is not None else None

    def is_base(self, table: str, chain: str) -> bool:
        c = self.chain(table, chain)
        if c is None:
            return False
        return (c.hook is not None) if self.nft else (c.policy is not None)

    def rule(self, table: str, chain: str, ref: str) -> Any:
        c = self.chain(table, chain)
        if c is None or not ref.isdigit():
            return None
        n = int(ref)
        for r in c.rules:
            if (r.handle if self.nft else r.line) == n:
                return r
        return None

    def dnats(self, rule: Any) -> bool:
        if rule is None:
            return False
        if self.nft:
            return " dnat " in f" {rule.text} "
        return bool(rule.target == "DNAT")

    def probability(self, rule: Any) -> Fraction | None:
        if rule is None:
            return None
        if self.nft:
            m = _NUMGEN.search(rule.text)
            return Fraction(1, int(m.group(1))) if m is not None and int(m.group(1)) > 0 else None
        from pytest_k8sstate.parse.numbers import parse_probability

        for match in rule.matches:
            if match.module == "statistic":
                opt = match.get("--probability")
                if opt is not None and opt.value:
                    try:
                        p = Fraction(parse_probability(opt.value))
                    except ValueError:
                        return None
                    return 1 - p if opt.negated else p
        return None


def _spine(path: tuple[str, ...], rules: _Rules) -> list[tuple[str, str]]:
    """The chains the packet was in when it was DNATed (or at its last step): [(chain, jumping rule)]
    where the jumping rule is the ``table/chain#ref`` step of the previous chain that led here."""
    steps = [_step(s) for s in path]
    last = max((i for i, (t, c, r) in enumerate(steps) if rules.dnats(rules.rule(t, c, r))), default=-1)
    if last < 0:  # no DNAT: the whole walk up to the verdict, nat first
        nat = [i for i, s in enumerate(steps) if s[0] == "nat" or rules.nft]
        last = nat[-1] if nat else len(steps) - 1
    stack: list[tuple[str, str]] = []  # (table/chain, step of the previous chain that jumped here)
    prev_step = ""
    for t, c, r in steps[: last + 1]:
        key = f"{t}/{c}"
        names = [k for k, _ in stack]
        if key in names:
            del stack[names.index(key) + 1 :]
        elif rules.is_base(t, c):
            stack = [(key, "")]
        else:
            stack.append((key, prev_step))
        prev_step = f"{t}/{c}#{r}"
    return stack


def service_graph(
    sc: ServiceChange,
    node: str,
    ns: NodeState,
    *,
    side: str = "after",
    pods: Mapping[str, str] | None = None,
) -> ServiceGraph:
    """The graph of ``sc``'s kube-proxy path on ``node`` as ``ns`` (that side's capture) programs it.
    Never raises for bad rules: a trace that fails is the graph's :attr:`ServiceGraph.error`."""
    vips = sc.vips_after if side == "after" else sc.vips_before
    g = ServiceGraph(sc.service, node, sc.backend, side, summary=sc.text())
    ruleset = _ruleset(ns, sc.backend)
    if ruleset is None:
        g.error = f"no {sc.backend} rules captured on {node}"
        return g
    found = _packet(vips, ns)
    if found is None:
        g.error = f"no address to trace ({', '.join(vips) or 'none on this side'})"
        return g
    packet, g.address = found
    g.packet = f"new {packet.proto} connection {format_hostport(packet.src, packet.sport)} → " + (
        format_hostport(packet.dst, packet.dport)
    )
    try:
        kwargs: dict[str, Any] = {}
        if sc.backend == "iptables":
            kwargs["ipsets"] = ns.ipsets or None
            if ns.ipvs:
                kwargs["ipvs"] = ns.ipvs
        result = trace(ruleset, packet, **kwargs)
    except (K8sStateError, ValueError, TypeError) as exc:
        g.error = f"trace failed: {exc}"
        return g
    _fill(g, result, _Rules(ruleset, sc.backend), pods or {})
    return g


def _fill(g: ServiceGraph, result: TraceResult, rules: _Rules, pods: Mapping[str, str]) -> None:
    g.notes = result.notes
    nodes: dict[str, GraphNode] = {}
    edges: dict[tuple[str, str], Edge] = {}
    items = list(zip(result.outcomes, result.shares, strict=True))
    paths = list(result.path_examples) + [()] * (len(items) - len(result.path_examples))
    rank = {t: r for r, t in enumerate(sorted({o.dnat or o.verdict for o in result.outcomes}, key=addr_key))}
    for i, ((o, share), path) in enumerate(zip(items, paths, strict=True)):
        target = o.dnat or o.verdict
        pod = pods.get(_host_of(o.dnat), "") if o.dnat else ""
        g.outcomes.append(Outcome(target, pod, o.masquerade, o.verdict, share, o.assumes))
        if i >= MAX_OUTCOMES:
            g.hidden_outcomes += 1
            continue
        spine = _spine(path, rules)
        r = rank[target]
        for depth, (key, via) in enumerate(spine):
            old = nodes.get(key)
            if old is None or old.order > r:
                nodes[key] = GraphNode(key, key.split("/", 1)[1], "chain", depth, order=r)
            if depth:
                _add_edge(edges, spine[depth - 1][0], key, share, via, rules)
        end_id = f"endpoint:{o.dnat}" if o.dnat else f"verdict:{o.verdict}"
        kind = "endpoint" if o.dnat else "verdict"
        own = pod.partition("/")[2] if pod.startswith(g.service.split("/", 1)[0] + "/") else pod
        nodes.setdefault(end_id, GraphNode(end_id, target, kind, len(spine), own, order=r))
        if spine:
            last = spine[-1][0]
            dnat_step = next((s for s in reversed(path) if f"{_step(s)[0]}/{_step(s)[1]}" == last), "")
            _add_edge(edges, last, end_id, share, dnat_step, rules)
    g.nodes = sorted(nodes.values(), key=lambda n: (n.depth, n.order, n.label))
    g.edges = list(edges.values())


def _add_edge(
    edges: dict[tuple[str, str], Edge], src: str, dst: str, share: Fraction, via: str, rules: _Rules
) -> None:
    old = edges.get((src, dst))
    if old is not None:
        edges[(src, dst)] = Edge(src, dst, old.share + share, old.rule_probability, old.rule)
        return
    prob = rules.probability(rules.rule(*_step(via))) if via else None
    edges[(src, dst)] = Edge(src, dst, share, prob, via)


def addr_key(text: str) -> tuple[int, int, int, str]:
    """Numeric order of ``IP:PORT`` / ``[IP]:PORT``; verdicts after addresses."""
    host = _host_of(text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (9, 0, 0, text)
    port = text.rpartition(":")[2]
    return (ip.version, int(ip), int(port) if port.isdigit() else 0, text)


def _host_of(hostport: str | None) -> str:
    if not hostport:
        return ""
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0]
    return hostport.rpartition(":")[0]
