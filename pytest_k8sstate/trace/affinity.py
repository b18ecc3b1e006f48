"""Session affinity: a client's first connection and its follow-up connections.

``Packet.affinity`` says which connection of a client is traced:

* ``"new"`` (default): the client's first connection. No ``-m recent`` list holds the client
  (``--rcheck``/``--update``/``--remove`` never match, ``--set`` records it); IPVS schedules anew.
* ``"returning"``: a follow-up connection of the same client (same source address) within the
  affinity timeout (every ``--seconds`` window; IPVS ``persistent`` seconds). The recent lists hold
  exactly what the first connection — the same packet traced as ``"new"`` — put there. The first
  connection's backend is random, so the result is, by default, the follow-up's distribution
  averaged over the first connection's outcomes (each weighted by its probability). With
  ``Packet.first_backend="IP:PORT"`` it is the follow-up's distribution *given* that the first
  connection was DNATed to that backend: for a working ClientIP affinity, that backend with
  probability 1.

:func:`trace_affinity` gives every case at once: first backend → (probability of that first
backend, the follow-up's :class:`~pytest_k8sstate.trace.TraceResult`); :func:`is_sticky` checks
that every follow-up lands where its first connection did.

The tracers call :func:`run_with_affinity` with a function that traces one connection from given
recent-list entries and returns its branches (probability, DNAT, masquerade, verdict, path, entries
at the end, assumptions, weight). A first connection's outcomes are weighed by their weights (shares
that sum to 1 even when outcomes assume an interface, see :attr:`TraceResult.weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.trace import Outcome, Packet, TraceResult, merge_weighted
from pytest_k8sstate.trace.recent import Entry

__all__ = ["AffinityCase", "Branch", "is_sticky", "run_with_affinity", "trace_affinity"]

Branch = tuple[
    Fraction, "str | None", bool, str, tuple[str, ...], frozenset[Entry], tuple[str, ...], Fraction
]
"""One finished path: probability, DNAT "IP:PORT" or None, masquerade, verdict, path, recent entries,
assumptions (``Outcome.assumes``), weight (its share of all packets, see :attr:`TraceResult.weights`)."""
Runner = Callable[[Packet, frozenset[Entry]], list[Branch]]


@dataclass(frozen=True)
class AffinityCase:
    """One possible first connection: its probability and what a follow-up connection then does."""

    first_probability: Fraction
    returning: TraceResult


def _result(
    packet: Packet, items: Iterable[tuple[Fraction, Fraction, Branch]], notes: tuple[str, ...]
) -> TraceResult:
    """``items``: (probability, weight, branch)."""
    kept = [(p, w, b) for p, w, b in items if p != 0]
    outs = [(Outcome(p, b[1], b[2], b[3], b[6]), b[4]) for p, _, b in kept]  # type: ignore[arg-type]
    outcomes, paths, weights = merge_weighted(outs, [w for _, w, _ in kept])
    return TraceResult(packet, outcomes, paths, weights, notes)


def _firsts(packet: Packet, run: Runner) -> dict[str | None, dict[frozenset[Entry], Fraction]]:
    """First connection: DNAT → (recent entries it left → probability)."""
    acc: dict[str | None, dict[frozenset[Entry], Fraction]] = {}
    for b in run(replace(packet, affinity="new", first_backend=None), frozenset()):
        if b[0]:
            by = acc.setdefault(b[1], {})
            by[b[5]] = by.get(b[5], Fraction(0)) + b[7]
    return acc


def _follow(
    packet: Packet, run: Runner, weights: dict[frozenset[Entry], Fraction]
) -> list[tuple[Fraction, Fraction, Branch]]:
    total = sum(weights.values(), Fraction(0))
    out: list[tuple[Fraction, Fraction, Branch]] = []
    for held, w in weights.items():
        out.extend((b[0] * w / total, b[7] * w / total, b) for b in run(packet, held))
    return out


def run_with_affinity(packet: Packet, run: Runner) -> TraceResult:
    """The trace of ``packet`` (a first or a returning connection, see the module doc)."""
    if packet.affinity == "new":
        if packet.first_backend is not None:
            raise TraceError("Packet.first_backend is only meaningful with affinity='returning'")
        return _result(packet, ((b[0], b[7], b) for b in run(packet, frozenset())), ())
    if packet.affinity != "returning":
        raise TraceError(f"Packet.affinity must be 'new' or 'returning', not {packet.affinity!r}")
    firsts = _firsts(packet, run)
    if packet.first_backend is None:
        weights: dict[frozenset[Entry], Fraction] = {}
        for by in firsts.values():
            for held, p in by.items():
                weights[held] = weights.get(held, Fraction(0)) + p
        note = "returning client: averaged over the first connection's outcomes"
    else:
        fb = packet.first_backend
        if fb not in firsts:
            got = ", ".join(sorted(k for k in firsts if k is not None)) or "none"
            raise TraceError(
                f"first_backend {fb}: a first connection to {packet.dst}:{packet.dport} is never DNATed "
                f"there (its backends: {got})"
            )
        weights = firsts[fb]
        note = f"returning client whose first connection went to {fb}"
    return _result(packet, _follow(packet, run, weights), (note,))


def trace_affinity(ruleset: object, packet: Packet, **kwargs: Any) -> dict[str | None, AffinityCase]:
    """First backend (DNAT ``IP:PORT``, None when not DNATed) → its probability and the trace of a
    follow-up connection of that client. ``kwargs`` go to :func:`pytest_k8sstate.trace.trace`
    (``ipsets=``, ``ipvs=``)."""
    from pytest_k8sstate.trace import trace

    first = trace(ruleset, replace(packet, affinity="new", first_backend=None), **kwargs)
    out: dict[str | None, AffinityCase] = {}
    for dnat, p in first.endpoints.items():
        if dnat is None:
            continue
        res = trace(ruleset, replace(packet, affinity="returning", first_backend=dnat), **kwargs)
        out[dnat] = AffinityCase(p, res)
    return out


def is_sticky(cases: dict[str | None, AffinityCase]) -> bool:
    """Whether every follow-up connection lands on its first connection's backend (probability 1);
    False when no first connection is DNATed at all (nothing to stick to)."""
    return bool(cases) and all(c.returning.endpoints == {dnat: Fraction(1)} for dnat, c in cases.items())
