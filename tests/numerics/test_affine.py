"""Closed-form checks of the quantization maths (Krishnamoorthi 2018, Sec. 2.1)."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.errors import TfquantError
from tfquant.numerics import (
    affine_params,
    dequantize,
    fake_quantize,
    quantize,
    symmetric_params,
)


def test_affine_range_is_widened_to_contain_zero_and_zero_is_exact() -> None:
    p = affine_params(0.5, 2.0, bits=8)  # widened to [0, 2]
    np.testing.assert_allclose(p.scale, 2.0 / 255)
    assert int(p.zero_point) == -128
    np.testing.assert_array_equal(quantize([0.0], p), [-128])
    np.testing.assert_allclose(fake_quantize(np.array([0.0]), p), [0.0], atol=0)


def test_affine_closed_form_for_minus1_to_3() -> None:
    p = affine_params(-1.0, 3.0, bits=8)
    np.testing.assert_allclose(p.scale, 4.0 / 255)
    # z = round(-128 - (-1)/(4/255)) = round(-128 + 63.75) = -64
    assert int(p.zero_point) == -64
    np.testing.assert_array_equal(quantize([-1.0, 0.0, 3.0, 100.0, -100.0], p), [-128, -64, 127, 127, -128])


def test_symmetric_narrow_range_is_tflite_weight_grid() -> None:
    p = symmetric_params(2.54, bits=8)
    np.testing.assert_allclose(p.scale, 0.02)
    assert (p.qmin, p.qmax) == (-127, 127)
    np.testing.assert_array_equal(quantize([-10.0, -2.54, 0.01, 2.54], p), [-127, -127, 0, 127])


def test_fake_quant_error_is_at_most_half_a_step_inside_the_range() -> None:
    rng = np.random.default_rng(0)
    for bits in (2, 4, 8, 16):
        x = rng.uniform(-3, 3, size=10_000)
        p = affine_params(x.min(), x.max(), bits=bits)
        err = np.abs(fake_quantize(x, p) - x)
        assert err.max() <= p.scale / 2 + 1e-12
        # and the grid has exactly 2^bits levels
        assert len(np.unique(quantize(x, p))) <= 2**bits


def test_per_channel_axis_broadcasting() -> None:
    w = np.array([[1.0, 100.0], [-0.5, -50.0]])  # channels along axis 1
    p = symmetric_params(np.abs(w).max(axis=0), bits=8)
    p = type(p)(scale=p.scale, zero_point=p.zero_point, bits=8, narrow_range=True, axis=1)
    q = quantize(w, p)
    np.testing.assert_array_equal(q[0], [127, 127])
    np.testing.assert_allclose(dequantize(q, p), w, rtol=1e-2)


@pytest.mark.parametrize("bits", [1, 17, 8.0])
def test_bad_bits_is_rejected(bits) -> None:
    with pytest.raises(TfquantError, match="bits must be"):
        affine_params(0.0, 1.0, bits=bits)


def test_inverted_range_is_rejected() -> None:
    with pytest.raises(TfquantError, match="x_max must be >= x_min"):
        affine_params(np.array([1.0]), np.array([-2.0]))


def test_non_finite_range_is_rejected() -> None:
    with pytest.raises(TfquantError, match="finite"):
        affine_params(0.0, np.nan)
