"""Percentile calibration: amax where the CDF of |x| reaches p (Wu et al. 2020, Sec. 4.1).

Wu, Judd, Zhang, Isaev, Micikevicius 2020, "Integer Quantization for Deep Learning Inference:
Principles and Empirical Evaluation", arXiv 2004.09602, try p in {99.9, 99.99, 99.999,
99.9999}. Over the histogram of |x| with counts h_k and edges e_k,

    cdf_k = Σ_{l <= k} h_l / Σ_l h_l,   k* = min{k : cdf_k >= p/100},   amax = e_{k*},

exactly as NVIDIA pytorch-quantization's ``_compute_amax_percentile`` (``np.searchsorted``
on the CDF). Note amax is the *lower* edge of the bin where the CDF crosses p, so it can be
up to one bin width below the empirical percentile.
"""

from __future__ import annotations

import math

import numpy as np

from tfquant.calibration.base import Calibrator, QuantTarget, Range, clip_to_observed
from tfquant.calibration.histogram import histogram_arrays
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError


def _check_percentile(percentile: float) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.floating, np.integer)):
        raise TfquantError(f"percentile must be a number in (0, 100], got {percentile!r}")
    p = float(percentile)
    if not (0.0 < p <= 100.0) or math.isnan(p):
        raise TfquantError(f"percentile must be in (0, 100], got {percentile!r}; e.g. 99.99")
    return p


def percentile_amax(counts: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """amax = e_{k*}, k* the first bin where the CDF of |x| reaches ``percentile``/100.

    Args:
      counts: histogram counts of |x| (n bins).
      edges: the n + 1 bin edges.
      percentile: p in (0, 100].

    Returns:
      The bin edge, as pytorch-quantization's ``_compute_amax_percentile``.

    Raises:
      TfquantError: p is outside (0, 100], or the histogram is malformed or empty.
    """
    p = _check_percentile(percentile)
    c, e = histogram_arrays(counts, edges)
    cdf = np.cumsum(c / c.sum())
    return float(e[np.searchsorted(cdf, p / 100)])


class PercentileCalibrator(Calibrator):
    """[-amax, amax] ∩ [min, max] with amax the p-th percentile of |x| (histogram).

    Args:
      percentile: p in (0, 100], default 99.99.
    """

    name = "percentile"

    def __init__(self, *, percentile: float = 99.99) -> None:
        self.percentile = _check_percentile(percentile)

    def describe(self) -> str:
        return f"percentile {self.percentile:.12g}"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        h = stats.histogram
        return clip_to_observed(stats, percentile_amax(h.counts, h.edges, self.percentile))
