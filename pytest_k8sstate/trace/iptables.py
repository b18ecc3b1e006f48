"""Trace a new connection's first packet through a parsed ``iptables-save`` dump.

Hooks, in the order the kernel runs them for the tables kube-proxy uses (``raw``/``mangle``
built-in chains are traversed too when they exist):

* from outside (``packet.src`` not in ``packet.local_ips``): ``nat PREROUTING`` → DNAT rewrite →
  ``filter INPUT`` when the (rewritten) destination is local, else ``filter FORWARD`` then
  ``nat POSTROUTING``;
* locally originated: ``nat OUTPUT`` → DNAT rewrite → ``filter OUTPUT`` → ``nat POSTROUTING`` →
  ``filter INPUT`` when the destination is local.

Every ``-m statistic --mode random --probability p`` rule is followed both ways with the exact
decimal value of ``p`` (``1-p`` for the fall-through; ``p`` has at most 64 ASCII digits and an
exponent within ±64, see :mod:`pytest_k8sstate.parse.numbers`), so the result is the exact
distribution of (DNAT destination, masquerade, verdict) — up to
:data:`pytest_k8sstate.trace.EXACT_BITS` bits of denominator (Services of ~60 endpoints; beyond,
each hit branch is rounded to 2^−2048 and results still sum to exactly 1).

The walk is iterative (an explicit stack; a statistic rule's miss branch runs before its hit
branch), so a Service of 10,000 endpoints or 10,000 jumps in a row need no deeper Python stack.
Calls nest at most :data:`MAX_DEPTH` deep; a jump to a chain already on the call path is a
TraceError naming the loop (the kernel refuses such rulesets); at most :data:`MAX_BRANCHES`
probabilistic branches per trace. The packet mark is tracked
(``MARK --set-xmark/--set-mark/--or-mark/--xor-mark/--and-mark``, ``-m mark``); ``MASQUERADE`` and
``SNAT`` set ``masquerade``. ``-m set`` is decided by the node's captured ipsets (``ipsets=``,
:mod:`.ipsets`); ``-m recent`` by the lists the client is in (``Packet.affinity``, :mod:`.recent`).

Interfaces: a packet has no interface, so ``-i``/``-o`` are decided only for ``lo`` (in-interface
``lo`` ⇔ locally originated and local destination; out-interface ``lo`` ⇔ local destination);
any other name (``eth0``, ``cni+``) is treated as a wildcard that matches — negated or not.
Conntrack state is ``NEW`` (``INVALID``/``ESTABLISHED``/``RELATED``/``UNTRACKED`` never match;
the virtual ``DNAT`` state matches once the packet was DNATed).

A rule the packet reaches that cannot be evaluated (an unknown match module or option, an
unsupported target) makes the trace fail with :class:`~pytest_k8sstate.errors.TraceError` naming
the rule, its table/chain and line — never a silent wrong answer.

Big chains (``KUBE-SERVICES``, ``KUBE-NODEPORTS``, …) are indexed on first use by destination IP
(rules with a plain ``-d IP[/32]``) and the index is cached on the ruleset (``ruleset.cache``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.ipset import IpSet
from pytest_k8sstate.parse.iptables import Chain, IptablesRuleset, Match, Opt, Rule
from pytest_k8sstate.parse.numbers import parse_port, parse_probability, parse_uint
from pytest_k8sstate.trace import Packet, TraceResult, split_probability
from pytest_k8sstate.trace.affinity import Branch, run_with_affinity
from pytest_k8sstate.trace.ipsets import CannotEvaluate, PacketView, SetIndex, match_set_module
from pytest_k8sstate.trace.recent import Entry, match_recent

__all__ = ["MAX_BRANCHES", "MAX_DEPTH", "trace_iptables"]

MAX_DEPTH = 64
MAX_BRANCHES = 20_000
INDEX_MIN_RULES = 32
_CACHE_KEY = "trace.iptables.index"

_PROTO_NUM = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp"}
_TERMINAL = frozenset({"ACCEPT", "DROP", "REJECT"})
_CONTINUE_TARGETS = frozenset({"LOG", "NFLOG", "ULOG", "TRACE", "NFACCT"})
_IGNORED_MODULES = frozenset({"comment", "nfacct"})
_PORT_MODULES = frozenset({"tcp", "udp", "sctp", "udplite", "dccp"})


@dataclass(frozen=True, slots=True)
class _St:
    prob: Fraction
    dst: str
    dport: int
    mark: int
    dnat: str | None
    masq: bool
    path: tuple[str, ...]
    recent: frozenset[Entry] = frozenset()  # -m recent lists holding the client (trace/recent.py)


@lru_cache(maxsize=65536)
def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


@lru_cache(maxsize=65536)
def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _int(text: str) -> int:
    v = parse_uint(text)
    if v is None:
        raise ValueError(f"not an ASCII decimal or 0x hex number: {text!r}")
    return v


_Frame = tuple[Chain, "list[int] | range", int, "_Frame | None", tuple[str, ...]]
_Item = tuple[Chain, "list[int] | range", int, _St, "_Frame | None", tuple[str, ...], bool]


def _short(text: str, limit: int = 120) -> str:
    """Rule text in an error message: long rules keep their start (the error names the line)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Unsupported(Exception):
    """Raised inside matching; turned into a TraceError naming the rule."""


class _Tracer:
    def __init__(
        self,
        rs: IptablesRuleset,
        pkt: Packet,
        sets: SetIndex | None = None,
        held: frozenset[Entry] = frozenset(),
    ) -> None:
        self.rs = rs
        self.pkt = pkt
        self.sets = sets  # -m set (trace/ipsets.py)
        self.held = held  # -m recent entries at the start (trace/recent.py, trace/affinity.py)
        self.recent_after: frozenset[Entry] | None = None  # set by a -m recent --set/--remove match
        self.local = frozenset(pkt.local_ips)
        self.branches = 0
        idx = rs.cache.get(_CACHE_KEY)
        if idx is None:
            idx = rs.cache[_CACHE_KEY] = {}
        self.index: dict[tuple[str, str], tuple[dict[str, list[int]], list[int]]] = idx

    # ---- helpers -------------------------------------------------------------------------
    def is_local(self, ip: str) -> bool:
        if ip in self.local:
            return True
        try:
            return _addr(ip).is_loopback
        except ValueError:
            return False

    def fail(self, table: str, chain: str, rule: Rule, why: str) -> TraceError:
        return TraceError(
            f"cannot evaluate rule '{_short(rule.spec)}' in {table}/{chain} at line {rule.line}: {why} "
            f"(source: {rule.source})"
        )

    # ---- indexes ---------------------------------------------------------------------------
    def order(self, table: str, ch: Chain, dst: str) -> list[int] | range:
        n = len(ch.rules)
        if n < INDEX_MIN_RULES:
            return range(n)
        key = (table, ch.name)
        ent = self.index.get(key)
        if ent is None:
            ent = self.index[key] = _build_index(ch)
        by_dst, generic = ent
        hits = by_dst.get(dst)
        if not hits:
            return generic
        if not generic:
            return hits
        return sorted(hits + generic)

    # ---- matching ----------------------------------------------------------------------------
    def match(self, table: str, chain: str, hook: str, r: Rule, st: _St) -> Fraction | bool:
        """True/False, or the probability (0 < p < 1) that a statistic rule matches."""
        prob: Fraction | None = None
        for m in r.matches:
            mod = m.module
            if mod == "":
                for o in m.opts:
                    if not self.basic(hook, o, st):
                        return False
            elif mod in _IGNORED_MODULES:
                continue
            elif mod in _PORT_MODULES:
                if not self.ports(m, st):
                    return False
            elif mod == "multiport":
                if not self.multiport(m, st):
                    return False
            elif mod == "statistic":
                p = self.statistic(m)
                if p == 0:
                    return False
                if p != 1:
                    prob = p if prob is None else prob * p
            elif mod == "mark":
                if not self.mark(m, st):
                    return False
            elif mod in ("conntrack", "state"):
                if not self.ctstate(m, st):
                    return False
            elif mod == "addrtype":
                if not self.addrtype(m, st):
                    return False
            elif mod in ("set", "recent"):  # evaluated by trace/ipsets.py and trace/recent.py
                try:
                    if mod == "set":
                        pv = PacketView(self.pkt.src, st.dst, self.pkt.sport, st.dport, self.pkt.proto)
                        hit = match_set_module(m, self.sets, pv)
                    else:
                        hit, after = match_recent(m, self.pkt.src, st.dst, st.recent)
                        if after is not None:
                            if prob is not None:
                                raise _Unsupported("-m recent --set/--remove after -m statistic in one rule")
                            self.recent_after = after  # applied by run_chain, even if a later match fails
                except CannotEvaluate as exc:
                    raise _Unsupported(str(exc)) from None
                if not hit:
                    return False
            else:
                raise _Unsupported(f"unsupported match -m {mod}")
        return True if prob is None else prob

    def basic(self, hook: str, o: Opt, st: _St) -> bool:
        name, v, neg = o.name, o.value, o.negated
        if name == "-d" or name == "-s":
            ip = st.dst if name == "-d" else self.pkt.src
            try:
                hit = _addr(ip) in _net(v or "")
            except ValueError as exc:
                raise _Unsupported(f"cannot read address {v!r} of {name}") from exc
        elif name == "-p":
            p = (v or "").lower()
            p = _PROTO_NUM.get(p, p)
            hit = p in ("all", "0") or p == self.pkt.proto
        elif name == "-i":
            if (v or "") == "lo":
                hit = hook in ("INPUT",) and self.pkt.from_local and self.is_local(st.dst)
            else:
                return True  # interface unknown: wildcard (see module doc)
        elif name == "-o":
            if (v or "") == "lo":
                hit = hook in ("OUTPUT", "POSTROUTING") and self.is_local(st.dst)
            else:
                return True
        elif name == "-f":
            hit = False  # a first packet is never a non-first fragment
        else:
            raise _Unsupported(f"unsupported option {name}")
        return hit != neg

    def _port_in(self, spec: str, port: int) -> bool:
        lo, sep, hi = spec.partition(":")
        a = parse_port(lo) if lo or not sep else 0
        b = parse_port(hi) if hi else 65535
        if a is None or b is None:
            raise _Unsupported(f"cannot read port {spec!r} (ASCII decimal 0-65535, or LO:HI)")
        return port == a if not sep else a <= port <= b

    def ports(self, m: Match, st: _St) -> bool:
        if m.module != self.pkt.proto:
            return False
        for o in m.opts:
            if o.name in ("--dport", "--destination-port"):
                hit = self._port_in(o.value or "", st.dport)
            elif o.name in ("--sport", "--source-port"):
                hit = self._port_in(o.value or "", self.pkt.sport)
            elif o.name == "--syn" and m.module == "tcp":
                hit = True
            elif o.name == "--tcp-flags" and m.module == "tcp" and len(o.values) == 2:
                mask = set(o.values[0].upper().split(","))
                comp = set(o.values[1].upper().split(","))
                if "ALL" in mask:
                    mask = {"SYN", "ACK", "FIN", "RST", "URG", "PSH"}
                on = {"SYN"} & mask
                hit = on == (comp & mask) if "NONE" not in comp else not on
            else:
                raise _Unsupported(f"unsupported option -m {m.module} {o.name}")
            if hit == o.negated:
                return False
        return True

    def multiport(self, m: Match, st: _St) -> bool:
        for o in m.opts:
            if o.name in ("--dports", "--destination-ports"):
                ports = [st.dport]
            elif o.name in ("--sports", "--source-ports"):
                ports = [self.pkt.sport]
            elif o.name == "--ports":
                ports = [st.dport, self.pkt.sport]
            else:
                raise _Unsupported(f"unsupported option -m multiport {o.name}")
            items = (o.value or "").split(",")
            hit = any(self._port_in(it, p) for it in items for p in ports)
            if hit == o.negated:
                return False
        return True

    def statistic(self, m: Match) -> Fraction:
        mode = m.get("--mode")
        prob = m.get("--probability")
        if mode is None or mode.value != "random" or prob is None or len(m.opts) != 2:
            raise _Unsupported("unsupported statistic match (only --mode random --probability P)")
        try:
            p = parse_probability(prob.value or "")
        except ValueError as exc:
            raise _Unsupported(f"cannot read probability: {exc}") from None
        return 1 - p if prob.negated else p

    def mark(self, m: Match, st: _St) -> bool:
        for o in m.opts:
            if o.name != "--mark":
                raise _Unsupported(f"unsupported option -m mark {o.name}")
            v, _, mask = (o.value or "").partition("/")
            try:
                val, msk = _int(v), (_int(mask) if mask else 0xFFFFFFFF)
            except ValueError as exc:
                raise _Unsupported(f"cannot read mark {o.value!r}") from exc
            if ((st.mark & msk) == val) == o.negated:
                return False
        return True

    def ctstate(self, m: Match, st: _St) -> bool:
        """The packet is a connection's first: state NEW, plus the virtual DNAT/SNAT states once NATed."""
        for o in m.opts:
            if o.name not in ("--ctstate", "--state"):
                raise _Unsupported(f"unsupported option -m {m.module} {o.name}")
            states = {s.strip().upper() for s in (o.value or "").split(",")}
            unknown = states - {"NEW", "INVALID", "ESTABLISHED", "RELATED", "UNTRACKED", "DNAT", "SNAT"}
            if unknown:
                raise _Unsupported(f"unknown conntrack state {','.join(sorted(unknown))}")
            hit = (
                "NEW" in states
                or ("DNAT" in states and st.dnat is not None)
                or ("SNAT" in states and st.masq)
            )
            if hit == o.negated:
                return False
        return True

    def addrtype(self, m: Match, st: _St) -> bool:
        for o in m.opts:
            if o.name == "--dst-type":
                ip = st.dst
            elif o.name == "--src-type":
                ip = self.pkt.src
            else:
                raise _Unsupported(f"unsupported option -m addrtype {o.name}")
            types = {t.upper() for t in (o.value or "").split(",")}
            if not types <= {"LOCAL", "UNICAST"}:
                raise _Unsupported(f"unsupported addrtype {o.value} (only LOCAL, UNICAST)")
            try:
                multicast = _addr(ip).is_multicast
            except ValueError as exc:
                raise _Unsupported(f"packet address {ip!r} is not an IP address") from exc
            hit = ("LOCAL" in types and self.is_local(ip)) or ("UNICAST" in types and not multicast)
            if hit == o.negated:
                return False
        return True

    # ---- chains ------------------------------------------------------------------------------
    def run_chain(self, table: str, chain: str, hook: str, st: _St) -> list[tuple[_St, str | None]]:
        """Walk ``chain`` (and every chain it jumps to) for ``st``: ``(state, verdict)`` pairs, ``None``
        for "fell off the end / RETURN". Iterative: an explicit stack of work items, each
        ``(chain, rule order, position, state, caller frame, chains on the call path, apply-target)``;
        a caller frame is ``(chain, order, position, its caller frame, its call path)``, shared by
        branches. The miss branch of a statistic rule runs before the hit branch (the outcome order
        the recursive walk had), and the depth is bounded by MAX_DEPTH, not by the rule count."""
        ch0 = self.rs.chain(table, chain)
        if ch0 is None:
            raise TraceError(f"{self.rs.source}: chain {chain} of table {table} does not exist (jump target)")
        out: list[tuple[_St, str | None]] = []
        chains = self.rs.tables[table].chains
        stack: list[_Item] = [(ch0, self.order(table, ch0, st.dst), 0, st, None, (chain,), False)]
        while stack:
            ch, order, pos, st, parent, calls, do_target = stack.pop()
            rules = ch.rules
            n = len(order)
            while True:
                if do_target:
                    r = rules[order[pos - 1]]
                    do_target = False
                else:
                    if pos >= n:  # end of chain: back to the caller
                        if parent is None:
                            out.append((st, None))
                            break
                        ch, order, pos, parent, calls = parent
                        rules = ch.rules
                        n = len(order)
                        continue
                    r = rules[order[pos]]
                    pos += 1
                    try:
                        m = self.match(table, ch.name, hook, r, st)
                    except _Unsupported as exc:
                        raise self.fail(table, ch.name, r, str(exc)) from None
                    if self.recent_after is not None:
                        st = replace(st, recent=self.recent_after)
                        self.recent_after = None
                    if m is False:
                        continue
                    if m is not True:
                        self.branches += 1
                        if self.branches > MAX_BRANCHES:
                            raise TraceError(
                                f"{self.rs.source}: more than {MAX_BRANCHES} probabilistic branches"
                            )
                        hit, miss = split_probability(st.prob, m)
                        if miss:
                            stack.append(
                                (
                                    ch,
                                    order,
                                    pos,
                                    _St(hit, st.dst, st.dport, st.mark, st.dnat, st.masq, st.path, st.recent),
                                    parent,
                                    calls,
                                    True,
                                )
                            )
                            st = _St(miss, st.dst, st.dport, st.mark, st.dnat, st.masq, st.path, st.recent)
                            continue  # the miss branch goes on now, the hit branch after it
                tgt = r.target
                if tgt is None:
                    continue
                st = _St(
                    st.prob,
                    st.dst,
                    st.dport,
                    st.mark,
                    st.dnat,
                    st.masq,
                    (*st.path, f"{table}/{ch.name}#{r.line}"),
                    st.recent,
                )
                if tgt in _TERMINAL:
                    out.append((st, tgt))
                    break
                if tgt == "RETURN":
                    pos = n  # back to the caller
                    continue
                if tgt in _CONTINUE_TARGETS:
                    continue
                if tgt == "MARK":
                    try:
                        st = replace(st, mark=_mark_target(r, st.mark))
                    except _Unsupported as exc:
                        raise self.fail(table, ch.name, r, str(exc)) from None
                    continue
                if tgt == "DNAT":
                    if table != "nat":
                        raise self.fail(table, ch.name, r, "DNAT outside the nat table")
                    out.append((self.dnat(table, ch.name, r, st), "ACCEPT"))
                    break
                if tgt in ("MASQUERADE", "SNAT"):
                    if table != "nat":
                        raise self.fail(table, ch.name, r, f"{tgt} outside the nat table")
                    out.append((replace(st, masq=True), "ACCEPT"))
                    break
                sub = chains.get(tgt)
                if sub is None:
                    raise self.fail(table, ch.name, r, f"unsupported target -j {tgt}")
                if tgt in calls:
                    loop = " -> ".join((*calls[calls.index(tgt) :], tgt))
                    raise TraceError(
                        f"{self.rs.source}: jump loop {loop} in table {table} at line {r.line} (the kernel "
                        "refuses loops between chains; the jump depth would be unbounded)"
                    )
                if len(calls) > MAX_DEPTH:
                    raise TraceError(
                        f"jump depth over {MAX_DEPTH} at {table}/{tgt} in {self.rs.source}: "
                        "a loop between chains?"
                    )
                if not r.goto:  # a goto's RETURN goes back to our caller: no frame for us
                    parent = (ch, order, pos, parent, calls)
                calls = (*calls, tgt)
                ch, order, pos = sub, self.order(table, sub, st.dst), 0
                rules = ch.rules
                n = len(order)
        return out

    def dnat(self, table: str, chain: str, r: Rule, st: _St) -> _St:
        to = r.target_arg("--to-destination")
        if to is None or not to.value:
            raise self.fail(table, chain, r, "DNAT without --to-destination")
        text = to.value
        if text.startswith("["):
            host, _, port = text[1:].partition("]")
            port = port.lstrip(":")
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        else:
            host, port = text, ""
        if "-" in host or "-" in port:
            raise self.fail(table, chain, r, f"DNAT to a range {text!r} is not supported")
        try:
            family: int = _addr(host).version
        except ValueError:
            family = 0
        dport = parse_port(port) if port else st.dport
        if not family or dport is None:
            raise self.fail(table, chain, r, f"cannot read --to-destination {text!r}")
        pkt_family = 6 if ":" in self.pkt.dst else 4
        if family != pkt_family:
            raise self.fail(table, chain, r, f"DNAT of an IPv{pkt_family} packet to {text!r}")
        return replace(st, dst=host, dport=dport, dnat=f"{host}:{dport}")

    def hook(self, table: str, hook: str, states: list[_St]) -> tuple[list[_St], list[tuple[_St, str]]]:
        """Run one built-in chain; returns (packets that go on, packets finished with a verdict)."""
        ch = self.rs.chain(table, hook)
        if ch is None:
            return states, []
        policy = ch.policy or "ACCEPT"
        go: list[_St] = []
        done: list[tuple[_St, str]] = []
        for st in states:
            for s2, v in self.run_chain(table, hook, hook, st):
                if v is None:
                    if policy not in _TERMINAL:
                        raise TraceError(
                            f"{self.rs.source}: policy {policy} of {table}/{hook} is not supported"
                        )
                    if policy != "ACCEPT":
                        s2 = replace(s2, path=(*s2.path, f"{table}/{hook}:policy {policy}"))
                    v = policy
                if v == "ACCEPT":
                    go.append(s2)
                else:
                    done.append((s2, v))
        return go, done

    def run(self) -> list[tuple[_St, str]]:
        pkt = self.pkt
        start = _St(Fraction(1), pkt.dst, pkt.dport, 0, None, False, (), self.held)
        finished: list[tuple[_St, str]] = []

        def stage(table: str, hook: str, sts: list[_St]) -> list[_St]:
            go, done = self.hook(table, hook, sts)
            finished.extend(done)
            return go

        sts = [start]
        if pkt.from_local:
            for table in ("raw", "mangle", "nat", "filter"):
                sts = stage(table, "OUTPUT", sts)
            for table in ("mangle", "nat"):
                sts = stage(table, "POSTROUTING", sts)
            local = [s for s in sts if self.is_local(s.dst)]
            for table in ("mangle", "filter", "nat"):
                local = stage(table, "INPUT", local)
            finished.extend((s, "ACCEPT") for s in sts if not self.is_local(s.dst))
            finished.extend((s, "ACCEPT") for s in local)
            return finished
        for table in ("raw", "mangle", "nat"):
            sts = stage(table, "PREROUTING", sts)
        local = [s for s in sts if self.is_local(s.dst)]
        fwd = [s for s in sts if not self.is_local(s.dst)]
        for table in ("mangle", "filter", "nat"):
            local = stage(table, "INPUT", local)
        for table in ("mangle", "filter"):
            fwd = stage(table, "FORWARD", fwd)
        for table in ("mangle", "nat"):
            fwd = stage(table, "POSTROUTING", fwd)
        finished.extend((s, "ACCEPT") for s in local + fwd)
        return finished


def _mark_target(r: Rule, mark: int) -> int:
    args = r.target_args
    if len(args) != 1:
        raise _Unsupported("MARK needs exactly one of --set-xmark/--set-mark/--or-mark/--xor-mark/--and-mark")
    o = args[0]
    v, _, m = (o.value or "").partition("/")
    try:
        val = _int(v)
        msk = _int(m) if m else None
    except ValueError as exc:
        raise _Unsupported(f"cannot read MARK value {o.value!r}") from exc
    full = 0xFFFFFFFF
    if o.name == "--set-xmark":
        return ((mark & ~(full if msk is None else msk)) ^ val) & full
    if o.name == "--set-mark":
        return ((mark & ~(full if msk is None else msk)) | val) & full
    if o.name == "--or-mark" and msk is None:
        return mark | val
    if o.name == "--xor-mark" and msk is None:
        return mark ^ val
    if o.name == "--and-mark" and msk is None:
        return mark & val
    raise _Unsupported(f"unsupported MARK option {o.name} {o.value}")


def _build_index(ch: Chain) -> tuple[dict[str, list[int]], list[int]]:
    """Rules that can only match one destination IP (a plain ``-d IP[/32]``) by that IP; the rest."""
    by_dst: dict[str, list[int]] = {}
    generic: list[int] = []
    for i, r in enumerate(ch.rules):
        spec = r.spec
        ip: str | None = None
        if spec.startswith("-d "):
            tok = spec[3:].split(" ", 1)[0]
            if tok != "!":
                ip = tok
        else:
            d = r.basic("-d")
            if d is not None and not d.negated:
                ip = d.value
        if ip is not None:
            if ip.endswith("/32"):
                ip = ip[:-3]
            if "/" in ip or not _is_ipv4(ip):
                ip = None
        if ip is None:
            generic.append(i)
        else:
            by_dst.setdefault(ip, []).append(i)
    return by_dst, generic


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts
    )


def trace_iptables(
    ruleset: IptablesRuleset, packet: Packet, *, ipsets: Iterable[IpSet] | SetIndex | None = None
) -> TraceResult:
    """Exact outcome distribution of ``packet`` through ``ruleset`` (see the module doc); ``ipsets``:
    the node's captured sets, for ``-m set``; ``packet.affinity``: see :mod:`.affinity`."""
    sets = SetIndex.of(ipsets)

    def run(pkt: Packet, held: frozenset[Entry]) -> list[Branch]:
        return [
            (s.prob, s.dnat, s.masq, v, s.path, s.recent) for s, v in _Tracer(ruleset, pkt, sets, held).run()
        ]

    return run_with_affinity(packet, run)
