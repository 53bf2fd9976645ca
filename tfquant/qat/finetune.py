"""Fine-tuning a QAT model as a :class:`~tfquant.qat.schedules.FinetuneSchedule` says.

:func:`finetune` runs the one training loop, :func:`tfquant.training.fit` (Keras ``fit``),
over ``(x_train, y_train)`` with softmax cross-entropy on the logits (or on the probabilities
of a model that ends in a softmax), the schedule's optimizer and learning-rate decay, and
(callbacks from :mod:`tfquant.training`):

* progress: one flushed line per epoch (loss, accuracy, the last step's learning rate,
  seconds);
* TensorBoard logs in ``log_dir`` (per-epoch scalars as Keras's TensorBoard callback names
  them: ``train/`` and ``validation/`` runs with ``epoch_loss``, ``epoch_accuracy``, and
  ``epoch_learning_rate``) and a checkpoint per epoch in ``checkpoint_dir`` (TensorFlow
  checkpoint format, ``epoch_003`` ...: the state at that epoch's end; restore with
  ``qat_model.load_weights(path)`` and call :func:`~tfquant.qat.sync_weight_ranges`
  before exporting, see below) when given. The scalars are written with
  ``tf.summary.write`` and the scalars plugin's metadata, because Keras's callback needs the
  ``tensorboard`` package, which is not a dependency (reading the logs does);
* repeatability: ``keras.utils.set_random_seed(seed)`` (Python, NumPy, TF), a shuffle seeded
  with ``seed``, and TensorFlow's deterministic ops switched on for the run (and restored
  after), so two runs with the same seed give the same weights;
* batch-norm freeze after ``schedule.freeze_bn_after_steps`` steps: plain
  BatchNormalization layers switch to their moving statistics (``trainable = False``, which
  in tf-keras also stops training gamma / beta), and every layer implementing
  :class:`~tfquant.training.BatchNormFreezable` (the BN-folded layers of ``tfquant.algorithms.bn_fold``) gets
  ``freeze_batch_norm()``. ``schedule.bn_correction`` needs such a layer. The freeze stays
  after the run.

After the last step every weight quantizer's range is re-read from the final kernels (what
tfmot's ``LastValueQuantizer`` would store on one more step): during training the range is
the one of the kernel *before* the optimizer's update, and the TFLite converter, when it folds
a BatchNormalization into the weights, re-derives the scale from the kernel itself -- a stale
range would make the .tflite's weight grid differ from the QAT model's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant import progress as _progress
from tfquant import training
from tfquant.errors import TfquantError
from tfquant.qat import outputs, ranges
from tfquant.qat.schedules import FinetuneSchedule, LRSchedule, Optimizer
from tfquant.training import BatchNormFreezable  # noqa: F401  (re-exported by tfquant.qat)


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune did.

    Attributes:
      recipe: The fine-tuning schedule applied (field name kept: records call it ``recipe``).
      epochs: Epochs run.
      steps: Optimizer steps run.
      seed: The seed.
      loss: Training loss after each epoch.
      accuracy: Training top-1 accuracy after each epoch.
      val_accuracy: Validation accuracy after each epoch (empty without validation data).
      seconds: Wall time of the fit.
      bn_frozen_at_step: Step after which BN statistics froze (None: never).
      checkpoints: Checkpoint paths written (one per epoch).
      from_logits: The loss took the output as logits (False: as probabilities).
    """

    recipe: FinetuneSchedule
    epochs: int
    steps: int
    seed: int
    loss: tuple[float, ...]
    accuracy: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    seconds: float
    bn_frozen_at_step: int | None
    checkpoints: tuple[str, ...]
    from_logits: bool = True


def _check_data(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(x) != len(y):
        raise TfquantError(
            f"{what}: need the same non-zero number of examples and labels, got {len(x)} "
            f"and {len(y)}; pass matching x and y"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TfquantError(
            f"{what}: labels must be a 1-D integer array, got dtype {y.dtype} shape {y.shape}; "
            "pass class indices (y.argmax(axis=1) for one-hot)"
        )
    if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
        raise TfquantError(
            f"{what}: inputs must be finite floats, got dtype {x.dtype}; clean the data"
        )
    return x.astype(np.float32, copy=False), y


def _optimizer(schedule: FinetuneSchedule, total_steps: int) -> keras.optimizers.Optimizer:
    lr: Any = schedule.learning_rate
    if schedule.lr_schedule is LRSchedule.COSINE:
        lr = keras.optimizers.schedules.CosineDecay(schedule.learning_rate, max(1, total_steps))
    if schedule.optimizer is Optimizer.SGD:
        return keras.optimizers.SGD(learning_rate=lr, momentum=schedule.momentum)
    return keras.optimizers.Adam(learning_rate=lr)


def finetune(
    qat_model: keras.Model,
    schedule: FinetuneSchedule,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    seed: int,
    log_dir: "str | os.PathLike[str] | None" = None,
    checkpoint_dir: "str | os.PathLike[str] | None" = None,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    verbose: bool = True,
    from_logits: bool | None = None,
    callbacks: "tuple[keras.callbacks.Callback, ...] | list[keras.callbacks.Callback]" = (),
) -> FinetuneResult:
    """Fine-tunes a QAT classifier (logits or softmax out, integer labels) in place.

    Loss: sparse categorical cross-entropy, on logits or on probabilities as the model's
    output is (``from_logits``; None detects it with
    :func:`~tfquant.qat.outputs.outputs_probabilities`). Steps:
    ``epochs · ceil(N / schedule.batch_size)``; a cosine schedule decays from
    ``schedule.learning_rate`` to 0 over all of them.

    Args:
      qat_model: A model from :func:`~tfquant.qat.quantize_for_training`; it is
        compiled and trained in place.
      schedule: Optimizer, learning rate and its decay, batch size, BN freeze.
      x_train: Float inputs ``(N, ...)``.
      y_train: Integer labels ``(N,)``.
      epochs: Passes over the data (see :meth:`FinetuneSchedule.epochs_for`).
      seed: Seed of everything random in the run (``keras.utils.set_random_seed``): the
        shuffle order, dropout.
      log_dir: TensorBoard log directory (created), or None.
      checkpoint_dir: Directory for one checkpoint per epoch (created), or None.
      validation_data: Optional ``(x, y)`` evaluated after each epoch.
      verbose: Print one line per epoch.
      from_logits: The model outputs logits (True) or probabilities (False); None: detect.
      callbacks: More Keras callbacks for the run (e.g. the QBitOpt re-allocation).

    Returns:
      A :class:`FinetuneResult`.

    Raises:
      TfquantError: bad schedule, epochs, seed or data; ``schedule.bn_correction`` without
        BN-folded layers in the model; ``schedule.start_from_calibrated_ranges`` with a model
        whose activation ranges were never calibrated.
    """
    if not isinstance(schedule, FinetuneSchedule):
        raise TfquantError(
            f"schedule must be a FinetuneSchedule, got {type(schedule).__name__}; use "
            "nvidia_schedule(...) or whitepaper_schedule(...)"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TfquantError(
            f"epochs must be a positive integer, got {epochs!r}; see schedule.epochs_for(...)"
        )
    training.check_seed(seed)
    x, y = _check_data(x_train, y_train, "training data")
    val = None
    if validation_data is not None:
        val = _check_data(*validation_data, "validation_data")
    if schedule.start_from_calibrated_ranges and ranges.has_default_activation_ranges(qat_model):
        raise TfquantError(
            f"schedule {schedule.name!r} starts from calibrated ranges, but every activation range "
            f"of model {qat_model.name!r} is still tfmot's [-6, 6]; pass calibration_data= or "
            "initial_ranges= to quantize_for_training, or use "
            "schedule.replace(start_from_calibrated_ranges=False)"
        )
    plain_bn, freezable = training.batch_norm_layers(qat_model)
    if schedule.bn_correction and not freezable:
        raise TfquantError(
            f"schedule {schedule.name!r} asks for BN correction, but model {qat_model.name!r} has "
            "no BN-folded layers; build the QAT model with tfquant.algorithms.bn_fold layers, "
            "or use schedule.replace(bn_correction=False)"
        )

    if from_logits is None:
        from_logits = not outputs.outputs_probabilities(qat_model, x)
    steps_per_epoch = -(-len(x) // schedule.batch_size)
    total_steps = epochs * steps_per_epoch
    freeze = None
    if schedule.freeze_bn_after_steps is not None and (plain_bn or freezable):
        freeze = training.FreezeBatchNorm(schedule.freeze_bn_after_steps)
    if verbose:
        _progress.write(
            f"[qat {schedule.name}] {len(x)} examples, {epochs} epoch(s) x {steps_per_epoch} "
            f"steps, {schedule.optimizer} lr {schedule.learning_rate:.3g} ({schedule.lr_schedule}), "
            f"seed {seed}"
        )
    progress = training.EpochLog(
        f"qat {schedule.name}", epochs, log=_progress.write if verbose else None,
        extras={"learning_rate": training.last_learning_rate},
    )
    result = training.fit(
        qat_model, x, y,
        epochs=epochs, batch_size=schedule.batch_size, seed=seed, deterministic=True,
        optimizer=_optimizer(schedule, total_steps),
        loss=training.sparse_cross_entropy(from_logits=from_logits),
        progress=progress, callbacks=([freeze] if freeze is not None else []) + list(callbacks),
        validation_data=val, log_dir=log_dir,
        checkpoints=(os.path.join(checkpoint_dir, "epoch_{epoch:03d}")
                     if checkpoint_dir is not None else None),
    )
    ranges.sync_weight_ranges(qat_model)
    return FinetuneResult(
        recipe=schedule,
        epochs=epochs,
        steps=total_steps,
        seed=seed,
        loss=result.series("loss"),
        accuracy=result.series("accuracy"),
        val_accuracy=result.series("val_accuracy"),
        seconds=round(result.seconds, 2),
        bn_frozen_at_step=freeze.frozen_at if freeze is not None else None,
        checkpoints=result.checkpoints,
        from_logits=bool(from_logits),
    )
