"""Which packet fields a built-in chain's walk reads: the iptables tracer's per-hook memo.

After kube-proxy's ``KUBE-SVC-`` chain a Service of 10,000 endpoints is 10,000 paths, and each
crosses ``filter FORWARD``/``nat POSTROUTING`` (or ``INPUT``) on its own, although those chains only
look at the packet mark and the conntrack state. :func:`hook_reads` reads a built-in chain and
every chain it jumps to, once per ruleset, and says which fields of a path's state their rules can
read (``dst``, ``dport``, ``dnat``), or ``None`` when the walk can do more than read these and
change the mark, the masquerade flag and the path (a ``statistic``/``set``/``recent``/``physdev``
match, an interface match, a ``DNAT``, anything unknown): then it is not memoised. The tracer then
walks such a chain once per distinct (those fields, mark, masquerade, interface assumptions, notes,
recent entries, conntrack state) and reuses the result — the same answer as walking each path.

:class:`SplitMemo` keeps each statistic rule's probability split per ruleset, so walking the same
statistic chain again (another class of packets, :mod:`.ipt_classes`) costs no big-integer work.
"""

from __future__ import annotations

from fractions import Fraction

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.parse.iptables import IptablesRuleset, Rule
from pytest_k8sstate.trace import split_probability

__all__ = ["ONE", "SplitMemo", "hook_reads"]

ONE = Fraction(1)
"""The probability every walk starts with (one object, so :class:`SplitMemo` chains start alike)."""

_CACHE_KEY = "trace.iptables.hook_reads"
_SPLIT_KEY = "trace.iptables.splits"
SPLIT_MEMO_MAX = 200_000
_PLAIN_TARGETS = frozenset(
    {"ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "NFLOG", "ULOG", "TRACE", "NFACCT", "MARK"}
)
_PORT_MODULES = frozenset({"tcp", "udp", "sctp", "udplite", "dccp", "multiport"})
_NAT_TARGETS = frozenset({"MASQUERADE", "SNAT"})


def hook_reads(rs: IptablesRuleset, table: str, hook: str, index_min_rules: int) -> frozenset[str] | None:
    """The state fields (``dst``, ``dport``, ``dnat``) the walk of ``table``/``hook`` may read, or None
    when it may do more than read them (see the module doc); cached on ``rs``. ``index_min_rules``:
    chains this long are walked in the order of a destination index (they read ``dst``)."""
    cache: dict[tuple[str, str], frozenset[str] | None] = rs.cache.setdefault(_CACHE_KEY, {})
    key = (table, hook)
    if key not in cache:
        try:
            cache[key] = _analyse(rs, table, hook, index_min_rules)
        except ParseError:  # a rule that does not parse: the walk reports it where it meets it
            cache[key] = None
    return cache[key]


def _analyse(rs: IptablesRuleset, table: str, hook: str, index_min_rules: int) -> frozenset[str] | None:
    t = rs.tables.get(table)
    if t is None:
        return None
    reads: set[str] = set()
    seen = {hook}
    todo = [hook]
    while todo:
        ch = t.chains.get(todo.pop())
        if ch is None:
            return None
        if len(ch.rules) >= index_min_rules:
            reads.add("dst")
        for r in ch.rules:
            for m in r.matches:
                if m.module == "":
                    for o in m.opts:
                        if o.name == "-d":
                            reads.add("dst")
                        elif o.name not in ("-s", "-p", "-f"):
                            return None
                elif m.module in _PORT_MODULES:
                    reads.add("dport")
                elif m.module == "addrtype":
                    if any(o.name != "--src-type" for o in m.opts):
                        reads.add("dst")
                elif m.module in ("conntrack", "state"):
                    if any("DNAT" in (o.value or "").upper() for o in m.opts):
                        reads.add("dnat")
                elif m.module not in ("comment", "mark", "nfacct"):
                    return None
            tgt = r.target
            if tgt is None or tgt in _PLAIN_TARGETS or (tgt in _NAT_TARGETS and table == "nat"):
                continue
            if tgt not in t.chains:
                return None
            if tgt not in seen:
                seen.add(tgt)
                todo.append(tgt)
    return frozenset(reads)


class SplitMemo:
    """``split_probability(prob, p)`` of each statistic rule, kept per ruleset by the identity of the
    rule and of the incoming probability object (the entry holds that object, so its id is not reused).

    A statistic chain's miss branch carries the previous rule's miss object into the next rule, and a
    walk starts from :data:`ONE`, so a later walk of the same chain — another packet class, see
    :mod:`.ipt_classes` — finds every split of the chain here instead of computing it (big-integer
    work: a third of a 10,000-endpoint walk). The values are those of ``split_probability``: exact."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done: dict[tuple[int, int], tuple[Fraction, Rule, Fraction, Fraction]] = {}

    @staticmethod
    def of(rs: IptablesRuleset) -> SplitMemo:
        memo: SplitMemo | None = rs.cache.get(_SPLIT_KEY)
        if memo is None:
            memo = rs.cache[_SPLIT_KEY] = SplitMemo()
        return memo

    def split(self, r: Rule, prob: Fraction, p: Fraction) -> tuple[Fraction, Fraction]:
        """The hit and miss probabilities of rule ``r`` (match probability ``p``) reached with ``prob``."""
        key = (id(r), id(prob))
        got = self.done.get(key)
        if got is not None and got[0] is prob and got[1] is r:
            return got[2], got[3]
        hit, miss = split_probability(prob, p)
        if len(self.done) < SPLIT_MEMO_MAX:
            self.done[key] = (prob, r, hit, miss)
        return hit, miss
