"""Calibration: statistics gathered once, ranges chosen by many calibrators.

Where things are (pipeline order):

* ``histogram``      -- the growable 2048-bin histogram of |x|
* ``statistics``     -- per-tensor streaming statistics (min/max, EMA, moments, histogram)
* ``observe``        -- THE statistics pass (a source's batches -> one observer per tensor)
  and the small observers :class:`MinMax`, :class:`AbsHistograms`
* ``collect``        -- the pass over the float .tflite in LiteRT (the calibrators' source)
* ``keras_outputs``  -- the pass over a Keras model (simulation ranges, QAT range init)
* ``base``           -- the :class:`Calibrator` interface, :class:`Range`, :class:`QuantTarget`
* one module per calibrator: ``max``, ``moving_average``, ``percentile``, ``entropy``,
  ``mse``, ``aciq``; ``weights`` for weight bounds
* ``registry``       -- :func:`make_calibrator`
* ``reference``      -- slow per-candidate reference searches (tests and benchmarks only)

The ranges reach the .tflite through :mod:`tfquant.convert.calibrated`.
"""

from tfquant.calibration.base import Calibrator, QuantTarget, Range
from tfquant.calibration.collect import CalibrationStatistics, collect_statistics
from tfquant.calibration.entropy import EntropyCalibrator, entropy_amax
from tfquant.calibration.histogram import NUM_BINS, AbsHistogram
from tfquant.calibration.mse import MseCalibrator, mse_amax
from tfquant.calibration.observe import AbsHistograms, MinMax, statistics_pass
from tfquant.calibration.percentile import BinEdge, PercentileCalibrator, percentile_amax
from tfquant.calibration.registry import CALIBRATORS, make_calibrator
from tfquant.calibration.statistics import TensorStatistics
from tfquant.calibration.weights import weight_amax

__all__ = [
    "AbsHistogram",
    "AbsHistograms",
    "BinEdge",
    "CALIBRATORS",
    "CalibrationStatistics",
    "Calibrator",
    "EntropyCalibrator",
    "MinMax",
    "MseCalibrator",
    "NUM_BINS",
    "PercentileCalibrator",
    "QuantTarget",
    "Range",
    "TensorStatistics",
    "collect_statistics",
    "entropy_amax",
    "make_calibrator",
    "mse_amax",
    "percentile_amax",
    "statistics_pass",
    "weight_amax",
]
