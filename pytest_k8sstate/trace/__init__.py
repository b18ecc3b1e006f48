"""Packet-path simulation over parsed rules → distribution of outcomes.

``trace(ruleset, packet)`` dispatches on the ruleset type:
:class:`pytest_k8sstate.parse.iptables.IptablesRuleset` → :mod:`.iptables`,
:class:`pytest_k8sstate.parse.nft.NftRuleset` → :mod:`.nft`.

Probabilities are exact (:class:`fractions.Fraction`); identical outcomes are merged and the
probabilities of a result always sum to 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from pytest_k8sstate.errors import ParseError, TraceError

Verdict = Literal["ACCEPT", "DROP", "REJECT"]
Proto = Literal["tcp", "udp", "sctp"]

__all__ = ["Outcome", "Packet", "TraceError", "TraceResult", "parse_hostport", "trace"]


def parse_hostport(text: str, *, what: str = "destination") -> tuple[str, int]:
    """``"10.96.0.1:443"`` → ``("10.96.0.1", 443)``; raises ParseError naming ``what``."""
    host, sep, port = text.rpartition(":")
    try:
        if not sep:
            raise ValueError(text)
        ipaddress.IPv4Address(host)
        p = int(port)
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

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": [o.to_json() for o in self.outcomes]}

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
    total = sum((v[0] for v in acc.values()), Fraction(0))
    if total != 1:
        raise TraceError(f"internal error: outcome probabilities sum to {float(total)!r}, not 1")
    keys = sorted(acc, key=lambda k: (-acc[k][0], k[0] or "", k[1], k[2]))
    outcomes = tuple(Outcome(acc[k][0], k[0], k[1], k[2]) for k in keys)  # type: ignore[arg-type]
    return outcomes, tuple(acc[k][1] for k in keys)


def trace(ruleset: object, packet: Packet) -> TraceResult:
    """Trace ``packet`` through an iptables or nftables ruleset (see module doc)."""
    from pytest_k8sstate.parse.iptables import IptablesRuleset
    from pytest_k8sstate.parse.nft import NftRuleset

    if isinstance(ruleset, IptablesRuleset):
        from pytest_k8sstate.trace.iptables import trace_iptables

        return trace_iptables(ruleset, packet)
    if isinstance(ruleset, NftRuleset):
        from pytest_k8sstate.trace.nft import trace_nft

        return trace_nft(ruleset, packet)
    raise TypeError(f"cannot trace through {type(ruleset).__name__}")
