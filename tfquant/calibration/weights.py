"""Weight bounds: per-channel (or per-tensor) amax by max, percentile or MSE.

TFLite stores int8 weights symmetric, narrow range: Δ_c = amax_c / 127 with
amax_c = max|W_c| (Krishnamoorthi 2018 Sec. 2.2; Wu et al. 2020 Sec. 4: "per-channel max").
A smaller amax_c trades clipping of the largest weights for finer steps; percentile and MSE
choose it from a histogram of |W_c| with the same procedures as the activation calibrators
(:mod:`~tfquant.calibration.percentile`, :mod:`~tfquant.calibration.mse`, 8-bit signed).
The bound reaches the model by clipping W_c to [-amax_c, amax_c] before quantization, after
which the converter's own max rule gives exactly Δ_c = amax_c / 127.
"""

from __future__ import annotations

import numpy as np

from tfquant.calibration.histogram import NUM_BINS, AbsHistogram
from tfquant.calibration.mse import mse_amax
from tfquant.calibration.percentile import percentile_amax
from tfquant.errors import TfquantError
from tfquant.qtypes import DEFAULT_PERCENTILE, WeightCalibration


def weight_amax(
    w: np.ndarray,
    *,
    axis: int | None,
    method: "WeightCalibration | str" = WeightCalibration.MAX,
    percentile: float | None = None,
    bits: int = 8,
    num_bins: int = NUM_BINS,
) -> np.ndarray:
    """Per-channel bounds of ``w`` along ``axis`` (``None``: one bound for the tensor).

    Args:
      w: float weights.
      axis: the output-channel axis, or ``None`` for per-tensor.
      method: max, percentile or mse.
      percentile: for percentile (default ``DEFAULT_PERCENTILE``, 99.99).
      bits: weight bit width (the MSE search quantizes to 2^(bits-1) - 1 levels a side).
      num_bins: histogram bins for percentile and MSE.

    Returns:
      float64 array of amax, one per channel (shape ``(w.shape[axis],)``, or ``(1,)``), each
      in (0, max|W_c|] (a channel of zeros keeps amax 0).
    """
    method = WeightCalibration.parse(method, what="weight calibrator")
    w = np.asarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise TfquantError("the model has NaN/Inf weights; retrain or repair the model")
    channels = np.abs(w).reshape(1, -1) if axis is None else np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
    amax = channels.max(axis=1).astype(np.float64)
    if method is WeightCalibration.MAX:
        return amax
    for c, values in enumerate(channels):
        if amax[c] == 0.0:
            continue
        hist = AbsHistogram.empty(num_bins)
        hist.update(values)
        if method is WeightCalibration.PERCENTILE:
            p = DEFAULT_PERCENTILE if percentile is None else percentile
            found = percentile_amax(hist.counts, hist.edges, p)
        else:
            found = mse_amax(hist.counts, hist.edges, bits=bits, unsigned=False)
        amax[c] = min(amax[c], float(found)) if found > 0 else amax[c]
    return amax
