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
    """Σx per channel of a tensor's values regrouped into ``channels`` channels:
    channel = flat index mod ``channels`` (the per-channel sums of a reshape of the tensor to
    last dimension ``channels``; ``TensorStatistics.channel_sum`` of that reshape).

    Attributes:
      channels: C, which must divide the size of every batch.
      sums: float64 (C,) sums so far; None before the first batch.
    """

    channels: int
    sums: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        """Folds one batch in."""
        columns = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.channels)
        if len(columns) == 0:
            return
        if fused.AVAILABLE:
            try:
                moments = fused.kernels()[0]
            except ImportError:
                fused.AVAILABLE = False
        if fused.AVAILABLE:
            sums = np.empty(self.channels, dtype=np.float64)
            moments(columns, sums)
        else:
            sums = columns.sum(axis=0, dtype=np.float64)
        self.sums = sums if self.sums is None else self.sums + sums

    __call__ = update
