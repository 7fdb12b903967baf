"""Statistics for measurements: Wilson intervals, exact McNemar on paired samples, paired bootstrap.

Everything here is small and leans on scipy, so the numbers match what a statistician would compute by hand:

- `wilson_interval(k, n)`: the Wilson score interval of a proportion (good coverage at small n and near 0
  or 1, unlike the normal approximation).
- `mcnemar_exact(b, c)`: the exact (binomial) McNemar test on the two discordant counts of paired binary
  outcomes; this is the right test when two models answer the *same* programs.
- `paired_outcomes` / `compare_paired`: pair two runs' per-sample outcomes by a key (the program hash)
  and return the counts, the delta and the p-value in one `PairedComparison`.
- `paired_bootstrap_ci`: a percentile interval of the mean paired difference of a continuous metric.
- `paired_difference_interval`: Newcombe's score interval of a paired difference of proportions.
- `spearman`: the rank correlation of two score vectors (how far an estimate orders cells like the truth).
- `holm_adjust`: Holm's step-down adjusted p-values, for family-wise error control over many cases.
- `programs_to_clear_bar` / `mcnemar_programs_needed`: roughly how many programs would decide a gate whose
  interval straddles its bar, or a paired comparison that is not yet significant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n.

    Args:
        k: Number of successes, 0 <= k <= n.
        n: Number of trials. With n == 0 nothing is known and the interval is (0.0, 1.0).
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        (low, high), both within [0, 1].

    Raises:
        ValueError: When k or n are negative, k > n, or confidence is outside (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n; got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if n == 0:
        return (0.0, 1.0)
    # The closed form, with z from scipy: identical to binomtest(k, n).proportion_ci(method="wilson") (the
    # tests check that) and ~1000x faster, which matters at one interval per metric per case.
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    # At k = 0 (k = n) the bound is exactly 0 (1); rounding would otherwise leave ~1e-17.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class Proportion:
    """k successes in n trials with the Wilson 95% interval (value None when n is 0)."""

    k: int
    n: int
    value: float | None
    low: float
    high: float


def pooled_proportion(counts: Iterable[tuple[int, int]]) -> Proportion:
    """Pool (k, n) counts of several cases into one proportion: k and n summed, Wilson 95% interval.

    The one way the harness pools cases (gates over a family, the report's family rows, the seed runner's
    groups): summing counts weights every program equally, where averaging case rates would not.
    """
    k = n = 0
    for case_k, case_n in counts:
        k += int(case_k)
        n += int(case_n)
    low, high = wilson_interval(k, n)
    return Proportion(k, n, k / n if n else None, low, high)


@functools.lru_cache(maxsize=16)
def _z(confidence: float) -> float:
    from scipy import (
        stats as scipy_stats,
    )  # deferred: scipy.stats costs ~0.5 s and the plugin loads this module

    return float(scipy_stats.norm.ppf(0.5 + confidence / 2.0))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts of paired binary outcomes.

    Under the null hypothesis (both systems equally accurate) each discordant pair is a fair coin, so the
    p-value is a two-sided binomial test of b successes in b + c trials at p = 0.5.

    Args:
        b: Pairs where the first system is right and the second wrong.
        c: Pairs where the first system is wrong and the second right.

    Returns:
        The p-value; 1.0 when there are no discordant pairs (no evidence of a difference).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative; got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    from scipy import (
        stats as scipy_stats,
    )  # deferred: scipy.stats costs ~0.5 s and the plugin loads this module

    return float(scipy_stats.binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of a binary outcome between a baseline run and a new run.

    Attributes:
        n_pairs: Samples present in both runs (matched by key).
        base_k: Successes of the baseline on the paired samples.
        new_k: Successes of the new run on the paired samples.
        base_only: Pairs the baseline got right and the new run wrong (McNemar's b).
        new_only: Pairs the new run got right and the baseline wrong (McNemar's c).
        delta: new rate - base rate on the paired samples (0.0 when there are no pairs).
        p_value: Exact McNemar p-value (1.0 when there are no discordant pairs).
    """

    n_pairs: int
    base_k: int
    new_k: int
    base_only: int
    new_only: int
    delta: float
    p_value: float

    @property
    def base_rate(self) -> float:
        """Baseline success rate on the paired samples (nan with no pairs)."""
        return self.base_k / self.n_pairs if self.n_pairs else math.nan

    @property
    def new_rate(self) -> float:
        """New-run success rate on the paired samples (nan with no pairs)."""
        return self.new_k / self.n_pairs if self.n_pairs else math.nan

    def delta_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Newcombe's interval of `delta` (`paired_difference_interval`); (-1, 1) with no pairs."""
        both = self.base_k - self.base_only
        neither = self.n_pairs - both - self.base_only - self.new_only
        return paired_difference_interval(both, self.base_only, self.new_only, neither, confidence)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with the two rates added."""
        out = asdict(self)
        out["base_rate"] = None if self.n_pairs == 0 else self.base_rate
        out["new_rate"] = None if self.n_pairs == 0 else self.new_rate
        return out


def paired_outcomes(base: Mapping[str, bool], new: Mapping[str, bool]) -> list[tuple[bool, bool]]:
    """Pair two keyed outcome maps on their common keys, in sorted key order (deterministic)."""
    return [(bool(base[key]), bool(new[key])) for key in sorted(base.keys() & new.keys())]


def compare_paired(pairs: Iterable[tuple[bool, bool]]) -> PairedComparison:
    """Summarise (baseline outcome, new outcome) pairs with counts, delta and the exact McNemar p-value."""
    n = base_k = new_k = b = c = 0
    for base_ok, new_ok in pairs:
        n += 1
        base_k += bool(base_ok)
        new_k += bool(new_ok)
        b += bool(base_ok) and not new_ok
        c += bool(new_ok) and not base_ok
    delta = (new_k - base_k) / n if n else 0.0
    return PairedComparison(n, base_k, new_k, b, c, delta, mcnemar_exact(b, c))


def paired_bootstrap_ci(
    base: Sequence[float],
    new: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean paired difference (new - base) with a percentile bootstrap interval.

    Args:
        base: Baseline values, aligned with `new` (same samples, same order).
        new: New-run values.
        confidence: Coverage of the interval.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling, so reports are reproducible.

    Returns:
        (mean difference, low, high). With fewer than two pairs the interval is (nan, nan).
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths; got {a.shape[0]} and {b.shape[0]}")
    diff = b - a
    if diff.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(diff.mean())
    if diff.size < 2:
        return (mean, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_resamples, diff.size))
    means = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return (mean, float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha)))


def interval_straddles(low: float, high: float, bar: float) -> bool:
    """Whether a bar lies strictly inside an interval: the data cannot tell which side the truth is on."""
    return low < bar < high


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (`scipy.stats.spearmanr`, ties at their mean rank).

    Returns:
        The correlation, or nan when it is undefined (fewer than two values, or either side constant).
    """
    from scipy.stats import spearmanr  # deferred: scipy.stats costs a noticeable part of a second to import

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given.

    Sort the m p-values ascending; the i-th smallest (i = 1..m) is multiplied by m - i + 1, capped at 1, and
    each adjusted value is raised to at least the one before it (the step-down). Rejecting every hypothesis
    whose adjusted p-value is below alpha keeps the family-wise error rate at alpha under any dependence
    between the tests, and rejects everything Bonferroni rejects.

    Args:
        p_values: Raw p-values in [0, 1].

    Returns:
        The adjusted p-values, aligned with `p_values` (an empty list for no tests).

    Raises:
        ValueError: When a p-value is not a number in [0, 1].
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not 0.0 <= p <= 1.0:  # also refuses NaN
            raise ValueError(f"p-values must lie in [0, 1]; got {p!r}")
    m = len(values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def paired_difference_interval(
    both: int, ref_only: int, new_only: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of a paired difference of proportions.

    For two systems answering the same n items, the difference is new rate - reference rate
    = (new_only - ref_only) / n. The interval combines the Wilson intervals (l1, u1) of the new rate p1 and
    (l2, u2) of the reference rate p2 with the correlation phi of the 2x2 table:

        low  = d - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    with phi = (both * neither - ref_only * new_only) / sqrt(product of the four margins), and 0 when a margin
    is empty (Newcombe 1998, Statistics in Medicine 17:2635; recommended by Fagerland, Lydersen and Laake
    2014). Unlike the Wald interval it keeps its coverage at small n and near 0 or 1.

    Args:
        both: Items both systems got right.
        ref_only: Items only the reference got right.
        new_only: Items only the new system got right.
        neither: Items both got wrong.
        confidence: Coverage of the interval.

    Returns:
        (low, high) within [-1, 1]; (-1.0, 1.0) when there are no items.

    Raises:
        ValueError: On a negative count.
    """
    counts = (both, ref_only, new_only, neither)
    if min(counts) < 0:
        raise ValueError(f"paired counts must be non-negative; got {counts}")
    n = sum(counts)
    if n == 0:
        return (-1.0, 1.0)
    p1, p2 = (both + new_only) / n, (both + ref_only) / n
    l1, u1 = wilson_interval(both + new_only, n, confidence)
    l2, u2 = wilson_interval(both + ref_only, n, confidence)
    margins = (both + new_only) * (ref_only + neither) * (both + ref_only) * (new_only + neither)
    phi = (both * neither - ref_only * new_only) / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    # The radicands are sums of squares less at most twice their product (|phi| <= 1): never negative
    # beyond rounding.
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, low), min(1.0, high))


#: Largest sample size the power estimates return; beyond it they say "no feasible number" (None).
MAX_PROGRAMS_ESTIMATE = 10**9


def wilson_half_width(rate: float, n: int, confidence: float = 0.95) -> float:
    """Half the width of the Wilson interval of a proportion observed at `rate` over `n` trials."""
    z = _z(confidence)
    return z * math.sqrt(rate * (1.0 - rate) / n + z * z / (4.0 * n * n)) / (1.0 + z * z / n)


def programs_to_clear_bar(rate: float, bar: float, confidence: float = 0.95) -> int | None:
    """About how many trials would put a bar outside the Wilson interval, if the rate stayed as observed.

    The smallest n whose Wilson half-width at `rate` (`wilson_half_width`) falls below |rate - bar|: the
    half-width shrinks as n grows, so a doubling search and a bisection find it. It is an estimate of how
    many programs would decide a gate whose interval straddles its bar, not a guarantee: the rate itself
    moves as programs are added, and the Wilson interval is not centred on the rate.

    Args:
        rate: Observed proportion in [0, 1].
        bar: The gate's bar.
        confidence: Coverage of the interval (the gates use 95%).

    Returns:
        n, or None when rate equals the bar (no number of trials separates them) or n would exceed
        `MAX_PROGRAMS_ESTIMATE`.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1]; got {rate!r}")
    gap = abs(rate - bar)
    if gap == 0.0:
        return None
    high = 1
    while wilson_half_width(rate, high, confidence) >= gap:
        high *= 2
        if high > MAX_PROGRAMS_ESTIMATE:
            return None
    low = high // 2  # half-width(low) >= gap, or low == 0
    while high - low > 1:
        mid = (low + high) // 2
        if wilson_half_width(rate, mid, confidence) < gap:
            high = mid
        else:
            low = mid
    return high


def mcnemar_programs_needed(
    discordant_rate: float, delta: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """About how many paired items a McNemar test needs to find a difference `delta` (two-sided, at alpha).

    Connor's normal approximation (Biometrics 43:207, 1987), from the observed proportion of discordant pairs
    psi = (b + c) / n and the observed difference delta = (c - b) / n:

        n = (z_{1 - alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2

    Args:
        discordant_rate: psi, in (0, 1].
        delta: The difference to detect (its sign does not matter); |delta| <= psi.
        alpha: Two-sided significance level, in (0, 1).
        power: Probability of finding the difference, in (0, 1).

    Returns:
        n rounded up, or None when delta or psi is 0 (nothing to find) or n would exceed
        `MAX_PROGRAMS_ESTIMATE`.

    Raises:
        ValueError: On a rate outside [0, 1], |delta| > psi, or alpha / power outside (0, 1).
    """
    if not 0.0 <= discordant_rate <= 1.0:
        raise ValueError(f"discordant_rate must lie in [0, 1]; got {discordant_rate!r}")
    if abs(delta) > discordant_rate + 1e-12:
        raise ValueError(f"|delta| cannot exceed the discordant rate; got {delta!r} > {discordant_rate!r}")
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must lie in (0, 1); got alpha={alpha!r}, power={power!r}")
    if delta == 0.0 or discordant_rate == 0.0:
        return None
    z_alpha = _z(1.0 - alpha)  # _z(c) is the two-sided quantile: z_{1 - alpha/2} for c = 1 - alpha
    z_power = _z(2.0 * power - 1.0)  # and z_{power} for c = 2 power - 1 (one-sided)
    root = z_alpha * math.sqrt(discordant_rate) + z_power * math.sqrt(max(0.0, discordant_rate - delta**2))
    n = math.ceil(root * root / (delta * delta) - 1e-9)
    return n if n <= MAX_PROGRAMS_ESTIMATE else None
