"""Entropy calibration: TensorRT's KL-divergence search over the histogram of |x|.

Migacz 2017, "8-bit Inference with TensorRT" (GTC), as NVIDIA pytorch-quantization's
``_compute_amax_entropy`` implements it and Wu et al. 2020 (arXiv 2004.09602, Sec. 4.1)
evaluate it. With the histogram's n counts b_j (b_0 replaced by b_1, as the original does, so
the zeros of a ReLU do not dominate) and L = 2^(bits - 1 + unsigned) levels, for every
candidate cut i in [start_bin, n]:

* reference P_i: P_j = b_j for j < i - 1 and P_{i-1} = b_{i-1} + T_i, with the clipped mass
  T_i = Σ_{j >= i} b_j;
* candidate Q_i: bin j < i belongs to level λ(j) = digitize(j, linspace(0, i, L + 1)) - 1,
  i.e. level k holds bins [⌈k·i/L⌉, ⌈(k+1)·i/L⌉); a level's mass m_k = Σ b_j is spread evenly
  over its n_k non-empty bins, Q_j = m_k / n_k, and empty bins keep Q_j = 0;
* KL_i = KL(P_i/N || Q_i/S_i) with N = Σ b, S_i = N - T_i;

amax = e_i (the upper edge of bin i - 1) for the i with the smallest KL, the last one on ties.

The original builds Q with Python loops over every bin of every candidate (about 0.8 s per
2048-bin tensor). Here all candidates are evaluated at once in closed form. Since
Σ_j P_j = N and Σ_j Q_j = S_i,

    N·KL_i = X_i + N·log(S_i / N),   X_i = Σ_j P_j log(P_j / Q_j)
           = C_{i-1} + (b_{i-1} + T_i) log(b_{i-1} + T_i) - Σ_k m_k log(m_k / n_k)
             - T_i log Q_{i-1},

with C_m = Σ_{j<m} b_j log b_j a prefix sum and m_k, n_k differences of the prefix sums of b_j
and of [b_j > 0] at the level boundaries: O(L) work per candidate instead of O(i) Python
steps. When L >= i every bin is its own level, Q_j = b_j, and X_i reduces to
(b_{i-1} + T_i)·log(1 + T_i / b_{i-1}) (bits = 16 never builds a candidates x levels array).
KL_i = inf when P has mass where Q has none (b_{i-1} = 0 < T_i, or S_i = 0).

Floating-point sums in a different order can separate two candidates the original finds equal
(or the reverse) by ~1e-13; so the candidates within ~1e-10 of the minimum (usually only one)
are re-evaluated exactly as the original computes them, and its tie rule (the last argmin) is
applied to those values. More than 8 such candidates means a structural tie (e.g. KL = 0 for
every cut past the data at bits = 16, or equal KL for every cut past the data at bits = 2);
then the last one is taken. The original's own pick among values that are equal in exact
arithmetic is decided by its rounding noise, so it can differ there (1 of ~3000 randomised
comparisons, a bits = 2 histogram with 137 tied cuts).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import entropy

from tfquant.calibration.base import Calibrator, QuantTarget, Range, clip_to_observed
from tfquant.calibration.histogram import DEFAULT_START_BIN, check_search_args, histogram_arrays
from tfquant.calibration.statistics import TensorStatistics

# Candidates whose closed-form KL is within this of the minimum are re-evaluated exactly; the
# closed form differs from the original's values by < 3e-13 (measured, up to 1e9 counts).
_TIE_RTOL = 1e-9
_TIE_ATOL = 1e-10
# More near-minimal candidates than this is a structural tie (module docstring); then the
# last one is taken without re-evaluation (each re-evaluation costs ~0.1-0.2 ms).
_MAX_RECHECKS = 8
# Entries of one (candidates x levels) block.
_BLOCK_ENTRIES = 1 << 15


def _num_levels(bits: int, unsigned: bool) -> int:
    return 1 << (bits - 1 + int(unsigned))


def _level_terms(
    cum: np.ndarray, nonempty: np.ndarray, cuts: np.ndarray, nlevels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Σ_k m_k log(m_k / n_k) and Q_{i-1} = m_{L-1} / n_{L-1} for cuts i > L, in blocks."""
    shift = nlevels.bit_length() - 1
    k = np.arange(nlevels + 1, dtype=np.int64)
    rows = max(1, _BLOCK_ENTRIES // (nlevels + 1))
    level_sum = np.empty(len(cuts))
    q_last = np.empty(len(cuts))
    for start in range(0, len(cuts), rows):
        i = cuts[start : start + rows, None]
        bounds = (k * i + (nlevels - 1)) >> shift  # ⌈k·i/L⌉, exact since L = 2^shift
        m = np.diff(cum[bounds], axis=1)
        nz = np.diff(nonempty[bounds], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = m * np.log(m / nz)
            q = m[:, -1] / nz[:, -1]
        t[m == 0] = 0.0
        level_sum[start : start + rows] = t.sum(axis=1)
        q_last[start : start + rows] = q
    return level_sum, q_last


def _kl_closed_form(bins: np.ndarray, nlevels: int, start_bin: int) -> np.ndarray:
    """KL_i for every cut i in [start_bin, n] (module docstring); ``bins`` has b_0 = b_1."""
    n = len(bins)
    total = float(bins.sum())
    cuts = np.arange(start_bin, n + 1)
    cum_int = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(bins, out=cum_int[1:])
    cum = cum_int.astype(np.float64)
    tail = total - cum[cuts]
    last = bins[cuts - 1].astype(np.float64)
    x = np.empty(len(cuts))
    with np.errstate(divide="ignore", invalid="ignore"):
        single = cuts <= nlevels
        x[single] = (last[single] + tail[single]) * np.log1p(tail[single] / last[single])
        general = ~single
        if np.any(general):
            b = bins.astype(np.float64)
            blogb = np.zeros(n + 1)
            np.cumsum(b * np.log(np.where(bins > 0, b, 1.0)), out=blogb[1:])
            nonempty = np.zeros(n + 1)
            np.cumsum(bins > 0, out=nonempty[1:])
            g = cuts[general]
            pl = last[general] + tail[general]
            level_sum, q_last = _level_terms(cum, nonempty, g, nlevels)
            head = blogb[g - 1] + pl * np.log(np.where(pl > 0, pl, 1.0))
            x[general] = head - level_sum - np.where(tail[general] > 0, tail[general] * np.log(q_last), 0.0)
        x[single & (tail == 0)] = 0.0  # Q = P: KL is exactly 0, as in the original
        kl = x / total + np.log1p(-tail / total)
    kl[((last == 0) & (tail > 0)) | (tail >= total)] = math.inf
    return kl


def _kl_as_reference(bins: np.ndarray, i: int, nlevels: int) -> float:
    """KL_i computed with the same floating-point operations as pytorch-quantization."""
    space = np.linspace(0, i, num=nlevels + 1)
    level = np.digitize(np.arange(i), space) - 1
    head = bins[:i]
    nonempty = head != 0
    lv = level[nonempty]
    mass = np.bincount(lv, weights=head[nonempty], minlength=nlevels)
    count = np.bincount(lv, minlength=nlevels)
    q = np.zeros(i, dtype=np.float64)
    q[nonempty] = mass[lv] / count[lv]
    if np.sum(q) == 0:
        return math.inf
    p = np.array(head)
    p[-1] += np.sum(bins[i:])
    return float(entropy(p, q))


def _last_argmin(kl: np.ndarray, bins: np.ndarray, nlevels: int, start_bin: int) -> int:
    """The original's choice, len - 1 - argmin(KL[::-1]), made on exact values near the minimum."""
    best = float(kl.min())
    if math.isinf(best):
        return len(kl) - 1
    near = np.flatnonzero(kl <= best + _TIE_RTOL * abs(best) + _TIE_ATOL)
    if len(near) == 1 or len(near) > _MAX_RECHECKS:
        return int(near[-1])
    exact = np.array([_kl_as_reference(bins, int(k) + start_bin, nlevels) for k in near])
    return int(near[len(near) - 1 - np.argmin(exact[::-1])])


def _entropy_bins(counts: np.ndarray, edges: np.ndarray, start_bin: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked copies of the histogram with b_0 replaced by b_1, as the original does."""
    c, e = histogram_arrays(counts, edges, min_bins=max(start_bin, 2))
    c[0] = c[1]
    return c, e


def kl_divergences(
    counts: np.ndarray, edges: np.ndarray, *, bits: int, unsigned: bool, start_bin: int = DEFAULT_START_BIN
) -> np.ndarray:
    """KL(P_i || Q_i) for the cuts i = start_bin, ..., n (closed form; module docstring).

    Args:
      counts: histogram counts of |x| (n bins).
      edges: the n + 1 bin edges.
      bits: bit width of the integers.
      unsigned: the tensor is non-negative (twice the levels).
      start_bin: first candidate cut.

    Returns:
      n - start_bin + 1 divergences in nats (inf where Q_i misses mass of P_i).

    Raises:
      TfquantError: bad bits or start_bin, or a malformed or empty histogram.
    """
    check_search_args(bits, start_bin)
    bins, _ = _entropy_bins(counts, edges, start_bin)
    if bins.sum() == 0:
        return np.full(len(bins) - start_bin + 1, math.inf)
    return _kl_closed_form(bins, _num_levels(bits, unsigned), start_bin)


def entropy_amax(
    counts: np.ndarray, edges: np.ndarray, *, bits: int, unsigned: bool, start_bin: int = DEFAULT_START_BIN
) -> float:
    """The amax minimising KL(P || Q) over the cuts i >= start_bin (module docstring).

    Arguments and errors as :func:`kl_divergences`.

    Returns:
      ``edges[i]`` for the cut with the smallest KL, the last one on ties, as
      pytorch-quantization's ``_compute_amax_entropy``.
    """
    check_search_args(bits, start_bin)
    bins, e = _entropy_bins(counts, edges, start_bin)
    if e[-1] == 0.0 or bins.sum() == 0:
        # Only zeros seen, or (after b_0 = b_1) no mass: every KL is inf, the last cut wins.
        return float(e[-1])
    nlevels = _num_levels(bits, unsigned)
    kl = _kl_closed_form(bins, nlevels, start_bin)
    return float(e[_last_argmin(kl, bins, nlevels, start_bin) + start_bin])


class EntropyCalibrator(Calibrator):
    """[-amax, amax] ∩ [min, max] with amax from TensorRT's KL search (module docstring).

    A non-negative tensor (``stats.non_negative``) is searched with the unsigned level count
    2^bits, a signed one with 2^(bits - 1); bits is the target's.
    """

    name = "entropy"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        h = stats.histogram
        amax = entropy_amax(h.counts, h.edges, bits=target.bits, unsigned=stats.non_negative)
        return clip_to_observed(stats, amax)
