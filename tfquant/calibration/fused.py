"""Compiled kernels for :meth:`TensorStatistics.update`: two fused passes over a batch.

The numpy update (``statistics.update_numpy``, the reference) makes ~8 passes over each
batch with float64 temporaries (~4.75 ns a value). Here a batch is read twice by loops that
numba compiles to machine code (``cache=True``: compiled once per machine, then loaded from
numba's cache; set ``NUMBA_CACHE_DIR`` to move it):

1. :func:`moments`: per channel of the last axis, Σx (float64), min and max; the batch's
   Σx, min and max follow from them.
2. :func:`deviations_and_histogram`: with the batch mean m (float32, as numpy's
   ``v - np.float32(mean)``) and the histogram's bin width w = upper / n fixed after pass 1,
   Σ(x - m)², Σ|x - m| (float64) and the counts of |x| binned as
   index = min(⌊|x| / w⌋, n - 1) (the same float64 division as the numpy path, so the same
   bin for every value).

The sums are accumulated in another order (and Σ(x - m)² in float64 rather than numpy's
float32 ``dot``), so they may differ from the reference in the last bits; min, max and the
histogram counts are the same. Without numba (``TFQUANT_NUMBA=0`` or not installed)
:data:`AVAILABLE` is False and the statistics use the numpy path.
"""

from __future__ import annotations

import os

import numpy as np

try:  # numba is optional: the numpy path computes the same statistics
    if os.environ.get("TFQUANT_NUMBA", "1") == "0":
        raise ImportError("TFQUANT_NUMBA=0")
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

AVAILABLE = numba is not None
"""True when the compiled kernels are used."""

_CHUNK = 1024  # values whose bin indices are computed (vectorised) before they are counted
_SUBHISTOGRAMS = 4  # consecutive values counted in different int32 copies of the histogram
MAX_VALUES = 1 << 30
"""Most values one :func:`deviations_and_histogram` call takes (its int32 counts cannot overflow)."""


def _moments(columns: np.ndarray, channel_sum: np.ndarray) -> tuple[float, float]:
    """Σ per column into ``channel_sum`` (float64, overwritten); returns (min, max) as float32.

    ``columns``: C-contiguous float32 (rows >= 1, C). NaN and ±inf are not caught here: the
    caller checks that Σx is finite (any of them makes it NaN or infinite).
    """
    rows, c = columns.shape
    lo = columns[0].copy()
    hi = columns[0].copy()
    for j in range(c):
        channel_sum[j] = np.float64(lo[j])
    for i in range(1, rows):
        row = columns[i]
        for j in range(c):
            v = row[j]
            channel_sum[j] += np.float64(v)
            lo[j] = min(lo[j], v)
            hi[j] = max(hi[j], v)
    return lo.min(), hi.max()


def _deviations_and_histogram(
    values: np.ndarray, mean: np.float32, width: float, counts: np.ndarray
) -> tuple[float, float]:
    """Returns (Σ(x - mean)², Σ|x - mean|) in float64 and adds the counts of |x| to ``counts``.

    ``values``: flat float32, at most :data:`MAX_VALUES`; x - mean is taken in float32 (as
    numpy's ``v - np.float32(mean)``), then squared and summed in float64. Bin index =
    min(⌊|x| / width⌋, n - 1) with a float64 division, as ``AbsHistogram.update``; ``width``
    must be > 0. The counting alternates between :data:`_SUBHISTOGRAMS` copies of the counts
    so that runs of one bin (the zeros after a ReLU) do not wait on each other's increments.
    """
    n = values.size
    bins = counts.size
    last = bins - 1
    sq = 0.0
    ab = 0.0
    index = np.empty(_CHUNK, dtype=np.int32)
    sub = np.zeros((_SUBHISTOGRAMS, bins), dtype=np.int32)
    for start in range(0, n, _CHUNK):
        chunk = values[start : min(start + _CHUNK, n)]
        m = chunk.size
        for k in range(m):
            x = chunk[k]
            d = np.float64(x - mean)
            sq += d * d
            ab += abs(d)
            index[k] = min(np.int32(np.float64(abs(x)) / width), last)
        k = 0
        while k + 4 <= m:
            sub[0, index[k]] += 1
            sub[1, index[k + 1]] += 1
            sub[2, index[k + 2]] += 1
            sub[3, index[k + 3]] += 1
            k += 4
        while k < m:
            sub[0, index[k]] += 1
            k += 1
    for s in range(_SUBHISTOGRAMS):
        for j in range(bins):
            counts[j] += sub[s, j]
    return sq, ab


if numba is not None:
    moments = numba.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})(_moments)
    # reassoc lets the two float64 sums be vectorised (another order of addition); no arcp,
    # so |x| / width stays a true division and the bin index is the numpy path's.
    deviations_and_histogram = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})(
        _deviations_and_histogram
    )
else:  # pragma: no cover - depends on the environment
    moments = _moments
    deviations_and_histogram = _deviations_and_histogram
