"""Inference BN folding keeps outputs (Krishnamoorthi 2018, Sec. 3.2)."""

from __future__ import annotations

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras
from tf_keras import layers

from tfquant import models
from tfquant.algorithms import (
    FoldPair,
    fold_batch_norms,
    fold_kernel_and_bias,
    foldable_pairs,
    per_channel_weight_ranges,
)
from tfquant.errors import TfquantError


def _randomise_bn(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial moving statistics and affine parameters, variances spanning decades."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c),  # gamma, some negative
                rng.normal(0.0, 0.5, c),  # beta
                rng.normal(0.0, 1.0, c),  # moving mean
                10.0 ** rng.uniform(-2, 1, c),  # moving variance, 0.01 .. 10
            ])


def _small_model(rng: np.random.Generator) -> keras.Model:
    inputs = keras.Input((10, 10, 3), name="x")
    x = layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=True, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(5, name="fc")(x)
    outputs = layers.BatchNormalization(name="fc_bn")(x)
    model = keras.Model(inputs, outputs, name="small")
    for layer in model.layers:  # random biases, so the (b - mu) term matters
        if getattr(layer, "use_bias", False):
            layer.bias.assign(rng.normal(0.0, 0.3, layer.bias.shape).astype(np.float32))
    _randomise_bn(model, rng)
    return model


def _assert_same_outputs(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(a))))


def test_fold_conv_depthwise_dense_keeps_outputs_and_removes_the_bns() -> None:
    rng = np.random.default_rng(0)
    model = _small_model(rng)
    before = [w.copy() for w in model.get_weights()]
    x = rng.normal(size=(4, 10, 10, 3)).astype(np.float32)

    folded = fold_batch_norms(model)

    _assert_same_outputs(model(x, training=False).numpy(), folded(x).numpy())
    assert len(folded.layers) == len(model.layers) - 3
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in folded.layers)
    for name in ("conv", "dw", "fc"):
        assert folded.get_layer(name).use_bias
    # the caller's model is untouched
    for w_before, w_after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w_after, w_before)
    assert len(model.layers) == 10


def test_fold_kernel_closed_form_depthwise_channel_order() -> None:
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 2, 3))  # C=2, mult=3 -> output channel c*3 + m
    gamma, beta, mean = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    var = rng.uniform(0.1, 2.0, 6)
    bias = rng.normal(size=6)
    w, b = fold_kernel_and_bias(
        kernel, bias, gamma=gamma, beta=beta, moving_mean=mean, moving_variance=var,
        epsilon=1e-3, channel_axes=(2, 3),
    )
    sigma = np.sqrt(var + 1e-3)
    for c in range(2):
        for m in range(3):
            k = c * 3 + m
            np.testing.assert_allclose(w[:, :, c, m], kernel[:, :, c, m] * gamma[k] / sigma[k])
    np.testing.assert_allclose(b, beta + gamma * (bias - mean) / sigma)


def test_zoo_mobilenet_v1_fold_keeps_outputs() -> None:
    model = models.build("mobilenet_v1")
    n_bn = sum(isinstance(layer, layers.BatchNormalization) for layer in model.layers)
    x = np.random.default_rng(2).uniform(0.0, 1.0, size=(8, 28, 28, 1)).astype(np.float32)

    folded = fold_batch_norms(model)

    assert n_bn == 11
    assert len(foldable_pairs(model)) == n_bn
    assert len(folded.layers) == len(model.layers) - n_bn
    _assert_same_outputs(model(x, training=False).numpy(), folded(x).numpy())


def test_unfoldable_topologies_are_left_alone() -> None:
    rng = np.random.default_rng(3)
    inputs = keras.Input((6, 6, 2))
    shared = layers.Conv2D(4, 1, name="shared")(inputs)  # feeds the BN and the add
    bn_shared = layers.BatchNormalization(name="bn_shared")(shared)
    summed = layers.Add(name="add")([shared, bn_shared])
    bn_after_add = layers.BatchNormalization(name="bn_after_add")(summed)
    relu_conv = layers.Conv2D(4, 1, activation="relu", name="relu_conv")(bn_after_add)
    bn_after_relu = layers.BatchNormalization(name="bn_after_relu")(relu_conv)
    plain = layers.Conv2D(4, 1, name="plain")(bn_after_relu)
    outputs = layers.BatchNormalization(name="bn_plain")(plain)
    model = keras.Model(inputs, outputs)
    _randomise_bn(model, rng)
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)

    assert foldable_pairs(model) == [FoldPair(layer="plain", batch_norm="bn_plain")]
    folded = fold_batch_norms(model)

    names = {layer.name for layer in folded.layers}
    assert {"bn_shared", "bn_after_add", "bn_after_relu"} <= names
    assert "bn_plain" not in names
    _assert_same_outputs(model(x, training=False).numpy(), folded(x).numpy())


def test_sequential_model_with_conv1d_and_dense_folds_to_functional() -> None:
    rng = np.random.default_rng(4)
    model = keras.Sequential([
        keras.Input((7, 2)),
        layers.Conv1D(3, 3, name="c1"),
        layers.BatchNormalization(name="bn1"),
        layers.Flatten(name="flat"),
        layers.Dense(3, name="d"),
        layers.BatchNormalization(name="bn2"),
    ])
    _randomise_bn(model, rng)
    x = rng.normal(size=(3, 7, 2)).astype(np.float32)
    folded = fold_batch_norms(model)
    assert [type(layer).__name__ for layer in folded.layers] == [
        "InputLayer", "Conv1D", "Flatten", "Dense"
    ]
    _assert_same_outputs(model(x, training=False).numpy(), folded(x).numpy())


def test_subclassed_model_is_rejected() -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):  # noqa: ANN001, ANN201
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(TfquantError, match="subclassed"):
        fold_batch_norms(net)


def test_sequential_without_input_is_rejected() -> None:
    with pytest.raises(TfquantError, match="no defined input"):
        fold_batch_norms(keras.Sequential([layers.Dense(2)]))


def test_per_channel_ranges_are_gamma_over_sigma_times_kernel_range() -> None:
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(3, 1, use_bias=False, name="conv")(inputs)
    outputs = layers.BatchNormalization(epsilon=1e-6, name="bn")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.array([[[[1.0, -2.0, 0.5], [0.25, 1.0, -4.0]]]], np.float32)  # (1, 1, 2, 3)
    model.get_layer("conv").set_weights([kernel])
    var = np.array([1e-4, 1.0, 100.0])  # sigma ~ 0.01, 1, 10
    model.get_layer("bn").set_weights([np.ones(3), np.zeros(3), np.zeros(3), var])

    ranges = per_channel_weight_ranges(model)
    unfolded = per_channel_weight_ranges(model, fold=False)

    sigma = np.sqrt(var + 1e-6)
    np.testing.assert_allclose(ranges["conv"], np.array([1.0, 2.0, 4.0]) / sigma, rtol=1e-6)
    np.testing.assert_allclose(unfolded["conv"], [1.0, 2.0, 4.0])
    assert ranges["conv"].max() / ranges["conv"].min() > 100  # why per-layer scales fail
