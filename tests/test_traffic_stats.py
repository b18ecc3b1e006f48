"""The traced-vs-observed split test (traffic.stats): p-values, verdicts, the false-failure rate."""

from __future__ import annotations

import math
import random

import pytest

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.traffic.stats import DEFAULT_ALPHA, chi2_sf, min_connections, split_test

THIRDS = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}


@pytest.mark.parametrize(
    ("x", "df", "expected"),
    [
        (3.841459, 1, 0.05),  # textbook critical values
        (5.991465, 2, 0.05),
        (7.814728, 3, 0.05),
        (9.487729, 4, 0.05),
        (11.070498, 5, 0.05),
        (16.811894, 6, 0.01),
        (2 * math.log(1e4), 2, 1e-4),  # df=2: P = exp(-x/2)
        (15.136705, 1, 1e-4),
        (21.107514, 3, 1e-4),
        (0.0, 3, 1.0),
    ],
)
def test_chi2_sf_matches_known_values(x, df, expected):
    assert chi2_sf(x, df) == pytest.approx(expected, rel=1e-5)


def test_chi2_sf_closed_forms():
    for x in (0.1, 1.0, 4.0, 30.0):
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
        assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-12)
    with pytest.raises(ConfigError, match="degrees of freedom"):
        chi2_sf(1.0, 0)


def test_fair_split_passes_and_skewed_split_fails():
    fair = split_test(THIRDS, {"a": 104, "b": 95, "c": 101})
    assert fair.passed
    assert fair.df == 2
    assert fair.p_value > 0.5
    skewed = split_test(THIRDS, {"a": 150, "b": 75, "c": 75})
    assert not skewed.passed
    assert skewed.statistic == pytest.approx(37.5)  # 300 · Σ (p-q)²/q for 1/2, 1/4, 1/4
    table = "\n".join(skewed.table())
    assert "traced p" in table
    assert "observed" in table
    assert "150" in table
    assert "0.33333" in table


def test_missing_backend_and_impossible_outcome_fail():
    assert not split_test(THIRDS, {"a": 150, "b": 150}).passed  # c never answered
    refused = split_test(THIRDS, {"a": 100, "b": 100, "c": 99, "refused": 1})
    assert not refused.passed
    assert refused.impossible == ("refused",)
    assert "never traced" in "\n".join(refused.table())


def test_single_outcome_has_no_degrees_of_freedom():
    assert split_test({"refused": 1.0}, {"refused": 20}).passed
    bad = split_test({"refused": 1.0}, {"refused": 19, "a": 1})
    assert not bad.passed
    assert bad.impossible == ("a",)


def test_too_few_connections_and_bad_input_are_one_clear_error():
    assert min_connections(THIRDS) == 15
    assert min_connections({"a": 0.9, "b": 0.1}) == 50
    with pytest.raises(ConfigError, match="probe at least 15 connections"):
        split_test(THIRDS, {"a": 5, "b": 4, "c": 5})
    with pytest.raises(ConfigError, match="sum to 1"):
        split_test({"a": 0.5, "b": 0.4}, {"a": 50, "b": 50})
    with pytest.raises(ConfigError, match="alpha"):
        split_test(THIRDS, {"a": 100, "b": 100, "c": 100}, alpha=0)


def _rejections(probs: dict[str, float], truth: list[float], n: int, trials: int, alpha: float) -> int:
    rng = random.Random(20261203)
    names = list(probs)
    fails = 0
    for _ in range(trials):
        draws = rng.choices(names, weights=truth, k=n)
        counts = {k: draws.count(k) for k in names}
        fails += not split_test(probs, counts, alpha=alpha).passed
    return fails


def test_false_failure_rate_is_alpha():
    """3 equal backends, N=300: a fair sampler fails at rate ~alpha. At alpha=0.01 over 4000 seeded runs
    the expected 40 failures have a standard deviation of 6.3; [15, 70] is a > 4-sigma band."""
    fails = _rejections(THIRDS, [1, 1, 1], 300, 4000, 0.01)
    assert 15 <= fails <= 70, fails
    # the default alpha: 2000 fair runs, expected 0.2 failures
    assert _rejections(THIRDS, [1, 1, 1], 300, 2000, DEFAULT_ALPHA) <= 2


def test_power_against_a_skewed_backend():
    """N=300: a backend at 1/2 instead of 1/3 fails the default-alpha test in (almost) every run."""
    fails = _rejections(THIRDS, [2, 1, 1], 300, 300, DEFAULT_ALPHA)
    assert fails >= 290, fails
