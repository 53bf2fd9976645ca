"""Fine-tuning: repeatable with a seed, logs and checkpoints, BN freeze, schedules as data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import tfquant._env  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tf_keras as keras

from tests.qat.conftest import small_recipe
from tfquant import qat
from tfquant.errors import TfquantError
from tfquant.models.train import DEFAULT_CONFIGS


def _finetuned_cnn_weights(fmnist: dict[str, Any], seed: int) -> list[np.ndarray]:
    from tfquant import models

    qat_model = qat.quantize_for_training(
        models.build("cnn"), weight_bits=4, calibration_data=fmnist["cal"]
    )
    qat.finetune(
        qat_model,
        small_recipe(),
        fmnist["train"].x,
        fmnist["train"].y,
        epochs=1,
        seed=seed,
        verbose=False,
    )
    return [w.numpy() for w in qat_model.weights]


def test_same_seed_gives_identical_weights(fmnist: dict[str, Any]) -> None:
    first = _finetuned_cnn_weights(fmnist, seed=3)
    second = _finetuned_cnn_weights(fmnist, seed=3)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # The seed matters (shuffle order, dropout), so the equality above is not vacuous.
    other = _finetuned_cnn_weights(fmnist, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_progress_tensorboard_and_checkpoints(
    cnn_qat: dict[str, Any],
    fmnist: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tfquant import models

    qat_model = qat.quantize_for_training(models.build("cnn"), calibration_data=fmnist["cal"])
    train, test = fmnist["train"], fmnist["test"]
    result = qat.finetune(
        qat_model,
        small_recipe(),
        train.x,
        train.y,
        epochs=2,
        seed=0,
        log_dir=tmp_path / "tb",
        checkpoint_dir=tmp_path / "ckpt",
        validation_data=(test.x[:128], test.y[:128]),
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "] epoch " in line]
    assert [line.split()[3] for line in lines] == ["1/2", "2/2"], lines
    assert (
        result.epochs == 2
        and result.steps == 2 * 4
        and len(result.loss) == len(result.val_accuracy) == 2
    )

    scalars: dict[str, list[float]] = {}
    for event_file in (tmp_path / "tb").rglob("events.out.tfevents.*"):
        run = event_file.parent.name
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                scalars.setdefault(f"{run}/{value.tag}", []).append(
                    float(tf.make_ndarray(value.tensor))
                )
    assert len(scalars["train/epoch_loss"]) == 2 and len(scalars["validation/epoch_accuracy"]) == 2
    np.testing.assert_allclose(scalars["train/epoch_loss"], result.loss, rtol=1e-6)
    # Cosine decay over the 8 steps; the log holds each epoch's last rate, lr(3) and lr(7).
    lr0, steps = small_recipe().learning_rate, 8
    expected = [0.5 * lr0 * (1 + np.cos(np.pi * k / steps)) for k in (3, 7)]
    np.testing.assert_allclose(scalars["train/epoch_learning_rate"], expected, rtol=1e-5)

    assert [Path(p).name for p in result.checkpoints] == ["epoch_001", "epoch_002"]
    final = [w.numpy() for w in qat_model.trainable_weights]
    qat_model.load_weights(result.checkpoints[0])
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(final, qat_model.trainable_weights))
    qat_model.load_weights(result.checkpoints[1])
    for a, w in zip(final, qat_model.trainable_weights):
        np.testing.assert_array_equal(a, w.numpy())


def _bn_stats_after(
    tiny: Callable[..., Any], data: Any, *, epochs: int, freeze: int | None
) -> np.ndarray:
    qat_model = qat.quantize_for_training(tiny("conv_bn"), calibration_data=data.x)
    schedule = qat.FinetuneSchedule(
        name="sgd",
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        batch_size=len(data.x),
        freeze_bn_after_steps=freeze,
    )
    result = qat.finetune(qat_model, schedule, data.x, data.y, epochs=epochs, seed=0, verbose=False)
    assert result.bn_frozen_at_step == freeze
    bn = qat_model.get_layer("quant_bn").layer
    return np.concatenate([bn.moving_mean.numpy(), bn.moving_variance.numpy()])


def test_batch_norm_statistics_freeze_after_n_steps(
    tiny: Callable[..., Any], tiny_data: Any
) -> None:
    """One batch per epoch: frozen after step 1, three steps leave the statistics of step 1."""
    after_one = _bn_stats_after(tiny, tiny_data, epochs=1, freeze=None)
    frozen = _bn_stats_after(tiny, tiny_data, epochs=3, freeze=1)
    free = _bn_stats_after(tiny, tiny_data, epochs=3, freeze=None)
    np.testing.assert_allclose(frozen, after_one, rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(free - after_one)) > 1e-4


class _FoldedBN(keras.layers.Layer):
    """Stands in for a BN-folded training layer: records when finetune freezes it."""

    frozen_calls = 0

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x

    def freeze_batch_norm(self) -> None:
        type(self).frozen_calls += 1


def test_bn_correction_needs_folded_layers_and_calls_the_hook(
    tiny: Callable[..., Any], tiny_data: Any
) -> None:
    schedule = qat.whitepaper_schedule(DEFAULT_CONFIGS["cnn"], freeze_bn_after_steps=2).replace(
        batch_size=32
    )
    assert schedule.bn_correction
    plain = qat.quantize_for_training(tiny("conv_bn"), calibration_data=tiny_data.x)
    with pytest.raises(
        TfquantError, match=r"asks for BN correction, but model .* has no BN-folded layers.*bn_fold"
    ):
        qat.finetune(plain, schedule, tiny_data.x, tiny_data.y, epochs=1, seed=0)

    inputs = keras.Input((8, 8, 3))
    x = _FoldedBN(name="folded")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    # tfmot rebuilds the model from its config: an unregistered custom layer is named.
    with pytest.raises(
        TfquantError, match=r"tfmot could not quantize model .*register custom layers"
    ):
        qat.quantize_for_training(model, skip_layers=["folded"])
    with keras.utils.custom_object_scope({"_FoldedBN": _FoldedBN}):
        qat_model = qat.quantize_for_training(model, skip_layers=["folded"])
    _FoldedBN.frozen_calls = 0
    result = qat.finetune(
        qat_model, schedule, tiny_data.x, tiny_data.y, epochs=2, seed=0, verbose=False
    )
    assert result.steps == 4 and result.bn_frozen_at_step == 2 and _FoldedBN.frozen_calls == 1


def test_schedules_are_defined_relative_to_the_original_training() -> None:
    cnn = DEFAULT_CONFIGS["cnn"]  # Adam, peak LR 2e-3, 8 epochs, batch 128
    nvidia = qat.nvidia_schedule(cnn)
    assert nvidia.optimizer is qat.Optimizer.ADAM and nvidia.lr_schedule is qat.LRSchedule.COSINE
    assert nvidia.learning_rate == pytest.approx(0.01 * cnn.learning_rate)
    assert nvidia.epochs_for(cnn.epochs) == 1 and nvidia.epochs_for(30) == 3
    assert nvidia.start_from_calibrated_ranges and nvidia.batch_size == cnn.batch_size
    paper = qat.whitepaper_schedule(cnn, freeze_bn_after_steps=500, bn_correction=False)
    assert paper.optimizer is qat.Optimizer.SGD and paper.momentum == 0.9
    assert paper.freeze_bn_after_steps == 500 and not paper.bn_correction
    with pytest.raises(TfquantError, match="has no schedule_fraction"):
        paper.epochs_for(8)


def test_schedule_json_round_trip_and_validation() -> None:
    schedule = qat.nvidia_schedule(DEFAULT_CONFIGS["mobilenet_v2"])
    assert qat.FinetuneSchedule.from_json(schedule.to_json()) == schedule
    data = json.loads(schedule.to_json())
    with pytest.raises(TfquantError, match=r"unknown fine-tuning schedule key\(s\) \['lr'\]"):
        qat.FinetuneSchedule.from_dict({**data, "lr": 1.0})
    with pytest.raises(TfquantError, match=r"version 2 is not supported"):
        qat.FinetuneSchedule.from_dict({**data, "version": 2})
    with pytest.raises(
        TfquantError, match=r"unknown optimizer 'rmsprop'; choose one of: adam, sgd"
    ):
        schedule.replace(optimizer="rmsprop")
    with pytest.raises(TfquantError, match=r"momentum=0.9 applies to optimizer sgd only"):
        schedule.replace(momentum=0.9)
    with pytest.raises(TfquantError, match=r"learning_rate must be a positive finite number"):
        schedule.replace(learning_rate=0.0)
    with pytest.raises(TfquantError, match=r"not valid JSON"):
        qat.FinetuneSchedule.from_json("{")


def test_nvidia_schedule_needs_calibrated_ranges(fmnist: dict[str, Any]) -> None:
    from tfquant import models

    uncalibrated = qat.quantize_for_training(models.build("cnn"))
    train = fmnist["train"]
    with pytest.raises(
        TfquantError,
        match=r"starts from calibrated ranges, but every activation range .* \[-6, 6\]; pass calibration_data=",
    ):
        qat.finetune(uncalibrated, small_recipe(), train.x, train.y, epochs=1, seed=0)
    result = qat.finetune(
        uncalibrated,
        small_recipe(start_from_calibrated_ranges=False),
        train.x[:64],
        train.y[:64],
        epochs=1,
        seed=0,
        verbose=False,
    )
    assert result.steps == 1


def test_finetune_rejects_bad_arguments(cnn_qat: dict[str, Any], fmnist: dict[str, Any]) -> None:
    model, train = cnn_qat["model"], fmnist["train"]
    with pytest.raises(TfquantError, match="schedule must be a FinetuneSchedule"):
        qat.finetune(model, {"lr": 1}, train.x, train.y, epochs=1, seed=0)
    with pytest.raises(TfquantError, match="epochs must be a positive integer, got 0"):
        qat.finetune(model, small_recipe(), train.x, train.y, epochs=0, seed=0)
    with pytest.raises(TfquantError, match="seed must be an integer"):
        qat.finetune(model, small_recipe(), train.x, train.y, epochs=1, seed=None)
    with pytest.raises(TfquantError, match="labels must be a 1-D integer array"):
        qat.finetune(model, small_recipe(), train.x, np.eye(10)[train.y], epochs=1, seed=0)
    with pytest.raises(TfquantError, match="same non-zero number of examples and labels"):
        qat.finetune(model, small_recipe(), train.x, train.y[:10], epochs=1, seed=0)
