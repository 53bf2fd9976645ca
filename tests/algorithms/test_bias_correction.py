"""Per-channel grids and bias correction: channel means restored on a real Keras layer."""

from __future__ import annotations

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.algorithms.bias_correction import correct, quantize_channels, spread_factor
from tfquant.errors import TfquantError


def _conv_layer_and_inputs():
    """A Keras Conv2D (valid padding) and ReLU-like inputs whose channels have different means."""
    import tf_keras as keras

    rng = np.random.default_rng(0)
    layer = keras.layers.Conv2D(12, 3, padding="valid")
    x = np.maximum(rng.normal(loc=[0.2, 1.0, -0.3, 2.0], scale=1.0, size=(64, 10, 10, 4)), 0.0)
    layer.build(x.shape)
    kernel = rng.laplace(loc=0.01, scale=0.05, size=(3, 3, 4, 12)).astype(np.float32)
    bias = rng.normal(0, 0.1, 12).astype(np.float32)
    layer.set_weights([kernel, bias])
    return layer, x.astype(np.float32), kernel, bias


def _edited_layer_output(layer, x, kernel, bias):
    old = layer.get_weights()
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    out = np.asarray(layer(x))
    layer.set_weights(old)
    return out


@pytest.mark.parametrize("method", ["mean", "mean_std"])
def test_bias_correction_restores_output_channel_means_of_a_conv_layer(method: str) -> None:
    layer, x, kernel, bias = _conv_layer_and_inputs()
    reference = np.asarray(layer(x)).mean(axis=(0, 1, 2))
    w = kernel.reshape(-1, 12)  # (kh·kw·cin, cout): Keras keeps output channels last
    alpha = np.abs(w).max(axis=0)
    bits = np.array([2, 3] * 6)
    q, scale = quantize_channels(w, alpha, bits)
    plain = _edited_layer_output(layer, x, (q * scale).reshape(kernel.shape), bias).mean(axis=(0, 1, 2))
    expected = np.broadcast_to(x.mean(axis=(0, 1, 2)), (3, 3, 4)).reshape(-1, 1)
    new_scale, delta = correct(w, q, scale, expected, method)
    fixed = _edited_layer_output(
        layer, x, (q * new_scale).reshape(kernel.shape), bias + delta
    ).mean(axis=(0, 1, 2))
    before = np.abs(plain - reference)
    after = np.abs(fixed - reference)
    assert before.max() > 1e-2  # 2-3 bit rounding moved the channel means
    # Exact up to the sampling difference between the whole input's channel means and those
    # of the windows the valid convolution reads.
    assert after.max() < 0.01 * before.max()
    assert np.all(after < before)


def test_mean_std_restores_each_channels_weight_spread_on_the_grid() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (50, 6))
    q, scale = quantize_channels(w, np.abs(w).max(axis=0), np.full(6, 3))
    new_scale, _ = correct(w, q, scale, np.ones((50, 1)), "mean_std")
    w_q = q * new_scale
    np.testing.assert_allclose(
        np.linalg.norm(w_q - w_q.mean(0), axis=0), np.linalg.norm(w - w.mean(0), axis=0), rtol=1e-12
    )
    np.testing.assert_array_equal(np.round(w_q / new_scale), q)  # still the same integers


def test_mean_only_keeps_the_scales_and_none_changes_nothing() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (20, 3))
    q, scale = quantize_channels(w, np.abs(w).max(axis=0), np.full(3, 4))
    s_mean, d_mean = correct(w, q, scale, np.full((20, 1), 0.5), "mean")
    np.testing.assert_array_equal(s_mean, scale)
    np.testing.assert_allclose(d_mean, 0.5 * (w - q * scale).sum(axis=0))
    s_none, d_none = correct(w, q, scale, np.full((20, 1), 0.5), "none")
    np.testing.assert_array_equal(s_none, scale)
    np.testing.assert_array_equal(d_none, np.zeros(3))


def test_each_channel_uses_its_own_grid() -> None:
    w = np.linspace(-1.0, 1.0, 41)[:, None] * np.array([1.0, 2.0, 0.5])
    bits = np.array([2, 4, 8])
    q, scale = quantize_channels(w, np.abs(w).max(axis=0), bits)
    assert q.dtype == np.int8
    for c, b in enumerate(bits):
        top = 2 ** (b - 1) - 1
        assert np.abs(q[:, c]).max() == top
        assert len(np.unique(q[:, c])) <= 2**b - 1
    np.testing.assert_allclose(scale, np.abs(w).max(axis=0) / (2 ** (bits - 1) - 1))


def test_spread_factor_is_one_for_constant_channels() -> None:
    np.testing.assert_array_equal(spread_factor(np.ones((5, 2)), np.zeros((5, 2))), [1.0, 1.0])


def test_unknown_method_and_bad_expectation_raise() -> None:
    w = np.ones((4, 2))
    q, scale = quantize_channels(w, np.ones(2), np.full(2, 4))
    with pytest.raises(TfquantError, match="bias correction"):
        correct(w, q, scale, np.ones((4, 1)), "median")
    with pytest.raises(TfquantError, match="NaN"):
        correct(w, q, scale, np.full((4, 1), np.nan), "mean")


def test_sequential_form_uses_the_quantized_models_expected_input() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (12, 4))
    q, scale = quantize_channels(w, np.abs(w).max(axis=0), np.full(4, 3))
    e_float, e_quant = np.full((12, 1), 0.5), np.full((12, 1), 0.7)
    _, delta = correct(w, q, scale, e_float, "sequential", expected_quantized_input=e_quant)
    np.testing.assert_allclose(delta, (w * 0.5).sum(axis=0) - (q * scale * 0.7).sum(axis=0))
    _, same = correct(w, q, scale, e_float, "sequential")  # no quantized expectation: mean's formula
    np.testing.assert_allclose(same, ((w - q * scale) * 0.5).sum(axis=0))
