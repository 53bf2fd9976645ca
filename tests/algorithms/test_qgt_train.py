"""Fine-tuning toward the b-bit grid: straight-through weight QAT, QGT, schedule, hard quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant.algorithms.qgt import layer_residuals
from tfquant.algorithms.qgt_train import (
    Schedule,
    WeightFakeQuantTrainer,
    finetune_weights,
    hard_quantize,
)
from tfquant.algorithms.weight_grid import round_to_grid
from tfquant.errors import TfquantError


def test_plain_qat_steps_with_the_gradient_at_the_quantized_weights() -> None:
    """SGD(lr=1) step: W' = W - dL/dW evaluated at Q_b(W) (straight-through), W float again."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="dense")(inputs)
    trainer = WeightFakeQuantTrainer(2, inputs=inputs, outputs=outputs)
    trainer.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    y = np.arange(8) % 3
    kernel, bias = (v.numpy() for v in trainer.get_layer("dense").weights)
    q = round_to_grid(kernel, 2).numpy()
    assert not np.allclose(q, kernel)
    with tf.GradientTape() as tape:
        w = tf.constant(q)
        b = tf.constant(bias)
        tape.watch([w, b])
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, x @ w + b, from_logits=True))
    grad_w, grad_b = tape.gradient(loss, [w, b])
    trainer.train_on_batch(x, y)
    new_kernel, new_bias = (v.numpy() for v in trainer.get_layer("dense").weights)
    np.testing.assert_allclose(new_kernel, kernel - grad_w.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_bias, bias - grad_b.numpy(), rtol=1e-5, atol=1e-6)


def test_plain_qat_needs_a_kernel() -> None:
    inputs = keras.Input((4,))
    with pytest.raises(TfquantError, match="no Conv/Dense kernel"):
        WeightFakeQuantTrainer(4, inputs=inputs, outputs=keras.layers.ReLU()(inputs))


def test_schedule_rounds_steps_and_splits_them_into_passes() -> None:
    plan = Schedule.for_epochs(0.5, 55_000, batch_size=128, learning_rate=1e-3)
    assert (plan.passes, plan.steps_per_pass, plan.steps) == (1, 215, 215) and plan.epochs == 0.5
    plan = Schedule.for_epochs(2.5, 1280, batch_size=128, learning_rate=1e-3)
    assert (plan.passes, plan.steps_per_pass) == (3, round(2.5 * 10 / 3))
    assert Schedule.for_epochs(0.01, 10, batch_size=128, learning_rate=1e-3).steps == 1


def _small() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    return model, x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)


@pytest.mark.parametrize("method", ["qat", "qgt"])
def test_finetune_weights_is_repeatable_and_reports_its_run(method: str, tmp_path: Path) -> None:
    model, x, y = _small()
    plan = Schedule.for_epochs(2, len(x), batch_size=16, learning_rate=0.01)
    lines: list[str] = []
    runs = [
        finetune_weights(model, method, 2, x, y, plan=plan, seed=3, qgt_strength=1000.0,
                         label=f"t {method}", log=lines.append,
                         tensorboard_dir=tmp_path / "tb", checkpoint_dir=tmp_path / "ckpt")
        for _ in range(2)
    ]
    (tuned, stats), (again, _) = runs
    for a, b in zip(tuned.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(tuned.get_weights(), model.get_weights()))
    assert not isinstance(tuned, WeightFakeQuantTrainer) and not tuned.losses  # plain clone
    assert stats["steps"] == plan.steps == 8 and len(stats["epoch_logs"]) == 2
    assert stats["train_loss"] == stats["epoch_logs"][-1]["loss"]
    residual = sum(layer_residuals(tuned, 2).values())
    assert stats["epoch_logs"][-1]["grid_residual"] == pytest.approx(residual, rel=1e-6)
    assert ("qgt_lambda" in stats["epoch_logs"][-1]) == (method == "qgt")
    if method == "qgt":
        assert stats["qgt_strength"] == 1000.0 and stats["qgt_ramp_steps"] == 8
        assert stats["epoch_logs"][-1]["qgt_lambda"] == pytest.approx(1000.0 * 7 / 8)
    assert len(lines) == 4 and lines[0].startswith(f"[t {method}] epoch 1/2 (4 steps) loss ")
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.h5")) == ["epoch001.h5", "epoch002.h5"]
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_finetune_weights_rejects_bad_methods() -> None:
    model, x, y = _small()
    plan = Schedule.for_epochs(1, len(x), batch_size=16, learning_rate=0.01)
    with pytest.raises(TfquantError, match="method must be 'qat' or 'qgt'"):
        finetune_weights(model, "ptq", 2, x, y, plan=plan, seed=0, label="x")  # type: ignore[arg-type]
    with pytest.raises(TfquantError, match="QGT needs qgt_strength"):
        finetune_weights(model, "qgt", 2, x, y, plan=plan, seed=0, label="x")


def test_hard_quantize_puts_every_kernel_on_its_grid_and_leaves_the_model() -> None:
    model, _, _ = _small()
    before = model.get_weights()
    hard = hard_quantize(model, 3)
    assert all(v == 0.0 for v in layer_residuals(hard, 3).values())
    assert any(v > 0.0 for v in layer_residuals(model, 3).values())
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(hard.get_layer("fc").bias.numpy(), model.get_layer("fc").bias.numpy())
