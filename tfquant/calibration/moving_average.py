"""Moving-average min/max calibration.

Per calibration batch k with extremes (m_k, M_k):

    lo <- (1 - c)·lo + c·m_k,   hi <- (1 - c)·hi + c·M_k,   first batch taken as is,

the observer of torch.ao.quantization's ``MovingAverageMinMaxObserver`` and of ONNX Runtime's
MinMax calibrator with ``moving_average=True``. Those use c = 0.01 over thousands of training
or calibration steps; a PTQ calibration set of ~1000 images is ~10 batches of 100, where
c = 0.01 would leave ~90% of the weight on the first batch, so tfquant uses c = 0.1
(:data:`tfquant.calibration.statistics.DEFAULT_EMA_CONSTANT`; recorded in each run's
config). Outliers that occur in a few batches move the range less than they move ``max``.
"""

from __future__ import annotations

from tfquant.calibration.base import Calibrator, QuantTarget, Range
from tfquant.calibration.statistics import TensorStatistics


class MovingAverageCalibrator(Calibrator):
    """Exponential moving average of per-batch min and max."""

    name = "moving_average"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        lo, hi = float(stats.ema_min), float(stats.ema_max)
        return Range(min(lo, hi), max(lo, hi))
