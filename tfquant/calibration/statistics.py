"""Per-tensor calibration statistics, gathered in one pass and shared by every calibrator.

What each calibrator needs, kept in memory bounded by (tensors x bins), whatever the size of
the calibration set:

* ``min``, ``max``: running extremes (max calibrator; TFLite's own calibrator keeps the same).
* ``ema_min``, ``ema_max``: exponential moving average of per-batch extremes,
  m <- (1 - c)·m + c·m_batch, first batch taken as is (moving-average calibrator).
* ``count``, ``mean``, ``m2``: count, mean and Σ(x - mean)², merged batch by batch with
  Chan et al.'s parallel update (numerically stable, unlike Σx² - N·mean²) -> σ (ACIQ
  Gaussian).
* ``sum_abs_dev``: Σ over batches of Σ|x - mean of that batch|, so ``laplace_b`` ≈ E|x - mean|
  (ACIQ Laplace; exact when every batch has the global mean, otherwise biased by the spread of
  the batch means, which is small for batches of ~100 images).
* ``histogram``: a 2048-bin histogram of |x| that grows when a later batch exceeds its range
  (percentile, entropy, MSE).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfquant.calibration import fused
from tfquant.calibration.histogram import NUM_BINS, AbsHistogram
from tfquant.errors import TfquantError

DEFAULT_EMA_CONSTANT = 0.1
"""c of the moving-average min/max (see :mod:`tfquant.calibration.moving_average`)."""


@dataclasses.dataclass
class TensorStatistics:
    """Streaming statistics of one tensor over the calibration set.

    Attributes:
      name: the tensor's name in the float .tflite (its quantized twin keeps the name).
      histogram: histogram of |x|.
      min, max: smallest and largest value seen.
      ema_min, ema_max: moving averages of per-batch min / max.
      count: number of values seen.
      mean: mean of the values seen.
      m2: Σ(x - mean)² over the values seen.
      sum_abs_dev: Σ|x - mean of its batch|.
      channel_sum: Σx per channel of the last axis (float64), None before the first batch;
        :attr:`channel_mean` is the expected input that bias correction folds into biases.
    """

    name: str
    histogram: AbsHistogram = dataclasses.field(default_factory=AbsHistogram.empty)
    min: float = math.inf
    max: float = -math.inf
    ema_min: float = math.nan
    ema_max: float = math.nan
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    sum_abs_dev: float = 0.0
    channel_sum: np.ndarray | None = None

    @classmethod
    def empty(cls, name: str, *, num_bins: int = NUM_BINS) -> "TensorStatistics":
        return cls(name=name, histogram=AbsHistogram.empty(num_bins))

    @property
    def std(self) -> float:
        """Population standard deviation σ = sqrt(m2 / N)."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    @property
    def laplace_b(self) -> float:
        """Laplace scale estimate b = E|x - mean| (ACIQ, Banner et al. 2019)."""
        return self.sum_abs_dev / self.count if self.count else 0.0

    @property
    def channel_mean(self) -> np.ndarray | None:
        """E[x] per channel of the last axis, or None before the first batch."""
        if self.channel_sum is None or self.count == 0:
            return None
        return self.channel_sum / (self.count / self.channel_sum.size)

    @property
    def non_negative(self) -> bool:
        """True when every value seen was >= 0 (e.g. the output of a fused ReLU)."""
        return self.min >= 0.0

    def update(self, x: np.ndarray, *, ema_constant: float = DEFAULT_EMA_CONSTANT) -> None:
        """Adds one batch of values (any shape; float32 is used as is, without a copy).

        Two compiled passes over the batch (:mod:`tfquant.calibration.fused`) when numba is
        installed, else :meth:`update_numpy`, the reference; both give the same statistics
        (the float64 sums up to their last bits, see the module docstring of ``fused``).

        Raises:
          TfquantError: the batch holds NaN or infinity.
        """
        if fused.AVAILABLE:
            try:
                moments, deviations_and_histogram = fused.kernels()
            except ImportError:  # numba is there but does not load: numpy from now on
                fused.AVAILABLE = False
        if not fused.AVAILABLE:
            self.update_numpy(x, ema_constant=ema_constant)
            return
        a = np.ascontiguousarray(x, dtype=np.float32)
        n = a.size
        if n == 0:
            return
        columns = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
        channel_sum = np.empty(columns.shape[1], dtype=np.float64)
        lo32, hi32, total = moments(columns, channel_sum)
        lo, hi = float(lo32), float(hi32)
        if not math.isfinite(total + lo + hi):  # finite ones (|Σx| <= n·2^128) sum to a finite value
            self._non_finite()
        mean_b = total / n
        histogram = self.histogram
        histogram.cover(hi if hi >= -lo else -lo)
        upper = histogram.upper
        if upper == 0.0:  # every value so far is 0 (so are the deviations)
            histogram.counts[0] += n
            m2_b = abs_dev_b = 0.0
        elif n <= fused.MAX_VALUES:  # one call (the batches of the statistics pass)
            counts = histogram.counts
            m2_b, abs_dev_b = deviations_and_histogram(
                a.reshape(-1), np.float32(mean_b), upper / len(counts), counts
            )
        else:
            m2_b = abs_dev_b = 0.0
            v = a.reshape(-1)
            mean32, width = np.float32(mean_b), histogram.width
            for begin in range(0, n, fused.MAX_VALUES):
                sq, ab = deviations_and_histogram(
                    v[begin : begin + fused.MAX_VALUES], mean32, width, histogram.counts
                )
                m2_b += sq
                abs_dev_b += ab
        self._merge(n, lo, hi, mean_b, m2_b, abs_dev_b, channel_sum, ema_constant)

    def update_numpy(self, x: np.ndarray, *, ema_constant: float = DEFAULT_EMA_CONSTANT) -> None:
        """:meth:`update` in numpy: the reference implementation (~5 ns a value, ~8 passes).

        Raises:
          TfquantError: the batch holds NaN or infinity.
        """
        a = np.asarray(x, dtype=np.float32)
        v = a.reshape(-1)
        n = v.size
        if n == 0:
            return
        columns = a.reshape(-1, a.shape[-1]) if a.ndim else v.reshape(-1, 1)
        channel_sum = columns.sum(axis=0, dtype=np.float64)
        lo, hi = float(v.min()), float(v.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            self._non_finite()
        mean_b = float(v.sum(dtype=np.float64)) / n
        d = v - np.float32(mean_b)
        d64 = d.astype(np.float64)  # a float32 dot would round m2 by up to ~2e-5 relative
        np.multiply(d64, d64, out=d64)  # (not a float64 dot: BLAS ddot is ~10x slower here)
        m2_b = float(d64.sum())
        del d64
        np.abs(d, out=d)
        abs_dev_b = float(d.sum(dtype=np.float64))
        if lo >= 0.0:
            self.histogram.update_numpy(v, known_max=hi)  # already |x|
        else:
            np.abs(v, out=d)
            self.histogram.update_numpy(d, known_max=max(hi, -lo))
        self._merge(n, lo, hi, mean_b, m2_b, abs_dev_b, channel_sum, ema_constant)

    def _non_finite(self) -> None:
        raise TfquantError(
            f"tensor {self.name!r} has NaN/Inf values on the calibration data; check the "
            "calibration data and the float model"
        )

    def _merge(
        self, n: int, lo: float, hi: float, mean_b: float, m2_b: float, abs_dev_b: float,
        channel_sum: np.ndarray, ema_constant: float,
    ) -> None:
        """Folds one batch's n, min, max, mean, Σ(x - mean)², Σ|x - mean| and Σx per channel in
        (Chan et al.'s parallel update for the mean and m2). Written for ~1 µs a call (it runs
        once per tensor and batch: 1,870 times a pass on the zoo ViT): locals, comparisons
        instead of ``min`` / ``max`` (the same result: a finite batch, ties keep the old value)."""
        count = self.count
        previous = self.channel_sum
        if previous is None or previous.shape != channel_sum.shape:
            self.channel_sum = channel_sum if count == 0 else None
        else:
            self.channel_sum = previous + channel_sum
        if count == 0:
            self.ema_min, self.ema_max = lo, hi
        else:
            self.ema_min = (1.0 - ema_constant) * self.ema_min + ema_constant * lo
            self.ema_max = (1.0 - ema_constant) * self.ema_max + ema_constant * hi
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi
        total = count + n
        delta = mean_b - self.mean
        self.m2 += m2_b + delta * delta * count * n / total
        self.mean += delta * n / total
        self.count = total
        self.sum_abs_dev += abs_dev_b
