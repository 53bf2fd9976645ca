"""Compiled kernels for :meth:`TensorStatistics.update`: two passes over a batch.

The numpy update (``statistics.update_numpy``, the reference) makes ~8 passes over each
batch with float64 temporaries (~4.75 ns a value). Here a batch is read twice by loops that
numba compiles to machine code (:func:`kernels`; ``cache=True``: compiled once per machine,
then loaded from numba's cache):

1. ``moments`` (:func:`_moments`): per channel of the last axis, Σx (float64), and the batch's
   min, max and Σx. The values are read flat into L = C·max(1, ⌊512 / C⌋) accumulators
   (value i into accumulator i mod L, a multiple of the C channels; folded to C at the end),
   so a short last axis (10-64 channels on the zoo) does not make each accumulator wait on
   its previous addition, row after row.
2. ``deviations_and_histogram`` (:func:`_deviations_and_histogram`): with the batch mean m (float32, as numpy's
   ``v - np.float32(mean)``) and the histogram's bin width w = upper / n fixed after pass 1,
   Σ(x - m)², Σ|x - m| (float64) and the counts of |x| binned as
   index = min(⌊|x| / w⌋, n - 1) (the same float64 division as the numpy path, so the same
   bin for every value). Per chunk of 1024 values a vectorised loop computes the sums and the
   indices (the quotient is clamped to n - 1 in float64, then truncated to an unsigned index:
   no int64 min, no negative-index check), and a scalar loop counts them into one int32
   histogram. Bin 0 is counted in 8 extra slots chosen by position and added back at the end:
   increments of one bin at irregular distances (the zeros after a ReLU) make the core
   mispredict which loads depend on which stores. Counting 1024 L1-resident indices, 41% of
   them random zeros: 0.74 ns a count; with the zeros spread: 0.33; uniform bins: 0.30; one
   bin only: 0.30.

The float64 sums are accumulated in another order, so they may differ from the reference in
the last bits; min, max and the histogram counts are the same. (Both square the float32
deviations in float64: a float32 ``dot``, which the numpy path used before, rounds m2 by up
to ~2e-5 relative on the zoo, enough to move ACIQ's Gaussian ranges by ~1e-5.) Without numba (``TFQUANT_NUMBA=0`` or not installed)
:data:`AVAILABLE` is False and the statistics use the numpy path.

Cost (CPU ns per value of ``TensorStatistics.update`` inside the statistics pass, median of 5,
1000 images, batch 100, load 5-6 on 2 cores, side by side with the previous kernels; see
BUILD_NOTES.md "Statistics pass cost (issue 11)"): mobilenet_v2 1.78 -> 1.18 and 1.52 -> 1.16,
the ViT 2.01 -> 1.48 and 1.54 -> 1.40, cnn 2.31 -> 1.64, mobilenet_v1 1.93 -> 1.41, resnet
2.19 -> 1.38. Of the second kernel (~0.7 ns a value on saved zoo activations), the counting is
~0.3 ns (one load-increment-store per value), the reading and the indices ~0.4 ns; the moments
kernel ~0.22 ns (was 0.35). Measured and dropped (same results, slower or not faster): one read
of the batch instead of two (speculative binning with the moments; the work is not
memory-bound); multiplying by 1/w instead of dividing, either with an exact edge test or,
when w is a float32 value, with the provably exact ⌊|x|·(1/w) + 2⁻³⁰⌋ (the division is hidden
behind the counting; also, under ``reassoc`` LLVM folds x·(1/w) back into x / w); 2, 4 or 8
sub-histograms, int32 or uint16 (slower than one with bin 0 spread); spreading the last bin
too (+0.15 ns); scalar min/max reductions in the moments (not vectorised by numba).

Compile cost: ~4 s on the first call on a machine (both kernels, measured on this 2-core
box under load), then ~0.4 s to load them from the cache in each new process. numba keeps
the cache in ``__pycache__`` beside this file, or, where that is not writable (an installed
package), in a per-user cache directory; ``NUMBA_CACHE_DIR`` overrides both.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Callable

import numpy as np

AVAILABLE = os.environ.get("TFQUANT_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None
"""True when the compiled kernels are used (numba installed and ``TFQUANT_NUMBA`` is not 0).

numba itself (~0.7 s) is imported at the first :func:`kernels` call, so a process that
gathers no statistics does not pay for it."""

_CHUNK = 1024  # values whose bin indices are computed (vectorised) before they are counted
_SPREAD = 8  # extra slots over which bin 0 is counted (runs of zeros), a power of 2
_PERIOD = 512  # the moments kernel keeps accumulators for ~this many consecutive values
MAX_VALUES = 1 << 30
"""Most values one ``deviations_and_histogram`` call takes (its int32 counts cannot overflow)."""


def _moments(columns: np.ndarray, channel_sum: np.ndarray) -> tuple[float, float, float]:
    """Σ per column into ``channel_sum`` (float64, overwritten); returns (min, max) as float32 and
    Σx (float64; saves the caller a ~2 µs numpy sum per batch).

    ``columns``: C-contiguous float32 (rows >= 1, C). NaN and ±inf are not caught here: the
    caller checks that Σx is finite (any of them makes it NaN or infinite). The values are
    read flat, with accumulators for L = C·max(1, ⌊:data:`_PERIOD` / C⌋) consecutive values
    (value i goes to accumulator i mod L, a multiple of C), folded to C channels at the end: a
    short row no longer makes each accumulator wait on its own previous addition.
    """
    c = columns.shape[1]
    values = columns.ravel()
    n = values.size
    period = c * max(1, _PERIOD // c)
    acc = np.zeros(period, dtype=np.float64)
    lo = np.full(period, np.inf, dtype=np.float32)
    hi = np.full(period, -np.inf, dtype=np.float32)
    full = n - n % period
    for start in range(0, full, period):
        row = values[start : start + period]
        for j in range(period):
            v = row[j]
            acc[j] += np.float64(v)
            lo[j] = min(lo[j], v)
            hi[j] = max(hi[j], v)
    tail = values[full:]
    for j in range(tail.size):
        v = tail[j]
        acc[j] += np.float64(v)
        lo[j] = min(lo[j], v)
        hi[j] = max(hi[j], v)
    for j in range(c):
        channel_sum[j] = acc[j]
    for j in range(c, period):
        channel_sum[j % c] += acc[j]
    return lo.min(), hi.max(), acc.sum()


def _deviations_and_histogram(
    values: np.ndarray, mean: np.float32, width: float, counts: np.ndarray
) -> tuple[float, float]:
    """Returns (Σ(x - mean)², Σ|x - mean|) in float64 and adds the counts of |x| to ``counts``.

    ``values``: flat float32, at most :data:`MAX_VALUES`; x - mean is taken in float32 (as
    numpy's ``v - np.float32(mean)``), then squared and summed in float64. Bin index =
    min(⌊|x| / width⌋, n - 1) with a float64 division, as ``AbsHistogram.update``; ``width``
    must be > 0 (the clamp is taken on the float64 quotient, then truncated to an unsigned
    index: the same integer for a quotient >= 0). The indices of a chunk are computed in a
    vectorised loop, then counted in one int32 histogram, except that bin 0 is counted in
    :data:`_SPREAD` extra slots (slot by position), added to it at the end, so that the zeros
    after a ReLU, irregularly spaced, do not stall the counting loop (see the module docstring).
    (Spreading the last bin too, for
    saturated values, cost ~0.15 ns a value on the zoo's activations and was dropped.)
    """
    n = values.size
    bins = counts.size
    last = bins - 1
    lastf = np.float64(last)
    low_slot = np.uint32(bins)
    sq = 0.0
    ab = 0.0
    index = np.empty(_CHUNK, dtype=np.uint32)
    hist = np.zeros(bins + _SPREAD, dtype=np.int32)
    for start in range(0, n, _CHUNK):
        chunk = values[start : min(start + _CHUNK, n)]
        m = chunk.size
        for k in range(m):
            x = chunk[k]
            d = np.float64(x - mean)
            sq += d * d
            ab += abs(d)
            j = np.uint32(min(np.float64(abs(x)) / width, lastf))
            lane = np.uint32(k & (_SPREAD - 1))
            index[k] = low_slot + lane if j == 0 else j
        for k in range(m):
            hist[index[k]] += 1
    for j in range(bins):
        counts[j] += hist[j]
    for s in range(_SPREAD):
        counts[0] += hist[bins + s]
    return sq, ab


@functools.cache
def kernels() -> tuple[Callable[..., tuple[float, float, float]], Callable[..., tuple[float, float]]]:
    """(moments, deviations_and_histogram), compiled (or loaded from numba's cache) once.

    Raises:
      ImportError: numba cannot be imported (the caller falls back to numpy).
    """
    import numba

    moments = numba.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})(_moments)
    # reassoc lets the two float64 sums be vectorised (another order of addition); no arcp,
    # so |x| / width stays a true division and the bin index is the numpy path's.
    deviations = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})(_deviations_and_histogram)
    return moments, deviations
