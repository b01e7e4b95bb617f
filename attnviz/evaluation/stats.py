"""Uncertainty for per-image scores: percentile-bootstrap confidence intervals over images.

A table of means hides how much they would move on other images; the bootstrap answers that without
assuming a distribution (pointing-game hits are 0/1, energies are bounded, AUCs are skewed). Images are
resampled with replacement :data:`RESAMPLES` times from a fixed seed, so a CI is reproducible bit for bit
and two metrics computed on the same number of images are resampled with the same draws.

:func:`paired_difference` compares two maps or models *on the same images*: it bootstraps the per-image
differences (variant minus baseline), which keeps the pairing and so is much tighter than comparing two
separate CIs. A difference whose CI excludes 0 is reported as such; nothing here corrects for the many
comparisons a results table makes, so treat a lone excluding CI among dozens with care.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
_MAX_DRAWS = 4_000_000   # resample indices held in memory at once (32 MB of int64); larger jobs go in chunks


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval; ``lo``/``hi`` are None when there is no data."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int

    def to_json(self) -> dict:
        """``{"mean", "ci95": [lo, hi], "n"}``, the shape results.json uses (plain floats, no NaN)."""
        ci = None if self.lo is None else [self.lo, self.hi]
        return {"mean": self.mean, "ci95": ci, "n": self.n}


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``variant - baseline`` over shared images, its CI, and whether the CI leaves out 0."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    excludes_zero: bool

    def to_json(self) -> dict:
        ci = None if self.lo is None else [self.lo, self.hi]
        return {"mean": self.mean, "ci95": ci, "n": self.n, "excludes_zero": self.excludes_zero}


def _as_series(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError("bootstrap needs finite values; drop images without a score first")
    return arr


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The means of ``resamples`` resamples (with replacement) of ``values``, vectorised in chunks.

    Resample ``b`` draws ``n`` indices from one ``numpy.random.default_rng(seed)`` stream in order, so
    the result equals a plain loop of ``rng.integers(0, n, n)`` calls and does not depend on chunking.
    """
    values = _as_series(values)
    n = len(values)
    if n == 0:
        raise ValueError("bootstrap of an empty series")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _MAX_DRAWS // n)
    means = np.empty(resamples, np.float64)
    for start in range(0, resamples, per_chunk):
        stop = min(resamples, start + per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED,
            confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` with a percentile-bootstrap CI (one value: a zero-width CI; none: no CI)."""
    arr = _as_series(values)
    if len(arr) == 0:
        return Interval(None, None, None, 0)
    mean = float(arr.mean())
    if len(arr) == 1:
        return Interval(mean, mean, mean, 1)
    lo, hi = _percentiles(bootstrap_means(arr, resamples, seed), confidence)
    return Interval(mean, lo, hi, len(arr))


def paired_difference(variant: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray, *,
                      resamples: int = RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE,
                      ) -> PairedDifference:
    """``variant - baseline`` on the same images (same order), with the bootstrap CI of its mean.

    ``excludes_zero`` is True when the whole CI lies above 0 or below 0.
    """
    a, b = _as_series(variant), _as_series(baseline)
    if a.shape != b.shape:
        raise ValueError(f"paired series must have equal length, got {len(a)} and {len(b)}")
    ci = mean_ci(a - b, resamples=resamples, seed=seed, confidence=confidence)
    excludes = ci.lo is not None and ci.n > 1 and (ci.lo > 0 or ci.hi < 0)
    return PairedDifference(ci.mean, ci.lo, ci.hi, ci.n, bool(excludes))
