"""Trace a new connection through kube-proxy's IPVS mode: iptables + ipsets + IPVS virtual servers.

In IPVS mode kube-proxy DNATs nothing in iptables. It binds every ClusterIP (and LoadBalancer /
external IP) to the dummy interface ``kube-ipvs0``, so a packet to a Service VIP is *local*; its
iptables rules only mark for masquerade (``KUBE-SERVICES`` with ``-m set --match-set KUBE-CLUSTER-IP
dst,dst``, ``KUBE-NODE-PORT``, ``KUBE-LOAD-BALANCER``, ``KUBE-MARK-MASQ``), filter (``KUBE-IPVS-FILTER``
rejects other ports of a VIP) and masquerade (``KUBE-POSTROUTING``: the 0x4000 mark, and
``KUBE-LOOP-BACK`` for hairpin connections). IPVS itself hooks LOCAL_IN after ``filter INPUT`` and
before ``nat INPUT``: it picks a real server, rewrites the destination (``Masq``) and sends the
packet out through LOCAL_OUT and POSTROUTING. The walk here, with the iptables tracer
(:mod:`.iptables`) for every chain:

* from outside: ``raw/mangle/nat PREROUTING`` → local destination: ``mangle/filter INPUT`` → IPVS
  (a virtual server for (protocol, destination, port), or the packet mark for ``-f`` services) →
  ``mangle/filter OUTPUT`` → ``mangle/nat POSTROUTING``; a local destination without a virtual
  server goes on to ``nat INPUT``; other destinations are forwarded as in :mod:`.iptables`;
* from the node itself: ``raw/mangle/nat/filter OUTPUT`` → ``mangle/nat POSTROUTING`` (the
  connection's only pass through ``nat POSTROUTING``) → ``mangle/filter INPUT`` → IPVS →
  ``mangle/filter OUTPUT`` → ``mangle POSTROUTING``.

Local addresses are ``packet.local_ips`` plus the addresses bound on ``kube-ipvs0``: ``bound`` when
given, else the members of the ``KUBE-IPVS-IPS``/``KUBE-6-IPVS-IPS`` sets.

**Schedulers as probabilities.** Real servers of weight 0 are quiescent and get no new connection.
``rr`` (round robin) cycles through the others: a new connection, arriving at an unknown point of
the cycle, goes to each with probability 1/n whatever its weight. ``wrr`` (weighted round robin)
gives each server its weight's share of every cycle: probability weight/Σweights. ``fo`` (weighted
failover) always picks the first highest-weight server. Every other scheduler depends on something
the captured state does not hold: ``lc``/``wlc``/``sed``/``nq``/``lblc``/``lblcr``/``ovf``/``twos``
on the servers' current connections, ``sh``/``dh``/``mh`` on a hash of the client's or destination
address; for these the result shows each server with its weight's share (what the scheduler tends
to with equal load / uniformly spread addresses) and says so in :attr:`TraceResult.notes`. No
available server: IPVS answers ICMP port unreachable (verdict ``REJECT``).

**Persistence** (``ipvsadm -p``, kube-proxy's ``sessionAffinity: ClientIP``): a returning client
(``Packet(affinity="returning")``, see :mod:`.affinity`) within the timeout lands on its first real
server while that server has weight > 0 (kube-proxy sets ``expire_quiescent_template``); without
persistence a returning client is scheduled anew. ``Masq`` and ``Local`` forwarding rewrite the
destination (the outcome's ``dnat``); ``Route``/``Tunnel`` cannot be traced (TraceError).
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.ipset import IpSet
from pytest_k8sstate.parse.iptables import IptablesRuleset
from pytest_k8sstate.parse.ipvs import RealServer, VirtualServer
from pytest_k8sstate.trace import Packet, TraceResult
from pytest_k8sstate.trace.affinity import Branch, run_with_affinity
from pytest_k8sstate.trace.ipsets import SetIndex
from pytest_k8sstate.trace.ipt_match import St as _St
from pytest_k8sstate.trace.ipt_match import canon
from pytest_k8sstate.trace.iptables import _Tracer, branches
from pytest_k8sstate.trace.recent import Entry

__all__ = ["BOUND_SETS", "EXACT_SCHEDULERS", "schedule", "trace_ipvs"]

BOUND_SETS = ("KUBE-IPVS-IPS", "KUBE-6-IPVS-IPS")
"""kube-proxy's sets of the addresses bound on ``kube-ipvs0`` (IPv4, IPv6)."""
EXACT_SCHEDULERS = frozenset({"rr", "wrr", "fo"})
_LOAD = frozenset({"lc", "wlc", "sed", "nq", "lblc", "lblcr", "ovf", "twos"})
_HASH = frozenset({"sh", "dh", "mh"})
_PERSIST = "ipvs-persistent "  # recent-entry prefix of an IPVS persistence template


def _canon(ip: str) -> str:
    """IPv6 in its compressed form (ipvsadm, ipset and users may spell it differently); IPv4 as is."""
    if ":" not in ip:
        return ip
    return _canon6(ip)


@lru_cache(maxsize=65536)
def _canon6(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def schedule(vs: VirtualServer) -> tuple[list[tuple[RealServer, Fraction]], str | None]:
    """The real servers a new connection to ``vs`` may go to, with probabilities (see the module doc),
    and a note when they depend on more than the captured state."""
    live = [r for r in vs.real_servers if r.weight > 0]
    if not live:
        return [], None
    sched = vs.scheduler
    if sched == "rr":
        return [(r, Fraction(1, len(live))) for r in live], None
    if sched == "fo":
        best = max(r.weight for r in live)
        return [(next(r for r in live if r.weight == best), Fraction(1))], None
    total = sum(r.weight for r in live)
    shares = [(r, Fraction(r.weight, total)) for r in live]
    if sched == "wrr":
        return shares, None
    if sched in _LOAD:
        why = "depends on load (the servers' current connections)"
    elif sched in _HASH:
        why = "depends on a hash of the " + ("destination" if sched == "dh" else "client") + " address"
    else:
        why = "is not modelled"
    note = (
        f"IPVS {vs.key}: scheduler {sched} {why}; shown: each real server's weight share, not an exact "
        "probability"
    )
    return shares, note


class _VsIndex:
    """Virtual servers by (protocol, address, port) and by firewall mark. The index of the last list is
    reused while it holds the same objects (weights and real servers are read from them live)."""

    last: tuple[tuple[int, ...], list[VirtualServer], _VsIndex, object] | None = None
    local: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None  # (node IPs, bound, union)

    def __init__(self, vss: list[VirtualServer]) -> None:
        self.by_key: dict[tuple[str, str, int], VirtualServer] = {}
        self.by_mark: dict[int, VirtualServer] = {}
        for vs in vss:
            if vs.protocol == "FWM":
                self.by_mark[int(vs.address)] = vs
            elif vs.port is not None:
                self.by_key[(vs.protocol.lower(), _canon(vs.address), vs.port)] = vs

    @classmethod
    def of(cls, ipvs: Iterable[VirtualServer]) -> _VsIndex:
        last = cls.last
        if last is not None and isinstance(ipvs, list) and last[3] is ipvs and len(ipvs) == len(last[1]):
            if all(map(operator.is_, ipvs, last[1])):  # the same objects (C loop: 12,000 in ~0.1 ms)
                return last[2]
        vss = list(ipvs)
        key = tuple(map(id, vss))
        last = cls.last
        if last is not None and last[0] == key:
            return last[2]
        idx = cls(vss)
        cls.last = (key, vss, idx, ipvs)  # the list keeps the objects alive: their ids stay theirs
        return idx


class _IpvsTrace:
    def __init__(
        self,
        rs: IptablesRuleset,
        packet: Packet,
        sets: SetIndex | None,
        index: _VsIndex,
        bound: frozenset[str],
    ) -> None:
        self.rs = rs
        self.sets = sets
        self.by_key = index.by_key
        self.by_mark = index.by_mark
        lc = index.local
        if lc is not None and lc[1] is bound and lc[0] == packet.local_ips:
            self.local = lc[2]
        else:
            self.local = frozenset(packet.local_ips) | bound
            index.local = (frozenset(packet.local_ips), bound, self.local)
        self.notes: list[str] = []

    def lookup(self, st: _St, proto: str) -> VirtualServer | None:
        if st.mark and st.mark in self.by_mark:
            return self.by_mark[st.mark]
        ip = _canon(st.dst)
        return self.by_key.get((proto, ip, st.dport)) or self.by_key.get((proto, ip, 0))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def ipvs(self, vs: VirtualServer, st: _St) -> list[tuple[_St, str | None]]:
        """IPVS on one packet: DNATed states (verdict None: go on) or a REJECT."""
        step = f"ipvs/{vs.key} {vs.scheduler}"
        choices, note = schedule(vs)
        tmpl = _PERSIST + vs.key
        if vs.persistent is not None:
            self.note(
                f"IPVS {vs.key}: persistent {vs.persistent}s — a returning client (affinity='returning') "
                "within that time lands on its first real server"
            )
            kept = [e[1] for e in st.recent if e[0] == tmpl]
            pinned = [r for r in vs.real_servers if r.weight > 0 and _hostport(r.address, r.port) in kept]
            if pinned:
                choices, note = [(pinned[0], Fraction(1))], None
        if note:
            self.note(note)
        if not choices:
            self.note(f"IPVS {vs.key}: no real server with weight > 0 — ICMP port unreachable")
            return [(replace(st, path=(*st.path, f"{step}: no real server")), "REJECT")]
        out: list[tuple[_St, str | None]] = []
        for r, p in choices:
            if r.forward not in ("Masq", "Local"):
                raise TraceError(
                    f"cannot evaluate IPVS {vs.key}: real server {_hostport(r.address, r.port)} uses forward "
                    f"method {r.forward} (only Masq and Local rewrite the destination; kube-proxy uses Masq)"
                )
            hp = _hostport(r.address, r.port)
            recent = st.recent | {(tmpl, hp)} if vs.persistent is not None else st.recent
            out.append(
                (
                    replace(
                        st,
                        prob=st.prob * p,
                        dst=_canon(r.address),
                        dport=r.port,
                        dnat=hp,
                        path=(*st.path, f"{step} -> {hp}"),
                        recent=recent,
                    ),
                    None,
                )
            )
        return out

    def run(self, packet: Packet, held: frozenset[Entry]) -> list[Branch]:
        if packet.ctstate != "NEW":
            raise TraceError(
                f"IPVS-mode tracing follows a connection's first packet (ctstate='NEW'), not "
                f"{packet.ctstate!r}: IPVS keeps its own connection table, which the captured state lacks"
            )
        pkt = replace(packet, local_ips=self.local)
        t = _Tracer(self.rs, pkt, self.sets, held)
        finished: list[tuple[_St, str]] = []

        def stage(table: str, hook: str, sts: list[_St]) -> list[_St]:
            go, done = t.hook(table, hook, sts)
            finished.extend(done)
            return go

        def stages(pairs: Iterable[tuple[str, str]], sts: list[_St]) -> list[_St]:
            for table, hook in pairs:
                sts = stage(table, hook, sts)
            return sts

        def local_in(sts: list[_St], *, nat_done: bool) -> None:
            sts = stages((("mangle", "INPUT"), ("filter", "INPUT")), sts)
            plain: list[_St] = []
            for st in sts:
                vs = self.lookup(st, pkt.proto)
                if vs is None:
                    plain.append(st)
                    continue
                for s2, verdict in self.ipvs(vs, st):
                    if verdict is not None:
                        finished.append((s2, verdict))
                    elif t.is_local(s2.dst):  # a real server on this node: delivered here, and the
                        # LOCAL_IN hooks after IPVS (nat INPUT) still see a connection not yet SNAT-checked
                        done = [s2] if nat_done else stage("nat", "INPUT", [s2])
                        finished.extend((s, "ACCEPT") for s in done)
                    else:
                        out = stages(
                            (("mangle", "OUTPUT"), ("filter", "OUTPUT"), ("mangle", "POSTROUTING")), [s2]
                        )
                        if not nat_done:
                            out = stage("nat", "POSTROUTING", out)
                        finished.extend((s, "ACCEPT") for s in out)
            finished.extend((s, "ACCEPT") for s in stage("nat", "INPUT", plain))

        start = _St(Fraction(1), canon(pkt.dst), pkt.dport, 0, None, False, (), recent=held)
        if pkt.from_local:
            sts = stages(
                (("raw", "OUTPUT"), ("mangle", "OUTPUT"), ("nat", "OUTPUT"), ("filter", "OUTPUT")), [start]
            )
            sts = stages((("mangle", "POSTROUTING"), ("nat", "POSTROUTING")), sts)
            finished.extend((s, "ACCEPT") for s in sts if not t.is_local(s.dst))
            local_in([s for s in sts if t.is_local(s.dst)], nat_done=True)
        else:
            sts = stages((("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("nat", "PREROUTING")), [start])
            fwd = [s for s in sts if not t.is_local(s.dst)]
            local_in([s for s in sts if t.is_local(s.dst)], nat_done=False)
            fwd = stages((("mangle", "FORWARD"), ("filter", "FORWARD"), ("mangle", "POSTROUTING")), fwd)
            finished.extend((s, "ACCEPT") for s in stage("nat", "POSTROUTING", fwd))
        return branches(t, finished, False)


def _bound(sets: SetIndex | None) -> frozenset[str]:
    if sets is None:
        return frozenset()
    got = sets.memo.get("ipvs.bound")
    if isinstance(got, frozenset):
        return got
    out: set[str] = set()
    for name in BOUND_SETS:
        s = sets.sets.get(name)
        if s is not None:
            out.update(_canon(m.split()[0]) for m in s.members)
    sets.memo["ipvs.bound"] = res = frozenset(out)
    return res


def trace_ipvs(
    iptables: IptablesRuleset,
    packet: Packet,
    *,
    ipvs: Iterable[VirtualServer],
    ipsets: Iterable[IpSet] | SetIndex | None = None,
    bound: Iterable[str] | None = None,
) -> TraceResult:
    """Outcomes of ``packet`` on a node in IPVS mode (see the module doc): the node's
    ``iptables-save`` ruleset, its ``ipvsadm -Sn`` virtual servers and its ``ipset save`` sets;
    ``bound``: the addresses on ``kube-ipvs0`` (default: the ``KUBE-IPVS-IPS`` set's members)."""
    sets = SetIndex.of(ipsets)
    b = frozenset(_canon(a) for a in bound) if bound is not None else _bound(sets)
    tracer = _IpvsTrace(iptables, packet, sets, _VsIndex.of(ipvs), b)
    result = run_with_affinity(packet, tracer.run)
    return replace(result, notes=(*result.notes, *tracer.notes))
