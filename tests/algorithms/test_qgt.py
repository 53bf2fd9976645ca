"""QGT: grid regulariser, its ramp, apply_qgt, bottleneck report and packed sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

from tfquant.algorithms import (
    QGTRamp,
    QGTRegularizer,
    apply_qgt,
    bottleneck_report,
    float32_size_bytes,
    grid_distance,
    layer_residuals,
    packed_size_bytes,
    qgt_regularizers,
    round_to_grid,
)
from tfquant.algorithms.weight_grid import fake_quantize_kernel
from tfquant.errors import TfquantError


def _on_grid(rng: np.random.Generator, bits: int, shape: tuple[int, ...], axes: tuple[int, ...],
             *, exact: bool = True) -> np.ndarray:
    """Integer multiples k·Δ_c, |k| <= 2^(b-1)-1, each channel containing ±q_max (so amax = q_max·Δ_c).

    ``exact``: Δ_c are powers of two, so every grid point and Δ_c are exact in float32.
    """
    qmax = 2 ** (bits - 1) - 1
    k = rng.integers(-qmax, qmax + 1, size=shape)
    moved = np.moveaxis(k, axes, range(len(shape) - len(axes), len(shape)))
    flat = moved.reshape(-1, int(np.prod([shape[a] for a in axes])))
    flat[0] = qmax
    flat[1] = -qmax
    k = np.moveaxis(flat.reshape(moved.shape), range(len(shape) - len(axes), len(shape)), axes)
    delta_shape = [shape[a] if a in [x % len(shape) for x in axes] else 1 for a in range(len(shape))]
    if exact:
        delta = 2.0 ** rng.integers(-12, 2, size=delta_shape)
    else:
        delta = rng.uniform(0.001, 2.0, size=delta_shape)
    return (k * delta).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axes", [(-1,), (2, 3)])
def test_grid_distance_is_zero_on_grid_points(bits: int, axes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(bits)
    shape = (3, 3, 4, 2)
    w = _on_grid(rng, bits, shape, tuple(a % 4 for a in axes))
    assert float(grid_distance(w, bits, channel_axes=axes)) <= 1e-12
    # arbitrary real Δ: zero up to float32 rounding of k·Δ, (q_max · 2^-24)^2 at most
    inexact = _on_grid(rng, bits, shape, tuple(a % 4 for a in axes), exact=False)
    assert float(grid_distance(inexact, bits, channel_axes=axes)) <= (2 ** (bits - 1) * 2.0**-23) ** 2
    off = w + rng.uniform(0.3, 0.45, shape).astype(np.float32) * np.abs(w).max() / (2 ** (bits - 1) - 1) / 8
    assert float(grid_distance(off, bits, channel_axes=axes)) > 1e-6


def test_grid_distance_per_tensor_zero_on_its_grid_and_closed_form_otherwise() -> None:
    rng = np.random.default_rng(5)
    delta = 0.037
    w = (rng.integers(-7, 8, size=(6, 5)) * delta).astype(np.float32)
    w[0, 0] = 7 * delta
    assert float(grid_distance(w, 4, per_channel=False)) <= 1e-12

    v = rng.normal(size=(6, 5)).astype(np.float32)
    step = np.max(np.abs(v)) / 7
    expected = np.mean(((v - fake_quantize_kernel(v, 4, per_channel=False)) / step) ** 2)
    r = float(grid_distance(v, 4, per_channel=False))
    np.testing.assert_allclose(r, expected, rtol=1e-5)
    assert 0.0 < r <= 0.25


def test_gradient_points_to_the_nearest_grid_point() -> None:
    rng = np.random.default_rng(6)
    w = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        r = grid_distance(w, 3)
    grad = tape.gradient(r, w).numpy()
    v = w.numpy()
    delta = np.max(np.abs(v), axis=0) / 3  # 3 bits: q_max = 3
    q = round_to_grid(v, 3).numpy()
    np.testing.assert_allclose(grad, 2 * (v - q) / (v.size * delta**2), rtol=1e-5, atol=1e-8)


def test_sgd_on_the_regulariser_alone_pulls_weights_onto_their_nearest_grid_points() -> None:
    rng = np.random.default_rng(7)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(3, use_bias=False, name="fc")(inputs))
    kernel = rng.uniform(-0.65, 0.65, size=(4, 3)).astype(np.float32)
    kernel[0] = 0.7  # amax = 0.7 per channel, Δ = 0.1 at 4 bits
    model.get_layer("fc").set_weights([kernel])
    qgt = apply_qgt(model, bits=4, strength=1.0, ramp_steps=0)
    var = qgt.get_layer("fc").kernel
    target = round_to_grid(kernel, 4).numpy()
    optimizer = keras.optimizers.SGD(learning_rate=0.03)  # 2·lr/(nΔ²) = 0.5: no overshoot

    distances = [np.abs(var.numpy() - target)]
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = tf.add_n(qgt.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, [var]), [var]))
        distances.append(np.abs(var.numpy() - target))

    np.testing.assert_array_equal(round_to_grid(var.numpy(), 4).numpy(), target)  # same grid point
    for before, after in zip(distances, distances[1:]):
        assert np.all(after <= before + 1e-7)
    assert distances[-1].max() <= 0.05 * distances[0].max()
    assert float(grid_distance(var, 4)) < 0.01 * float(grid_distance(kernel, 4))


def test_ramp_is_zero_at_step_zero_and_strength_after_ramp_steps() -> None:
    reg = QGTRegularizer(4, 0.5, 100)
    values = {}
    for step in (0, 25, 100, 1000):
        reg.step.assign(float(step))
        values[step] = float(reg.current_strength())
    assert values[0] == 0.0
    np.testing.assert_allclose(values[25], 0.125)
    np.testing.assert_allclose(values[100], 0.5)
    np.testing.assert_allclose(values[1000], 0.5)
    w = np.random.default_rng(8).normal(size=(5, 4)).astype(np.float32)
    reg.step.assign(0.0)
    assert float(reg(w)) == 0.0
    reg.step.assign(50.0)
    np.testing.assert_allclose(float(reg(w)), 0.25 * float(grid_distance(w, 4)), rtol=1e-6)
    assert float(QGTRegularizer(4, 0.5, 0).current_strength()) == 0.5  # no ramp


def _tiny_model() -> keras.Model:
    inputs = keras.Input((6, 6, 2), name="x")
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = layers.Flatten(name="flat")(x)
    outputs = layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs, name="tiny")


def test_ramp_callback_advances_the_step_during_fit() -> None:
    rng = np.random.default_rng(9)
    qgt = apply_qgt(_tiny_model(), bits=4, strength=2.0, ramp_steps=4)
    qgt.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # lr 0: weights stay
    ramp = QGTRamp()
    x, y = rng.normal(size=(6, 6, 6, 2)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    logged: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: logged.append(logs["loss"])
    )
    qgt.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[ramp, record])

    assert ramp.step == 3
    # the compiled train step read λ(t) = 2·t/4 at t = 0, 1, 2 (Keras logs running means)
    total_r = sum(layer_residuals(qgt, 4).values())
    batch_losses = [
        float(np.mean((qgt(x[2 * t : 2 * t + 2]).numpy() - y[2 * t : 2 * t + 2]) ** 2))
        + 2.0 * t / 4 * total_r
        for t in range(3)
    ]
    np.testing.assert_allclose(logged, np.cumsum(batch_losses) / np.arange(1, 4), rtol=1e-5)
    regs = qgt_regularizers(qgt)
    assert len(regs) == 3
    assert all(float(r.step.numpy()) == 2.0 for r in regs)  # the last batch ran at t = 2
    residuals = layer_residuals(qgt, 4)
    np.testing.assert_allclose(
        float(tf.add_n(qgt.losses)), 2.0 * 2 / 4 * sum(residuals.values()), rtol=1e-5
    )


def test_ramp_callback_without_regularizers_is_an_error() -> None:
    model = _tiny_model()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TfquantError, match="found no QGTRegularizer"):
        model.fit(np.zeros((2, 6, 6, 2)), np.zeros((2, 3)), verbose=0, callbacks=[QGTRamp()])
    with pytest.raises(TfquantError, match="initial_step must be an integer"):
        QGTRamp(initial_step=-1)


def test_apply_qgt_clones_with_regularisers_and_the_same_function() -> None:
    model = _tiny_model()
    x = np.random.default_rng(10).normal(size=(2, 6, 6, 2)).astype(np.float32)
    qgt = apply_qgt(model, bits=2, strength=0.1, ramp_steps=10)

    np.testing.assert_allclose(qgt(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert qgt.get_layer("conv").kernel_regularizer.channel_axes == (-1,)
    assert qgt.get_layer("dw").depthwise_regularizer.channel_axes == (2, 3)
    assert qgt.get_layer("fc").kernel_regularizer.bits == 2
    assert model.get_layer("conv").kernel_regularizer is None
    assert len(qgt.losses) == 3

    sequential = keras.Sequential([keras.Input((4,)), layers.Dense(2, name="d")])
    assert isinstance(apply_qgt(sequential, 4, 0.1, 0).get_layer("d").kernel_regularizer, QGTRegularizer)

    only_fc = apply_qgt(model, 2, 0.1, 10, layers=["fc"])
    assert only_fc.get_layer("conv").kernel_regularizer is None
    assert isinstance(only_fc.get_layer("fc").kernel_regularizer, QGTRegularizer)


def test_regulariser_serialises_and_survives_cloning() -> None:
    reg = QGTRegularizer(3, 0.2, 50, per_channel=False, channel_axes=(2, 3))
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert isinstance(restored, QGTRegularizer)
    assert restored.get_config() == reg.get_config()
    qgt = apply_qgt(_tiny_model(), 3, 0.2, 50)
    clone = keras.models.clone_model(qgt)
    assert isinstance(clone.get_layer("dw").depthwise_regularizer, QGTRegularizer)
    assert clone.get_layer("dw").depthwise_regularizer.channel_axes == (2, 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 0.1, 10), {}, "bits must be an integer"),
        ((4, -0.1, 10), {}, "strength must be a finite number"),
        ((4, float("nan"), 10), {}, "strength must be a finite number"),
        ((4, "a", 10), {}, "strength must be a finite number"),
        ((4, 0.1, -1), {}, "ramp_steps must be an integer"),
        ((4, 0.1, 10), {"layers": ["nope"]}, r"unknown layer\(s\) \['nope'\]"),
        ((4, 0.1, 10), {"layers": ["flat"]}, r"have no Conv/Dense kernel"),
    ],
)
def test_apply_qgt_rejects_bad_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TfquantError, match=message):
        apply_qgt(_tiny_model(), *args, **kwargs)


def test_apply_qgt_rejects_subclassed_models() -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):  # noqa: ANN001, ANN201
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(TfquantError, match="subclassed"):
        apply_qgt(net, 4, 0.1, 10)


def test_bottleneck_report_ranks_layers_and_restores_weights() -> None:
    rng = np.random.default_rng(11)
    inputs = keras.Input((8,))
    h = layers.Dense(8, name="on_grid")(inputs)
    outputs = layers.Dense(4, name="random")(h)
    model = keras.Model(inputs, outputs)
    model.get_layer("on_grid").kernel.assign(_on_grid(rng, 2, (8, 8), (1,)))  # already ternary
    x = rng.normal(size=(32, 8)).astype(np.float32)
    reference = model(x).numpy()
    before = [w.copy() for w in model.get_weights()]

    def mse(m: keras.Model) -> float:
        return float(np.mean((m(x).numpy() - reference) ** 2))

    rows = bottleneck_report(model, 2, mse, higher_is_better=False)

    assert [r.name for r in rows] == ["random", "on_grid"]
    worst, best = rows
    assert worst.degradation > 1e-3 and worst.params == 32 and worst.residual > 0.01
    assert best.degradation <= 1e-10 and best.params == 64 and best.residual <= 1e-12
    for w_before, w_after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w_after, w_before)
    # the metric is eval_fn with only that layer on the 2-bit grid
    kernel = model.get_layer("random").kernel
    kernel.assign(fake_quantize_kernel(before[2], 2))
    np.testing.assert_allclose(worst.metric, mse(model), rtol=1e-6)
    kernel.assign(before[2])

    accuracy_like = bottleneck_report(model, 2, lambda m: -mse(m))  # higher is better
    assert [r.name for r in accuracy_like] == ["random", "on_grid"]
    np.testing.assert_allclose(accuracy_like[0].degradation, worst.degradation, rtol=1e-6)


def test_bottleneck_report_rejects_non_finite_metrics_and_still_restores() -> None:
    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    calls = []

    def flaky(m: keras.Model) -> float:
        calls.append(1)
        return 0.5 if len(calls) == 1 else float("nan")

    with pytest.raises(TfquantError, match="eval_fn returned nan"):
        bottleneck_report(model, 4, flaky)
    for w_before, w_after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w_after, w_before)


def _hand_counted_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)  # kernel 3·3·3·4 = 108, bias 4 -> 6x6x4
    x = layers.BatchNormalization(name="bn")(x)  # 4 x (γ, β, μ, var) = 16
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)  # 72 -> 4x4x8
    x = layers.Flatten()(x)  # 128
    outputs = layers.Dense(10, name="fc")(x)  # kernel 1280, bias 10
    return keras.Model(inputs, outputs)


def test_packed_size_is_exact_on_a_hand_counted_model() -> None:
    model = _hand_counted_model()
    # 3 bits, per channel: kernels ceil(n·3/8) + 4·channels, everything else 4 bytes each
    conv = -(-108 * 3 // 8) + 4 * 4  # 41 + 16
    dw = 72 * 3 // 8 + 4 * 8  # 27 + 32
    fc = 1280 * 3 // 8 + 4 * 10  # 480 + 40
    others = 4 * (4 + 16 + 10)  # conv bias, BN, fc bias
    assert conv + dw + fc + others == 756
    assert packed_size_bytes(model, 3) == 756
    assert packed_size_bytes(model, 3, per_channel=False) == 756 - 4 * (3 + 7 + 9)
    assert packed_size_bytes(model, 8) == (108 + 16) + (72 + 32) + (1280 + 40) + others
    assert float32_size_bytes(model) == 4 * (108 + 4 + 16 + 72 + 1280 + 10) == 5960


def test_packed_size_rejects_bad_bits() -> None:
    with pytest.raises(TfquantError, match="bits must be an integer"):
        packed_size_bytes(_hand_counted_model(), 0)


def test_bottleneck_summary_and_residual_text() -> None:
    from tfquant.algorithms.qgt import bottleneck_summary, residual_text

    assert residual_text(0.08333) == "0.0833" and residual_text(0.0) == "0.0000" and residual_text(2e-5) == "2.0e-05"
    before = {"layers": [{"layer": "conv", "rank": 2, "residual": 0.09, "loss_pt": -0.5},
                         {"layer": "fc", "rank": 1, "residual": 0.05, "loss_pt": -3.0}]}
    after = {"layers": [{"layer": "conv", "rank": 1, "residual": 1e-4, "loss_pt": -0.2},
                        {"layer": "fc", "rank": 2, "residual": 1e-5, "loss_pt": -0.1}]}
    assert bottleneck_summary(before, None) == (
        "Trained: the bottleneck is fc (-3.00 pt alone, R 0.0500), while the largest R is in conv (0.0900).")
    assert bottleneck_summary(before, after).endswith(
        "; after QGT, the bottleneck is conv (-0.20 pt alone, R 1.0e-04), which is also the layer with the largest R.")
