"""Callbacks of the training loop: progress line and extras, TensorBoard scalars, BN freeze."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tensorflow as tf
import tf_keras as keras

from tfquant import training


def _fit(model: keras.Model, *, epochs: int, batch_size: int, progress: training.EpochLog,
         **kwargs: object) -> training.FitResult:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, *model.input_shape[1:])).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    return training.fit(
        model, x, y, epochs=epochs, batch_size=batch_size, seed=0,
        optimizer=keras.optimizers.SGD(0.05), loss=training.sparse_cross_entropy(),
        progress=progress, **kwargs,
    )


def _dense() -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_epoch_log_prints_one_line_per_epoch_with_extras() -> None:
    lines: list[str] = []
    calls: list[int] = []

    def extra(model: keras.Model) -> float:
        calls.append(1)
        return 0.25 * len(calls)

    progress = training.EpochLog("demo", 2, log=lines.append, detail=" (2 steps)",
                                 extras={"grid_residual": extra, "qgt_lambda": lambda m: None})
    result = _fit(_dense(), epochs=2, batch_size=8, progress=progress)
    assert len(lines) == 2 and lines[0].startswith("[demo] epoch 1/2 (2 steps) loss ")
    assert " acc " in lines[0] and " ΣR 0.2500 " in lines[0] and "λ" not in lines[0]
    assert lines[1].endswith("s") and " ΣR 0.5000 " in lines[1]
    assert result.series("grid_residual") == (0.25, 0.5)
    assert result.series("qgt_lambda") == ()
    assert progress.last("grid_residual") == 0.5


def test_no_log_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _fit(_dense(), epochs=1, batch_size=8, progress=training.EpochLog("quiet", 1, log=None))
    assert capsys.readouterr().out == ""


def test_tensorboard_scalars_match_the_history(tmp_path: Path) -> None:
    progress = training.EpochLog("tb", 2, log=None, extras={"learning_rate": training.last_learning_rate})
    rng = np.random.default_rng(2)
    val = (rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, size=8))
    result = _fit(_dense(), epochs=2, batch_size=8, progress=progress, log_dir=tmp_path,
                  validation_data=val)
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event_file in tmp_path.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                key = f"{event_file.parent.name}/{value.tag}"
                scalars.setdefault(key, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert [s for s, _ in scalars["train/epoch_loss"]] == [0, 1]
    np.testing.assert_allclose([v for _, v in scalars["train/epoch_loss"]], result.series("loss"), rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars["train/epoch_learning_rate"]], [0.05, 0.05], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars["validation/epoch_accuracy"]],
                               result.series("val_accuracy"), rtol=1e-6)
    assert "train/epoch_val_loss" not in scalars


class _Freezable(keras.layers.Layer):
    """Stands in for a BN-folded layer: records when it is frozen."""

    frozen = False

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x

    def freeze_batch_norm(self) -> None:
        self.frozen = True


def test_freeze_batch_norm_after_n_steps() -> None:
    inputs = keras.Input((4,))
    hook = _Freezable(name="hook")
    x = keras.layers.BatchNormalization(name="bn")(hook(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    plain, freezable = training.batch_norm_layers(model)
    assert [layer.name for layer in plain] == ["bn"] and freezable == [hook]
    freeze = training.FreezeBatchNorm(3)
    progress = training.EpochLog("bn", 2, log=None)
    _fit(model, epochs=2, batch_size=4, progress=progress, callbacks=[freeze])  # 8 steps
    assert freeze.frozen_at == 3 and hook.frozen and not model.get_layer("bn").trainable
