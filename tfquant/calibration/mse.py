"""MSE calibration: the amax whose fake quantization of the histogram has the least error.

Wu et al. 2020 ("Integer Quantization for Deep Learning Inference", arXiv 2004.09602,
Sec. 4.1), as NVIDIA pytorch-quantization's ``_compute_amax_mse`` computes it: with bin
centres x_j = (j + 1/2)·w, counts c_j and q_max = 2^(bits - 1 + unsigned) - 1, each candidate
amax = x_i, i in [start_bin, n - 1], scores

    MSE_i = (1/n) Σ_j c_j (x̂_j - x_j)²,   x̂_j = clamp(round(x_j·q_max / x_i), 0, q_max)·x_i / q_max,

and amax = x_i for the smallest MSE_i (the first one on ties, as ``np.argmin``).

The original fake-quantizes all n centres for each of the ~n candidates (~18 ms per 2048-bin
tensor). Here, in units where x_j = u_j·w/2 with the odd integer u_j = 2j + 1, the level of
bin j is k_j = min(round(u_j·q_max / u_i), q_max) (never a tie: u_j·q_max / u_i is never a
half-integer, so floating point cannot round it the other way) and its error is
(w / 2q_max)·(u_j·q_max - k_j·u_i); bins j >= i are clipped to level q_max. Expanding the
square,

    (4n / w²)·MSE_i = P2 - 2u_i·A_i / q_max + u_i²·B_i / q_max²,

with P2 = Σ_j c_j·u_j², A_i = Σ_j c_j·u_j·k_j = Σ_t T1(β_t(i)) and
B_i = Σ_j c_j·k_j² = Σ_t (2t - 1)·T0(β_t(i)), where T0(m) = Σ_{j>=m} c_j and
T1(m) = Σ_{j>=m} c_j·u_j are suffix sums and β_t(i) = min(i, max(0,
⌊((2t-1)·u_i - 2q_max) / 4q_max⌋ + 1)) is the first bin of level t = 1..q_max. From cut i to
i + 1 every boundary β_t moves by 0 or 1 bin, so A and B are cumulative sums of two sparse
products (c·u and c at the boundaries that move, about q_max/2 per cut). The boundary
pattern depends only on (n, q_max, start_bin) and is cached (first call ~5-10 ms). Cuts whose
clipping error Σ_{j>=i} c_j (u_j - u_i)² alone (a lower bound on MSE_i, falling with i)
exceeds the exact MSE of a promising candidate are skipped. This is used for q_max <= 255
(bits <= 8).

Wider integers (bits > 8) fall back to the original per-bin formula, blocked over candidates,
after discarding the candidates whose clipping error alone already exceeds the smallest upper
bound clipping + P0_i·(x_i / 2q_max)² (rounding moves no value by more than half a step).

The closed form's rounding error is below 1e-10 relative; the candidates within 1e-7 of the
minimum (usually one) are re-evaluated with exactly the original's operations before the
first argmin is taken, so the result is the original's.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy import sparse

from tfquant.calibration.base import Calibrator, QuantTarget, Range, clip_to_observed
from tfquant.calibration.histogram import DEFAULT_START_BIN, check_search_args, histogram_arrays
from tfquant.calibration.statistics import TensorStatistics

# Largest q_max searched in closed form (the cached pattern has ~q_max/2 entries per cut).
_CLOSED_FORM_MAX_LEVEL = 255
# Candidates within this (relative) of the minimum are re-evaluated exactly; the closed form
# differs from the original's values by < 1e-10 relative (measured, up to 1e9 counts).
_TIE_RTOL = 1e-7
# More near-minimal candidates than this is a structural tie; the first one is taken.
_MAX_RECHECKS = 16
# Entries of one (candidates x bins) block of the fallback.
_BLOCK_ENTRIES = 1 << 15
# The closed form can start at every this many cuts (cached suffixes of the sparse rows).
_SUFFIX_STEP = 32
# Integer sums are used while every intermediate stays below this.
_EXACT_LIMIT = 1 << 62


def _level_starts(cuts: np.ndarray, qmax: int) -> np.ndarray:
    """β_t(i), the first bin rounded to level t = 1..q_max, in [0, i]: one row per cut i."""
    t = np.arange(1, qmax + 1, dtype=np.int64)
    i = cuts.astype(np.int64)[:, None]
    return np.clip(((2 * t - 1) * (2 * i + 1) - 2 * qmax) // (4 * qmax) + 1, 0, i)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the closed form needs that depends only on (n, q_max, start_bin); cached.

    Attributes:
      u, u_int: the odd integers u_j = 2j + 1 (float64, int64).
      u_cut, u_cut_sq: u_i and u_i² for the candidates i = start_bin, ..., n - 1 (float64).
      odd, odd_int: 2t - 1, t = 1..q_max (float64, int64).
      level_starts: β_t(i), one row per candidate (int32).
      suffixes: suffixes[k] = (moves, weighted_moves) for the cuts from
        start_bin + k·_SUFFIX_STEP on: row r of ``moves`` has a 1 at bin β_t(i) (i the row's
        cut) for every level t whose boundary moves from cut i to i + 1 (that bin then drops
        from level t to t - 1); ``weighted_moves`` has 2t - 1 there instead. The suffixes
        share their arrays (at most twice the memory of the full matrices).
    """

    u: np.ndarray
    u_int: np.ndarray
    u_cut: np.ndarray
    u_cut_sq: np.ndarray
    odd: np.ndarray
    odd_int: np.ndarray
    level_starts: np.ndarray
    suffixes: tuple[tuple[sparse.csr_array, sparse.csr_array], ...]


def _rows_from(m: sparse.csr_array, row: int) -> sparse.csr_array:
    """Rows ``row:`` of a CSR matrix, sharing its data and indices."""
    start = m.indptr[row]
    return sparse.csr_array(
        (m.data[start:], m.indices[start:], m.indptr[row:] - start), shape=(m.shape[0] - row, m.shape[1])
    )


# A plan holds ~6 MB (q_max = 127) or ~13 MB (255) for 2048 bins.
@functools.lru_cache(maxsize=4)
def _plan(n: int, qmax: int, start_bin: int) -> _Plan:
    cuts = np.arange(start_bin, n)
    starts = _level_starts(cuts, qmax)
    now, moved = starts[:-1], starts[1:] > starts[:-1]
    rows = np.broadcast_to(np.arange(len(cuts) - 1, dtype=np.int32)[:, None], now.shape)[moved]
    cols = now[moved].astype(np.int32)
    odd = 2.0 * np.arange(1, qmax + 1) - 1.0
    shape = (len(cuts) - 1, n)
    moves = sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=shape)
    weighted = sparse.csr_array((np.broadcast_to(odd, now.shape)[moved], (rows, cols)), shape=shape)
    suffixes = []
    base, base_row = (moves, weighted), 0
    for row in range(0, len(cuts) - 1, _SUFFIX_STEP):
        suffix = (_rows_from(base[0], row - base_row), _rows_from(base[1], row - base_row))
        # scipy copies a view smaller than half its base; later suffixes then view the copy,
        # so all of them together take at most twice the memory of the full matrices.
        if not np.shares_memory(suffix[0].data, base[0].data):
            base, base_row = suffix, row
        suffixes.append(suffix)
    u_cut = 2.0 * cuts + 1.0
    return _Plan(
        u=2.0 * np.arange(n) + 1.0,
        u_int=2 * np.arange(n, dtype=np.int64) + 1,
        u_cut=u_cut,
        u_cut_sq=u_cut * u_cut,
        odd=odd,
        odd_int=odd.astype(np.int64),
        level_starts=starts.astype(np.int32),
        suffixes=tuple(suffixes),
    )


def _mse_closed_form(counts: np.ndarray, width: float, qmax: int, start_bin: int) -> np.ndarray:
    """MSE_i for the candidates i in [start_bin, n - 1] (module docstring), q_max <= 255.

    With the suffix sums T0(m) = Σ_{j>=m} c_j, T1(m) = Σ_{j>=m} c_j·u_j, q_max·P1 - E_i = A_i
    = Σ_t T1(β_t(i)) and q_max²·P0 - F_i = B_i = Σ_t (2t - 1)·T0(β_t(i)), so
    (4n / w²)·MSE_i = P2 - 2u_i·A_i / q_max + u_i²·B_i / q_max².

    The clipping error alone, Σ_{j>=i} c_j (u_j - u_i)², is a lower bound on MSE_i that only
    falls as i grows; once the exact MSE of one promising candidate is known, every cut whose
    clipping error exceeds it is out (returned as inf), and A, B are accumulated only from
    the first cut (rounded down to a multiple of _SUFFIX_STEP) that is still in.

    The sums are int64, so exact (and their running sums ~4x faster than float64 ones),
    whenever every intermediate stays below 2^62 (up to ~1e11 values at 2048 bins); float64
    otherwise.
    """
    n = len(counts)
    plan = _plan(n, qmax, start_bin)
    u_max = 2 * n - 1
    exact = int(counts.sum()) * max(2 * u_max * u_max, qmax * u_max, qmax * qmax) < _EXACT_LIMIT
    u, odd = (plan.u_int, plan.odd_int) if exact else (plan.u, plan.odd)
    c = counts.astype(u.dtype)
    cu = c * u
    tails = np.zeros((3, n + 1), dtype=u.dtype)
    for row, v in enumerate((c, cu, cu * u)):
        np.cumsum(v[::-1], out=tails[row, -2::-1])
    t0, t1, t2 = tails
    p0, p2 = float(t0[0]), float(t2[0])
    ui, ui_sq = plan.u_cut, plan.u_cut_sq
    q_sq = float(qmax) * qmax

    def a_b(k: int) -> tuple[float, float]:
        first = plan.level_starts[k]
        return t1[first].sum(), odd @ t0[first]

    u_cut = u[start_bin:]
    clip = t2[start_bin:n] - u_cut * (2 * t1[start_bin:n] - u_cut * t0[start_bin:n])
    # Far above the rounding error of the float64 sums (at most ~u_max²·P0 + P2).
    slack = 1e-10 * (p2 + p0 * ui_sq[-1])
    guess = int(np.argmin(clip + (p0 - t0[start_bin:n]) * ui_sq / (12.0 * q_sq)))  # rounding ~ Δ²/12
    a_g, b_g = a_b(guess)
    bound = p2 - 2.0 * ui[guess] * a_g / qmax + ui_sq[guess] * b_g / q_sq
    block = int(np.argmax(clip <= bound + 2.0 * slack)) // _SUFFIX_STEP
    lo = block * _SUFFIX_STEP
    a = np.empty(n - start_bin - lo, dtype=u.dtype)
    b = np.empty(n - start_bin - lo, dtype=u.dtype)
    a[0], b[0] = a_b(lo)
    if len(a) > 1:
        moves, weighted = plan.suffixes[block]
        # The products are sums of integers far below 2^53, so exact in float64 too.
        np.cumsum((moves @ cu.astype(np.float64)).astype(u.dtype), out=a[1:])
        np.cumsum((weighted @ c.astype(np.float64)).astype(u.dtype), out=b[1:])
        a[1:] = a[0] - a[1:]
        b[1:] = b[0] - b[1:]
    err = np.full(n - start_bin, np.inf)
    err[lo:] = p2 - (2.0 / qmax) * ui[lo:] * a + ui_sq[lo:] * b / q_sq
    return err * (width * width / 4.0 / n)


def _mse_as_reference(counts: np.ndarray, centers: np.ndarray, i: int, qmax: int, qmin: int) -> float:
    """MSE_i with the same floating-point operations as the original's loop."""
    amax = centers[i]
    scale = qmax / amax
    quant = np.clip(np.round(centers * scale), qmin, qmax) / scale
    return float(((quant - centers) ** 2 * counts).mean())


def _mse_pruned_dense(
    counts: np.ndarray, centers: np.ndarray, qmax: int, qmin: int, start_bin: int
) -> np.ndarray:
    """MSE_i by the per-bin formula for the candidates that bounds cannot rule out; inf elsewhere."""
    n = len(counts)
    c = counts.astype(np.float64)
    u = 2.0 * np.arange(n) + 1.0
    s0, s1, s2 = (np.concatenate(([0.0], np.cumsum(v))) for v in (c, c * u, c * u * u))
    cuts = np.arange(start_bin, n)
    ui = 2.0 * cuts + 1.0
    clipping = (s2[n] - s2[cuts]) - 2.0 * ui * (s1[n] - s1[cuts]) + ui * ui * (s0[n] - s0[cuts])
    upper = clipping + s0[cuts] * (ui / (2.0 * qmax)) ** 2
    slack = 1e-10 * (s2[n] + s0[n] * ui[-1] ** 2)  # far above the sums' rounding error
    keep = np.flatnonzero(clipping <= upper.min() + 2.0 * slack)
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
    check_search_args(bits, start_bin)
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
        mse = _mse_pruned_dense(c, centers, qmax, qmin, start_bin)
    best = float(mse.min())
    # Σ c_j x_j² / n, the MSE of quantizing everything to 0, sets the absolute scale.
    near = np.flatnonzero(mse <= best * (1.0 + _TIE_RTOL) + 1e-12 * float(c @ (centers * centers)) / n)
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
