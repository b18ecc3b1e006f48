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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.nft import NftChain, NftRule, NftRuleset, NftSet, NftTable
from pytest_k8sstate.parse.numbers import parse_uint
from pytest_k8sstate.trace import Outcome, Packet, TraceResult, merge_outcomes

__all__ = ["DEFAULT_TABLES", "MAX_BRANCHES", "trace_nft"]

DEFAULT_TABLES: tuple[tuple[str, str], ...] = (("ip", "kube-proxy"),)
_MAX_DEPTH = 64
MAX_BRANCHES = 100_000
_PROTO_NUM = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_FINAL = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT"}


@dataclass(frozen=True)
class _St:
    prob: Fraction
    daddr: str
    dport: int
    mark: int = 0
    dnat: str | None = None
    masq: bool = False
    path: tuple[str, ...] = ()


class _Unsupported(Exception):
    pass


_NOMATCH = object()  # e.g. "tcp dport" on a UDP packet: the rule simply doesn't match


class _Tracer:
    def __init__(self, ruleset: NftRuleset, tables: Sequence[tuple[str, str]], packet: Packet) -> None:
        self.packet = packet
        self.ruleset = ruleset
        self.branches = 0
        self.calls: list[str] = []  # chains on the current jump path (loop detection)
        self.tables: list[NftTable] = []
        for fam, name in tables:
            t = ruleset.table(fam, name)
            if t is None:
                have = ", ".join(f"{f} {n}" for f, n in ruleset.tables) or "none"
                raise TraceError(
                    f"no table {fam} {name} in {ruleset.source} (tables: {have}); is kube-proxy running in "
                    "nftables mode on this node?"
                )
            self.tables.append(t)

    # ------------------------------------------------------------------ flow
    def run(self) -> TraceResult:
        p = self.packet
        st = _St(Fraction(1), p.dst, p.dport)
        finals: list[tuple[Outcome, tuple[str, ...]]] = []
        if p.from_local:
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
            finals.append((Outcome(s.prob, s.dnat, s.masq, "ACCEPT"), s.path))
        outcomes, paths = merge_outcomes(finals)
        return TraceResult(p, outcomes, paths)

    def _is_local(self, ip: str) -> bool:
        return ip in self.packet.local_ips or ipaddress.IPv4Address(ip) in _LOOPBACK

    def _hook(self, hook: str, states: list[_St], finals: list[tuple[Outcome, tuple[str, ...]]]) -> list[_St]:
        chains = sorted(
            ((c.prio or 0, i, t, c) for i, (t, c) in enumerate(self._base_chains(hook))),
            key=lambda x: (x[0], x[1]),
        )
        for _, _, table, chain in chains:
            nxt: list[_St] = []
            for s in states:
                for s2, ctl in self._run_chain(table, chain, s, 0):
                    if ctl == "return":
                        ctl = "drop" if (chain.policy or "accept") == "drop" else "accept"
                    if ctl == "accept":
                        nxt.append(s2)
                    else:
                        finals.append((Outcome(s2.prob, s2.dnat, s2.masq, _FINAL[ctl]), s2.path))  # type: ignore[arg-type]
            states = nxt
        return states

    def _base_chains(self, hook: str) -> list[tuple[NftTable, NftChain]]:
        key = repr(("trace.nft.base", [(t.family, t.name) for t in self.tables], hook))
        cached: list[tuple[NftTable, NftChain]] | None = self.ruleset.cache.get(key)
        if cached is None:
            cached = [(t, c) for t in self.tables for c in t.chains.values() if c.hook == hook]
            self.ruleset.cache[key] = cached
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
        return replace(st, path=(*st.path, f"{table.name}/{chain.name}#{rule.handle}"))

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
            elif k == "set" and isinstance(v, dict) and v.get("op") in ("update", "add"):
                continue  # dynamic set updates (session affinity) don't change this packet's verdict
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
            elif k == "masquerade":
                return [(replace(self._step(table, chain, rule, st), masq=True), "accept")]
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
            return replace(st, mark=val & 0xFFFFFFFF)
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
            ipaddress.IPv4Address(addr)
        except ValueError:
            raise _Unsupported(f"dnat to non-IPv4 address {addr!r}") from None
        if port is None:
            new_port = st.dport
        elif isinstance(port, int) and not isinstance(port, bool):
            new_port = port
        else:
            raise _Unsupported(f"dnat to computed port {port!r}")
        return replace(
            st, daddr=addr, dport=new_port, dnat=f"{addr}:{new_port}", prob=st.prob if prob is None else prob
        )

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
        value = self._value(key, st)
        if value is _NOMATCH:
            return [(st, "next")]
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
        share = Fraction(1, mod)
        out: list[tuple[_St, str]] = []
        for n in hits:
            verdict = entries[n]
            assert verdict is not None
            out.extend(
                self._verdict_text(table, chain, rule, verdict, replace(st, prob=st.prob * share), depth)
            )
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
        value = self._value(v["left"], st)
        if value is _NOMATCH:
            return False
        right = v["right"]
        if op in ("<", ">", "<=", ">="):
            if not (isinstance(value, tuple) and value[0] in ("port", "int") and isinstance(right, int)):
                raise _Unsupported(f"comparison {op} on {v['left']!r}")
            n = value[1]
            return bool({"<": n < right, ">": n > right, "<=": n <= right, ">=": n >= right}[op])
        if op not in ("==", "!=", "in"):
            raise _Unsupported(f"operator {op!r}")
        if isinstance(right, str) and right.startswith("@"):
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
                if proto == "ip" and fld == "saddr":
                    return ("addr", p.src)
                if proto == "ip" and fld == "daddr":
                    return ("addr", st.daddr)
                if proto in ("tcp", "udp", "sctp", "th") and fld in ("dport", "sport"):
                    if proto != "th" and proto != p.proto:
                        return _NOMATCH
                    return ("port", st.dport if fld == "dport" else p.sport)
            elif k == "meta" and isinstance(v, dict):
                if v.get("key") == "l4proto":
                    return ("proto", p.proto)
                if v.get("key") == "mark":
                    return ("int", st.mark)
            elif k == "ct" and isinstance(v, dict) and v.get("key") == "state" and "dir" not in v:
                return ("ctstate", "new")
            elif k == "ct" and isinstance(v, dict) and v.get("key") == "status" and "dir" not in v:
                # a new connection: its only status bit that matters here is "dnat", set once DNATed
                return ("ctstatus", frozenset({"dnat"}) if st.dnat is not None else frozenset())
            elif k == "fib" and isinstance(v, dict) and v.get("result") == "type":
                flags = v.get("flags")
                flags = [flags] if isinstance(flags, str) else flags
                if flags == ["daddr"]:
                    return ("fibtype", "local" if self._is_local(st.daddr) else "unicast")
                if flags == ["saddr"]:
                    return ("fibtype", "local" if self._is_local(p.src) else "unicast")
            elif k in ("&", "|", "^"):
                return ("int", self._int_value(e, st))
            elif k == "concat" and isinstance(v, list):
                parts = [self._value(x, st) for x in v]
                return _NOMATCH if any(x is _NOMATCH for x in parts) else parts
        raise _Unsupported(f"cannot evaluate expression {e!r}")

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

        return _part_matches(value, render_expr(right))

    def _lookup(self, s: NftSet, value: Any) -> Any:
        """The element of ``s`` matching ``value`` (exact index first, then prefixes/ranges), or None."""
        values = value if isinstance(value, list) else [value]
        key = tuple(_canon(v) for v in values)
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
        return all(_part_matches(v, k) for v, k in zip(values, key, strict=True))


def _uint(text: str) -> int:
    """ASCII decimal or 0x hex (what nft prints); ValueError otherwise (no "+80", "8_0", "٨٠")."""
    v = parse_uint(text)
    if v is None:
        raise ValueError(text)
    return v


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


def _canon(v: tuple[str, Any]) -> str:
    return str(v[1])


def _part_matches(v: tuple[str, Any], text: str) -> bool:
    kind, val = v
    try:
        if kind == "addr":
            ip = ipaddress.IPv4Address(val)
            if "/" in text:
                return ip in ipaddress.IPv4Network(text, strict=False)
            if "-" in text:
                lo, hi = text.split("-", 1)
                return ipaddress.IPv4Address(lo) <= ip <= ipaddress.IPv4Address(hi)
            return ip == ipaddress.IPv4Address(text)
        if kind in ("port", "int"):
            lo, sep, hi = text.partition("-")
            a, b = _uint(lo), (_uint(hi) if sep else None)
            return bool(a <= val <= b) if b is not None else bool(val == a)
        if kind == "proto":
            return bool(text == val or text == str(_PROTO_NUM.get(val, -1)))
        if kind in ("ctstate", "fibtype"):
            return bool(text == val)
        if kind == "ctstatus":
            return text in val
    except ValueError:
        raise _Unsupported(f"cannot compare {kind} {val!r} with {text!r}") from None
    raise _Unsupported(f"cannot compare {kind} with {text!r}")


def trace_nft(
    ruleset: NftRuleset, packet: Packet, *, tables: Sequence[tuple[str, str]] = DEFAULT_TABLES
) -> TraceResult:
    """Trace ``packet`` through the base chains of ``tables`` (default: kube-proxy's ``ip kube-proxy``).

    Other tables (e.g. iptables-nft's ``ip nat``/``ip filter`` with ``xt`` expressions) are not run:
    trace those with :func:`pytest_k8sstate.trace.iptables.trace_iptables` on ``iptables-save``.
    """
    return _Tracer(ruleset, tables, packet).run()
