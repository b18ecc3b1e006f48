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
``SNAT`` set ``masquerade``.

Addresses are IPv4 or IPv6: an ``ip6tables-save`` dump traces IPv6 packets (a packet of the other
family than the dump's addresses is a TraceError), and DNAT results print as ``[addr]:port``.
Interfaces (``-i``/``-o``, ``!``, ``+``) are decided from ``Packet.in_iface``/``out_iface`` or the
hook, else followed both ways with the constraint recorded in ``Outcome.assumes`` (see
:mod:`pytest_k8sstate.trace.ipt_match`). ``Packet.ctstate`` is ``NEW`` (the nat table runs;
``INVALID``/``ESTABLISHED``/``RELATED``/``UNTRACKED`` never match, the virtual ``DNAT`` state matches
once DNATed) or ``ESTABLISHED``: the NEW packet is traced first, and each accepted outcome is then
followed through raw/mangle/filter again as ESTABLISHED with that connection's NAT (outcome
probabilities are then conditional on the connection having been accepted). ``-m physdev`` is
evaluated for a routed (not bridged) packet and says so in ``Outcome.assumes``; ``-m socket`` and
``-m rpfilter`` are "cannot evaluate" errors. ``-m set`` is decided by the node's captured ipsets
(``ipsets=``, :mod:`.ipsets`); ``-m recent`` by the lists the client is in (``Packet.affinity``,
:mod:`.recent`, :mod:`.affinity`).

A rule the packet reaches that cannot be evaluated (an unknown match module or option, an
unsupported target) makes the trace fail with :class:`~pytest_k8sstate.errors.TraceError` naming
the rule, its table/chain and line — never a silent wrong answer.

Big chains (``KUBE-SERVICES``, ``KUBE-NODEPORTS``, …) are indexed on first use by destination IP
(rules with a plain ``-d IP[/32]``, :mod:`~pytest_k8sstate.trace.ipt_index`) and the index is cached on the
ruleset (``ruleset.cache``) and shared with every chain of the same text.
Packets the rules cannot tell apart (same fields but the source address/port, which every rule they
reached answered alike) share one walk: :mod:`.ipt_classes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache, partial

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.parse.ipset import IpSet
from pytest_k8sstate.parse.iptables import Chain, IptablesRuleset, Rule
from pytest_k8sstate.trace import Packet, TraceResult, format_hostport
from pytest_k8sstate.trace.affinity import Branch, run_with_affinity
from pytest_k8sstate.trace.ipsets import CannotEvaluate, PacketView, SetIndex, match_set_module
from pytest_k8sstate.trace.ipt_classes import reuse_or_walk
from pytest_k8sstate.trace.ipt_index import chain_index
from pytest_k8sstate.trace.ipt_match import (
    READ_OPAQUE,
    Choice,
    Matchers,
    addr,
    canon,
    dnat_target,
    iface_text,
    mark_value,
)
from pytest_k8sstate.trace.ipt_match import St as _St
from pytest_k8sstate.trace.ipt_match import Unsupported as _Unsupported
from pytest_k8sstate.trace.ipt_memo import ONE, SplitMemo, hook_reads
from pytest_k8sstate.trace.recent import Entry, match_recent

__all__ = ["MAX_BRANCHES", "MAX_DEPTH", "trace_iptables"]

MAX_DEPTH = 64
MAX_BRANCHES = 20_000
INDEX_MIN_RULES = 32
_CACHE_KEY = "trace.iptables.index"
_FAMILY_KEY = "trace.iptables.family"

_TERMINAL = frozenset({"ACCEPT", "DROP", "REJECT"})
_CONTINUE_TARGETS = frozenset({"LOG", "NFLOG", "ULOG", "TRACE", "NFACCT"})
_IGNORED_MODULES = frozenset({"nfacct"})
_PORT_MODULES = frozenset({"tcp", "udp", "sctp", "udplite", "dccp"})
_CANNOT = {
    "socket": "-m socket matches when a local socket exists for the packet, which the captured state "
    "does not hold",
    "rpfilter": "-m rpfilter checks the source against the routing table (reverse path), which the "
    "iptables tracer does not model",
}


_Frame = tuple[Chain, "list[int] | range", int, "_Frame | None", tuple[str, ...]]
_Item = tuple[Chain, "list[int] | range", int, _St, "_Frame | None", tuple[str, ...], bool]


def _short(text: str, limit: int = 120) -> str:
    """Rule text in an error message: long rules keep their start (the error names the line)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Tracer(Matchers):
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
        self.local = _canon_local(frozenset(pkt.local_ips))
        self.from_local = _canon_or_same(pkt.src) in self.local
        self.iface_memo = {}
        self.src_reads = set()  # tests of the source address/port (trace/ipt_classes.py)
        self.splits = SplitMemo.of(rs)
        self.ctstate = "NEW"
        self.notes: set[str] = set()
        if pkt.ctstate not in ("NEW", "ESTABLISHED"):
            raise TraceError(f"packet ctstate {pkt.ctstate!r}: NEW or ESTABLISHED")
        self.family = pkt.family
        fam = ruleset_family(rs)
        if fam is not None and fam[0] != self.family:
            raise TraceError(
                f"the packet to {pkt.dst} is IPv{self.family} but {rs.source} is an IPv{fam[0]} ruleset "
                f"({fam[1]}); trace IPv{self.family} packets through the "
                f"{'ip6tables-save' if self.family == 6 else 'iptables-save'} dump"
            )
        self.branches = 0
        self.memos: dict[tuple[object, ...], list[tuple[int, bool, tuple[str, ...], str | None]]] = {}
        self.steps: dict[int, str] = {}  # id(rule) → its path step text (rules live as long as rs)
        idx = rs.cache.get(_CACHE_KEY)
        if idx is None:
            idx = rs.cache[_CACHE_KEY] = {}
        self.index: dict[tuple[str, str], tuple[dict[str, list[int]], list[int]]] = idx

    # ---- helpers -------------------------------------------------------------------------
    def count_branch(self) -> None:
        self.branches += 1
        if self.branches > MAX_BRANCHES:
            raise TraceError(
                f"{self.rs.source}: more than {MAX_BRANCHES} branches (probabilistic or interface)"
            )

    def fail(self, table: str, chain: str, rule: Rule, why: str) -> TraceError:
        return TraceError(
            f"cannot evaluate rule '{_short(rule.spec)}' in {table}/{chain} at line {rule.line}: {why} "
            f"(source: {rule.source})"
        )

    # ---- indexes ---------------------------------------------------------------------------
    def order(self, table: str, ch: Chain, dst: str) -> list[int] | range:
        key = (table, ch.name)
        ent = self.index.get(key)
        if ent is None:
            n = ch.rule_count()
            if n < INDEX_MIN_RULES:
                return range(n)
            ent = self.index[key] = chain_index(ch)
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
            elif mod == "comment":
                if len(m.opts) != 1 or m.opts[0].name != "--comment":
                    self.comment(m)
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
                if not self.conntrack(m, st):
                    return False
            elif mod == "addrtype":
                if not self.addrtype(m, st):
                    return False
            elif mod == "physdev":
                self.notes.add(f"routed, not bridged (-m physdev at line {r.line})")
                if not self.physdev(m):
                    return False
            elif mod in ("set", "recent"):  # evaluated by trace/ipsets.py and trace/recent.py
                self.src_reads.add((READ_OPAQUE, mod))
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
            elif mod in _CANNOT:
                raise _Unsupported(_CANNOT[mod])
            else:
                raise _Unsupported(f"unsupported match -m {mod}")
        return True if prob is None else prob

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
        steps = self.steps
        stack: list[_Item] = [(ch0, self.order(table, ch0, st.dst), 0, st, None, (chain,), False)]
        while stack:
            ch, order, pos, st, parent, calls, do_target = stack.pop()
            rules = ch.rule_getter()
            n = len(order)
            while True:
                if do_target:
                    r = rules(order[pos - 1])
                    do_target = False
                else:
                    if pos >= n:  # end of chain: back to the caller
                        if parent is None:
                            out.append((st, None))
                            break
                        ch, order, pos, parent, calls = parent
                        rules = ch.rule_getter()
                        n = len(order)
                        continue
                    r = rules(order[pos])
                    pos += 1
                    try:
                        m = self.match(table, ch.name, hook, r, st)
                    except _Unsupported as exc:
                        raise self.fail(table, ch.name, r, str(exc)) from None
                    except Choice as c:  # an unknown interface decides: both ways, each constrained
                        self.recent_after = None  # the rule is evaluated again on both branches
                        self.count_branch()
                        yes = replace(st, ifc=(*st.ifc, (c.direction, c.pattern, True)))
                        stack.append((ch, order, pos - 1, yes, parent, calls, False))
                        st = replace(st, ifc=(*st.ifc, (c.direction, c.pattern, False)))
                        pos -= 1
                        continue
                    if self.recent_after is not None:
                        st = replace(st, recent=self.recent_after)
                        self.recent_after = None
                    if m is False:
                        continue
                    if m is not True:
                        self.count_branch()
                        hit, miss = self.splits.split(r, st.prob, m)
                        if miss:  # the miss branch goes on now, the hit branch (its target) after it
                            stack.append((ch, order, pos, _with_prob(st, hit), parent, calls, True))
                            st = _with_prob(st, miss)
                            continue
                tgt = r.target
                if tgt is None:
                    continue
                step = steps.get(id(r))
                if step is None:
                    step = steps[id(r)] = f"{table}/{ch.name}#{r.line}"
                path = (*st.path, step)
                st = _St(
                    st.prob, st.dst, st.dport, st.mark, st.dnat, st.masq, path, st.ifc, st.notes, st.recent
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
                        mark = _mark_target(r, st.mark)
                        st = _St(
                            st.prob,
                            st.dst,
                            st.dport,
                            mark,
                            st.dnat,
                            st.masq,
                            st.path,
                            st.ifc,
                            st.notes,
                            st.recent,
                        )
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
                    out.append(
                        (
                            _St(
                                st.prob,
                                st.dst,
                                st.dport,
                                st.mark,
                                st.dnat,
                                True,
                                st.path,
                                st.ifc,
                                st.notes,
                                st.recent,
                            ),
                            "ACCEPT",
                        )
                    )
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
                rules = ch.rule_getter()
                n = len(order)
        return out

    def dnat(self, table: str, chain: str, r: Rule, st: _St) -> _St:
        to = r.target_arg("--to-destination")
        if to is None or not to.value:
            raise self.fail(table, chain, r, "DNAT without --to-destination")
        got = dnat_target(to.value)
        if isinstance(got, str):
            raise self.fail(table, chain, r, got)
        host, port, version = got
        if version != self.family:
            raise self.fail(table, chain, r, f"DNAT of an IPv{self.family} packet to {to.value!r}")
        dport = st.dport if port is None else port
        dnat = format_hostport(host, dport)
        return _St(st.prob, host, dport, st.mark, dnat, st.masq, st.path, st.ifc, st.notes, st.recent)

    def hook(self, table: str, hook: str, states: list[_St]) -> tuple[list[_St], list[tuple[_St, str]]]:
        """Run one built-in chain; returns (packets that go on, packets finished with a verdict)."""
        ch = self.rs.chain(table, hook)
        if ch is None:
            return states, []
        policy = ch.policy or "ACCEPT"
        go: list[_St] = []
        done: list[tuple[_St, str]] = []
        reads = hook_reads(self.rs, table, hook, INDEX_MIN_RULES) if len(states) > 1 else None
        for st in states:
            walked = (
                self.run_chain(table, hook, hook, st) if reads is None else self.memo(table, hook, reads, st)
            )
            for s2, v in walked:
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

    def memo(self, table: str, hook: str, reads: frozenset[str], st: _St) -> list[tuple[_St, str | None]]:
        """``run_chain`` of a built-in chain that only reads ``reads`` and the mark (see :mod:`.ipt_memo`):
        walked once per distinct key; its mark, masquerade and path steps are reused."""
        key = (
            table,
            hook,
            self.ctstate,
            st.mark,
            st.masq,
            st.ifc,
            st.notes,
            st.recent,
            st.dst if "dst" in reads else None,
            st.dport if "dport" in reads else None,
            st.dnat if "dnat" in reads else None,
        )
        done = self.memos.get(key)
        if done is None:
            bare = _St(st.prob, st.dst, st.dport, st.mark, st.dnat, st.masq, (), st.ifc, st.notes, st.recent)
            walked = self.run_chain(table, hook, hook, bare)
            done = self.memos[key] = [(s2.mark, s2.masq, s2.path, v) for s2, v in walked]
        p, d, dp, dn, ifc, notes, rec = st.prob, st.dst, st.dport, st.dnat, st.ifc, st.notes, st.recent
        return [
            (_St(p, d, dp, mark, dn, masq, st.path + path, ifc, notes, rec), v)
            for mark, masq, path, v in done
        ]

    def run(self) -> list[tuple[_St, str]]:
        pkt = self.pkt
        start = _St(ONE, canon(pkt.dst), pkt.dport, 0, None, False, (), recent=self.held)
        finished = self.walk([start], nat=True)
        if pkt.ctstate == "NEW":
            return finished
        # A later packet of the connection: conntrack applies the first packet's NAT (the nat table
        # is not run again) and the packet crosses raw/mangle/filter once more, now ESTABLISHED.
        accepted = [
            replace(st, mark=0, path=(*st.path, "conntrack:ESTABLISHED"))
            for st, v in finished
            if v == "ACCEPT"
        ]
        if not accepted:
            raise TraceError(
                f"{self.rs.source}: no NEW connection of this packet is accepted, so it has no "
                f"{pkt.ctstate} packets (trace it with ctstate='NEW' to see why)"
            )
        self.ctstate = pkt.ctstate
        return self.walk(accepted, nat=False)

    def walk(self, sts: list[_St], *, nat: bool) -> list[tuple[_St, str]]:
        """The hooks of the module doc for ``sts``; without the nat table when ``nat`` is False."""
        finished: list[tuple[_St, str]] = []

        def stage(tables: tuple[str, ...], hook: str, sts: list[_St]) -> list[_St]:
            for table in tables:
                if table == "nat" and not nat:
                    continue
                go, done = self.hook(table, hook, sts)
                finished.extend(done)
                sts = go
            return sts

        if self.from_local:
            sts = stage(("raw", "mangle", "nat", "filter"), "OUTPUT", sts)
            sts = stage(("mangle", "nat"), "POSTROUTING", sts)
            local = stage(("mangle", "filter", "nat"), "INPUT", [s for s in sts if self.is_local(s.dst)])
            finished.extend((s, "ACCEPT") for s in sts if not self.is_local(s.dst))
            finished.extend((s, "ACCEPT") for s in local)
            return finished
        sts = stage(("raw", "mangle", "nat"), "PREROUTING", sts)
        local = stage(("mangle", "filter", "nat"), "INPUT", [s for s in sts if self.is_local(s.dst)])
        fwd = stage(("mangle", "filter"), "FORWARD", [s for s in sts if not self.is_local(s.dst)])
        fwd = stage(("mangle", "nat"), "POSTROUTING", fwd)
        finished.extend((s, "ACCEPT") for s in local + fwd)
        return finished


def _with_prob(st: _St, prob: Fraction) -> _St:
    """``st`` on one branch of a statistic rule (``dataclasses.replace`` costs ten times more)."""
    return _St(prob, st.dst, st.dport, st.mark, st.dnat, st.masq, st.path, st.ifc, st.notes, st.recent)


def _mark_target(r: Rule, mark: int) -> int:
    args = r.target_args
    if len(args) != 1:
        raise _Unsupported("MARK needs exactly one of --set-xmark/--set-mark/--or-mark/--xor-mark/--and-mark")
    o = args[0]
    try:
        val, msk = mark_value(o.value or "")
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


@lru_cache(maxsize=8)
def _canon_local(ips: frozenset[str]) -> frozenset[str]:
    """The node's addresses in canonical text; cached (IPVS mode adds every Service VIP to them)."""
    return frozenset(_canon_or_same(a) for a in ips)


def _canon_or_same(text: str) -> str:
    try:
        return canon(text)
    except ValueError:
        return text


def ruleset_family(rs: IptablesRuleset) -> tuple[int, str] | None:
    """(4 or 6, where) from the first rule with an address (``-s``/``-d``); None without any."""
    if _FAMILY_KEY in rs.cache:
        got: tuple[int, str] | None = rs.cache[_FAMILY_KEY]
        return got
    found: tuple[int, str] | None = None
    for tname, r in rs.rules():
        for name in ("-d", "-s"):
            o = r.basic(name)
            if o is not None and o.value:
                try:
                    v = 6 if ":" in o.value else addr(o.value.partition("/")[0]).version
                except ValueError:
                    continue
                found = (v, f"line {r.line}: {name} {o.value} in {tname}/{r.chain}")
                break
        if found:
            break
    rs.cache[_FAMILY_KEY] = found
    return found


def branches(tracer: _Tracer, finished: list[tuple[_St, str]], conditional: bool) -> list[Branch]:
    """The tracer's finished paths as :data:`~pytest_k8sstate.trace.affinity.Branch` es: each with its
    interface assumptions and the tracer's notes, and its weight (probability halved per two-way
    interface assumption); ``conditional``: probabilities and weights scaled to sum to 1 over the
    accepted connections (a non-NEW packet)."""
    finished = [(st, v) for st, v in finished if st.prob != 0]
    notes = tuple(sorted(tracer.notes))
    weights = [st.prob / (1 << len(st.ifc)) if st.ifc else st.prob for st, _ in finished]
    if conditional:
        scale = sum(weights, Fraction(0))
        if scale != 1:
            finished = [(_with_prob(st, st.prob / scale), v) for st, v in finished]
            weights = [w / scale for w in weights]
    return [
        (st.prob, st.dnat, st.masq, v, st.path, st.recent, (*(iface_text(c) for c in st.ifc), *notes), w)
        for (st, v), w in zip(finished, weights, strict=True)
    ]


def trace_iptables(
    ruleset: IptablesRuleset, packet: Packet, *, ipsets: Iterable[IpSet] | SetIndex | None = None
) -> TraceResult:
    """Exact outcome distribution of ``packet`` through ``ruleset`` (see the module doc); ``ipsets``:
    the node's captured sets, for ``-m set``; ``packet.affinity``: see :mod:`.affinity`."""
    sets = SetIndex.of(ipsets)
    return reuse_or_walk(ruleset, packet, partial(_walk, ruleset, packet, sets))  # trace/ipt_classes.py


def _walk(
    ruleset: IptablesRuleset, packet: Packet, sets: SetIndex | None, reads: set[tuple[str, str]]
) -> TraceResult:
    """The plain walk of ``packet`` (:func:`trace_iptables` without its classes); adds to ``reads``
    every test of the source address/port it made (every connection's walk, see .affinity)."""

    def run(pkt: Packet, held: frozenset[Entry]) -> list[Branch]:
        tracer = _Tracer(ruleset, pkt, sets, held)
        tracer.src_reads = reads
        return branches(tracer, tracer.run(), pkt.ctstate != "NEW")

    return run_with_affinity(packet, run)
