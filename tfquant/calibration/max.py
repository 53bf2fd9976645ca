"""Max calibration: the observed range.

range = [min x, max x] over every value of the tensor in the calibration set. This is what
TFLite's own calibrator records (``tflite::optimize::calibration::MinMax``), so with the same
calibration set it reproduces the converter's default int8 / int16x8 model (tested).
"""

from __future__ import annotations

from tfquant.calibration.base import Calibrator, QuantTarget, Range
from tfquant.calibration.statistics import TensorStatistics


class MaxCalibrator(Calibrator):
    """[min, max] of everything seen (Wu et al. 2020, Sec. 4.1 "max")."""

    name = "max"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        return Range(float(stats.min), float(stats.max))
