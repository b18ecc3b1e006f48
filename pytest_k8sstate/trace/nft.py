"""Trace a new connection's first packet through a parsed nftables ruleset (kube-proxy's ``ip kube-proxy``).

Netfilter path: a packet from outside runs the ``prerouting`` base chains (by priority), then —
depending on the (possibly DNATed) destination — ``input`` (a node-local address) or ``forward`` and
``postrouting``. A packet from a node-local address runs ``output``, ``postrouting`` and, for a local
destination, ``input``. Within each hook every base chain of the traced table(s) runs in priority
order; ``accept`` ends one base chain, ``drop``/``reject`` end the packet, falling off the end applies
the chain policy.

Evaluated: ``ip saddr``/``ip daddr`` (address, prefix, range, anonymous and named sets, ``!=``),
``tcp|udp|sctp|th dport/sport``, ``meta l4proto``, ``meta mark`` (with ``&``/``|``/``^``),
``ct state`` (the packet is NEW), ``fib saddr|daddr type`` (``Packet.local_ips``), concatenated set
lookups and verdict maps (``ip daddr . meta l4proto . th dport vmap @service-ips``), ``numgen random
mod N vmap {...}`` (each value exactly 1/N; ``inc`` mode is treated the same, as its long-run share;
computed over the map's entries, so ``mod 10**12`` costs what its entries cost; at most
:data:`MAX_BRANCHES` numgen branches per trace),
``jump``/``goto``/``return``/``continue``, ``accept``/``drop``/``reject``, ``dnat to IP[:PORT]``,
``dnat ip to numgen random mod N map { n : IP . PORT }`` (1/N each), ``ct status dnat``,
``masquerade``, ``meta mark set ...``, counters, logs and set updates (no effect on the verdict).
Anything else the packet reaches raises :class:`TraceError` naming the rule and the ruleset's source —
never a silent guess. A jump/goto to a chain already on the call path is a TraceError naming the loop.
A packet whose tests of its source answer like an earlier packet's reuses that walk (:mod:`.nft_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial
from typing import Any

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.nft import NftChain, NftRule, NftRuleset, NftSet, NftTable
from pytest_k8sstate.parse.numbers import parse_uint
from pytest_k8sstate.trace import Outcome, Packet, TraceResult, merge_outcomes
from pytest_k8sstate.trace.nft_classes import (
    READ_ADDR,
    READ_FIB,
    READ_OPAQUE,
    READ_PORT,
    READ_PORT_CMP,
    reuse_or_walk,
    rhs_texts,
)
from pytest_k8sstate.trace.nftvalues import (
    OTHER_IFACE,
    describe_iface,
    fib_type,
    hostport,
    iface_witnesses,
    ip,
    part_matches,
)
from pytest_k8sstate.trace.nftvalues import Unsupported as _Unsupported

__all__ = ["ALL_TABLES", "DEFAULT_TABLES", "MAX_BRANCHES", "trace_nft"]

DEFAULT_TABLES = None
"""``tables=None``: kube-proxy's table of the packet's family (``ip kube-proxy`` / ``ip6 kube-proxy``)."""
ALL_TABLES = "all"
"""``tables="all"``: every table the kernel runs for the packet (its family's and every ``inet`` table)."""
_MAX_DEPTH = 64
MAX_BRANCHES = 100_000
_FINAL = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT"}
_CTSTATES = ("new", "established", "related", "invalid", "untracked")
_NO_EFFECT = ("counter", "log", "limit", "quota")  # statements that never change a verdict
_IN_HOOKS = ("prerouting", "input", "forward")


@dataclass(slots=True)
class _St:
    """One path's state; never modified once built (not ``frozen``: a frozen dataclass's ``__init__``
    costs several times more, and a numgen map of 10,000 endpoints builds several per endpoint)."""

    prob: Fraction
    daddr: str
    dport: int
    mark: int = 0
    dnat: str | None = None
    masq: bool = False
    path: tuple[str, ...] = ()
    updates: frozenset[tuple[str, tuple[str, ...]]] = frozenset()
    """``(set name, key)`` added by ``update @set { ... }`` on this path (session affinity)."""


_NOMATCH = object()  # e.g. "tcp dport" on a UDP packet: the rule simply doesn't match
_Final = tuple[Outcome, tuple[str, ...], frozenset[tuple[str, tuple[str, ...]]]]


_PACKET_IFACE = {"iif": "in_iface", "oif": "out_iface"}
"""The nft key (``iif``/``oif``) → the Packet field holding that interface."""


class _Tracer:
    def __init__(
        self,
        ruleset: NftRuleset,
        tables: list[NftTable],
        packet: Packet,
        ifaces: dict[str, str | None],
    ) -> None:
        self.packet = packet
        self.ruleset = ruleset
        self.tables = tables
        self.src = packet.src
        self.v6 = ip(packet.src).version == 6
        self.local = packet.local_ips
        # a loopback source can only be this node's own (kube-proxy's localhost NodePorts)
        self.from_local = packet.from_local or ip(packet.src).is_loopback
        self.ctstate = packet.ctstate.lower()
        self.ifaces = ifaces  # "iif"/"oif" → the name this run assumes (None: the packet gave none)
        self.seen: dict[str, set[str]] = {
            "iif": set(),
            "oif": set(),
        }  # patterns compared with an assumed name
        self.branches = 0
        self.calls: list[str] = []  # chains on the current jump path (loop detection)
        self.hook = ""
        self.prior: frozenset[tuple[str, tuple[str, ...]]] = frozenset()
        self.dynamic: dict[int, frozenset[str]] = {}  # id(table) → its dynamic sets (see _dynamic_sets)
        self.src_reads: set[tuple[str, str]] = set()  # tests of the source (trace/nft_classes.py)
        self.src_hits = 0  # how often _value has read the source address/port

    # ------------------------------------------------------------------ flow
    def run(self) -> list[_Final]:
        """Every final state of the packet; for a returning client (``affinity="returning"``) the
        first connection is traced, and the follow-up traced once per set of affinity entries it left."""
        if self.packet.affinity != "returning":
            return self._run_once()
        groups: dict[frozenset[tuple[str, tuple[str, ...]]], Fraction] = {}
        for o, _, ups in self._run_once():
            groups[ups] = groups.get(ups, Fraction(0)) + o.probability
        out: list[_Final] = []
        for ups, prob in groups.items():
            self.prior = ups
            for o, path, ups2 in self._run_once():
                out.append((Outcome(o.probability * prob, o.dnat, o.masquerade, o.verdict), path, ups2))
        return out

    def _run_once(self) -> list[_Final]:
        p = self.packet
        st = _St(Fraction(1), p.dst, p.dport)
        finals: list[_Final] = []
        if self.from_local:
            active = self._hook("output", [st], finals)
            active = self._hook("postrouting", active, finals)
            local = [s for s in active if self._is_local(s.daddr)]
            active = [s for s in active if not self._is_local(s.daddr)] + self._hook("input", local, finals)
        else:
            active = self._hook("prerouting", [st], finals)
            local = [s for s in active if self._is_local(s.daddr)]
            fwd = [s for s in active if not self._is_local(s.daddr)]
            active = self._hook("input", local, finals)
            active += self._hook("postrouting", self._hook("forward", fwd, finals), finals)
        for s in active:
            finals.append((Outcome(s.prob, s.dnat, s.masq, "ACCEPT"), s.path, s.updates))
        return finals

    def _is_local(self, addr: str) -> bool:
        return addr in self.local or ip(addr).is_loopback

    def _iface(self, which: str, st: _St) -> str | None:
        """The interface name ``meta iifname``/``oifname`` sees in the current hook (None: no device)."""
        local_src = self.from_local
        if which == "iif":
            if self.hook in ("output",) or (local_src and self.hook == "postrouting"):
                return None  # a locally generated packet has no input device before it loops back
            if local_src:
                return "lo"  # input hook after the loopback
            name = self.ifaces["iif"]
        else:
            if self.hook in ("prerouting", "input"):
                return None
            if self._is_local(st.daddr):
                return "lo"
            name = self.ifaces["oif"]
        return name

    def _hook(self, hook: str, states: list[_St], finals: list[_Final]) -> list[_St]:
        chains = sorted(
            ((c.prio or 0, i, t, c) for i, (t, c) in enumerate(self._base_chains(hook))),
            key=lambda x: (x[0], x[1]),
        )
        self.hook = hook
        for _, _, table, chain in chains:
            if chain.type == "nat" and self.ctstate != "new":
                continue  # only a connection's first packet runs the nat chains
            nxt: list[_St] = []
            for s in states:
                for s2, ctl in self._run_chain(table, chain, s, 0):
                    if ctl == "return":
                        ctl = "drop" if (chain.policy or "accept") == "drop" else "accept"
                    if ctl == "accept":
                        nxt.append(s2)
                    else:
                        verdict: Any = _FINAL[ctl]
                        finals.append((Outcome(s2.prob, s2.dnat, s2.masq, verdict), s2.path, s2.updates))
            states = nxt
        return states

    def _base_chains(self, hook: str) -> list[tuple[NftTable, NftChain]]:
        key = repr(("trace.nft.base", [(t.family, t.name) for t in self.tables], hook))
        cached: list[tuple[NftTable, NftChain]] | None = self.ruleset.cache.get(key)
        if cached is None:
            cached = [(t, c) for t in self.tables for c in t.chains.values() if c.hook == hook]
            self.ruleset.cache[key] = cached
        return cached

    def _dynamic_sets(self, table: NftTable) -> frozenset[str]:
        """Sets the ruleset itself fills (``update``/``add @set``, or flag ``dynamic``): their captured
        elements belong to other clients, so only this packet's own updates (and, for a returning
        client, its first connection's) are members."""
        mine = self.dynamic.get(id(table))
        if mine is not None:
            return mine
        key = repr(("trace.nft.dynamic", table.family, table.name))
        cached: frozenset[str] | None = self.ruleset.cache.get(key)
        if cached is None:
            names = {n for n, s in table.sets.items() if "dynamic" in s.flags}
            for c in table.chains.values():
                for r in c.rules:
                    for x in r.expr:
                        v = x.get("set")
                        if isinstance(v, dict) and isinstance(v.get("set"), str):
                            names.add(v["set"].lstrip("@"))
            cached = frozenset(names)
            self.ruleset.cache[key] = cached
        self.dynamic[id(table)] = cached
        return cached

    # ------------------------------------------------------------------ chains and rules
    def _run_chain(self, table: NftTable, chain: NftChain, st: _St, depth: int) -> list[tuple[_St, str]]:
        src = self.ruleset.source
        if depth > _MAX_DEPTH:
            raise TraceError(
                f"chain calls nested deeper than {_MAX_DEPTH} at {table.family} {table.name}/{chain.name} "
                f"(source: {src})"
            )
        if chain.name in self.calls:
            loop = " -> ".join((*self.calls[self.calls.index(chain.name) :], chain.name))
            raise TraceError(
                f"jump loop {loop} in {table.family} {table.name}: chain calls would be nested deeper "
                f"than any limit (source: {src})"
            )
        self.calls.append(chain.name)
        try:
            return self._run_rules(table, chain, st, depth)
        finally:
            self.calls.pop()

    def _run_rules(self, table: NftTable, chain: NftChain, st: _St, depth: int) -> list[tuple[_St, str]]:
        active = [st]
        done: list[tuple[_St, str]] = []
        for rule in chain.rules:
            nxt: list[_St] = []
            for s in active:
                try:
                    res = self._run_exprs(table, chain, rule, 0, s, depth)
                except _Unsupported as exc:
                    raise TraceError(
                        f"cannot evaluate rule '{_short(rule.text)}' in {table.family} {table.name}/chain "
                        f"{chain.name} (handle {rule.handle}): {exc} (source: {self.ruleset.source})"
                    ) from None
                for s2, ctl in res:
                    (nxt.append(s2) if ctl == "next" else done.append((s2, ctl)))
            active = nxt
            if not active:
                break
        done.extend((s, "return") for s in active)
        return done

    def _step(self, table: NftTable, chain: NftChain, rule: NftRule, st: _St) -> _St:
        # the hottest copy of a state: built directly (dataclasses.replace costs twice as much)
        step = f"{table.name}/{chain.name}#{rule.handle}"
        return _St(st.prob, st.daddr, st.dport, st.mark, st.dnat, st.masq, (*st.path, step), st.updates)

    def _run_exprs(
        self, table: NftTable, chain: NftChain, rule: NftRule, i: int, st: _St, depth: int
    ) -> list[tuple[_St, str]]:
        exprs = rule.expr
        while i < len(exprs):
            ((k, v),) = exprs[i].items()
            i += 1
            if k == "match":
                if not self._match(v, st, table):
                    return [(st, "next")]
            elif k in ("counter", "log"):
                continue
            elif k in ("limit", "quota"):
                if all(next(iter(x)) in _NO_EFFECT for x in exprs[i:]):
                    return [(st, "next")]  # only counts/logs depend on it: no effect on the packet
                raise _Unsupported(f"'{k}' depends on the packet rate/volume, which a trace does not model")
            elif k == "xt":
                if isinstance(v, dict) and v.get("type") == "match" and v.get("name") == "comment":
                    continue  # iptables-nft's "-m comment": no effect
                if all(next(iter(x)) in _NO_EFFECT for x in exprs[i:]) and _xt_kind(v) == "match":
                    return [(st, "next")]
                raise _Unsupported(
                    f"iptables-nft translated expression {_xt_text(v)}: 'nft -j' cannot show its arguments; "
                    "trace this table from iptables-save (trace_iptables) instead"
                )
            elif k == "set" and isinstance(v, dict) and v.get("op") in ("update", "add"):
                st = self._set_update(v, st)
            elif k == "mangle":
                st = self._mangle(v, st)
            elif k in ("accept", "drop", "return", "continue") and v is None:
                return self._verdict(table, chain, rule, k, None, st, depth)
            elif k == "reject":
                return [(self._step(table, chain, rule, st), "reject")]
            elif k in ("jump", "goto") and isinstance(v, dict) and isinstance(v.get("target"), str):
                return self._verdict(table, chain, rule, k, v["target"], st, depth)
            elif k == "vmap":
                return self._vmap(table, chain, rule, v, st, depth)
            elif k == "dnat":
                return [(s2, "accept") for s2 in self._dnat(v, self._step(table, chain, rule, st))]
            elif k in ("masquerade", "snat"):
                s2 = self._step(table, chain, rule, st)
                return [
                    (_St(s2.prob, s2.daddr, s2.dport, s2.mark, s2.dnat, True, s2.path, s2.updates), "accept")
                ]
            else:
                raise _Unsupported(f"unsupported statement {k!r}")
        return [(st, "next")]

    def _verdict(
        self,
        table: NftTable,
        chain: NftChain,
        rule: NftRule,
        kind: str,
        target: str | None,
        st: _St,
        depth: int,
    ) -> list[tuple[_St, str]]:
        st = self._step(table, chain, rule, st)
        if kind in ("accept", "drop", "reject"):
            return [(st, kind)]
        if kind == "return":
            return [(st, "return")]
        if kind == "continue":
            return [(st, "next")]
        assert target is not None
        sub = table.chains.get(target)
        if sub is None:
            raise _Unsupported(
                f"{kind} to chain {target!r}, which is not in table {table.family} {table.name}"
            )
        back = "next" if kind == "jump" else "return"
        return [(s, back if c == "return" else c) for s, c in self._run_chain(table, sub, st, depth + 1)]

    def _verdict_text(
        self, table: NftTable, chain: NftChain, rule: NftRule, text: str, st: _St, depth: int
    ) -> list[tuple[_St, str]]:
        word, _, target = text.partition(" ")
        if word in ("jump", "goto") and target:
            return self._verdict(table, chain, rule, word, target, st, depth)
        if word in ("accept", "drop", "return", "continue", "reject") and not target:
            return self._verdict(table, chain, rule, word, None, st, depth)
        raise _Unsupported(f"unsupported verdict {text!r}")

    # ------------------------------------------------------------------ statements
    def _mangle(self, v: Any, st: _St) -> _St:
        if isinstance(v, dict) and v.get("key") == {"meta": {"key": "mark"}}:
            val = self._int_value(v.get("value"), st)
            mark = val & 0xFFFFFFFF
            return _St(st.prob, st.daddr, st.dport, mark, st.dnat, st.masq, st.path, st.updates)
        raise _Unsupported("only 'meta mark set ...' is supported")

    def _int_value(self, e: Any, st: _St) -> int:
        if isinstance(e, int) and not isinstance(e, bool):
            return e
        if e == {"meta": {"key": "mark"}}:
            return st.mark
        if isinstance(e, dict) and len(e) == 1:
            ((op, args),) = e.items()
            if op in ("&", "|", "^") and isinstance(args, list) and len(args) == 2:
                a, b = self._int_value(args[0], st), self._int_value(args[1], st)
                return a & b if op == "&" else (a | b if op == "|" else a ^ b)
        raise _Unsupported(f"cannot compute integer value of {e!r}")

    def _dnat(self, v: Any, st: _St) -> list[_St]:
        """``dnat to IP[:PORT]`` → one state; ``dnat ip to numgen random mod N map { n : IP . PORT }``
        (kube-proxy ≥ 1.33 puts the endpoints straight into the service chain) → N states, 1/N each."""
        if not isinstance(v, dict):
            raise _Unsupported("dnat without arguments")
        addr, port = v.get("addr"), v.get("port")
        if isinstance(addr, dict) and isinstance(addr.get("map"), dict):
            return self._dnat_map(addr["map"], port, st)
        if not isinstance(addr, str):
            raise _Unsupported(f"dnat to a computed address {addr!r} is not supported")
        return [self._dnat_to(addr, port, st)]

    def _dnat_to(self, addr: Any, port: Any, st: _St, prob: Fraction | None = None) -> _St:
        if not isinstance(addr, str):
            raise _Unsupported(f"dnat to non-literal address {addr!r}")
        try:
            a = ip(addr)
        except ValueError:
            raise _Unsupported(f"dnat to {addr!r}, which is not an IP address") from None
        if (a.version == 6) != self.v6:
            raise _Unsupported(f"dnat of an IPv{6 if self.v6 else 4} packet to {addr}")
        if port is None:
            new_port = st.dport
        elif isinstance(port, int) and not isinstance(port, bool):
            new_port = port
        else:
            raise _Unsupported(f"dnat to computed port {port!r}")
        daddr = str(a)
        p = st.prob if prob is None else prob
        return _St(p, daddr, new_port, st.mark, hostport(daddr, new_port), st.masq, st.path, st.updates)

    def _dnat_map(self, m: dict[str, Any], port: Any, st: _St) -> list[_St]:
        ng, data = m.get("key"), m.get("data")
        if not (isinstance(ng, dict) and isinstance(ng.get("numgen"), dict)):
            raise _Unsupported(f"dnat through a map keyed by {ng!r} (only numgen is supported)")
        mod, offset = _numgen_args(ng["numgen"])
        if not (isinstance(data, dict) and isinstance(data.get("set"), list)):
            raise _Unsupported("dnat map data is not an anonymous map")
        targets: dict[int, Any] = {}
        for it in data["set"]:
            if not (isinstance(it, list) and len(it) == 2 and _is_int(it[0])):
                raise _Unsupported(f"dnat map element {it!r}")
            targets[it[0]] = it[1]
        in_range = sorted(n for n in targets if offset <= n < offset + mod)
        if len(in_range) < mod:  # every value must have a target: name the first that has none
            n = offset
            while n in targets:
                n += 1
            raise _Unsupported(f"numgen value {n} has no dnat target")
        self._count_branches(mod)
        share = Fraction(1, mod)
        out: list[_St] = []
        for n in in_range:
            target = targets[n]
            if (
                isinstance(target, dict)
                and isinstance(target.get("concat"), list)
                and len(target["concat"]) == 2
            ):
                t_addr, t_port = target["concat"]
            else:
                t_addr, t_port = target, port
            out.append(self._dnat_to(t_addr, t_port, st, st.prob * share))
        return out

    # ------------------------------------------------------------------ maps
    def _vmap(
        self, table: NftTable, chain: NftChain, rule: NftRule, v: Any, st: _St, depth: int
    ) -> list[tuple[_St, str]]:
        if not isinstance(v, dict) or "key" not in v or "data" not in v:
            raise _Unsupported("malformed vmap")
        key, data = v["key"], v["data"]
        if isinstance(key, dict) and "numgen" in key:
            return self._numgen_vmap(table, chain, rule, key["numgen"], data, st, depth)
        hits = self.src_hits
        value = self._value(key, st)
        if value is _NOMATCH:
            return [(st, "next")]
        if self.src_hits != hits:
            self.src_reads.add((READ_OPAQUE, "map keyed by the source"))
        if _has_iface(value):
            self._note_ifaces(key, data, table)
        verdict: str | None
        if isinstance(data, str) and data.startswith("@"):
            s = self._named(table, data[1:])
            elem = self._lookup(s, value)
            verdict = elem.value if elem is not None else None
        elif isinstance(data, dict) and isinstance(data.get("set"), list):
            verdict = self._anon_vmap(data["set"], value)
        else:
            raise _Unsupported("vmap data is neither @map nor an anonymous map")
        if verdict is None:
            return [(st, "next")]  # no element: the rule doesn't match
        return self._verdict_text(table, chain, rule, verdict, st, depth)

    def _anon_vmap(self, items: list[Any], value: Any) -> str | None:
        from pytest_k8sstate.parse.nft import _parse_element

        for it in items:
            try:
                e = _parse_element(it, True)
            except ValueError:
                raise _Unsupported(f"anonymous map element {it!r}") from None
            if self._key_matches(e.key, value):
                return e.value
        return None

    def _numgen_vmap(
        self, table: NftTable, chain: NftChain, rule: NftRule, ng: Any, data: Any, st: _St, depth: int
    ) -> list[tuple[_St, str]]:
        mod, offset = _numgen_args(ng)
        # Arithmetic over the map's entries, never one step per value (mod may be 10^12): each
        # value with a verdict gets 1/mod, the values without one continue as one state.
        entries: dict[int, str | None] = {}
        if isinstance(data, dict) and isinstance(data.get("set"), list):
            for it in data["set"]:
                if not (isinstance(it, list) and len(it) == 2 and _is_int(it[0])):
                    raise _Unsupported(f"numgen map element {it!r}")
                if offset <= it[0] < offset + mod:
                    entries[it[0]] = _verdict_of(it[1])
        elif isinstance(data, str) and data.startswith("@"):
            for key, e in self._named(table, data[1:]).exact_index().items():
                n = parse_uint(key[0], hex_ok=False) if len(key) == 1 else None
                if n is not None and str(n) == key[0] and offset <= n < offset + mod:
                    entries[n] = e.value
        else:
            raise _Unsupported("numgen vmap data")
        hits = sorted(n for n, v in entries.items() if v is not None)
        self._count_branches(len(hits) + 1)
        branch = _St(
            st.prob * Fraction(1, mod), st.daddr, st.dport, st.mark, st.dnat, st.masq, st.path, st.updates
        )
        out: list[tuple[_St, str]] = []
        for n in hits:  # every branch starts from the same state (states are never modified)
            verdict = entries[n]
            assert verdict is not None
            out.extend(self._verdict_text(table, chain, rule, verdict, branch, depth))
        if len(hits) < mod:
            out.append((replace(st, prob=st.prob * Fraction(mod - len(hits), mod)), "next"))
        return out

    def _count_branches(self, n: int) -> None:
        self.branches += n
        if self.branches > MAX_BRANCHES:
            raise TraceError(f"{self.ruleset.source}: more than {MAX_BRANCHES} numgen branches in one trace")

    def _named(self, table: NftTable, name: str) -> NftSet:
        s = table.lookup_set(name)
        if s is None:
            raise _Unsupported(f"set or map @{name} is not in table {table.family} {table.name}")
        return s

    # ------------------------------------------------------------------ matching
    def _match(self, v: Any, st: _St, table: NftTable) -> bool:
        if not isinstance(v, dict) or "left" not in v or "right" not in v:
            raise _Unsupported("malformed match")
        op = v.get("op", "==")
        hits = self.src_hits
        value = self._value(v["left"], st)
        if value is _NOMATCH:
            return False
        right = v["right"]
        if self.src_hits != hits:
            self._note_src(value, op, right)
        if _has_iface(value):
            self._note_ifaces(v["left"], right, table)
        if op in ("<", ">", "<=", ">="):
            if not (isinstance(value, tuple) and value[0] in ("port", "int") and isinstance(right, int)):
                raise _Unsupported(f"comparison {op} on {v['left']!r}")
            n = value[1]
            return bool({"<": n < right, ">": n > right, "<=": n <= right, ">=": n >= right}[op])
        if op not in ("==", "!=", "in"):
            raise _Unsupported(f"operator {op!r}")
        if isinstance(right, str) and right.startswith("@"):
            if right[1:] in self._dynamic_sets(table):
                key = (right[1:], _key(value))
                hit = key in st.updates or key in self.prior
            else:
                hit = self._lookup(self._named(table, right[1:]), value) is not None
        else:
            hit = self._rhs_matches(right, value)
        return hit if op != "!=" else not hit

    def _value(self, e: Any, st: _St) -> Any:
        """Packet field → ``(kind, value)``; a concatenation → a list of those; or _NOMATCH."""
        p = self.packet
        if isinstance(e, dict) and len(e) == 1:
            ((k, v),) = e.items()
            if k == "payload" and isinstance(v, dict):
                proto, fld = v.get("protocol"), v.get("field")
                if proto in ("ip", "ip6") and fld in ("saddr", "daddr", "protocol", "nexthdr"):
                    if (proto == "ip6") != self.v6:
                        return _NOMATCH  # an inet table's "ip saddr" on an IPv6 packet, or the reverse
                    if fld in ("protocol", "nexthdr"):
                        return ("proto", p.proto)
                    if fld == "saddr":
                        self.src_hits += 1
                        return ("addr", self.src)
                    return ("addr", st.daddr)
                if proto in ("tcp", "udp", "sctp", "th") and fld in ("dport", "sport"):
                    if proto != "th" and proto != p.proto:
                        return _NOMATCH
                    if fld == "sport":
                        self.src_hits += 1
                        return ("port", p.sport)
                    return ("port", st.dport)
            elif k == "meta" and isinstance(v, dict):
                key = v.get("key")
                if key == "l4proto":
                    return ("proto", p.proto)
                if key == "mark":
                    return ("int", st.mark)
                if key == "nfproto":
                    return ("name", "ipv6" if self.v6 else "ipv4")
                if key == "protocol":
                    return ("name", "ip6" if self.v6 else "ip")
                if key in ("iifname", "oifname", "iif", "oif"):
                    which = key[:3]
                    name = self._iface(which, st)
                    return _NOMATCH if name is None else ("iface", name)
            elif k == "ct" and isinstance(v, dict) and v.get("key") == "state" and "dir" not in v:
                return ("ctstate", self.ctstate)
            elif k == "ct" and isinstance(v, dict) and v.get("key") == "status" and "dir" not in v:
                if self.ctstate != "new":
                    raise _Unsupported(
                        "'ct status' of a non-NEW packet depends on how its connection was NATed; "
                        "trace the connection's first packet (ctstate NEW) instead"
                    )
                # a new connection: its only status bit that matters here is "dnat", set once DNATed
                return ("ctstatus", frozenset({"dnat"}) if st.dnat is not None else frozenset())
            elif k == "fib" and isinstance(v, dict) and v.get("result") == "type":
                flags = v.get("flags")
                flags = [flags] if isinstance(flags, str) else flags
                if flags in (["daddr"], ["saddr"]):
                    ip = st.daddr if flags == ["daddr"] else self.src
                    if flags == ["saddr"]:
                        self.src_reads.add((READ_FIB, ""))  # its whole answer: replayed as is
                    return ("fibtype", fib_type(ip, self._is_local(ip)))
            elif k in ("&", "|", "^"):
                return ("int", self._int_value(e, st))
            elif k == "concat" and isinstance(v, list):
                parts = [self._value(x, st) for x in v]
                return _NOMATCH if any(x is _NOMATCH for x in parts) else parts
        raise _Unsupported(f"cannot evaluate expression {e!r}")

    def _note_src(self, value: Any, op: str, right: Any) -> None:
        """Record the test of the source ``_match`` is about to make (see :mod:`.nft_classes`)."""
        texts = None if isinstance(value, list) else rhs_texts(right)
        if op in ("<", ">", "<=", ">=") and isinstance(value, tuple) and value[0] == "port":
            self.src_reads.add((READ_PORT_CMP, f"{op}{right}"))
        elif op in ("==", "!=", "in") and texts is not None and value[0] in ("addr", "port"):
            kind = READ_ADDR if value[0] == "addr" else READ_PORT
            self.src_reads.update((kind, t) for t in texts)
        else:
            self.src_reads.add((READ_OPAQUE, f"{op} {right!r}"[:80]))

    def _note_ifaces(self, left: Any, right: Any, table: NftTable) -> None:
        """Remember the interface names/patterns ``right`` compares an interface with (for the
        interface worlds of :func:`trace_nft`)."""
        from pytest_k8sstate.parse.nft import render_expr

        parts = left["concat"] if isinstance(left, dict) and isinstance(left.get("concat"), list) else [left]
        n = len(parts)
        for idx, part in enumerate(parts):
            meta = part.get("meta") if isinstance(part, dict) else None
            key = meta.get("key") if isinstance(meta, dict) else None
            if key not in ("iifname", "oifname", "iif", "oif"):
                continue
            which = key[:3]
            if getattr(self.packet, _PACKET_IFACE[which]) is not None:
                continue
            texts: list[str] = []
            if isinstance(right, str) and right.startswith("@"):
                texts = [e.key[idx] for e in self._named(table, right[1:]).elements if len(e.key) == n]
            else:
                items = (
                    right["set"] if isinstance(right, dict) and isinstance(right.get("set"), list) else right
                )
                for it in items if isinstance(items, list) else [items]:
                    k = it[0] if isinstance(it, list) and len(it) == 2 else it
                    if isinstance(k, dict) and isinstance(k.get("elem"), dict):
                        k = k["elem"].get("val")
                    if n > 1:
                        ks = k.get("concat") if isinstance(k, dict) else None
                        if isinstance(ks, list) and len(ks) == n:
                            texts.append(render_expr(ks[idx]))
                    else:
                        texts.append(render_expr(k))
            self.seen[which].update(texts)

    def _set_update(self, v: dict[str, Any], st: _St) -> _St:
        """``update @affinity-… { ip saddr }``: remember the key on this path (see :meth:`_dynamic_sets`)."""
        name, elem = v.get("set"), v.get("elem")
        if isinstance(elem, dict) and isinstance(elem.get("elem"), dict) and "val" in elem["elem"]:
            elem = elem["elem"]["val"]  # { ip saddr timeout 3h }
        if not isinstance(name, str):
            raise _Unsupported(f"set update of {name!r}")
        hits = self.src_hits
        value = self._value(elem, st)
        if value is _NOMATCH:
            return st
        if self.src_hits != hits:
            self.src_reads.add((READ_OPAQUE, "set update keyed by the source"))
        return replace(st, updates=st.updates | {(name.lstrip("@"), _key(value))})

    def _rhs_matches(self, right: Any, value: Any) -> bool:
        if isinstance(right, dict) and len(right) == 1 and isinstance(right.get("set"), list):
            return any(self._rhs_matches(x, value) for x in right["set"])
        if isinstance(right, list) and not isinstance(value, list):
            return any(self._rhs_matches(x, value) for x in right)
        if isinstance(value, list):
            if isinstance(right, dict) and isinstance(right.get("concat"), list):
                parts = right["concat"]
                return len(parts) == len(value) and all(
                    self._rhs_matches(a, b) for a, b in zip(parts, value, strict=True)
                )
            raise _Unsupported(f"cannot compare a concatenation with {right!r}")
        if isinstance(right, dict) and not (len(right) == 1 and next(iter(right)) in ("prefix", "range")):
            raise _Unsupported(f"cannot compare with {right!r}")
        from pytest_k8sstate.parse.nft import render_expr

        return part_matches(value, render_expr(right))

    def _lookup(self, s: NftSet, value: Any) -> Any:
        """The element of ``s`` matching ``value`` (exact index first, then prefixes/ranges), or None."""
        key = _key(value)
        idx = s.exact_index()
        if key in idx:
            return idx[key]
        for e in s.nonexact():
            if self._key_matches(e.key, value):
                return e
        return None

    def _key_matches(self, key: tuple[str, ...], value: Any) -> bool:
        values = value if isinstance(value, list) else [value]
        if len(key) != len(values):
            return False
        return all(part_matches(v, k) for v, k in zip(values, key, strict=True))


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _numgen_args(ng: Any) -> tuple[int, int]:
    """``(mod, offset)`` of a numgen expression: integers, mod ≥ 1, offset ≥ 0."""
    if not isinstance(ng, dict) or ng.get("mode") not in ("random", "inc"):
        raise _Unsupported(f"numgen {ng!r} (only modes random and inc)")
    mod: Any = ng.get("mod")
    offset: Any = ng.get("offset", 0)
    offset = 0 if offset is None else offset
    if not (_is_int(mod) and _is_int(offset) and mod > 0 and offset >= 0):
        raise _Unsupported(f"numgen mod {mod!r} offset {offset!r} (integers, mod at least 1)")
    return int(mod), int(offset)


def _verdict_of(x: Any) -> str | None:
    if x is None:
        return None
    from pytest_k8sstate.parse.nft import render_expr

    return render_expr(x)


def _key(value: Any) -> tuple[str, ...]:
    """A packet value as a set key (the canonical text of each concatenated part)."""
    values = value if isinstance(value, list) else [value]
    return tuple(str(v[1]) for v in values)


def _has_iface(value: Any) -> bool:
    if type(value) is tuple:
        return bool(value[0] == "iface")
    return any(v[0] == "iface" for v in value)


def _xt_kind(v: Any) -> str:
    return str(v.get("type")) if isinstance(v, dict) else "?"


def _xt_text(v: Any) -> str:
    if not isinstance(v, dict):
        return f"xt {v!r}"
    return f"xt {v.get('type')} {v.get('name')!r}"


def _select_tables(
    ruleset: NftRuleset, tables: Sequence[tuple[str, str]] | str | None, v6: bool
) -> list[NftTable]:
    fam = "ip6" if v6 else "ip"
    have = ", ".join(f"{f} {n}" for f, n in ruleset.tables) or "none"
    if tables is None:
        tables = [(fam, "kube-proxy")]
    elif tables == ALL_TABLES:
        _refuse_omitted(ruleset, [t for t in ruleset.omitted if t[0] in (fam, "inet")])
        out = [t for t in ruleset.tables.values() if t.family in (fam, "inet")]
        if not out:
            raise TraceError(f"no {fam} or inet table in {ruleset.source} (tables: {have})")
        return out
    elif isinstance(tables, str):
        raise TraceError(f"tables={tables!r}: give (family, name) pairs, None or {ALL_TABLES!r}")
    _refuse_omitted(ruleset, [(f, n) for f, n in tables if (f, n) in ruleset.omitted])
    out = []
    for f, n in tables:
        t = ruleset.table(f, n)
        if t is None:
            hint = " is kube-proxy running in nftables mode on this node?" if n == "kube-proxy" else ""
            raise TraceError(f"no table {f} {n} in {ruleset.source} (tables: {have});{hint}".rstrip(";"))
        if f in (fam, "inet"):
            out.append(t)
    if not out:
        given = ", ".join(f"{f} {n}" for f, n in tables)
        raise TraceError(
            f"none of the tables {given} sees an IPv{6 if v6 else 4} packet (the kernel runs {fam} and inet "
            f"tables for it); tables in {ruleset.source}: {have}"
        )
    return out


def _refuse_omitted(ruleset: NftRuleset, asked: Sequence[tuple[str, str]]) -> None:
    if asked:
        names = ", ".join(f"{f} {n}" for f, n in asked)
        raise TraceError(
            f"{ruleset.source}: the tables {names} are iptables-nft's and were captured as the node's "
            "iptables part only (a large ruleset; node/nftomit.py): trace them with trace_iptables"
        )


def _check_packet(packet: Packet) -> Packet:
    """Validate the packet's fields; its addresses in canonical form (as nft prints them)."""
    try:
        src, dst = ip(packet.src), ip(packet.dst)
        local = frozenset(str(ip(x)) for x in packet.local_ips)
    except ValueError as exc:
        raise TraceError(f"packet: {exc}") from None
    if src.version != dst.version:
        raise TraceError(
            f"packet: source {packet.src} and destination {packet.dst} are of different IP families"
        )
    if packet.ctstate.lower() not in _CTSTATES:
        raise TraceError(
            f"packet: ctstate {packet.ctstate!r} is not one of {', '.join(s.upper() for s in _CTSTATES)}"
        )
    if packet.affinity not in ("new", "returning"):
        raise TraceError(f"packet: affinity {packet.affinity!r} is not 'new' or 'returning'")
    if str(src) == packet.src and str(dst) == packet.dst and local == packet.local_ips:
        return packet
    return replace(packet, src=str(src), dst=str(dst), local_ips=local)


_MAX_WORLDS = 64
_MAX_LISTED = 16


def _describe(outcomes: tuple[Outcome, ...]) -> str:
    parts = []
    for o in outcomes:
        s = o.verdict + (f" to {o.dnat}" if o.dnat else "") + (" masqueraded" if o.masquerade else "")
        parts.append(s if o.probability == 1 else f"{s} ({o.probability})")
    return "; ".join(parts)


def trace_nft(
    ruleset: NftRuleset, packet: Packet, *, tables: Sequence[tuple[str, str]] | str | None = DEFAULT_TABLES
) -> TraceResult:
    """Trace ``packet`` through the base chains of ``tables``.

    ``tables``: None (default) — kube-proxy's table of the packet's family (``ip kube-proxy`` for
    IPv4, ``ip6 kube-proxy`` for IPv6); ``"all"`` — every ``ip``/``ip6`` table of the packet's family
    and every ``inet`` table; or ``(family, name)`` pairs (each must exist; those of the other family
    are skipped, as the kernel does). iptables-nft's tables hold ``xt`` expressions whose arguments
    ``nft -j`` cannot show: trace those with :func:`pytest_k8sstate.trace.iptables.trace_iptables`.

    When the packet gives no ``in_iface``/``out_iface`` and a rule it reaches matches on an interface
    name, the trace is repeated for each distinguishable interface (each name the rules mention, another name
    matching each wildcard, any other name); if the answers differ, a TraceError lists them.
    """
    given, packet = packet, _check_packet(packet)
    tabs = _select_tables(ruleset, tables, ip(packet.src).version == 6)
    extra = tuple((t.family, t.name) for t in tabs)  # what the walk depends on beyond the packet
    walk = partial(_walk, ruleset, tabs, packet, given)
    return reuse_or_walk(ruleset.cache, packet, given, extra, walk)  # trace/nft_classes.py


def _walk(
    ruleset: NftRuleset, tabs: list[NftTable], packet: Packet, given: Packet, reads: set[tuple[str, str]]
) -> TraceResult:
    unknown = [w for w, v in (("iif", packet.in_iface), ("oif", packet.out_iface)) if v is None]
    patterns: dict[str, set[str]] = {"iif": set(), "oif": set()}
    results: dict[tuple[str | None, str | None], list[_Final]] = {}
    todo: list[tuple[str | None, str | None]] = [
        (
            packet.in_iface if packet.in_iface is not None else OTHER_IFACE,
            packet.out_iface if packet.out_iface is not None else OTHER_IFACE,
        )
    ]
    while todo:
        world = todo.pop(0)
        if world in results:
            continue
        if len(results) >= _MAX_WORLDS:
            raise TraceError(
                f"{ruleset.source}: the rules match more than {_MAX_WORLDS} interface combinations; "
                "give the packet's interfaces (Packet(in_iface=..., out_iface=...))"
            )
        tr = _Tracer(ruleset, tabs, packet, {"iif": world[0], "oif": world[1]})
        tr.src_reads = reads
        results[world] = tr.run()
        if any(not tr.seen[w] <= patterns[w] for w in unknown):
            for w in unknown:
                patterns[w] |= tr.seen[w]
            iifs = iface_witnesses(patterns["iif"]) if "iif" in unknown else [packet.in_iface]
            oifs = iface_witnesses(patterns["oif"]) if "oif" in unknown else [packet.out_iface]
            todo = [(i, o) for i in iifs for o in oifs if (i, o) not in results]
    merged = {w: merge_outcomes((o, path) for o, path, _ in finals) for w, finals in results.items()}
    distinct = {m[0] for m in merged.values()}
    first = next(iter(merged.values()))
    if len(distinct) > 1:
        lines = []
        for (i, o), (outs, _) in list(merged.items())[:_MAX_LISTED]:
            cond = " and ".join(
                f"{w} {describe_iface(n)}"
                for w, n in (("iif", i), ("oif", o))
                if w in unknown and n is not None
            )
            lines.append(f"{cond}: {_describe(outs)}")
        if len(merged) > _MAX_LISTED:
            lines.append(f"... ({len(merged) - _MAX_LISTED} more)")
        raise TraceError(
            f"the answer depends on the packet's {'/'.join(unknown)} interface, which it does not give "
            f"(rules in {ruleset.source} match interface names); "
            "trace with Packet(in_iface=..., out_iface=...):\n  " + "\n  ".join(lines)
        )
    return TraceResult(given, first[0], first[1])
