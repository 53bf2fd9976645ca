"""One registry: a calibration method (and its options) -> a :class:`Calibrator`."""

from __future__ import annotations

from tfquant.calibration.aciq import AciqCalibrator
from tfquant.calibration.base import Calibrator
from tfquant.calibration.entropy import EntropyCalibrator
from tfquant.calibration.max import MaxCalibrator
from tfquant.calibration.moving_average import MovingAverageCalibrator
from tfquant.calibration.mse import MseCalibrator
from tfquant.calibration.percentile import PercentileCalibrator
from tfquant.errors import TfquantError
from tfquant.qtypes import AciqPrior, Calibration

CALIBRATORS: dict[Calibration, type[Calibrator]] = {
    Calibration.MAX: MaxCalibrator,
    Calibration.MOVING_AVERAGE: MovingAverageCalibrator,
    Calibration.PERCENTILE: PercentileCalibrator,
    Calibration.ENTROPY: EntropyCalibrator,
    Calibration.MSE: MseCalibrator,
    Calibration.ACIQ: AciqCalibrator,
}


def make_calibrator(
    method: "Calibration | str",
    *,
    percentile: float | None = None,
    aciq_prior: "AciqPrior | str | None" = None,
) -> Calibrator:
    """Returns the calibrator for ``method`` with its options.

    Args:
      method: a :class:`~tfquant.qtypes.Calibration` or its name.
      percentile: for ``percentile`` (default 99.99).
      aciq_prior: for ``aciq`` (default laplace).

    Raises:
      TfquantError: unknown method, or an option given to a method that does not take it.
    """
    method = Calibration.parse(method, what="calibrator")
    if percentile is not None and method is not Calibration.PERCENTILE:
        raise TfquantError(f"percentile applies to calibrator percentile, not {method}; drop it")
    if aciq_prior is not None and method is not Calibration.ACIQ:
        raise TfquantError(f"aciq_prior applies to calibrator aciq, not {method}; drop it")
    if method is Calibration.PERCENTILE:
        return PercentileCalibrator(percentile=99.99 if percentile is None else percentile)
    if method is Calibration.ACIQ:
        prior = AciqPrior.parse(aciq_prior or AciqPrior.LAPLACE, what="ACIQ prior")
        return AciqCalibrator(prior=prior.value)
    return CALIBRATORS[method]()
