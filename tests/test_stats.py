"""Tests of debug.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from debug.stats import (
    compare_paired,
    holm_adjust,
    interval_straddles,
    mcnemar_exact,
    mcnemar_programs_needed,
    paired_bootstrap_ci,
    paired_difference_interval,
    paired_outcomes,
    programs_to_clear_bar,
    spearman,
    wilson_half_width,
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


def test_holm_adjust_worked_example() -> None:
    """Four raw p-values [0.01, 0.04, 0.03, 0.005], adjusted by hand (m = 4).

    Ascending: 0.005 (4th), 0.01 (1st), 0.03 (3rd), 0.04 (2nd); multiply the i-th smallest by m - i + 1:
    4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04, then make them non-decreasing:
    0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06. In the input order: [0.03, 0.06, 0.06, 0.02]. At alpha 0.05
    the step-down rejects the 4th (0.005 <= 0.05/4) and the 1st (0.01 <= 0.05/3) and stops at the 3rd
    (0.03 > 0.05/2): exactly the adjusted values below 0.05.
    """
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_adjust_edges() -> None:
    assert holm_adjust([]) == []
    assert holm_adjust([0.2]) == [0.2]
    assert holm_adjust([0.6, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])  # capped at 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([1.5])


@given(st.lists(st.floats(0.0, 1.0), max_size=30))
def test_holm_is_between_raw_and_bonferroni(p_values: list[float]) -> None:
    adjusted = holm_adjust(p_values)
    m = len(p_values)
    for raw, adj in zip(p_values, adjusted):
        assert raw - 1e-12 <= adj <= min(1.0, m * raw) + 1e-12
    order = sorted(range(m), key=p_values.__getitem__)
    assert all(adjusted[a] <= adjusted[b] + 1e-12 for a, b in zip(order, order[1:]))


def test_paired_difference_interval_by_hand() -> None:
    """30 both right, 8 only the reference, 2 only the new system, 10 neither (n = 50).

    New rate p1 = 32/50, reference rate p2 = 38/50, delta = -0.12. phi = (30*10 - 8*2) / sqrt(32*18*38*12).
    The interval adds the Wilson distances of each rate, less the correlation term.
    """
    low, high = paired_difference_interval(30, 8, 2, 10)
    p1, p2 = 32 / 50, 38 / 50
    l1, u1 = _wilson_by_hand(32, 50)
    l2, u2 = _wilson_by_hand(38, 50)
    phi = (30 * 10 - 8 * 2) / math.sqrt(32 * 18 * 38 * 12)
    d = p1 - p2
    assert low == pytest.approx(
        d - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    )
    assert high == pytest.approx(
        d + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    )
    assert low < d < high


def test_paired_difference_interval_properties() -> None:
    # An empty margin (the new system never right) sets phi = 0: Newcombe's square-and-add of the two
    # Wilson distances. New rate 0/10 (interval [0, u1]), reference rate 5/10 ([l2, u2]), delta -0.5.
    low, high = paired_difference_interval(0, 5, 0, 5)
    _, u1 = _wilson_by_hand(0, 10)
    l2, u2 = _wilson_by_hand(5, 10)
    assert low == pytest.approx(-0.5 - (u2 - 0.5))
    assert high == pytest.approx(-0.5 + math.sqrt(u1**2 + (0.5 - l2) ** 2))
    # Perfectly anti-correlated answers (phi = -1): the two distances add up.
    low, _ = paired_difference_interval(0, 5, 5, 0)
    assert low == pytest.approx(-2 * (0.5 - _wilson_by_hand(5, 10)[0]))
    # Swapping the roles of the two systems mirrors the interval.
    a = paired_difference_interval(30, 8, 2, 10)
    b = paired_difference_interval(30, 2, 8, 10)
    assert a == pytest.approx((-b[1], -b[0]))
    assert paired_difference_interval(0, 0, 0, 0) == (-1.0, 1.0)
    assert paired_difference_interval(0, 20, 0, 0)[0] == -1.0  # clipped to the range of a difference
    with pytest.raises(ValueError):
        paired_difference_interval(-1, 0, 0, 0)


def test_paired_difference_interval_coverage() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    probs, n = [0.7, 0.1, 0.05, 0.15], 60  # both, reference only, new only, neither
    truth = probs[2] - probs[1]
    draws = rng.multinomial(n, probs, size=1000)
    covered = sum(lo <= truth <= hi for lo, hi in (paired_difference_interval(*map(int, c)) for c in draws))
    assert 0.92 <= covered / 1000 <= 0.98


def test_programs_to_clear_bar_is_the_first_n_whose_half_width_falls_below_the_gap() -> None:
    n = programs_to_clear_bar(0.95, 0.93)
    assert n is not None
    assert wilson_half_width(0.95, n) < 0.02 <= wilson_half_width(0.95, n - 1)
    # Roughly z^2 p (1 - p) / gap^2 = 3.84 * 0.0475 / 0.0004 = 456, plus the Wilson correction.
    assert 440 <= n <= 480
    assert programs_to_clear_bar(0.95, 0.95) is None
    assert programs_to_clear_bar(0.5, 0.5 + 1e-9) is None  # past MAX_PROGRAMS_ESTIMATE
    assert programs_to_clear_bar(1.0, 0.9) is not None and programs_to_clear_bar(1.0, 0.9) < 40


def test_mcnemar_programs_needed_worked_example() -> None:
    """Discordant rate psi = 0.2, delta = 0.1, two-sided alpha 0.05, 80% power (Connor 1987).

    z_{0.975} = 1.959964, z_{0.8} = 0.841621; sqrt(0.2) = 0.447214, sqrt(0.2 - 0.01) = 0.435890;
    (1.959964 * 0.447214 + 0.841621 * 0.435890)^2 / 0.01 = (0.876523 + 0.366853)^2 / 0.01 = 154.6 -> 155.
    """
    assert mcnemar_programs_needed(0.2, 0.1) == 155
    assert mcnemar_programs_needed(0.2, -0.1) == 155  # the sign does not matter
    assert mcnemar_programs_needed(0.2, 0.0) is None
    assert mcnemar_programs_needed(0.2, 0.1, alpha=0.01) > 155
    with pytest.raises(ValueError, match="discordant rate"):
        mcnemar_programs_needed(0.1, 0.2)


def test_spearman_ranks_ties_at_their_mean_and_is_nan_when_undefined() -> None:
    a = [0.1, 0.5, 0.3, 0.9]
    assert spearman(a, [10 * v for v in a]) == pytest.approx(1.0)
    assert spearman(a, [-v for v in a]) == pytest.approx(-1.0)
    # Ranks with ties: [1.5, 0, 1.5] against [1, 0, 2] -> Pearson of the ranks.
    by_hand = np.corrcoef([1.5, 0, 1.5], [1, 0, 2])[0, 1]
    assert spearman([2.0, 1.0, 2.0], [1.0, 0.0, 2.0]) == pytest.approx(by_hand)
    assert np.isnan(spearman(a, [1.0] * 4)) and np.isnan(spearman([1.0], [2.0]))
