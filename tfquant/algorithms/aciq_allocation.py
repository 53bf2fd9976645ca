"""ACIQ per-channel bit allocation (Banner, Nahshan, Soudry 2019, "Post-training 4-bit
quantization of convolutional networks for rapid-deployment", arXiv 1810.05723, Sec. 4.2).

Quantizing channel i, clipped to [-α_i, α_i], with M_i bits adds rounding noise
α_i²/(3·4^M_i). Minimising the total Σ_i α_i²/4^M_i for a fixed number of levels
Σ_i 2^M_i = C·2^M (the paper's budget) gives, by a Lagrange multiplier,

    2^M_i ∝ α_i^(2/3),   i.e.   x_i = log2( α_i^(2/3) / Σ_j α_j^(2/3) · C·2^M ).

The bit widths must be integers in a valid range and their mean must be the target M
exactly (the model then costs exactly M bits per weight). :func:`allocate_bits` returns
the integer allocation closest to the relaxed one in the least-squares sense,

    M* = argmin Σ_i (M_i - x_i)²   s.t.  M_i ∈ {lo, ..., hi},  Σ_i M_i = C·M,

which is what "rounded, clipped and adjusted until the mean is M" means made precise
(``shared/docs/methods.md`` Sec. 3). The problem is separable and convex, so a greedy
choice of unit increments is exact: starting from M_i = lo, the increment of channel i from
m to m + 1 costs 2(m - x_i) + 1, which grows with m, so the C·(M - lo) cheapest increments
over all channels form a valid allocation and no allocation has a lower cost (tested
against brute force).

The channels of one weight tensor hold the same number of parameters, so the mean over
channels is also the parameter-weighted mean; allocating every tensor to mean M makes the
whole model's parameter-weighted mean exactly M.

The grid of a channel with M_i bits is TFLite's symmetric narrow-range weight grid,
2^M_i - 1 levels {-(2^(M_i-1) - 1), ..., 2^(M_i-1) - 1} · Δ_i with Δ_i = α_i/(2^(M_i-1) - 1)
(the grid of :mod:`tfquant.algorithms.weight_grid`), stored in int8; hence M_i >= 2
(one bit would leave the single level 0).
"""

from __future__ import annotations

import numpy as np

from tfquant.errors import TfquantError

from tfquant.qtypes import MAX_WEIGHT_BITS as MAX_BITS
from tfquant.qtypes import MIN_WEIGHT_BITS as MIN_BITS
from tfquant.qtypes import check_weight_bits

__all__ = ["MAX_BITS", "MIN_BITS", "allocate_bits", "allocation_cost", "check_weight_bits",
           "relaxed_bits", "uniform_bits"]


def relaxed_bits(alpha: np.ndarray, mean_bits: int) -> np.ndarray:
    """x_i = log2(α_i^(2/3) / Σ_j α_j^(2/3) · C·2^M): the real-valued allocation.

    Channels with α_i = 0 (all-zero weights) get -inf (they need no bits).
    """
    a = np.asarray(alpha, dtype=np.float64).reshape(-1)
    share = np.power(np.maximum(a, 0.0), 2.0 / 3.0)
    total = float(share.sum())
    if total <= 0.0:
        return np.full(a.shape, float(mean_bits))
    with np.errstate(divide="ignore"):
        return np.log2(share / total * a.size * 2.0**mean_bits)


def allocation_cost(bits: np.ndarray, relaxed: np.ndarray) -> float:
    """Σ_i (M_i - x_i)², with channels at x_i = -inf measured from the lowest bit width."""
    x = np.where(np.isfinite(relaxed), relaxed, float(MIN_BITS) - 64.0)
    return float(np.sum((np.asarray(bits, np.float64) - x) ** 2))


def allocate_bits(
    alpha: np.ndarray, mean_bits: int, *, min_bits: int = MIN_BITS, max_bits: int = MAX_BITS
) -> np.ndarray:
    """Integer per-channel bit widths with 2^M_i ∝ α_i^(2/3) and mean exactly ``mean_bits``.

    Args:
      alpha: the clipping value (range) α_i of each channel, shape (C,), α_i >= 0.
      mean_bits: the target mean M, an integer in [min_bits, max_bits].
      min_bits, max_bits: the valid range of one channel's bit width (default [2, 8]).

    Returns:
      int array (C,), each in [min_bits, max_bits], with sum exactly C·M: the least-squares
      closest integers to :func:`relaxed_bits` (see the module docstring); ties go to the
      lower channel index.

    Raises:
      TfquantError: a bad bit width, range or α (empty, negative, NaN).
    """
    lo = check_weight_bits(min_bits, what="min_bits")
    hi = check_weight_bits(max_bits, what="max_bits")
    if lo > hi:
        raise TfquantError(f"min_bits {lo} is above max_bits {hi}; pass min_bits <= max_bits")
    m = check_weight_bits(mean_bits, what="mean bit width")
    if not lo <= m <= hi:
        raise TfquantError(f"mean bit width {m} is outside [{lo}, {hi}]; pick a mean in that range")
    a = np.asarray(alpha, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise TfquantError(
            "channel ranges alpha must be a non-empty array of finite values >= 0, got "
            f"{a.size} values with min {a.min() if a.size else None!r}"
        )
    x = relaxed_bits(a, m)
    x = np.where(np.isfinite(x), x, float(lo) - 64.0)
    # Marginal cost of raising channel i from level m to m + 1: (m+1-x)² - (m-x)².
    levels = np.arange(lo, hi, dtype=np.float64)  # m = lo .. hi-1
    costs = 2.0 * (levels[None, :] - x[:, None]) + 1.0  # (C, hi - lo), increasing along m
    extra = a.size * (m - lo)
    if extra == 0:
        return np.full(a.size, lo, dtype=np.int64)
    channel = np.repeat(np.arange(a.size), hi - lo)
    order = np.lexsort((channel, costs.reshape(-1)))  # by cost, ties by channel
    chosen = channel[order[:extra]]
    return lo + np.bincount(chosen, minlength=a.size).astype(np.int64)


def uniform_bits(num_channels: int, bits: int) -> np.ndarray:
    """Every channel at ``bits`` (``--weight_bits`` without an allocation)."""
    return np.full(int(num_channels), check_weight_bits(bits), dtype=np.int64)
