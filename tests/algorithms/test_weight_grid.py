"""The TF weight grid agrees with tfquant.numerics; kernels and their output-channel axes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
from tf_keras import layers

from tfquant.algorithms import kernel_of, round_to_grid
from tfquant.algorithms.weight_grid import check_bits, fake_quantize_kernel, symmetric_scale
from tfquant.errors import TfquantError
from tfquant.numerics import fake_quantize, symmetric_params


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_tf_scale_equals_numerics_symmetric_params(bits: int) -> None:
    amax = np.array([0.0, 1e-6, 0.3, 1.0, 17.5], np.float32)
    expected = symmetric_params(amax, bits=bits, narrow_range=True).scale
    np.testing.assert_allclose(symmetric_scale(tf.constant(amax), bits).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_round_to_grid_equals_numerics_fake_quantize_per_channel_and_per_tensor(bits: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32) * rng.uniform(0.01, 3.0, 5).astype(np.float32)
    amax = np.max(np.abs(w.reshape(-1, 5)), axis=0)
    p = symmetric_params(amax, bits=bits, narrow_range=True)
    p_axis = dataclasses.replace(p, axis=3)
    np.testing.assert_allclose(round_to_grid(w, bits).numpy(), fake_quantize(w, p_axis), rtol=1e-5, atol=1e-7)

    p_tensor = symmetric_params(np.max(np.abs(w)), bits=bits, narrow_range=True)
    np.testing.assert_allclose(
        round_to_grid(w, bits, per_channel=False).numpy(), fake_quantize(w, p_tensor), rtol=1e-5, atol=1e-7
    )


def test_depthwise_grid_has_one_scale_per_channel_c_times_mult() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    w[:, :, 1, 2] *= 100.0  # one output channel far larger than the rest
    tf_q = round_to_grid(w, 4, channel_axes=(2, 3)).numpy()
    np_q = fake_quantize_kernel(w, 4, channel_axes=(2, 3))
    np.testing.assert_allclose(tf_q, np_q, rtol=1e-5, atol=1e-7)
    # the small channels keep their own fine grid instead of collapsing to zero
    assert np.count_nonzero(tf_q[:, :, 0, 0]) >= 5
    per_tensor = round_to_grid(w, 4, per_channel=False).numpy()
    assert np.count_nonzero(per_tensor[:, :, 0, 0]) == 0


def test_kernel_of_reports_output_channel_axes() -> None:
    def built(layer: layers.Layer, shape: tuple[int | None, ...]) -> layers.Layer:
        layer.build(shape)
        return layer

    assert kernel_of(built(layers.Dense(3), (None, 4)))[1] == (-1,)
    assert kernel_of(built(layers.Conv2D(3, 1), (None, 5, 5, 2)))[1] == (-1,)
    assert kernel_of(built(layers.DepthwiseConv2D(3), (None, 5, 5, 2)))[1] == (2, 3)
    assert kernel_of(built(layers.Conv2DTranspose(3, 2), (None, 5, 5, 2)))[1] == (-2,)
    assert kernel_of(built(layers.SeparableConv2D(3, 1), (None, 5, 5, 2))) is None
    assert kernel_of(layers.Dense(3)) is None  # not built
    assert kernel_of(built(layers.BatchNormalization(), (None, 3))) is None


@pytest.mark.parametrize("bits", [1, 17, 4.0, True, "8"])
def test_invalid_bits_are_named(bits: object) -> None:
    with pytest.raises(TfquantError, match=r"bits must be an integer in \[2, 16\]"):
        check_bits(bits)
