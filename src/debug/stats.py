"""Statistics for measurements: Wilson intervals, exact McNemar on paired samples, paired bootstrap.

Everything here is small and leans on scipy, so the numbers match what a statistician would compute by hand:

- `wilson_interval(k, n)`: the Wilson score interval of a proportion (good coverage at small n and near 0
  or 1, unlike the normal approximation).
- `mcnemar_exact(b, c)`: the exact (binomial) McNemar test on the two discordant counts of paired binary
  outcomes; this is the right test when two models answer the *same* programs.
- `paired_outcomes` / `compare_paired`: pair two runs' per-sample outcomes by a key (the program hash)
  and return the counts, the delta and the p-value in one `PairedComparison`.
- `paired_bootstrap_ci`: a percentile interval of the mean paired difference of a continuous metric.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats


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


@functools.lru_cache(maxsize=16)
def _z(confidence: float) -> float:
    return float(_scipy_stats.norm.ppf(0.5 + confidence / 2.0))


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
    return float(_scipy_stats.binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


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
