"""Percentile calibration: amax where the CDF of |x| reaches p (Wu et al. 2020, Sec. 4.1).

Wu, Judd, Zhang, Isaev, Micikevicius 2020, "Integer Quantization for Deep Learning Inference:
Principles and Empirical Evaluation", arXiv 2004.09602, try p in {99.9, 99.99, 99.999,
99.9999}. Over the histogram of |x| with counts h_k and edges e_k,

    cdf_k = Σ_{l <= k} h_l / Σ_l h_l,   k* = min{k : cdf_k >= p/100},

    amax = e_{k*}       (BinEdge.LOWER, the default: the calibrators),
    amax = e_{k*+1}     (BinEdge.UPPER: the simulation's activation ranges),

the lower edge exactly as NVIDIA pytorch-quantization's ``_compute_amax_percentile``
(``np.searchsorted`` on the CDF). Bin k* spans [e_{k*}, e_{k*+1}]: the lower edge can be up
to one bin width *below* the empirical percentile (it clips the values of the crossing bin),
the upper edge up to one bin width *above* it (the CDF at amax is >= p/100). This is the
project's only percentile search; every caller states the edge it uses.
"""

from __future__ import annotations

import enum

import numpy as np

from tfquant.calibration.base import Calibrator, QuantTarget, Range, clip_to_observed
from tfquant.calibration.histogram import histogram_arrays
from tfquant.calibration.statistics import TensorStatistics
from tfquant.qtypes import DEFAULT_PERCENTILE, check_percentile


class BinEdge(enum.Enum):
    """Which edge of the bin where the CDF reaches p is the amax (see the module docstring)."""

    LOWER = "lower"  # e_{k*}: pytorch-quantization's choice (tfquant's calibrators)
    UPPER = "upper"  # e_{k*+1}: the CDF at amax is >= p/100 (tfquant.simulation)


def percentile_amax(
    counts: np.ndarray, edges: np.ndarray, percentile: float, *, edge: BinEdge = BinEdge.LOWER
) -> float:
    """amax = e_{k*} (or e_{k*+1}), k* the first bin where the CDF of |x| reaches p/100.

    cdf_k = Σ_{l <= k} h_l / Σ_l h_l (computed as ``cumsum(h / Σh)``), k* =
    ``searchsorted(cdf, p / 100)``. Should rounding leave the last cdf value a hair below
    p/100, k* = n and both edges are the top edge e_n.

    Args:
      counts: histogram counts of |x| (n bins).
      edges: the n + 1 bin edges.
      percentile: p in (0, 100].
      edge: :attr:`BinEdge.LOWER` (pytorch-quantization's ``_compute_amax_percentile``) or
        :attr:`BinEdge.UPPER`.

    Returns:
      The bin edge.

    Raises:
      TfquantError: p is outside (0, 100], or the histogram is malformed or empty.
    """
    p = check_percentile(percentile)
    c, e = histogram_arrays(counts, edges)
    cdf = np.cumsum(c / c.sum())
    k = int(np.searchsorted(cdf, p / 100))
    return float(e[min(k + 1, len(c))] if edge is BinEdge.UPPER else e[k])


class PercentileCalibrator(Calibrator):
    """[-amax, amax] ∩ [min, max] with amax the p-th percentile of |x| (histogram).

    Args:
      percentile: p in (0, 100], default 99.99.
    """

    name = "percentile"

    def __init__(self, *, percentile: float = DEFAULT_PERCENTILE) -> None:
        self.percentile = check_percentile(percentile)

    def describe(self) -> str:
        return f"percentile {self.percentile:.12g}"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        h = stats.histogram
        return clip_to_observed(stats, percentile_amax(h.counts, h.edges, self.percentile))
