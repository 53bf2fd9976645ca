"""Fixed k-sigma clipping: the baseline ACIQ is compared with (Banner, Nahshan, Soudry 2019,
arXiv 1810.05723, Sec. 5: "clipping at a fixed 2σ" costs ResNet-50 W4A4 far more than ACIQ).

Range = [max(min, μ - k·σ), min(max, μ + k·σ)] with μ, σ the tensor's mean and standard
deviation over the calibration set, whatever the bit width: unlike ACIQ's α*(M), the clip
does not widen when more levels are available. Not in the calibrator registry (a study
baseline, not a recommended calibrator); the ACIQ study passes it explicitly.
"""

from __future__ import annotations

from tfquant.calibration.base import Calibrator, QuantTarget, Range
from tfquant.calibration.statistics import TensorStatistics
from tfquant.errors import TfquantError


class FixedSigmaCalibrator(Calibrator):
    """Clips every tensor to its mean ± k standard deviations (within the observed range)."""

    name = "sigma"

    def __init__(self, *, k: float = 2.0) -> None:
        if not k > 0:
            raise TfquantError(f"k must be positive, got {k!r}")
        self.k = float(k)

    def describe(self) -> str:
        return f"fixed {self.k:g} sigma"

    def compute_range(self, stats: TensorStatistics, target: QuantTarget) -> Range:
        del target  # the point of the baseline: the same clip at every bit width
        lo_obs, hi_obs = float(stats.min), float(stats.max)
        half = self.k * stats.std
        return Range(max(lo_obs, stats.mean - half), min(hi_obs, stats.mean + half))
