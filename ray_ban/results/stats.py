"""Statistics over seeds: a cell's mean with its Student-t interval, and paired tests between two cells.

Every seed of a sweep is one independent sample of each cell (teacher, BAN-k, Ens*k, ...). Within a
seed a chain's generations share one lineage (the student learns from that seed's teacher), so two
cells are compared seed by seed, as pairs, never as two independent samples. Pure functions of
numbers on scipy.stats: no Arrow, no torch.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
DECIMALS = 10  # differences of error rates are multiples of 100/N: round float noise away so equal ones tie


@dataclass(frozen=True)
class Spread:
    """n samples: their mean, sample standard deviation and Student-t interval (None below two samples)."""

    n: int
    mean: Optional[float]
    std: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]

    @property
    def half_width(self) -> Optional[float]:
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2

    def contains(self, value: Optional[float]) -> Optional[bool]:
        """Whether ``value`` lies inside the interval; None without an interval or a value."""
        if value is None or self.ci_low is None:
            return None
        return self.ci_low <= value <= self.ci_high


def spread(values: Sequence[float], confidence: float = CONFIDENCE) -> Spread:
    """Mean, standard deviation (n - 1) and the two-sided t interval ``mean ± t(n-1) * sd / sqrt(n)``."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Spread(0, None, None, None, None)
    mean = statistics.fmean(values)
    if n == 1:
        return Spread(1, mean, None, None, None)
    std = statistics.stdev(values)
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both cells have: the mean difference, its t interval and two tests' p-values."""

    seeds: tuple[int, ...]
    difference: Spread
    t_p: Optional[float]  # paired t-test (normal differences), two-sided
    wilcoxon_p: Optional[float]  # Wilcoxon signed-rank (no normality assumed), two-sided; zero differences dropped

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> Paired:
    """Compare two cells seed by seed: only seeds present in both count. p-values need two or more pairs
    and are None where the test is undefined (every difference equal to zero, say)."""
    seeds = tuple(sorted(set(a) & set(b)))
    differences = [round(float(a[s]) - float(b[s]), DECIMALS) for s in seeds]
    difference = spread(differences, confidence)
    if len(seeds) < 2:
        return Paired(seeds, difference, None, None)
    with warnings.catch_warnings():  # degenerate samples (all equal) warn; their p-values are mapped to None
        warnings.simplefilter("ignore")
        t_p = scipy_stats.ttest_1samp(differences, 0.0).pvalue  # the paired t-test is a one-sample test of a - b
        wilcoxon_p = scipy_stats.wilcoxon(differences).pvalue if any(differences) else None
    return Paired(seeds, difference, _finite(t_p), _finite(wilcoxon_p))


def _finite(value) -> Optional[float]:
    return None if value is None or not math.isfinite(float(value)) else float(value)
