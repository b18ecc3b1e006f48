"""Packet-path simulation over parsed rules → distribution of outcomes.

``trace(ruleset, packet)`` dispatches on the ruleset type:
:class:`pytest_k8sstate.parse.iptables.IptablesRuleset` → :mod:`.iptables`,
:class:`pytest_k8sstate.parse.nft.NftRuleset` → :mod:`.nft`.

Probabilities are exact (:class:`fractions.Fraction`) up to :data:`EXACT_BITS` bits of denominator
(beyond, a statistic rule's hit probability is rounded to 2^−EXACT_BITS: see
:func:`split_probability`); identical outcomes are merged and the probabilities of a result always
sum to exactly 1 — or, when an outcome depends on an interface the packet did not name
(``Outcome.assumes``, iptables), each outcome's probability is conditional on its assumptions and
``TraceResult.weights`` (each two-way assumption counted as ½) sum to exactly 1.

Addresses are IPv4 or IPv6; ``parse_hostport``/``format_hostport`` read and print ``a.b.c.d:port``
and ``[v6addr]:port``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, cast

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
    "format_hostport",
    "ip_family",
    "merge_outcomes",
    "merge_weighted",
    "parse_hostport",
    "split_probability",
    "trace",
]


def parse_hostport(text: str, *, what: str = "destination") -> tuple[str, int]:
    """``"10.96.0.1:443"`` → ``("10.96.0.1", 443)``; ``"[fd00::1]:443"`` → ``("fd00::1", 443)``.

    The host comes back in its canonical (compressed) form; raises ParseError naming ``what``."""
    try:
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(text)
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
        else:
            host, sep, port = text.rpartition(":")
            if not sep:
                raise ValueError(text)
            addr = ipaddress.IPv4Address(host)
        p = parse_port(port) or 0  # ASCII digits only: not "+80", " 80", "8_0" or "٨٠"
        if not 0 < p < 65536:
            raise ValueError(port)
    except ValueError as exc:
        raise ParseError(
            what, None, "IPv4:PORT such as 10.96.0.10:53 or [IPv6]:PORT such as [fd00::a]:53", text
        ) from exc
    return addr.compressed, p


def format_hostport(host: str, port: int) -> str:
    """``("10.0.0.1", 80)`` → ``"10.0.0.1:80"``; an IPv6 host is bracketed: ``"[fd00::1]:80"``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ip_family(text: str, *, what: str = "address") -> int:
    """4 or 6 for an IP address; TraceError naming ``what`` otherwise."""
    v = _version(text)
    if not v:
        raise TraceError(f"{what} {text!r} is not an IPv4 or IPv6 address")
    return v


@lru_cache(maxsize=65536)
def _version(text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


CtState = Literal["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"]


@dataclass(frozen=True)
class Packet:
    """A connection's first packet (``ctstate="NEW"``) or a later one (``"ESTABLISHED"``).

    Addresses are IPv4 or IPv6 (``dst`` and ``src`` of one family; an
    IPv6 ``dst`` with the default ``src`` uses the IPv6 documentation client ``2001:db8::10``).
    ``in_iface``/``out_iface``: the interfaces the packet arrives on / leaves by, when known; else
    rules with ``-i``/``-o`` are followed both ways and each outcome lists what it assumed
    (:attr:`Outcome.assumes`)."""

    dst: str
    dport: int
    proto: Proto = "tcp"
    src: str = ""  # "" = an "outside" client: 203.0.113.10 (TEST-NET-3) or 2001:db8::10, never sent anywhere
    sport: int = 40000
    local_ips: frozenset[str] = field(default_factory=frozenset)
    """The node's own addresses (for ``addrtype LOCAL`` / ``fib daddr type local``).
    When ``src`` is one of them the packet starts in nat OUTPUT, else in nat PREROUTING."""
    in_iface: str | None = None
    """The interface the packet arrives on (None: unknown — a trace that depends on it says so)."""
    out_iface: str | None = None
    """The interface the packet leaves by (None: unknown, or ``lo`` for a local destination)."""
    ctstate: CtState = "NEW"
    """Conntrack state: ``NEW`` (a connection's first packet; only it runs the nat chains) or
    ``ESTABLISHED``; the nft tracer also takes ``RELATED``, ``INVALID`` and ``UNTRACKED``."""
    affinity: Literal["new", "returning"] = "new"
    """Session affinity (``-m recent``, nft affinity sets, IPVS persistence): ``new`` — the client's
    first connection, no affinity entry yet; ``returning`` — a follow-up connection within the affinity
    timeout, after the client's first connection went through the same rules (and recorded its
    backend); see :mod:`.affinity`."""
    first_backend: str | None = None
    """With ``affinity="returning"`` (iptables and IPVS tracers): the first connection's DNAT
    ``IP:PORT``; the result is then the follow-up's outcomes given that backend (None: averaged over
    every first backend)."""

    def __post_init__(self) -> None:
        if not self.src:
            object.__setattr__(self, "src", "2001:db8::10" if ":" in self.dst else "203.0.113.10")

    @property
    def from_local(self) -> bool:
        return self.src in self.local_ips

    @property
    def family(self) -> int:
        """4 or 6; TraceError when ``dst`` and ``src`` are not of one family (``local_ips`` may hold both
        families: a dual-stack node's addresses; those of the other family never match)."""
        fam = ip_family(self.dst, what="packet destination")
        if ip_family(self.src, what="packet source") != fam:
            raise TraceError(
                f"packet source {self.src} is IPv{6 if fam == 4 else 4} but the destination {self.dst} is "
                f"IPv{fam}: a packet has one address family (trace each family separately)"
            )
        return fam


@dataclass(frozen=True)
class Outcome:
    probability: Fraction
    dnat: str | None  # "IP:PORT" ("[IPv6]:PORT") after DNAT, or None
    masquerade: bool
    verdict: Verdict
    assumes: tuple[str, ...] = ()
    """What this outcome depends on that the packet did not say, e.g. ``("-o docker0", "! -i docker0")``
    when the interfaces were not given: ``probability`` is then the probability among packets for
    which these hold (outcomes with different assumptions are alternatives, not shares of one whole)."""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "probability": float(self.probability),
            "dnat": self.dnat,
            "masquerade": self.masquerade,
            "verdict": self.verdict,
        }
        if self.assumes:
            d["assumes"] = list(self.assumes)
        return d


@dataclass(frozen=True)
class TraceResult:
    packet: Packet
    outcomes: tuple[Outcome, ...]
    path_examples: tuple[tuple[str, ...], ...] = ()
    """For each outcome (same order), one path of ``table/chain#rule-line`` steps that led to it."""
    weights: tuple[Fraction, ...] = ()
    """For each outcome (same order), its share when every unknown interface of ``Outcome.assumes`` is
    taken as a fair coin: these sum to 1 (empty: the probabilities themselves)."""
    notes: tuple[str, ...] = ()
    """What the outcomes depend on beyond the rules (an IPVS scheduler's load or hash, persistence)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcomes": [o.to_json() for o in self.outcomes]}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @property
    def shares(self) -> tuple[Fraction, ...]:
        """Each outcome's share of all packets, summing to 1: :attr:`weights` when the outcomes carry
        interface assumptions, else their probabilities. Add these, not ``probability``, across outcomes."""
        if len(self.weights) == len(self.outcomes):
            return self.weights
        return tuple(o.probability for o in self.outcomes)

    @property
    def endpoints(self) -> dict[str | None, Fraction]:
        """DNAT destination → total share (:attr:`shares`: alternatives under different interface
        assumptions are not added up as if they were parts of one whole)."""
        acc: dict[str | None, Fraction] = {}
        for o, w in zip(self.outcomes, self.shares, strict=True):
            acc[o.dnat] = acc.get(o.dnat, Fraction(0)) + w
        return acc


def merge_outcomes(
    items: Iterable[tuple[Outcome, tuple[str, ...]]],
    weights: Iterable[Fraction] | None = None,
) -> tuple[tuple[Outcome, ...], tuple[tuple[str, ...], ...]]:
    """Merge identical (dnat, masquerade, verdict, assumes) outcomes; keep the first path seen.

    Checks that the probabilities sum to 1 — or, when outcomes carry assumptions, that ``weights``
    (each item's probability halved per two-way assumption it made) do."""
    outcomes, paths, _ = merge_weighted(items, weights)
    return outcomes, paths


def merge_weighted(
    items: Iterable[tuple[Outcome, tuple[str, ...]]],
    weights: Iterable[Fraction] | None = None,
) -> tuple[tuple[Outcome, ...], tuple[tuple[str, ...], ...], tuple[Fraction, ...]]:
    """:func:`merge_outcomes` plus each merged outcome's weight (see :attr:`TraceResult.weights`)."""
    items = list(items)
    ws = [o.probability for o, _ in items] if weights is None else list(weights)
    acc: dict[tuple[str | None, bool, str, tuple[str, ...]], tuple[Fraction, tuple[str, ...], Fraction]] = {}
    for (o, path), w in zip(items, ws, strict=True):
        k = (o.dnat, o.masquerade, o.verdict, o.assumes)
        if k in acc:
            p0, path0, w0 = acc[k]
            acc[k] = (p0 + o.probability, path0, w0 + w)
        else:
            acc[k] = (o.probability, path, w)
    if not _sums_to_one(ws):
        total = math.fsum(float(p) for p in ws)
        raise TraceError(f"internal error: outcome probabilities sum to {total!r}, not 1")
    keys = sorted(acc, key=lambda k: _ProbKey(acc[k][0], (k[0] or "", k[1], k[2], k[3])))
    outcomes = tuple(Outcome(acc[k][0], k[0], k[1], k[2], k[3]) for k in keys)  # type: ignore[arg-type]
    return outcomes, tuple(acc[k][1] for k in keys), tuple(acc[k][2] for k in keys)


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
    hit = prob * p  # Fraction's product reduces by gcds with p's small terms: cheap
    if hit.denominator.bit_length() <= EXACT_BITS:
        return hit, prob - hit
    num, den = hit.numerator, hit.denominator
    k = ((num << (EXACT_BITS + 1)) + den) // (2 * den)
    if k == 0:
        return Fraction(0), prob
    # The same values as Fraction arithmetic, without its gcds of two ~4,000-bit numbers (65 µs each,
    # two per endpoint): k/2^EXACT_BITS reduces by k's trailing zeros, and prob − hit (prob = a/D in
    # lowest terms) has no odd factor of D in its numerator, so it reduces by a power of two only.
    tz = min(_trailing_zeros(k), EXACT_BITS)
    h, m = k >> tz, EXACT_BITS - tz
    a, d = prob.numerator, prob.denominator
    e = _trailing_zeros(d)
    top = max(e, m)
    n = (a << (top - e)) - ((h * (d >> e)) << (top - m))
    if n == 0:
        return _coprime(h, 1 << m), Fraction(0)
    t = min(_trailing_zeros(n), top)
    return _coprime(h, 1 << m), _coprime(n >> t, (d >> e) << (top - t))


def _trailing_zeros(n: int) -> int:
    """The exponent of 2 in ``n`` (n ≠ 0, either sign)."""
    return (n & -n).bit_length() - 1


_FROM_COPRIME: Any = getattr(Fraction, "_from_coprime_ints", None)


def _coprime(n: int, d: int) -> Fraction:
    """``Fraction(n, d)`` for ``d > 0`` and ``n``, ``d`` already in lowest terms, without the gcd."""
    if _FROM_COPRIME is not None:  # Python ≥ 3.12
        return cast(Fraction, _FROM_COPRIME(n, d))
    new: Any = Fraction
    try:
        return cast(Fraction, new(n, d, _normalize=False))  # Python 3.11
    except TypeError:  # pragma: no cover - neither private constructor
        return Fraction(n, d)


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
        # exact: numerators added per denominator first (a long statistic chain's outcomes share a few
        # denominators), then one Fraction sum over the distinct denominators
        by_den: dict[int, int] = {}
        for p in probs:
            by_den[p.denominator] = by_den.get(p.denominator, 0) + p.numerator
        return sum((Fraction(n, d) for d, n in by_den.items()), Fraction(0)) == 1
    q = _MOD_PRIME
    acc = 0
    for p in probs:
        acc = (acc + (p.numerator % q) * pow(p.denominator % q, -1, q)) % q
    return acc == 1 and abs(math.fsum(float(p) for p in probs) - 1) < 1e-9


class _ProbKey:
    """Sort key: descending probability, then ``rest``. Compares floats first (cheap) and the exact
    fractions only when the floats tie, so the order is exact without big multiplications."""

    __slots__ = ("approx", "prob", "rest")

    def __init__(self, prob: Fraction, rest: tuple[str, bool, str, tuple[str, ...]]) -> None:
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
        if packet.first_backend is not None:  # never a silent answer: nft averages over first backends
            raise TraceError(
                f"first_backend={packet.first_backend!r} is traced through iptables and IPVS rulesets; the "
                "nftables tracer traces a returning client averaged over its first connection's backends "
                "(leave first_backend=None)"
            )
        from pytest_k8sstate.trace.nft import trace_nft

        return trace_nft(ruleset, packet)
    raise TypeError(f"cannot trace through {type(ruleset).__name__}")
