"""Compiled kernels for :meth:`TensorStatistics.update`: two fused passes over a batch.

The numpy update (``statistics.update_numpy``, the reference) makes ~8 passes over each
batch with float64 temporaries (~4.75 ns a value). Here a batch is read twice by loops that
numba compiles to machine code (:func:`kernels`; ``cache=True``: compiled once per machine,
then loaded from numba's cache):

1. ``moments`` (:func:`_moments`): per channel of the last axis, Σx (float64), min and max; the batch's
   Σx, min and max follow from them.
2. ``deviations_and_histogram`` (:func:`_deviations_and_histogram`): with the batch mean m (float32, as numpy's
   ``v - np.float32(mean)``) and the histogram's bin width w = upper / n fixed after pass 1,
   Σ(x - m)², Σ|x - m| (float64) and the counts of |x| binned as
   index = min(⌊|x| / w⌋, n - 1) (the same float64 division as the numpy path, so the same
   bin for every value).

The float64 sums are accumulated in another order, so they may differ from the reference in
the last bits; min, max and the histogram counts are the same. (Both square the float32
deviations in float64: a float32 ``dot``, which the numpy path used before, rounds m2 by up
to ~2e-5 relative on the zoo, enough to move ACIQ's Gaussian ranges by ~1e-5.) Without numba (``TFQUANT_NUMBA=0`` or not installed)
:data:`AVAILABLE` is False and the statistics use the numpy path.

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
_SUBHISTOGRAMS = 4  # consecutive values counted in different int32 copies of the histogram
MAX_VALUES = 1 << 30
"""Most values one ``deviations_and_histogram`` call takes (its int32 counts cannot overflow)."""


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


@functools.cache
def kernels() -> tuple[Callable[..., tuple[float, float]], Callable[..., tuple[float, float]]]:
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
