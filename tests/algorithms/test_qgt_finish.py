"""QGT's 2-bit rounding cost and its fix (issue 9, item 3): the MSE grid and the finish.

Pre-fix behaviour: trained with λ·R to an equilibrium, the residual W - Q_b(W) is small but
coherent with the task gradient (W - Q = -(nΔ²/2λ)·g), so hard rounding moves every weight
uphill and costs far more than R suggests. The fix: in the last part of training the grid
is frozen and λ grows (finish), so the residual -- and the rounding cost -- shrink toward 0,
and the final rounding uses exactly the frozen grid. Small Dense models, a few seconds each.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfquant.algorithms.qgt import QGTRegularizer
from tfquant.algorithms.qgt_train import Schedule, finetune_weights, grid_steps, hard_quantize
from tfquant.algorithms.weight_grid import mse_scale, round_to_grid, weight_scale
from tfquant.errors import TfquantError


def _task(seed: int = 0):
    """A 4-class linear task on post-ReLU inputs and a Dense model holding its solution."""
    import tf_keras as keras

    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(4096, 128)), 0).astype(np.float32)
    w_true = rng.normal(size=(128, 4)).astype(np.float32) * 0.1
    y = np.argmax(x @ w_true + 0.3 * rng.normal(size=(4096, 4)), axis=1).astype(np.int64)
    inputs = keras.Input((128,))
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(inputs))
    model.get_layer("fc").set_weights([w_true, np.zeros(4, np.float32)])
    return model, x, y


def _loss(model, x, y) -> float:
    import tensorflow as tf

    logits = model(x, training=False)
    return float(tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))


def _rounding_cost(finish_fraction: float, factor: float) -> tuple[float, dict]:
    model, x, y = _task()
    plan = Schedule.for_epochs(6, len(x), batch_size=128, learning_rate=1e-3)
    tuned, stats = finetune_weights(
        model, "qgt", 2, x, y, plan=plan, seed=0, qgt_strength=30.0, qgt_ramp_fraction=0.3,
        scale="mse", qgt_finish_fraction=finish_fraction, qgt_finish_factor=factor,
        label="test", log=lambda _: None)
    hard = hard_quantize(tuned, 2, scale="mse", grid=stats.get("grid"))
    return _loss(hard, x, y) - _loss(tuned, x, y), {"tuned": tuned, "hard": hard, "stats": stats}


def test_finish_shrinks_coherent_rounding_cost():
    before, _ = _rounding_cost(0.0, 1.0)      # QGT as before: λ held at its final value
    after, run = _rounding_cost(0.6, 1000.0)  # the fix: frozen grid, λ x1000 over the last 60%
    assert before > 0.0  # rounding the equilibrium residual moves uphill (coherent with g)
    assert after < 0.5 * before, (before, after)  # measured 0.0141 -> 0.0040 (cross-entropy)
    # the final rounding used exactly the frozen grid: every hard weight is k·Δ_c of it
    grid = np.asarray(run["stats"]["grid"]["fc"])
    hard = run["hard"].get_layer("fc").kernel.numpy()
    assert set(np.unique(np.round(hard / grid, 5))) <= {-1.0, 0.0, 1.0}
    steps = grid_steps(run["tuned"], 2, scale="mse", grid=run["stats"]["grid"])
    np.testing.assert_array_equal(steps["fc"], grid)


def test_mse_scale_beats_max_and_max_matches_old_formula():
    rng = np.random.default_rng(1)
    w = rng.standard_t(4, size=(64, 8)).astype(np.float32)  # heavy tails: max scale is poor
    mse = mse_scale(w, 2).numpy()
    mx = weight_scale(w, 2).numpy()
    np.testing.assert_allclose(mx, np.max(np.abs(w), axis=0, keepdims=True))
    err = lambda d: np.sum((w - round_to_grid(w, 2, step=d).numpy()) ** 2, axis=0)
    assert np.all(err(mse) <= err(mx) + 1e-6) and np.all(mse <= mx + 1e-7)
    assert np.sum(err(mse)) < 0.8 * np.sum(err(mx))


def test_regularizer_freezes_grid_and_grows_lambda():
    import tensorflow as tf

    reg = QGTRegularizer(2, 10.0, 0, scale="mse", finish_start=5, finish_steps=10,
                         finish_factor=100.0, grid_shape=(1, 3))
    w = tf.constant(np.random.default_rng(2).normal(size=(16, 3)).astype(np.float32))
    reg.step.assign(5.0)
    assert np.isclose(float(reg.current_strength()), 10.0)
    reg.step.assign(15.0)
    assert np.isclose(float(reg.current_strength()), 1000.0)
    assert reg.frozen_grid() is None
    reg.freeze(w)
    np.testing.assert_allclose(reg.frozen_grid(), mse_scale(w, 2).numpy())
    np.testing.assert_allclose(reg.kernel_scale(w * 0.5).numpy(), mse_scale(w, 2).numpy())  # held
    with pytest.raises(TfquantError, match="grid_shape"):
        QGTRegularizer(2, 1.0, finish_start=3)
    with pytest.raises(TfquantError, match="scale"):
        QGTRegularizer(2, 1.0, scale="l1")


def test_tflite_scales_are_the_grid():
    """The int8 .tflite of a kernel rounded to the MSE 2-bit grid stores exactly that grid."""
    import tf_keras as keras

    from tfquant.convert import convert_and_save
    from tfquant.experiments.qgt.measure import grid_scale_error
    from tfquant.qtypes import Mode
    from tfquant.recipes import Recipe

    rng = np.random.default_rng(3)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, out)
    steps = grid_steps(model, 2, scale="mse")
    hard = hard_quantize(model, 2, grid=steps)
    x = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    recipe = Recipe.for_mode(Mode.INT8, dataset="random", num_calibration_examples=32, calibration_seed=0)
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        tflite = convert_and_save(hard, recipe, os.path.join(d, "m.tflite"), calibration_data=x)
    assert grid_scale_error(tflite, hard, steps, 2) < 1e-6
    # ... and would notice a different grid (the max grid of the same float model)
    assert grid_scale_error(tflite, hard, grid_steps(model, 2, scale="max"), 2) > 1e-3
