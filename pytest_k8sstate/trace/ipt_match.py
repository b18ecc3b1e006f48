"""Match evaluators of the iptables tracer (:mod:`pytest_k8sstate.trace.iptables`).

:class:`Matchers` is the tracer's base class: one method per match module (``-m tcp``,
``multiport``, ``statistic``, ``mark``, ``conntrack``/``state``, ``addrtype``, ``physdev``, ``comment``)
and the built-in options (``-s -d -p -i -o -f``). The dispatch itself (which module → which method)
stays in ``_Tracer.match`` so a new module is one ``elif`` there plus one method here.

Interfaces (``-i``/``-o``, ``!``, ``+`` wildcards): a packet's interface is known when the packet
says so (``Packet.in_iface``/``out_iface``) or follows from the hook (``lo`` exactly for a local
destination's out-interface and, in INPUT, for a locally originated packet's in-interface).
Otherwise each path carries the constraints it already took (``-o docker0`` taken, ``! -o br+``
taken, …): a rule those decide is decided, and a rule they don't decide raises :class:`Choice`,
upon which the tracer follows both ways, each with the new constraint — so one path never assumes
``-o docker0`` and ``! -o docker0``, and each outcome lists its constraints (``Outcome.assumes``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from pytest_k8sstate.parse.iptables import Match, Opt
from pytest_k8sstate.parse.numbers import parse_port, parse_probability, parse_uint
from pytest_k8sstate.trace import Packet

__all__ = [
    "MAX_ASSUMPTIONS",
    "READ_OPAQUE",
    "READ_SPORT",
    "READ_SRC",
    "READ_SRC_TYPE",
    "Choice",
    "Matchers",
    "St",
    "Unsupported",
    "addr",
    "canon",
    "dnat_target",
    "iface_text",
    "mark_value",
    "net",
    "to_int",
]

_PROTO_NUM = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}
_CT_STATES = frozenset({"NEW", "INVALID", "ESTABLISHED", "RELATED", "UNTRACKED", "DNAT", "SNAT"})

MAX_ASSUMPTIONS = 256
"""Interface constraints one path may take (each a two-way branch) before the trace gives up."""

# An interface constraint: (direction "-i"/"-o", pattern as written, whether the interface matches it)
Iface = tuple[str, str, bool]


@dataclass(slots=True)
class St:
    """One path's packet state: probability, (rewritten) destination, mark, NAT so far, the rules
    taken, interface constraints assumed, notes (e.g. "routed, not bridged") and recent-list entries.

    Never modified once built (branches share states); not ``frozen`` only because a frozen
    dataclass's ``__init__`` costs seven times more, and a trace builds several per endpoint."""

    prob: Fraction
    dst: str
    dport: int
    mark: int
    dnat: str | None
    masq: bool
    path: tuple[str, ...]
    ifc: tuple[Iface, ...] = ()
    notes: tuple[str, ...] = ()
    recent: frozenset[tuple[str, str]] = frozenset()
    """``-m recent`` lists holding the client on this path: (list name, address) entries
    (:mod:`pytest_k8sstate.trace.recent`)."""


class Unsupported(Exception):
    """Raised inside matching; turned into a TraceError naming the rule."""


class Choice(Exception):
    """The rule's outcome depends on an interface nobody gave: follow it both ways."""

    def __init__(self, direction: str, pattern: str) -> None:
        super().__init__(direction, pattern)
        self.direction = direction
        self.pattern = pattern


@lru_cache(maxsize=65536)
def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


@lru_cache(maxsize=65536)
def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@lru_cache(maxsize=65536)
def canon(text: str) -> str:
    """An address in its canonical (compressed) text; ValueError if it is none."""
    return ipaddress.ip_address(text).compressed


def to_int(text: str) -> int:
    v = parse_uint(text)
    if v is None:
        raise ValueError(f"not an ASCII decimal or 0x hex number: {text!r}")
    return v


@lru_cache(maxsize=65536)
def mark_value(text: str) -> tuple[int, int | None]:
    """``VALUE[/MASK]`` of ``-m mark``/``MARK`` → (value, mask or None); ValueError if unreadable.
    Cached: every packet of a trace meets the same few marks at every Service."""
    v, _, m = text.partition("/")
    return to_int(v), (to_int(m) if m else None)


@lru_cache(maxsize=65536)
def _probability(text: str) -> Fraction:
    return parse_probability(text)


def iface_text(c: Iface) -> str:
    d, pat, hit = c
    return f"{d} {pat}" if hit else f"! {d} {pat}"


def _name_matches(pattern: str, name: str) -> bool:
    """The kernel's interface match: ``eth+`` is every name starting with ``eth``."""
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _subset(p: str, q: str) -> bool:
    """Every name matching ``p`` matches ``q``."""
    if not p.endswith("+"):
        return _name_matches(q, p)
    return q.endswith("+") and p[:-1].startswith(q[:-1])


def _disjoint(p: str, q: str) -> bool:
    """No name matches both."""
    if not p.endswith("+"):
        return not _name_matches(q, p)
    if not q.endswith("+"):
        return not _name_matches(p, q)
    a, b = p[:-1], q[:-1]
    return not (a.startswith(b) or b.startswith(a))


def decide_iface(constraints: tuple[Iface, ...], direction: str, pattern: str) -> bool | None:
    """Whether an unknown interface (never ``lo``) matches ``pattern`` given the constraints taken."""
    if pattern == "lo":
        return False
    for d, p, hit in reversed(constraints):  # newest first: a deciding "-o X" is usually the last taken
        if d != direction:
            continue
        if hit:
            if _subset(p, pattern):
                return True
            if _disjoint(p, pattern):
                return False
        elif _subset(pattern, p):
            return False
    return None


READ_SRC = "-s"  # Matchers.src_reads: ("-s", the network tested)
READ_SPORT = "sport"  # ("sport", the port or LO:HI range tested)
READ_SRC_TYPE = "src-type"  # ("src-type", ""): -m addrtype --src-type
READ_OPAQUE = "opaque"  # ("opaque", module): a read that trace/ipt_classes.py cannot replay


class Matchers:
    """Evaluators; the tracer sets ``pkt``, ``ctstate``, ``local`` and ``src_reads`` (see the module
    doc). ``src_reads`` collects each test of the packet's source address or port the evaluators make
    (``(READ_SRC, network)``, ...): :mod:`pytest_k8sstate.trace.ipt_classes` reuses a walk for packets
    that answer them alike."""

    pkt: Packet
    src_reads: set[tuple[str, str]]
    ctstate: str
    local: frozenset[str]  # canonical addresses
    from_local: bool
    iface_memo: dict[tuple[int, str, str], tuple[tuple[Iface, ...], bool | None]]

    def is_local(self, ip: str) -> bool:
        if ip in self.local:
            return True
        try:
            return addr(ip).is_loopback
        except ValueError:
            return False

    # ---- built-in options -------------------------------------------------------------------
    def basic(self, hook: str, o: Opt, st: St) -> bool:
        name, v, neg = o.name, o.value, o.negated
        if name == "-d" or name == "-s":
            if name == "-d":
                ip = st.dst
            else:
                ip = self.pkt.src
                self.src_reads.add((READ_SRC, v or ""))
            try:
                a, n = addr(ip), net(v or "")
            except ValueError as exc:
                raise Unsupported(f"cannot read address {v!r} of {name}") from exc
            if a.version != n.version:
                raise Unsupported(
                    f"the packet is IPv{a.version} but {name} {v} is IPv{n.version} "
                    f"(trace IPv{n.version} packets through this dump)"
                )
            hit = a in n
        elif name == "-p":
            p = (v or "").lower()
            p = _PROTO_NUM.get(p, p)
            hit = p in ("all", "0") or p == self.pkt.proto
        elif name == "-i" or name == "-o":
            hit = self.iface(hook, name, v or "", st)
        elif name == "-f":
            hit = False  # a first packet is never a non-first fragment
        else:
            raise Unsupported(f"unsupported option {name}")
        return hit != neg

    def iface(self, hook: str, direction: str, pattern: str, st: St) -> bool:
        """Whether the packet's in (``-i``) / out (``-o``) interface matches ``pattern`` at ``hook``."""
        if direction == "-i":
            if hook in ("OUTPUT", "POSTROUTING"):
                return False  # no in-interface there (iptables refuses -i in these chains)
            if hook == "INPUT" and self.from_local:
                return _name_matches(pattern, "lo")
            known = self.pkt.in_iface
        else:
            if hook in ("PREROUTING", "INPUT"):
                return False  # no out-interface yet (iptables refuses -o in these chains)
            if self.is_local(st.dst):
                return _name_matches(pattern, "lo")
            known = self.pkt.out_iface
        if known is not None:
            return _name_matches(pattern, known)
        ifc = st.ifc
        if not ifc:
            got = decide_iface(ifc, direction, pattern)
        else:
            # memo by the constraint tuple's identity (kept alive in the value): paths share their
            # tuples, and rescanning a long one at every rule would make long chains cubic
            key = (id(ifc), direction, pattern)
            hit = self.iface_memo.get(key)
            if hit is not None and hit[0] is ifc:
                got = hit[1]
            else:
                got = decide_iface(ifc, direction, pattern)
                self.iface_memo[key] = (ifc, got)
        if got is None:
            if len(ifc) >= MAX_ASSUMPTIONS:
                raise Unsupported(
                    f"more than {MAX_ASSUMPTIONS} interface assumptions on one path; give the packet's "
                    "interfaces (Packet(in_iface=..., out_iface=...), --in-iface/--out-iface)"
                )
            raise Choice(direction, pattern)
        return got

    # ---- match modules ----------------------------------------------------------------------
    def _port_in(self, spec: str, port: int) -> bool:
        lo, sep, hi = spec.partition(":")
        a = parse_port(lo) if lo or not sep else 0
        b = parse_port(hi) if hi else 65535
        if a is None or b is None:
            raise Unsupported(f"cannot read port {spec!r} (ASCII decimal 0-65535, or LO:HI)")
        return port == a if not sep else a <= port <= b

    def ports(self, m: Match, st: St) -> bool:
        if m.module != self.pkt.proto:
            return False
        for o in m.opts:
            if o.name in ("--dport", "--destination-port"):
                hit = self._port_in(o.value or "", st.dport)
            elif o.name in ("--sport", "--source-port"):
                self.src_reads.add((READ_SPORT, o.value or ""))
                hit = self._port_in(o.value or "", self.pkt.sport)
            elif o.name == "--syn" and m.module == "tcp":
                hit = self.ctstate == "NEW"
            elif o.name == "--tcp-flags" and m.module == "tcp" and len(o.values) == 2:
                if self.ctstate != "NEW":
                    raise Unsupported("the TCP flags of an ESTABLISHED packet are not known")
                mask = set(o.values[0].upper().split(","))
                comp = set(o.values[1].upper().split(","))
                if "ALL" in mask:
                    mask = {"SYN", "ACK", "FIN", "RST", "URG", "PSH"}
                on = {"SYN"} & mask
                hit = on == (comp & mask) if "NONE" not in comp else not on
            else:
                raise Unsupported(f"unsupported option -m {m.module} {o.name}")
            if hit == o.negated:
                return False
        return True

    def multiport(self, m: Match, st: St) -> bool:
        for o in m.opts:
            if o.name in ("--dports", "--destination-ports"):
                ports = [st.dport]
            elif o.name in ("--sports", "--source-ports"):
                ports = [self.pkt.sport]
            elif o.name == "--ports":
                ports = [st.dport, self.pkt.sport]
            else:
                raise Unsupported(f"unsupported option -m multiport {o.name}")
            items = (o.value or "").split(",")
            if o.name not in ("--dports", "--destination-ports"):
                self.src_reads.update((READ_SPORT, it) for it in items)
            hit = any(self._port_in(it, p) for it in items for p in ports)
            if hit == o.negated:
                return False
        return True

    def statistic(self, m: Match) -> Fraction:
        mode = m.get("--mode")
        prob = m.get("--probability")
        if mode is None or mode.value != "random" or prob is None or len(m.opts) != 2:
            raise Unsupported("unsupported statistic match (only --mode random --probability P)")
        try:
            p = _probability(prob.value or "")
        except ValueError as exc:
            raise Unsupported(f"cannot read probability: {exc}") from None
        return 1 - p if prob.negated else p

    def mark(self, m: Match, st: St) -> bool:
        for o in m.opts:
            if o.name != "--mark":
                raise Unsupported(f"unsupported option -m mark {o.name}")
            try:
                val, msk = mark_value(o.value or "")
            except ValueError as exc:
                raise Unsupported(f"cannot read mark {o.value!r}") from exc
            if ((st.mark & (0xFFFFFFFF if msk is None else msk)) == val) == o.negated:
                return False
        return True

    def conntrack(self, m: Match, st: St) -> bool:
        """``--ctstate``/``--state`` against the packet's state (``Packet.ctstate``), plus the virtual
        DNAT/SNAT states once the connection is NATed."""
        for o in m.opts:
            if o.name not in ("--ctstate", "--state"):
                raise Unsupported(f"unsupported option -m {m.module} {o.name}")
            states = {s.strip().upper() for s in (o.value or "").split(",")}
            unknown = states - _CT_STATES
            if unknown:
                raise Unsupported(f"unknown conntrack state {','.join(sorted(unknown))}")
            hit = (
                self.ctstate in states
                or ("DNAT" in states and st.dnat is not None)
                or ("SNAT" in states and st.masq)
            )
            if hit == o.negated:
                return False
        return True

    def addrtype(self, m: Match, st: St) -> bool:
        for o in m.opts:
            if o.name == "--dst-type":
                ip = st.dst
            elif o.name == "--src-type":
                ip = self.pkt.src
                self.src_reads.add((READ_SRC_TYPE, ""))
            else:
                raise Unsupported(f"unsupported option -m addrtype {o.name}")
            types = {t.upper() for t in (o.value or "").split(",")}
            if not types <= {"LOCAL", "UNICAST"}:
                raise Unsupported(f"unsupported addrtype {o.value} (only LOCAL, UNICAST)")
            try:
                multicast = addr(ip).is_multicast
            except ValueError as exc:
                raise Unsupported(f"packet address {ip!r} is not an IP address") from exc
            hit = ("LOCAL" in types and self.is_local(ip)) or ("UNICAST" in types and not multicast)
            if hit == o.negated:
                return False
        return True

    def comment(self, m: Match) -> bool:
        for o in m.opts:
            if o.name != "--comment":
                raise Unsupported(f"unsupported option -m comment {o.name} (only --comment)")
        return True

    def physdev(self, m: Match) -> bool:
        """A traced packet is routed, not bridged: like the kernel for a packet without bridge
        information, every non-negated physdev option fails and every negated one holds."""
        for o in m.opts:
            if o.name not in (
                "--physdev-in",
                "--physdev-out",
                "--physdev-is-in",
                "--physdev-is-out",
                "--physdev-is-bridged",
            ):
                raise Unsupported(f"unsupported option -m physdev {o.name}")
            if not o.negated:
                return False
        return True


@lru_cache(maxsize=65536)
def dnat_target(text: str) -> tuple[str, int | None, int] | str:
    """``--to-destination`` text → (canonical host, port or None for "keep the port", 4 or 6), or why it
    cannot be read (the tracer names the rule); cached: a Service's endpoints are DNATed per packet."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if "-" in host or "-" in port:
        return f"DNAT to a range {text!r} is not supported"
    try:
        a = addr(host)
    except ValueError:
        return f"cannot read --to-destination {text!r}"
    dport = parse_port(port) if port else None
    if port and dport is None:
        return f"cannot read --to-destination {text!r}"
    return canon(host), dport, a.version
