"""The store behind both tracers' source-class reuse (``ipt_classes``, ``nft_classes``).

A walk records what it read of the packet's source; a later packet with the same other fields that answers
every recorded read alike reuses that walk's result. What differs per tracer is how a walk's reads become
a class (``classify``); what is kept, looked up and evicted is here: per ruleset (its ``cache`` dict), a
packet's other fields → its classes (newest first), at most ``max_classes`` classes and ``max_outcomes``
outcomes in all, the one used most recently kept longest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any, Protocol

from pytest_k8sstate.parse.gcpause import gc_paused
from pytest_k8sstate.trace import Packet, TraceResult

__all__ = ["SourceAnswers", "reuse_or_walk"]


class SourceAnswers(Protocol):
    """A class: the answers a packet gives to the reads it was built from."""

    def answers(self, pkt: Packet) -> tuple[Any, ...] | None: ...


class _Known:
    """One walked class: what the walk read, its first packet and result; the class and that packet's
    answers are worked out when a packet with the same other fields first asks (most never do)."""

    __slots__ = ("answers", "classify", "cls", "first", "reads", "result")

    def __init__(
        self,
        reads: set[tuple[str, str]],
        first: Packet,
        result: TraceResult,
        classify: Callable[[set[tuple[str, str]]], SourceAnswers | None],
    ) -> None:
        self.reads: set[tuple[str, str]] | None = reads
        self.first = first
        self.result = result
        self.classify = classify
        self.cls: SourceAnswers | None = None
        self.answers: tuple[Any, ...] | None = None

    def matches(self, pkt: Packet) -> bool:
        if self.reads is not None:  # first question: the class (None: never reused)
            self.cls = self.classify(self.reads)
            self.answers = None if self.cls is None else self.cls.answers(self.first)
            self.reads = None
        if self.cls is None or self.answers is None:
            return False
        return self.cls.answers(pkt) == self.answers


class _Kept:
    """A packet's other fields → its classes (newest first), and how many classes and outcomes in all.
    Lists are replaced, never changed in place (a concurrent reader sees a whole one)."""

    __slots__ = ("by_other", "count", "outcomes")

    def __init__(self) -> None:
        # the key used most recently last (OrderedDict: finding the oldest is O(1) after deletions)
        self.by_other: OrderedDict[Hashable, list[_Known]] = OrderedDict()
        self.count = 0
        self.outcomes = 0


def reuse_or_walk(
    cache: dict[str, Any],
    key: str,
    other: Hashable,
    checked: Packet,
    given: Packet,
    walk: Callable[[set[tuple[str, str]]], TraceResult],
    *,
    classify: Callable[[set[tuple[str, str]]], SourceAnswers | None],
    opaque: str,
    max_classes: int,
    max_outcomes: int,
) -> TraceResult:
    """The result of the known class ``checked`` belongs to among those kept in ``cache[key]`` for
    ``other`` (its other fields), with ``given`` in it; else ``walk(reads)`` — which adds what it read of
    the source to ``reads`` — kept as a new class unless a read is of kind ``opaque`` (cannot be replayed).
    The cyclic GC is paused meanwhile: the walk builds many small acyclic objects, and each collection
    would rescan the caller's heap (the parsed ruleset)."""
    with gc_paused():
        kept: _Kept | None = cache.get(key)
        if kept is None:
            kept = cache[key] = _Kept()
        known = kept.by_other
        mine = known.get(other, [])
        for i, k in enumerate(mine):
            if k.matches(checked):
                if i:
                    known[other] = [k, *mine[:i], *mine[i + 1 :]]
                known.move_to_end(other)
                got = k.result
                return got if got.packet == given else replace(got, packet=given)
        reads: set[tuple[str, str]] = set()
        got = walk(reads)
        if all(kind != opaque for kind, _ in reads):
            known[other] = [_Known(reads, checked, got, classify), *mine]
            known.move_to_end(other)
            kept.count += 1
            kept.outcomes += len(got.outcomes)
            while kept.count > max_classes or (kept.outcomes > max_outcomes and kept.count > 1):
                oldest = next(iter(known))
                gone = known[oldest][-1]
                if len(known[oldest]) > 1:
                    known[oldest] = known[oldest][:-1]
                else:
                    del known[oldest]
                kept.count -= 1
                kept.outcomes -= len(gone.result.outcomes)
        return got
