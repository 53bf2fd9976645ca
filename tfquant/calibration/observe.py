"""The statistics pass: a model's batches folded, tensor by tensor, into observers.

Every statistics gathering in tfquant is this one loop: a source yields, per calibration
batch, one array per observed tensor, and each array goes to that tensor's observer, which
keeps a bounded summary (nothing of size N is stored):

* the source is the float .tflite in the LiteRT interpreter
  (:func:`tfquant.calibration.collect_statistics`, the converter-side calibrators) or a Keras
  model (:func:`tfquant.calibration.keras_outputs.keras_batches`: the simulation's ranges
  and QAT's range initialisation);
* the observer is a :class:`~tfquant.calibration.statistics.TensorStatistics` (everything the
  calibrators need), a :class:`MinMax` (running extremes, per tensor or per channel of the
  last axis: TFLite's own "max" calibration) or :class:`AbsHistograms` (histograms of |x|,
  per tensor or per channel, for the simulation's percentile ranges).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Sequence

import numpy as np

from tfquant.calibration import fused
from tfquant.calibration.histogram import NUM_BINS, AbsHistogram

Observer = Callable[[np.ndarray], None]
"""Takes one batch of one tensor's values (e.g. ``TensorStatistics.update``)."""


def statistics_pass(batches: Iterable[Sequence[np.ndarray]], observers: Sequence[Observer]) -> int:
    """Feeds array i of every batch to ``observers[i]``; returns the number of batches.

    Each batch's arrays are handed over before the next batch is requested, so a source may
    yield views that its next step overwrites (the interpreter's zero-copy outputs).
    """
    count = 0
    for arrays in batches:
        for observe, values in zip(observers, arrays, strict=True):
            observe(values)
        # Drop the views before the source runs again (LiteRT refuses to resize its tensors
        # while a numpy view of them is alive).
        arrays = values = None  # noqa: F841
        count += 1
    return count


def fan_out(*observers: Observer) -> Observer:
    """One observer that hands each batch to every one of ``observers``, in order."""

    def observe(values: np.ndarray) -> None:
        for o in observers:
            o(values)

    return observe


@dataclasses.dataclass
class MinMax:
    """Running [min, max] of a tensor: one pair, or one per channel of the last axis.

    Attributes:
      per_channel: Reduce over every axis but the last.
      lo, hi: float64 extremes so far (0-d per tensor, shape (C,) per channel); None before
        the first batch.
    """

    per_channel: bool = False
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        """Folds one batch in (reduced in its own dtype, then widened to float64: exact)."""
        x = np.asarray(x)
        flat = x.reshape(-1, x.shape[-1]) if self.per_channel else x.reshape(-1)
        lo = np.asarray(flat.min(axis=0), np.float64)
        hi = np.asarray(flat.max(axis=0), np.float64)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    __call__ = update


@dataclasses.dataclass
class AbsHistograms:
    """Histograms of |x| (:class:`~tfquant.calibration.histogram.AbsHistogram`), one per
    tensor or one per channel of the last axis.

    Attributes:
      per_channel: One histogram per channel of the last axis.
      num_bins: Bins of each histogram.
      histograms: One per channel (or one); empty before the first batch.
    """

    per_channel: bool = False
    num_bins: int = NUM_BINS
    histograms: list[AbsHistogram] = dataclasses.field(default_factory=list)

    def update(self, x: np.ndarray) -> None:
        """Folds one batch in."""
        a = np.abs(np.asarray(x))
        columns = a.reshape(-1, a.shape[-1]) if self.per_channel else a.reshape(-1, 1)
        if not self.histograms:
            self.histograms = [AbsHistogram.empty(self.num_bins) for _ in range(columns.shape[1])]
        for histogram, column in zip(self.histograms, columns.T, strict=True):
            histogram.update(np.ascontiguousarray(column))

    __call__ = update


@dataclasses.dataclass
class ChannelSums:
    """Σx per channel of another tensor Y that holds this tensor's values, rearranged: the
    per-channel sums (``TensorStatistics.channel_sum``) of Y's last axis, from this tensor's
    batches (:class:`tfquant.tflite.rearrangements.Rearrangement`).

    Each batch is read as rows of P values (one example: P = ``channel_index.size``), value j
    of every row landing in channel ``channel_index[j]``: Σ over the rows per position j, in
    float64, then the P position sums added into their channels (``np.bincount`` with
    weights, or the compiled loop below). No copy of the batch is made.

    Attributes:
      channel_index: (P,) channel of each value of a row.
      channels: C.
      sums: float64 (C,) sums so far; None before the first batch, or for good once a
        batch's size is not a multiple of P.
    """

    channel_index: np.ndarray
    channels: int
    sums: np.ndarray | None = None
    broken: bool = False

    def update(self, x: np.ndarray) -> None:
        """Folds one batch in."""
        a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        period = self.channel_index.size
        if self.broken or a.size == 0:
            return
        if period == 0 or a.size % period:
            self.broken, self.sums = True, None
            return
        rows = a.reshape(-1, period)
        kernel = _sums_kernel() if fused.AVAILABLE else None
        if kernel is not None:
            sums = np.empty(self.channels, dtype=np.float64)
            kernel(rows, self.channel_index, sums)
        else:
            position_sums = rows.sum(axis=0, dtype=np.float64)
            sums = np.bincount(self.channel_index, weights=position_sums, minlength=self.channels)
        self.sums = sums if self.sums is None else self.sums + sums

    __call__ = update


def _regrouped_sums(rows: np.ndarray, channel_index: np.ndarray, sums: np.ndarray) -> None:
    """Σ over ``rows`` (float32, C-contiguous (R, P)) per position in float64, then added into
    ``sums`` (overwritten) by channel: sums[channel_index[j]] += Σᵣ rows[r, j]. The row loop
    is independent across j, so it is vectorised (~0.1 ns a value)."""
    period = rows.shape[1]
    acc = np.zeros(period, dtype=np.float64)
    for r in range(rows.shape[0]):
        row = rows[r]
        for j in range(period):
            acc[j] += np.float64(row[j])
    sums[:] = 0.0
    for j in range(period):
        sums[channel_index[j]] += acc[j]


@functools.cache
def _compiled_sums() -> Callable[..., None]:
    import numba

    return numba.njit(cache=True, nogil=True)(_regrouped_sums)


def _sums_kernel() -> Callable[..., None] | None:
    """:func:`_regrouped_sums` compiled (numba's cache, like :mod:`fused`), or None without numba."""
    try:
        return _compiled_sums()
    except ImportError:
        fused.AVAILABLE = False
        return None
