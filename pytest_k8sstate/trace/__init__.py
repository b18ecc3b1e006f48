"""Packet-path simulation over parsed rules → distribution of outcomes.

``trace(ruleset, packet)`` dispatches on the ruleset type:
:class:`pytest_k8sstate.parse.iptables.IptablesRuleset` → :mod:`.iptables`,
:class:`pytest_k8sstate.parse.nft.NftRuleset` → :mod:`.nft`.

Probabilities are exact (:class:`fractions.Fraction`) up to :data:`EXACT_BITS` bits of denominator
(beyond, a statistic rule's hit probability is rounded to 2^−EXACT_BITS: see
:func:`split_probability`); identical outcomes are merged and the probabilities of a result always
sum to exactly 1.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from pytest_k8sstate.errors import ParseError, TraceError
from pytest_k8sstate.parse.numbers import parse_port

if TYPE_CHECKING:
    from pytest_k8sstate.parse.ipset import IpSet
    from pytest_k8sstate.parse.ipvs import VirtualServer
    from pytest_k8sstate.trace.ipsets import SetIndex

Verdict = Literal["ACCEPT", "DROP", "REJECT"]
Proto = Literal["tcp", "udp", "sctp"]

__all__ = [
    "EXACT_BITS",
    "Outcome",
    "Packet",
    "TraceError",
    "TraceResult",
    "parse_hostport",
    "split_probability",
    "trace",
]


def parse_hostport(text: str, *, what: str = "destination") -> tuple[str, int]:
    """``"10.96.0.1:443"`` → ``("10.96.0.1", 443)``; raises ParseError naming ``what``."""
    host, sep, port = text.rpartition(":")
    try:
        if not sep:
            raise ValueError(text)
        ipaddress.IPv4Address(host)
        p = parse_port(port) or 0  # ASCII digits only: not "+80", " 80", "8_0" or "٨٠"
        if not 0 < p < 65536:
            raise ValueError(port)
    except ValueError as exc:
        raise ParseError(what, None, "IPv4:PORT such as 10.96.0.10:53", text) from exc
    return host, p


@dataclass(frozen=True)
class Packet:
    """A new connection's first packet (conntrack state NEW)."""

    dst: str
    dport: int
    proto: Proto = "tcp"
    src: str = "203.0.113.10"  # an "outside" client by default (TEST-NET-3, never sent anywhere)
    sport: int = 40000
    local_ips: frozenset[str] = field(default_factory=frozenset)
    """The node's own addresses (for ``addrtype LOCAL`` / ``fib daddr type local``).
    When ``src`` is one of them the packet starts in nat OUTPUT, else in nat PREROUTING."""

    affinity: Literal["new", "returning"] = "new"
    """Session affinity (``-m recent``, IPVS persistence): the client's first connection (``"new"``) or
    a follow-up one within the affinity timeout (``"returning"``); see :mod:`.affinity`."""
    first_backend: str | None = None
    """With ``affinity="returning"``: the first connection's DNAT ``IP:PORT``; the result is then the
    follow-up's outcomes given that backend (None: averaged over every first backend)."""

    @property
    def from_local(self) -> bool:
        return self.src in self.local_ips


@dataclass(frozen=True)
class Outcome:
    probability: Fraction
    dnat: str | None  # "IP:PORT" after DNAT, or None
    masquerade: bool
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "probability": float(self.probability),
            "dnat": self.dnat,
            "masquerade": self.masquerade,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class TraceResult:
    packet: Packet
    outcomes: tuple[Outcome, ...]
    path_examples: tuple[tuple[str, ...], ...] = ()
    """For each outcome (same order), one path of ``table/chain#rule-line`` steps that led to it."""
    notes: tuple[str, ...] = ()
    """What the outcomes depend on beyond the rules (an IPVS scheduler's load or hash, persistence)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcomes": [o.to_json() for o in self.outcomes]}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @property
    def endpoints(self) -> dict[str | None, Fraction]:
        """DNAT destination → total probability."""
        acc: dict[str | None, Fraction] = {}
        for o in self.outcomes:
            acc[o.dnat] = acc.get(o.dnat, Fraction(0)) + o.probability
        return acc


def merge_outcomes(
    items: Iterable[tuple[Outcome, tuple[str, ...]]],
) -> tuple[tuple[Outcome, ...], tuple[tuple[str, ...], ...]]:
    """Merge identical (dnat, masquerade, verdict) outcomes; keep the first path seen; check sum == 1."""
    acc: dict[tuple[str | None, bool, str], tuple[Fraction, tuple[str, ...]]] = {}
    for o, path in items:
        k = (o.dnat, o.masquerade, o.verdict)
        if k in acc:
            acc[k] = (acc[k][0] + o.probability, acc[k][1])
        else:
            acc[k] = (o.probability, path)
    probs = [v[0] for v in acc.values()]
    if not _sums_to_one(probs):
        total = math.fsum(float(p) for p in probs)
        raise TraceError(f"internal error: outcome probabilities sum to {total!r}, not 1")
    keys = sorted(acc, key=lambda k: _ProbKey(acc[k][0], (k[0] or "", k[1], k[2])))
    outcomes = tuple(Outcome(acc[k][0], k[0], k[1], k[2]) for k in keys)  # type: ignore[arg-type]
    return outcomes, tuple(acc[k][1] for k in keys)


EXACT_BITS = 2048
"""Probabilities are exact while their denominators have at most this many bits (kube-proxy's
10-decimal statistic probabilities: Services of up to ~60 endpoints); see :func:`split_probability`."""


def split_probability(prob: Fraction, p: Fraction) -> tuple[Fraction, Fraction]:
    """``(prob·p, prob·(1−p))`` — the hit and miss branches of a rule that matches with probability p.

    Exact while ``prob·p``'s denominator has at most :data:`EXACT_BITS` bits. Beyond that (the
    thousandth endpoint of a Service: the exact value has ~10,000 digits, and carrying those through
    every later rule makes a trace quadratic in the endpoint count), the hit branch is rounded to the
    nearest multiple of 2^−EXACT_BITS and the miss branch is ``prob − hit``, so the two still sum to
    ``prob`` exactly and every result still sums to exactly 1; each such rule is off by at most
    2^−2048.
    """
    hit = prob * p
    if hit.denominator.bit_length() <= EXACT_BITS:
        return hit, prob - hit
    num, den = hit.numerator, hit.denominator
    hit = Fraction(((num << (EXACT_BITS + 1)) + den) // (2 * den), 1 << EXACT_BITS)
    return hit, prob - hit


_EXACT_SUM_BITS = 4096
_MOD_PRIME = (1 << 61) - 1


def _sums_to_one(probs: list[Fraction]) -> bool:
    """Whether ``probs`` sum to exactly 1.

    Probabilities from long statistic chains are exact decimals with huge denominators (a
    10,000-endpoint Service: ~100,000 digits), and adding such fractions costs a big-integer gcd
    per term (minutes). Below ``_EXACT_SUM_BITS`` bits of denominator the sum is computed exactly;
    above, it is checked modulo the prime 2⁶¹−1 (every term's numerator times its denominator's
    inverse: linear in the digits) and to 1e-9 in floating point.
    """
    if all(p.denominator.bit_length() <= _EXACT_SUM_BITS for p in probs) or any(
        p.denominator % _MOD_PRIME == 0 for p in probs
    ):
        return sum(probs, Fraction(0)) == 1
    q = _MOD_PRIME
    acc = 0
    for p in probs:
        acc = (acc + (p.numerator % q) * pow(p.denominator % q, -1, q)) % q
    return acc == 1 and abs(math.fsum(float(p) for p in probs) - 1) < 1e-9


class _ProbKey:
    """Sort key: descending probability, then ``rest``. Compares floats first (cheap) and the exact
    fractions only when the floats tie, so the order is exact without big multiplications."""

    __slots__ = ("approx", "prob", "rest")

    def __init__(self, prob: Fraction, rest: tuple[str, bool, str]) -> None:
        self.prob = prob
        self.approx = float(prob)
        self.rest = rest

    def __lt__(self, other: _ProbKey) -> bool:
        if self.approx != other.approx:
            return self.approx > other.approx
        if self.prob != other.prob:
            return self.prob > other.prob
        return self.rest < other.rest


def trace(
    ruleset: object,
    packet: Packet,
    *,
    ipsets: Iterable[IpSet] | SetIndex | None = None,
    ipvs: Iterable[VirtualServer] | None = None,
) -> TraceResult:
    """Trace ``packet`` through an iptables or nftables ruleset (see module doc). ``ipsets``: the node's
    captured sets (for ``-m set``); ``ipvs``: its IPVS virtual servers — when given (even empty) with an
    iptables ruleset, the trace follows kube-proxy's IPVS mode (:mod:`.ipvs`)."""
    from pytest_k8sstate.parse.iptables import IptablesRuleset
    from pytest_k8sstate.parse.nft import NftRuleset

    if isinstance(ruleset, IptablesRuleset):
        if ipvs is not None:
            from pytest_k8sstate.trace.ipvs import trace_ipvs

            return trace_ipvs(ruleset, packet, ipsets=ipsets, ipvs=ipvs)
        from pytest_k8sstate.trace.iptables import trace_iptables

        return trace_iptables(ruleset, packet, ipsets=ipsets)
    if isinstance(ruleset, NftRuleset):
        if packet.affinity != "new":  # never a silent answer: the nft tracer has no affinity state yet
            raise TraceError(
                f"affinity={packet.affinity!r} is traced through iptables and IPVS rulesets; the nftables "
                "tracer evaluates a first connection only (affinity='new')"
            )
        from pytest_k8sstate.trace.nft import trace_nft

        return trace_nft(ruleset, packet)
    raise TypeError(f"cannot trace through {type(ruleset).__name__}")
