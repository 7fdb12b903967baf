"""Tests of debug.stats against hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from debug.stats import (
    compare_paired,
    interval_straddles,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_outcomes,
    wilson_interval,
)


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (7, 10), (1, 3), (48, 50), (500, 1000)])
def test_wilson_matches_the_textbook_formula(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    ref_low, ref_high = _wilson_by_hand(k, n)
    assert low == pytest.approx(max(0.0, ref_low), abs=1e-9)
    assert high == pytest.approx(min(1.0, ref_high), abs=1e-9)


@pytest.mark.parametrize(("k", "n", "confidence"), [(0, 10, 0.95), (3, 7, 0.9), (41, 50, 0.99), (1, 1, 0.8)])
def test_wilson_matches_scipy_binomtest(k: int, n: int, confidence: float) -> None:
    from scipy.stats import binomtest

    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(k, n, confidence) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_known_value_zero_of_ten() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)


def test_wilson_narrows_with_confidence() -> None:
    wide = wilson_interval(30, 60, confidence=0.99)
    narrow = wilson_interval(30, 60, confidence=0.80)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


def test_wilson_empty_and_bad_input() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 3, confidence=1.5)


@given(st.integers(min_value=1, max_value=400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_point_estimate(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_mcnemar_exact_known_values() -> None:
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_compare_paired_counts_discordant_pairs() -> None:
    base = {"a": True, "b": True, "c": False, "d": True, "only-base": True}
    new = {"a": True, "b": False, "c": True, "d": False, "only-new": False}
    pairs = paired_outcomes(base, new)
    assert len(pairs) == 4
    result = compare_paired(pairs)
    assert (result.n_pairs, result.base_k, result.new_k) == (4, 3, 2)
    assert (result.base_only, result.new_only) == (2, 1)
    assert result.delta == pytest.approx(-0.25)
    assert result.p_value == pytest.approx(mcnemar_exact(2, 1))
    assert result.to_dict()["base_rate"] == pytest.approx(0.75)


def test_compare_paired_empty() -> None:
    result = compare_paired([])
    assert result.n_pairs == 0 and result.p_value == 1.0
    assert result.to_dict()["new_rate"] is None


def test_paired_bootstrap_covers_a_clear_shift() -> None:
    base = [float(i % 7) for i in range(200)]
    new = [b + 1.0 for b in base]
    mean, low, high = paired_bootstrap_ci(base, new)
    assert mean == pytest.approx(1.0)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    noisy = [b + (1.0 if i % 2 else -0.5) for i, b in enumerate(base)]
    mean, low, high = paired_bootstrap_ci(base, noisy)
    assert low < mean < high
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


def test_interval_straddles() -> None:
    assert interval_straddles(0.8, 0.97, 0.95)
    assert not interval_straddles(0.96, 0.99, 0.95)
    assert not interval_straddles(0.5, 0.9, 0.95)
