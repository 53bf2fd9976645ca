"""MSE calibration: the amax whose fake quantization of the histogram has the least error.

Wu et al. 2020 ("Integer Quantization for Deep Learning Inference", arXiv 2004.09602,
Sec. 4.1), as NVIDIA pytorch-quantization's ``_compute_amax_mse`` computes it: with bin
centres x_j = (j + 1/2)·w, counts c_j and q_max = 2^(bits - 1 + unsigned) - 1, each candidate
amax = x_i, i in [start_bin, n - 1], scores

    MSE_i = (1/n) Σ_j c_j (x̂_j - x_j)²,   x̂_j = clamp(round(x_j · q_max / x_i), 0, q_max) · x_i / q_max,

and amax = x_i for the smallest MSE_i (the first one on ties, as ``np.argmin``).

The original fake-quantizes all n centres for each of the ~n candidates. Here, in units where
x_j = u_j·w/2 with the odd integer u_j = 2j + 1, the rounded level of bin j < i is
k_j = round(u_j·q_max / u_i) (never a tie: u_j·q_max / u_i is never a half-integer), the error
is (w / 2q_max)·(u_j·q_max - k_j·u_i), and every bin j >= i is clipped to x_i. So

    (4n / w²)·MSE_i = R_i / q_max² + Σ_{j>=i} c_j (u_j - u_i)²,
    R_i = q_max² P2_i - 2 q_max u_i (q_max P1_i - E_i) + u_i² (q_max² P0_i - F_i),

with P0, P1, P2 the prefix sums of c_j, c_j·u_j, c_j·u_j², E_i = Σ_t P1[β_t(i)] and
F_i = Σ_t (2t - 1)·P0[β_t(i)] over the first bins β_t(i) = ⌊((2t-1)·u_i - 2q_max) / 4q_max⌋ + 1
of each level t = 1..q_max. From cut i to i + 1 every boundary β_t moves by 0 or 1 bin, so
E and F are cumulative sums of two sparse products (c·u and c gathered at the moving
boundaries, about q_max/2 per cut). The boundary pattern depends only on (n, q_max,
start_bin) and is cached. This is used for q_max <= 255 (bits <= 8).

Wider integers (bits > 8) fall back to the original per-bin formula, blocked over candidates,
after discarding the candidates whose clipping error alone already exceeds the smallest upper
bound clipping + P0_i·(x_i / 2q_max)² (rounding moves no value by more than half a step).

The closed form's rounding error is far below 1e-9 relative; the candidates within that of
the minimum (usually one) are re-evaluated with exactly the original's operations before the
first argmin is taken, so the result is the original's.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import sparse

from tfquant.calibration.base import Calibrator, QuantTarget, Range, clip_to_observed
from tfquant.calibration.histogram import histogram_arrays
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError

DEFAULT_START_BIN = 128

_CLOSED_FORM_MAX_LEVEL = 255
_TIE_RTOL = 1e-8
_MAX_RECHECKS = 32
_BLOCK_ENTRIES = 1 << 15


def _check_search_args(bits: int, start_bin: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise TfquantError(f"bits must be an integer in [2, 16], got {bits!r}")
    if isinstance(start_bin, bool) or not isinstance(start_bin, (int, np.integer)) or start_bin < 1:
        raise TfquantError(f"start_bin must be an integer >= 1, got {start_bin!r}; the default is 128")


def _level_starts(cuts: np.ndarray, qmax: int) -> np.ndarray:
    """β_t(i): the first bin rounded to level t >= 1, for cuts i (column) and t (row), in [0, i]."""
    t = np.arange(1, qmax + 1, dtype=np.int64)
    i = cuts.astype(np.int64)[:, None]
    return np.clip(((2 * t - 1) * (2 * i + 1) - 2 * qmax) // (4 * qmax) + 1, 0, i)


@functools.lru_cache(maxsize=8)
def _boundary_moves(n: int, qmax: int, start_bin: int) -> tuple[np.ndarray, sparse.csr_array, sparse.csr_array]:
    """β_t(start_bin), and the boundaries that move from cut i to i + 1 as sparse rows.

    Returns (first, moves, weighted_moves): row r of ``moves`` has a 1 at bin β_t(start_bin + r)
    for every level t whose boundary moves (a bin then changes from level t - 1 to t);
    ``weighted_moves`` has 2t - 1 there instead.
    """
    cuts = np.arange(start_bin, n - 1)
    now = _level_starts(cuts, qmax)
    moved = _level_starts(cuts + 1, qmax) > now
    rows = np.broadcast_to(np.arange(len(cuts))[:, None], now.shape)[moved]
    cols = now[moved]
    odd = np.broadcast_to(2.0 * np.arange(1, qmax + 1) - 1.0, now.shape)[moved]
    shape = (len(cuts), n)
    moves = sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=shape)
    weighted = sparse.csr_array((odd, (rows, cols)), shape=shape)
    first = _level_starts(np.array([start_bin]), qmax)[0]
    return first, moves, weighted


def _mse_closed_form(counts: np.ndarray, width: float, qmax: int, start_bin: int) -> np.ndarray:
    """MSE_i for every candidate i in [start_bin, n - 1] (module docstring), q_max <= 255."""
    n = len(counts)
    c = counts.astype(np.float64)
    u = 2.0 * np.arange(n) + 1.0
    cu = c * u
    p0, p1, p2 = (np.concatenate(([0.0], np.cumsum(v))) for v in (c, cu, cu * u))
    first, moves, weighted = _boundary_moves(n, qmax, start_bin)
    odd = 2.0 * np.arange(1, qmax + 1) - 1.0
    e = np.empty(n - start_bin)
    f = np.empty(n - start_bin)
    e[0] = p1[first].sum()
    f[0] = odd @ p0[first]
    np.cumsum(moves @ cu, out=e[1:])
    np.cumsum(weighted @ c, out=f[1:])
    e[1:] += e[0]
    f[1:] += f[0]
    cuts = np.arange(start_bin, n)
    ui = 2.0 * cuts + 1.0
    q2 = float(qmax) ** 2
    rounding = q2 * p2[cuts] - 2.0 * qmax * ui * (qmax * p1[cuts] - e) + ui * ui * (q2 * p0[cuts] - f)
    clipping = (p2[n] - p2[cuts]) - 2.0 * ui * (p1[n] - p1[cuts]) + ui * ui * (p0[n] - p0[cuts])
    return (rounding / q2 + clipping) * (width * width / 4.0) / n


def _mse_as_reference(counts: np.ndarray, centers: np.ndarray, i: int, qmax: int, qmin: int) -> float:
    """MSE_i with the same floating-point operations as the original's loop."""
    amax = centers[i]
    scale = qmax / amax
    quant = np.clip(np.round(centers * scale), qmin, qmax) / scale
    return float(((quant - centers) ** 2 * counts).mean())


def _mse_pruned_dense(counts: np.ndarray, centers: np.ndarray, width: float, qmax: int, qmin: int, start_bin: int) -> np.ndarray:
    """MSE_i by the per-bin formula for the candidates that bounds cannot rule out; inf elsewhere."""
    n = len(counts)
    c = counts.astype(np.float64)
    u = 2.0 * np.arange(n) + 1.0
    p0, p1, p2 = (np.concatenate(([0.0], np.cumsum(v))) for v in (c, c * u, c * u * u))
    cuts = np.arange(start_bin, n)
    ui = 2.0 * cuts + 1.0
    clipping = (p2[n] - p2[cuts]) - 2.0 * ui * (p1[n] - p1[cuts]) + ui * ui * (p0[n] - p0[cuts])
    upper = clipping + p0[cuts] * (ui / (2.0 * qmax)) ** 2
    keep = np.flatnonzero(clipping <= upper.min() * (1.0 + 1e-9))
    mse = np.full(len(cuts), np.inf)
    rows = max(1, _BLOCK_ENTRIES // n)
    for s in range(0, len(keep), rows):
        k = keep[s : s + rows]
        scale = (qmax / centers[cuts[k]])[:, None]
        quant = np.clip(np.round(centers * scale), qmin, qmax) / scale
        mse[k] = ((quant - centers) ** 2 * counts).mean(axis=1)
    return mse


def mse_amax(
    counts: np.ndarray, edges: np.ndarray, *, bits: int, unsigned: bool, start_bin: int = DEFAULT_START_BIN
) -> float:
    """The bin centre minimising the histogram's fake-quantization MSE (module docstring).

    Args:
      counts: histogram counts of |x| (n bins, equal width).
      edges: the n + 1 bin edges.
      bits: bit width of the integers.
      unsigned: the tensor is non-negative (q_max = 2^bits - 1 instead of 2^(bits-1) - 1).
      start_bin: first candidate bin centre.

    Returns:
      The centre x_i, i in [start_bin, n - 1], with the smallest MSE, the first one on ties, as
      pytorch-quantization's ``_compute_amax_mse``.

    Raises:
      TfquantError: bad bits or start_bin, or a malformed or empty histogram.
    """
    _check_search_args(bits, start_bin)
    c, e = histogram_arrays(counts, edges, min_bins=start_bin + 1, equal_width=True)
    if e[-1] == 0.0:
        return 0.0
    qmax = (1 << (bits - 1 + int(unsigned))) - 1
    qmin = 0 if unsigned else -qmax
    n = len(c)
    width = e[-1] / n
    centers = (e[1:] + e[:-1]) / 2
    if qmax <= _CLOSED_FORM_MAX_LEVEL:
        mse = _mse_closed_form(c, width, qmax, start_bin)
    else:
        mse = _mse_pruned_dense(c, centers, width, qmax, qmin, start_bin)
    best = float(mse.min())
    near = np.flatnonzero(mse <= best * (1.0 + _TIE_RTOL) + 1e-12 * float(c @ centers**2) / n)
    if len(near) == 1 or len(near) > _MAX_RECHECKS:
        pick = int(near[0])
    else:
        exact = [_mse_as_reference(c, centers, int(k) + start_bin, qmax, qmin) for k in near]
        pick = int(near[int(np.argmin(exact))])
    return float(centers[pick + start_bin])


class MseCalibrator(Calibrator):
    """[-amax, amax] ∩ [min, max] with amax minimising the histogram's quantization MSE.

    A non-negative tensor (``stats.non_negative``) uses the unsigned grid q_max = 2^bits - 1,
    a signed one q_max = 2^(bits - 1) - 1; bits is the target's.
    """

    name = "mse"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        h = stats.histogram
        amax = mse_amax(h.counts, h.edges, bits=target.bits, unsigned=stats.non_negative)
        return clip_to_observed(stats, amax)
