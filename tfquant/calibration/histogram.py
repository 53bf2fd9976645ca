"""A fixed-size histogram of |x| that doubles its range when a batch exceeds it.

The histogram calibrators (percentile, entropy, MSE; Wu et al. 2020, "Integer Quantization
for Deep Learning Inference", arXiv 2004.09602, Sec. 4.1) search a bound on |x| over a
2048-bin histogram of |x| collected over the whole calibration set. As in NVIDIA
pytorch-quantization's ``HistogramCalibrator``, the first batch with a non-zero value sets the
range [0, max|x|]. When a later batch goes beyond it, pytorch-quantization appends bins of the
same width (so the bin count, and the memory, grows with the outliers); here the range is
doubled instead and adjacent bin pairs are merged,

    counts'[k] = counts[2k] + counts[2k + 1],   k < n/2;   counts'[k] = 0,   k >= n/2,

repeated until the batch fits. Every old bin [j·w, (j+1)·w) lies inside new bin
[⌊j/2⌋·2w, (⌊j/2⌋+1)·2w), so the merge is exact and the histogram always has n bins.

Binning is index = min(⌊v / w⌋, n - 1), w = upper / n: the bins are half-open
[k·w, (k+1)·w) except the last, which also holds ``upper`` (as ``np.histogram``). A value
equal to the range's upper end at the time it was binned stays in the bin just below that
edge after a growth. Values that are all 0 so far are counted in bin 0 with upper = 0.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfquant.calibration import fused
from tfquant.errors import TfquantError

NUM_BINS = 2048
# First candidate cut of the entropy and MSE searches (pytorch-quantization's start_bin).
DEFAULT_START_BIN = 128


@dataclasses.dataclass
class AbsHistogram:
    """Counts of |x| in ``len(counts)`` equal-width bins over [0, upper].

    Attributes:
      counts: int64 count per bin.
      upper: upper end of the range; 0.0 while every value seen was 0 (those zeros are
        counted in bin 0, where any later range keeps them).
    """

    counts: np.ndarray
    upper: float = 0.0

    @classmethod
    def empty(cls, num_bins: int = NUM_BINS) -> AbsHistogram:
        """A histogram with no values and ``num_bins`` bins.

        Raises:
          TfquantError: ``num_bins`` is not a positive integer.
        """
        if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
            raise TfquantError(f"num_bins must be a positive integer, got {num_bins!r}; use e.g. {NUM_BINS}")
        return cls(counts=np.zeros(int(num_bins), dtype=np.int64))

    @property
    def num_bins(self) -> int:
        return len(self.counts)

    @property
    def width(self) -> float:
        """Bin width w = upper / n."""
        return self.upper / self.num_bins

    @property
    def edges(self) -> np.ndarray:
        """The n + 1 bin edges, ``np.linspace(0, upper, n + 1)`` (float64)."""
        return np.linspace(0.0, self.upper, self.num_bins + 1)

    @property
    def centers(self) -> np.ndarray:
        """The n bin centres (edges[k] + edges[k + 1]) / 2."""
        e = self.edges
        return (e[1:] + e[:-1]) / 2

    @property
    def total(self) -> int:
        """Number of values counted."""
        return int(self.counts.sum())

    def update(self, abs_values: np.ndarray, *, known_max: float | None = None) -> None:
        """Counts a batch of |x| values (any shape and float dtype; may be empty).

        ``known_max``: the batch's maximum, from a caller that has already checked the batch
        is finite and non-negative (saves two passes over it).

        Cost per value: a min and a max, one float64 division written straight to an integer
        index and ``np.bincount`` (about 2 ns per value, 2x faster than ``np.histogram``; the
        clamp to the last bin is applied to the counts, not to every index); no other copy of
        the batch. A float32 batch is binned by the compiled kernel of
        :mod:`tfquant.calibration.fused` when numba is installed (the same division, so the
        same bins; ~1 ns per value).

        Raises:
          TfquantError: the batch holds NaN, infinity or a negative value.
        """
        self._update(abs_values, known_max, compiled=True)

    def update_numpy(self, abs_values: np.ndarray, *, known_max: float | None = None) -> None:
        """:meth:`update` with numpy only (the reference of the compiled binning).

        Raises:
          TfquantError: the batch holds NaN, infinity or a negative value.
        """
        self._update(abs_values, known_max, compiled=False)

    def _update(self, abs_values: np.ndarray, known_max: float | None, *, compiled: bool) -> None:
        v = np.asarray(abs_values).reshape(-1)
        if v.size == 0:
            return
        if known_max is not None:
            vmin, vmax = 0.0, float(known_max)
        else:
            vmin, vmax = float(v.min()), float(v.max())
        if not (math.isfinite(vmax) and math.isfinite(vmin)):
            bad = vmax if not math.isfinite(vmax) else vmin
            raise TfquantError(
                f"the histogram of |x| got a non-finite value ({bad}); check the calibration data "
                "and the float model for NaN/Inf"
            )
        if vmin < 0.0:
            raise TfquantError(
                f"AbsHistogram.update takes |x|, got a negative value ({vmin}); pass np.abs(x)"
            )
        self.cover(vmax)
        n = self.num_bins
        if self.upper == 0.0:
            self.counts[0] += v.size
            return
        if compiled and v.dtype == np.float32 and fused.AVAILABLE:  # the same bins, one compiled pass
            try:
                deviations_and_histogram = fused.kernels()[1]
            except ImportError:
                fused.AVAILABLE = False
            else:
                v = np.ascontiguousarray(v)
                for begin in range(0, v.size, fused.MAX_VALUES):
                    deviations_and_histogram(v[begin : begin + fused.MAX_VALUES], np.float32(0.0), self.width,
                                             self.counts)
                return
        index = np.empty(v.size, dtype=np.intp)
        # v / w rather than v · (n / upper): a value on an edge k·w that is exact in float64
        # (e.g. 3.0 with upper 6) gets exactly k, as np.histogram gives it; the reciprocal's
        # rounding can put it one bin low. For v >= 0 the unsafe float64 -> int cast floors.
        np.divide(v, self.width, out=index, dtype=np.float64, casting="unsafe")
        counts = np.bincount(index, minlength=n)
        if len(counts) > n:  # v == upper (index n): the last bin, as min(index, n - 1) puts it
            counts[n - 1] += counts[n:].sum()
        self.counts += counts[:n]

    def cover(self, vmax: float) -> None:
        """Makes the range cover ``vmax`` (finite, >= 0): the first non-zero value sets it,
        later ones double it (merging bins) until it covers them."""
        if vmax > self.upper:
            if self.upper == 0.0:
                self.upper = vmax
            else:
                self._grow_to(vmax)

    def _grow_to(self, vmax: float) -> None:
        """Doubles ``upper`` until it covers ``vmax``, merging bins in groups of 2^doublings."""
        doublings = 0
        upper = self.upper
        while upper < vmax:
            upper *= 2.0
            doublings += 1
        group = 1 << doublings
        n = self.num_bins
        merged = np.zeros_like(self.counts)
        if group >= n:
            merged[0] = self.counts.sum()
        else:
            sums = np.add.reduceat(self.counts, np.arange(0, n, group))
            merged[: len(sums)] = sums
        self.counts = merged
        self.upper = upper


def histogram_arrays(
    counts: np.ndarray, edges: np.ndarray, *, min_bins: int = 1, equal_width: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Checks a (counts, edges) pair handed to an amax search; returns int64 counts, float64 edges.

    Args:
      counts: n non-negative counts (a copy is returned, so searches may edit it).
      edges: the n + 1 increasing bin edges, starting at 0.
      min_bins: the search needs at least this many bins.
      equal_width: the search needs equal-width bins (``AbsHistogram.edges`` always are).

    Raises:
      TfquantError: the arrays are not a non-empty histogram of |x| of that shape.
    """
    c = np.array(counts, dtype=np.int64).reshape(-1)
    e = np.array(edges, dtype=np.float64).reshape(-1)
    if len(e) != len(c) + 1:
        raise TfquantError(
            f"a histogram with {len(c)} counts needs {len(c) + 1} edges, got {len(e)}; pass "
            "AbsHistogram.counts with AbsHistogram.edges"
        )
    if len(c) < min_bins:
        raise TfquantError(
            f"the histogram has {len(c)} bins but this search needs at least {min_bins}; "
            f"collect statistics with more bins (default {NUM_BINS})"
        )
    if np.any(c < 0) or c.sum() == 0:
        raise TfquantError("histogram counts must be >= 0 and not all 0; calibrate on at least one value")
    steps = np.diff(e)
    if not np.all(np.isfinite(e)) or e[0] != 0.0 or np.any(steps < 0):
        raise TfquantError(f"histogram edges must be finite and increase from 0, got [{e[0]}, ..., {e[-1]}]")
    if equal_width and float(np.abs(steps - e[-1] / len(c)).max()) > 1e-9 * e[-1] / len(c):
        raise TfquantError("this search needs equal-width bins; pass AbsHistogram.edges")
    return c, e


def check_search_args(bits: int, start_bin: int) -> None:
    """Checks the options of an amax search (entropy, MSE).

    Raises:
      TfquantError: bits is not an integer in [2, 16] or start_bin not an integer >= 1.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise TfquantError(f"bits must be an integer in [2, 16], got {bits!r}")
    if isinstance(start_bin, bool) or not isinstance(start_bin, (int, np.integer)) or start_bin < 1:
        raise TfquantError(
            f"start_bin must be an integer >= 1, got {start_bin!r}; the default is {DEFAULT_START_BIN}"
        )
