"""Weight bounds: max is max|W_c|; percentile and MSE clip heavy tails."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.calibration import weight_amax
from tfquant.errors import TfquantError
from tfquant.numerics import fake_quantize, symmetric_params


def _weights() -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, size=(3, 3, 16, 8)).astype(np.float32)  # HWIO-like, axis 3
    w[0, 0, 0, 2] = 3.0  # one outlier in channel 2
    return w


def test_max_is_per_channel_max_abs():
    w = _weights()
    np.testing.assert_array_equal(weight_amax(w, axis=3), np.abs(w).max(axis=(0, 1, 2)))
    assert weight_amax(w, axis=None).tolist() == [pytest.approx(3.0)]


def test_percentile_clips_the_outlier_channel_and_no_bound_exceeds_max():
    w = _weights()
    mx = weight_amax(w, axis=3)
    amax = weight_amax(w, axis=3, method="percentile", percentile=99.0)
    assert np.all(amax <= mx) and np.all(amax > 0)
    assert amax[2] < 0.1 * mx[2]  # the one outlier (0.7% of the channel) is clipped
    assert np.all(weight_amax(w, axis=3, method="mse") <= mx)


def test_mse_bound_lowers_the_quantization_error_of_a_heavy_tailed_tensor():
    # Student-t weights (many large values): clipping the tail costs less than coarse steps.
    w = np.random.default_rng(1).standard_t(1.5, size=20_000) * 0.01
    errors, bounds = {}, {}
    for method in ("max", "mse"):
        amax = bounds[method] = float(weight_amax(w, axis=None, method=method, bits=4)[0])
        q = fake_quantize(np.clip(w, -amax, amax), symmetric_params(amax, bits=4, narrow_range=True))
        errors[method] = np.mean((q - w) ** 2)
    assert bounds["mse"] < 0.8 * bounds["max"]
    assert errors["mse"] < errors["max"]


def test_nan_weights_are_a_clear_error():
    w = _weights()
    w[0, 0, 0, 0] = np.nan
    with pytest.raises(TfquantError, match="NaN/Inf weights"):
        weight_amax(w, axis=3)
