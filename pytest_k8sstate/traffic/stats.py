"""Does an observed split of connections match the traced probabilities? A chi-square goodness-of-fit test.

Pure functions, no I/O. The p-value is exact for the chi-square distribution (closed forms for integer
degrees of freedom, :func:`chi2_sf`); the test itself is the usual large-sample approximation of the
multinomial, valid when every expected count is at least :data:`MIN_EXPECTED` (Cochran's rule) —
:func:`split_test` refuses smaller samples with a message naming the N that would do.

**False-failure rate.** A fair split (the kernel picks backends with exactly the traced probabilities)
fails with probability ``alpha`` (default :data:`DEFAULT_ALPHA` = 1e-4), up to the approximation error,
which for N=300 and 3 equal backends (100 expected each, critical value 2·ln(10⁴) = 18.42 for 2 degrees of
freedom) is far below alpha itself. **Power**: with N=300 and 3 traced-equal backends, one backend at 1/2
and two at 1/4 gives a noncentrality of 37.5 (fails with probability > 0.99); a backend that never
answers gives an expected statistic of ≥ 150 (always fails).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pytest_k8sstate.errors import ConfigError

__all__ = ["DEFAULT_ALPHA", "MIN_EXPECTED", "SplitTest", "chi2_sf", "min_connections", "split_test"]

DEFAULT_ALPHA = 1e-4
MIN_EXPECTED = 5.0
# a traced probability below this is "impossible" (iptables' 2^-31 probability resolution aside)
_IMPOSSIBLE = 1e-9


def chi2_sf(x: float, df: int) -> float:
    """P(X ≥ x) for X ~ chi-square with ``df`` (≥ 1) degrees of freedom (closed form; exact to float).

    Even ``df``: ``e^(-x/2) · Σ_{i<df/2} (x/2)^i / i!``. Odd ``df``: ``erfc(√(x/2)) + e^(-x/2) ·
    Σ_{i=1}^{(df-1)/2} (x/2)^(i-1/2) / Γ(i+1/2)``.
    """
    if df < 1:
        raise ConfigError(f"chi-square degrees of freedom must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    half = x / 2.0
    if df % 2 == 0:
        term = total = 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) / math.gamma(1.5)  # i = 1: (x/2)^(1/2) / Γ(3/2)
    acc = term
    for i in range(2, (df - 1) // 2 + 1):
        term *= half / (i - 0.5)
        acc += term
    if df >= 3:
        total += math.exp(-half) * acc
    return min(1.0, total)


def min_connections(probabilities: Mapping[str, float]) -> int:
    """The smallest N for which every possible outcome has an expected count ≥ :data:`MIN_EXPECTED`."""
    possible = [p for p in probabilities.values() if p > _IMPOSSIBLE]
    if not possible:
        return 0
    return math.ceil(MIN_EXPECTED / min(possible) - 1e-6)  # iptables stores 1/3 as 0.33333333349


@dataclass(frozen=True)
class SplitTest:
    """The outcome of :func:`split_test`: one row per outcome (traced probability, expected, observed)."""

    total: int
    rows: tuple[tuple[str, float, float, int], ...]  # (outcome, traced p, expected count, observed count)
    statistic: float
    df: int
    p_value: float
    alpha: float
    impossible: tuple[str, ...]  # observed outcomes the trace gives probability 0

    @property
    def passed(self) -> bool:
        return not self.impossible and self.p_value >= self.alpha

    def table(self) -> list[str]:
        """Traced vs observed, side by side."""
        width = max([len("outcome"), *(len(r[0]) for r in self.rows)])
        lines = [f"{'outcome':<{width}}  traced p   expected  observed  observed p"]
        for name, p, expected, observed in self.rows:
            share = observed / self.total if self.total else 0.0
            mark = "   <- never traced" if name in self.impossible else ""
            lines.append(f"{name:<{width}}  {p:8.5f}  {expected:8.1f}  {observed:8d}  {share:10.5f}{mark}")
        lines.append(
            f"N={self.total}  chi2={self.statistic:.2f}  df={self.df}  p={self.p_value:.3g}  "
            f"(fails below alpha={self.alpha:g})"
        )
        return lines


def split_test(
    traced: Mapping[str, float], observed: Mapping[str, int], *, alpha: float = DEFAULT_ALPHA
) -> SplitTest:
    """Chi-square goodness of fit of ``observed`` counts against ``traced`` probabilities.

    Outcomes are keyed by name (a backend, ``refused``, ``timeout`` ...); an observed outcome the trace
    does not have, or has with probability 0, is *impossible*: the test fails whatever the statistic. A
    single possible outcome has no degrees of freedom: the test passes iff nothing else was observed.
    Raises :class:`ConfigError` for probabilities that do not sum to 1, a negative count, or an N too
    small for the approximation (the message names the N needed).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    total_p = sum(traced.values())
    if abs(total_p - 1.0) > 1e-6 or any(p < 0 for p in traced.values()):
        raise ConfigError(
            f"traced probabilities must be >= 0 and sum to 1, got {dict(traced)} (sum {total_p})"
        )
    if any(c < 0 for c in observed.values()):
        raise ConfigError(f"observed counts must be >= 0, got {dict(observed)}")
    n = sum(observed.values())
    names = list(traced) + [k for k in observed if k not in traced]
    impossible = tuple(k for k in names if observed.get(k, 0) > 0 and traced.get(k, 0.0) <= _IMPOSSIBLE)
    possible = [k for k in names if traced.get(k, 0.0) > _IMPOSSIBLE]
    needed = min_connections(traced)
    if n < needed:
        raise ConfigError(
            f"{n} connections are too few to test this split: the least likely outcome needs an expected "
            f"count >= {MIN_EXPECTED:g}; probe at least {needed} connections"
        )
    rows = tuple((k, traced.get(k, 0.0), traced.get(k, 0.0) * n, observed.get(k, 0)) for k in names)
    statistic = (
        sum((observed.get(k, 0) - traced[k] * n) ** 2 / (traced[k] * n) for k in possible) if n else 0.0
    )
    df = len(possible) - 1
    p_value = chi2_sf(statistic, df) if df >= 1 else 1.0
    return SplitTest(n, rows, statistic, df, p_value, alpha, impossible)
