"""Pair a removed rule with the added rule that replaced it: ``~ rule nat -A KUBE-SVC-X … --probability
{0.33333 → 0.50000} …`` instead of one ``-`` and one ``+`` line.

Two rules of the same table and chain pair up when they have the same number of words and differ in at
most :data:`MAX_DIFFERENT` of them (a probability, an address, a port, a mark); each removed rule takes the
closest added one. Chains with more than :data:`MAX_PAIRS_CHECKED` candidate pairs are left unpaired (the
diff of a resync of thousands of rules in one chain would otherwise cost quadratic time).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

__all__ = ["MAX_DIFFERENT", "pair_rules", "paired_text"]

Triple = tuple[str, str, str]

MAX_DIFFERENT = 3
MAX_PAIRS_CHECKED = 20_000


def _distance(a: list[str], b: list[str]) -> int | None:
    if len(a) != len(b):
        return None
    n = sum(1 for x, y in zip(a, b, strict=True) if x != y)
    return n if 0 < n <= MAX_DIFFERENT else None


def pair_rules(
    removed: Sequence[Triple], added: Sequence[Triple]
) -> tuple[list[tuple[Triple, Triple]], list[Triple], list[Triple]]:
    """(pairs of (removed, added), removed left unpaired, added left unpaired), orders kept."""
    by_chain: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, a in enumerate(added):
        by_chain[(a[0], a[1])].append(j)
    taken: set[int] = set()
    pairs: list[tuple[Triple, Triple]] = []
    left_removed: list[Triple] = []
    words_added: dict[int, list[str]] = {}
    for r in removed:
        cands = [j for j in by_chain.get((r[0], r[1]), ()) if j not in taken]
        best: tuple[int, int] | None = None
        if cands and len(cands) * len(removed) <= MAX_PAIRS_CHECKED:
            rw = r[2].split(" ")
            for j in cands:
                aw = words_added.setdefault(j, added[j][2].split(" "))
                d = _distance(rw, aw)
                if d is not None and (best is None or d < best[0]):
                    best = (d, j)
        if best is None:
            left_removed.append(r)
            continue
        taken.add(best[1])
        pairs.append((r, added[best[1]]))
    return pairs, left_removed, [a for j, a in enumerate(added) if j not in taken]


def paired_text(before: str, after: str) -> str:
    """The words of ``after`` with each differing word written ``{old → new}``."""
    bw, aw = before.split(" "), after.split(" ")
    if len(bw) != len(aw):
        return f"{before} → {after}"
    return " ".join(a if b == a else f"{{{b} → {a}}}" for b, a in zip(bw, aw, strict=True))
