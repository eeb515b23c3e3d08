"""Statistics a quality engineer accepts: intervals over folds and paired tests on the same images.

Two models tested on the same images are compared image by image, not by their two rates: the
images both get right (or both miss) say nothing about which is better. McNemar's exact test asks
whether the discordant images (one right, the other wrong) split more unevenly than a coin would
(scipy's exact binomial test); a bootstrap over images gives the interval of the difference in
rate. A k-fold figure is reported as the mean over folds with a Student-t 95 % interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # the values it rests on (folds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval (a single value: the value, an interval of zero width)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(x) == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if len(x) == 1:
        return Interval(mean, mean, mean, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


@dataclass(frozen=True)
class PairedComparison:
    """B against A on the same images for one 0/1 outcome (e.g. "defect caught")."""

    what: str
    n: int  # images compared
    rate_a: float
    rate_b: float
    difference: float  # rate_b - rate_a
    low: float  # bootstrap 95 % interval of the difference
    high: float
    only_a: int  # images where A has the outcome and B not
    only_b: int
    p_value: float  # McNemar's exact test on only_a vs only_b
    verdict: str  # "no difference shown" | "B higher" | "B lower"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(what: str, a: Sequence[bool], b: Sequence[bool], *, resamples: int = 10_000,
                      seed: int = 0) -> PairedComparison:
    """McNemar's exact test and a bootstrap interval for outcome B minus outcome A, per image."""
    from scipy import stats

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("two equal, non-empty 1-D outcome vectors are needed")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p_value = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)
    rng = np.random.default_rng(seed)
    diff = b.astype(np.int8) - a.astype(np.int8)
    samples = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[samples].mean(axis=1)
    low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    difference = float(diff.mean())
    verdict = ("no difference shown" if p_value >= ALPHA
               else ("B higher" if difference > 0 else "B lower"))
    return PairedComparison(what, len(a), float(a.mean()), float(b.mean()), difference, low, high,
                            only_a, only_b, p_value, verdict)
