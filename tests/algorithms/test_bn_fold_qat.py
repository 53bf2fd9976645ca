"""BN folding for QAT: correction, freeze and the naive fold (Krishnamoorthi 2018, Sec. 3.2.2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

from tfquant import models
from tfquant.algorithms import (
    FoldedConvBN,
    FoldedDepthwiseConvBN,
    SymmetricWeightQuantizer,
    fold_batch_norms_for_qat,
)
from tfquant.algorithms.weight_grid import fake_quantize_kernel
from tfquant.errors import TfquantError

_EPS = 1e-3
_KINDS = ("conv", "depthwise")


def _pair(kind: str, rng: np.random.Generator) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """A built Conv2D (or DepthwiseConv2D, multiplier 2) with bias + BN with random statistics."""
    if kind == "conv":
        conv = layers.Conv2D(4, 3, padding="same", use_bias=True)
    else:
        conv = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=True)
    conv.build((None, 6, 6, 2))
    conv.bias.assign(rng.normal(0.0, 0.5, 4).astype(np.float32))
    bn = layers.BatchNormalization(epsilon=_EPS, momentum=0.9)
    bn.build((None, 6, 6, 4))
    bn.set_weights([
        rng.uniform(0.5, 2.0, 4), rng.normal(0, 0.5, 4), rng.normal(0, 1, 4),
        10.0 ** rng.uniform(-1, 1, 4),
    ])
    return conv, bn


def _folded(kind: str, conv: Any, bn: Any, **kwargs: Any) -> Any:
    cls = FoldedConvBN if kind == "conv" else FoldedDepthwiseConvBN
    return cls.from_layers(conv, bn, **kwargs)


def _x(rng: np.random.Generator, n: int = 8) -> np.ndarray:
    return rng.normal(1.0, 2.0, size=(n, 6, 6, 2)).astype(np.float32)


def _close(actual: Any, expected: Any) -> None:
    expected = np.asarray(expected)
    np.testing.assert_allclose(
        np.asarray(actual), expected, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(expected)))
    )


@pytest.mark.parametrize("kind", _KINDS)
def test_inference_equals_conv_then_bn_with_moving_statistics(kind: str) -> None:
    rng = np.random.default_rng(0)
    conv, bn = _pair(kind, rng)
    x = _x(rng)
    folded = _folded(kind, conv, bn, freeze_bn_delay=0)
    _close(folded(x, training=False), bn(conv(x), training=False))


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("bn_correction", [True, False])
def test_training_output_before_freeze_is_batch_norm_with_batch_statistics(
    kind: str, bn_correction: bool
) -> None:
    # With an identity quantizer, conv(x, γW/σ)·σ/σ_B + β - γμ_B/σ_B (correction) and
    # conv(x, γW/σ_B) + β - γμ_B/σ_B (naive) both equal BN(conv(x)) in training mode.
    rng = np.random.default_rng(1)
    conv, bn = _pair(kind, rng)
    x = _x(rng)
    folded = _folded(kind, conv, bn, bn_correction=bn_correction)
    expected = bn(conv(x), training=True)
    _close(folded(x, training=True), expected)


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("bn_correction", [True, False])
def test_quantizer_sees_moving_sigma_with_correction_and_batch_sigma_when_naive(
    kind: str, bn_correction: bool
) -> None:
    rng = np.random.default_rng(2)
    conv, bn = _pair(kind, rng)
    x = _x(rng)
    seen: list[np.ndarray] = []

    def recording_quantizer(w: tf.Tensor) -> tf.Tensor:
        seen.append(w.numpy())
        return w

    folded = _folded(kind, conv, bn, bn_correction=bn_correction, weight_quantizer=recording_quantizer)
    gamma = bn.gamma.numpy()
    sigma = np.sqrt(bn.moving_variance.numpy() + _EPS)  # before this step's update
    y = conv(x).numpy() - conv.bias.numpy()  # the layer keeps the bias in its mean
    sigma_b = np.sqrt(y.var(axis=(0, 1, 2)) + _EPS)
    kernel = folded.kernel.numpy()
    folded(x, training=True)

    assert len(seen) == 1
    factor = gamma / (sigma if bn_correction else sigma_b)
    _close(seen[0], kernel * factor.reshape(kernel.shape[2:]) if kind == "depthwise" else kernel * factor)
    assert not np.allclose(sigma, sigma_b, rtol=1e-2)  # the two hypotheses differ


@pytest.mark.parametrize("kind", _KINDS)
def test_freeze_after_delay_stops_moving_statistics_and_training_matches_inference(kind: str) -> None:
    rng = np.random.default_rng(3)
    conv, bn = _pair(kind, rng)
    folded = _folded(kind, conv, bn, freeze_bn_delay=3)
    means = [folded.moving_mean.numpy()]
    variances = [folded.moving_variance.numpy()]
    for _ in range(5):
        folded(_x(rng), training=True)
        means.append(folded.moving_mean.numpy())
        variances.append(folded.moving_variance.numpy())

    assert int(folded.step.numpy()) == 5
    for i in range(3):  # steps 0, 1, 2 update (momentum 0.9)
        assert np.max(np.abs(means[i + 1] - means[i])) > 1e-3
        assert np.max(np.abs(variances[i + 1] - variances[i])) > 1e-3
    for i in (3, 4):  # frozen from step 3 on
        np.testing.assert_array_equal(means[i + 1], means[3])
        np.testing.assert_array_equal(variances[i + 1], variances[3])
    x = _x(rng)
    _close(folded(x, training=True), folded(x, training=False))


def test_training_flag_may_be_a_tensor_inside_tf_function() -> None:
    layer = FoldedConvBN(2, 1, freeze_bn_delay=10)
    x = np.random.default_rng(11).normal(size=(2, 3, 3, 1)).astype(np.float32)
    step = tf.function(lambda inputs, training: layer(inputs, training=training))
    step(x, tf.constant(True))
    step(x, tf.constant(False))
    layer(x)  # no flag: Keras' learning phase, inference by default
    assert int(layer.step.numpy()) == 1


def test_moving_statistics_follow_keras_momentum_with_biased_batch_variance() -> None:
    rng = np.random.default_rng(4)
    conv, bn = _pair("conv", rng)
    folded = _folded("conv", conv, bn)
    x = _x(rng)
    y = conv(x).numpy() - conv.bias.numpy()
    mean0, var0 = folded.moving_mean.numpy(), folded.moving_variance.numpy()
    folded(x, training=True)
    _close(folded.moving_mean.numpy(), 0.9 * mean0 + 0.1 * y.mean(axis=(0, 1, 2)))
    _close(folded.moving_variance.numpy(), 0.9 * var0 + 0.1 * y.var(axis=(0, 1, 2)))


@pytest.mark.parametrize("kind", _KINDS)
def test_quantized_inference_uses_the_fake_quantized_folded_kernel(kind: str) -> None:
    rng = np.random.default_rng(5)
    conv, bn = _pair(kind, rng)
    axes = (-1,) if kind == "conv" else (2, 3)
    folded = _folded(kind, conv, bn, weight_quantizer=SymmetricWeightQuantizer(4, channel_axes=axes))
    w_inf = folded.folded_kernel(quantized=False).numpy()
    w_q = fake_quantize_kernel(w_inf, 4, channel_axes=axes)
    x = _x(rng)

    layer_w_q = folded.folded_kernel().numpy()
    _close(layer_w_q, w_q)
    per_channel = layer_w_q.reshape(-1, 4)  # channel axes are trailing in both layouts
    steps = per_channel / (np.max(np.abs(per_channel), axis=0) / 7)  # 4 bits: q in [-7, 7]
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    reference = folded._conv(tf.constant(x), tf.constant(w_q)) + folded.folded_bias()
    _close(folded(x, training=False), reference)


def test_straight_through_gradient_is_the_identity_through_the_quantizer() -> None:
    rng = np.random.default_rng(6)
    conv, bn = _pair("conv", rng)
    x = tf.constant(_x(rng))
    r = tf.constant(rng.normal(size=(8, 6, 6, 4)).astype(np.float32))

    def kernel_grad(layer: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=False) * r)  # linear in the output
        return tape.gradient(loss, layer.kernel)

    float_grad = kernel_grad(_folded("conv", conv, bn))
    ste_grad = kernel_grad(_folded("conv", conv, bn, weight_quantizer=SymmetricWeightQuantizer(2)))
    raw_grad = kernel_grad(
        _folded("conv", conv, bn, weight_quantizer=SymmetricWeightQuantizer(2),
                straight_through_gradient=False)
    )
    _close(ste_grad, float_grad)
    assert np.max(np.abs(float_grad.numpy())) > 0
    assert raw_grad is None or np.max(np.abs(raw_grad.numpy())) == 0  # tf.round blocks it


def test_fit_in_graph_mode_freezes_after_delay() -> None:
    rng = np.random.default_rng(7)
    inputs = keras.Input((6, 6, 2))
    folded = FoldedConvBN(3, 3, padding="same", freeze_bn_delay=2,
                          weight_quantizer=SymmetricWeightQuantizer(8))
    outputs = layers.Dense(1)(layers.GlobalAveragePooling2D()(folded(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    means: list[np.ndarray] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: means.append(folded.moving_mean.numpy())
    )
    x, y = _x(rng, 8), rng.normal(size=(8, 1)).astype(np.float32)
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[record])

    assert int(folded.step.numpy()) == 4
    assert np.max(np.abs(means[1] - means[0])) > 1e-4
    np.testing.assert_array_equal(means[2], means[1])
    np.testing.assert_array_equal(means[3], means[1])


def test_config_round_trip_and_unserialisable_quantizer() -> None:
    layer = FoldedDepthwiseConvBN(
        3, depth_multiplier=2, strides=2, padding="same", freeze_bn_delay=10,
        weight_quantizer=SymmetricWeightQuantizer(4, channel_axes=(2, 3)),
    )
    clone = FoldedDepthwiseConvBN.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert isinstance(clone.weight_quantizer, SymmetricWeightQuantizer)
    assert clone.weight_quantizer.channel_axes == (2, 3)

    with pytest.raises(TfquantError, match="has no get_config"):
        FoldedConvBN(2, 1, weight_quantizer=lambda w: w).get_config()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": 0}, "filters must be a positive integer"),
        ({"kernel_size": (1, 2, 3)}, "kernel_size must be an int or a pair"),
        ({"padding": "full"}, "padding must be 'valid' or 'same'"),
        ({"momentum": 1.0}, "momentum must be in"),
        ({"epsilon": 0.0}, "epsilon must be > 0"),
        ({"freeze_bn_delay": -1}, "freeze_bn_delay must be None or an integer"),
        ({"bn_correction": False, "freeze_bn_delay": 5}, "naive fold"),
        ({"weight_quantizer": 4}, "weight_quantizer must be a callable"),
    ],
)
def test_invalid_constructor_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    args = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(TfquantError, match=message):
        FoldedConvBN(args.pop("filters"), args.pop("kernel_size"), **args)


def test_invalid_depth_multiplier_and_input_rank() -> None:
    with pytest.raises(TfquantError, match="depth_multiplier must be a positive integer"):
        FoldedDepthwiseConvBN(3, depth_multiplier=0)
    with pytest.raises(TfquantError, match=r"expects \(batch, height, width, channels\)"):
        FoldedConvBN(2, 1)(tf.zeros((2, 5)))


def test_from_layers_rejects_what_cannot_fold() -> None:
    rng = np.random.default_rng(8)
    conv, bn = _pair("conv", rng)
    dw, _ = _pair("depthwise", rng)
    with pytest.raises(TfquantError, match="expected a built Conv2D"):
        FoldedConvBN.from_layers(dw, bn)
    with pytest.raises(TfquantError, match="expected a built BatchNormalization"):
        FoldedConvBN.from_layers(conv, layers.ReLU())
    relu_conv = layers.Conv2D(4, 1, activation="relu")
    relu_conv.build((None, 6, 6, 2))
    with pytest.raises(TfquantError, match="activation 'relu'"):
        FoldedConvBN.from_layers(relu_conv, bn)
    grouped = layers.Conv2D(4, 1, groups=2)
    grouped.build((None, 6, 6, 2))
    with pytest.raises(TfquantError, match="grouped conv"):
        FoldedConvBN.from_layers(grouped, bn)
    cf = layers.Conv2D(4, 1, data_format="channels_first")
    cf.build((None, 2, 6, 6))
    with pytest.raises(TfquantError, match="channels_first"):
        FoldedConvBN.from_layers(cf, bn)
    axis1 = layers.BatchNormalization(axis=1)
    axis1.build((None, 4, 6, 6))
    with pytest.raises(TfquantError, match="not the channel axis"):
        FoldedConvBN.from_layers(conv, axis1)


def test_model_transform_on_zoo_mobilenet_keeps_inference_outputs() -> None:
    model = models.build("mobilenet_v1")
    x = np.random.default_rng(9).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    qat = fold_batch_norms_for_qat(model, freeze_bn_delay=100, weight_bits=8)

    kinds = [type(layer).__name__ for layer in qat.layers]
    assert kinds.count("FoldedConvBN") == 6 and kinds.count("FoldedDepthwiseConvBN") == 5
    assert "BatchNormalization" not in kinds
    assert len(qat.layers) == len(model.layers) - 11
    assert qat.get_layer("block1_dw").weight_quantizer.channel_axes == (2, 3)
    float_qat = fold_batch_norms_for_qat(model, freeze_bn_delay=100)
    _close(float_qat(x, training=False), model(x, training=False))
    # 8-bit weights move the logits a little, not a lot
    ref = model(x, training=False).numpy()
    assert 0 < np.max(np.abs(qat(x, training=False).numpy() - ref)) < 0.05 * np.max(np.abs(ref))
    clone = keras.models.clone_model(qat)  # serialisable, quantizers included
    assert isinstance(clone.get_layer("stem_conv").weight_quantizer, SymmetricWeightQuantizer)


@pytest.mark.parametrize("bn_correction", [True, False])
def test_model_transform_on_zoo_resnet_trains_like_batch_norm_before_freeze(bn_correction: bool) -> None:
    model = models.build("resnet")
    x = np.random.default_rng(10).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    qat = fold_batch_norms_for_qat(
        model, freeze_bn_delay=100 if bn_correction else None, bn_correction=bn_correction
    )
    assert sum(isinstance(layer, FoldedConvBN) for layer in qat.layers) == 10
    _close(qat(x, training=True), model(x, training=True))  # batch statistics in both


def test_model_transform_rejects_bad_bits() -> None:
    with pytest.raises(TfquantError, match="bits must be an integer"):
        fold_batch_norms_for_qat(models.build("resnet", weights=None), weight_bits=1)
