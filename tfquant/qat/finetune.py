"""Fine-tuning a QAT model as a :class:`~tfquant.qat.recipes.FinetuneRecipe` says.

:func:`finetune` is a Keras ``fit`` over ``(x_train, y_train)`` with softmax cross-entropy on
the logits (or on the probabilities of a model that ends in a softmax), the recipe's optimizer
and learning-rate schedule, and:

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
* batch-norm freeze after ``recipe.freeze_bn_after_steps`` steps: plain
  BatchNormalization layers switch to their moving statistics (``trainable = False``, which
  in tf-keras also stops training gamma / beta), and every layer implementing
  :class:`BatchNormFreezable` (the BN-folded layers of ``tfquant.algorithms.bn_fold``) gets
  ``freeze_batch_norm()``. ``recipe.bn_correction`` needs such a layer. The freeze stays
  after the run.

After the last step every weight quantizer's range is re-read from the final kernels (what
tfmot's ``LastValueQuantizer`` would store on one more step): during training the range is
the one of the kernel *before* the optimizer's update, and the TFLite converter, when it folds
a BatchNormalization into the weights, re-derives the scale from the kernel itself -- a stale
range would make the .tflite's weight grid differ from the QAT model's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config

from tfquant.qat import outputs, ranges
from tfquant.qat.recipes import FinetuneRecipe, LRSchedule, Optimizer
from tfquant.errors import TfquantError


@runtime_checkable
class BatchNormFreezable(Protocol):
    """The hook a BN-folded training layer implements to be frozen by :func:`finetune`.

    ``freeze_batch_norm()`` is called once, after ``recipe.freeze_bn_after_steps`` steps: the
    layer should stop using batch statistics (whitepaper Sec. 3.2.2: drop the σ_B/σ
    correction, freeze the moving statistics, and fold them into the bias).
    """

    def freeze_batch_norm(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tune did.

    Attributes:
      recipe: The recipe applied.
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

    recipe: FinetuneRecipe
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


def _batch_norm_layers(
    model: keras.Model,
) -> tuple[list[keras.layers.Layer], list[BatchNormFreezable]]:
    """Plain BN layers and BN-freezable layers, looking inside tfmot wrappers."""
    plain, freezable = [], []
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        for candidate in (layer, inner):
            if candidate is None:
                continue
            if isinstance(candidate, BatchNormFreezable):
                freezable.append(candidate)
            elif isinstance(candidate, keras.layers.BatchNormalization):
                plain.append(candidate)
    return plain, freezable


class _FreezeBatchNorm(keras.callbacks.Callback):
    """Freezes BN statistics after ``step`` optimizer steps (re-tracing the train function)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        self.frozen_at: int | None = None
        self._seen = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._seen += 1
        if self.frozen_at is not None or self._seen < self.step:
            return
        plain, freezable = _batch_norm_layers(self.model)
        for layer in plain:
            layer.trainable = False  # tf-keras: a non-trainable BN runs on moving statistics
        for layer in freezable:
            layer.freeze_batch_norm()
        # fit() calls self.model.train_function every step: the rebuilt one takes effect next.
        self.model.train_function = self.model.make_train_function(force=True)
        self.frozen_at = self._seen


def _last_learning_rate(model: keras.Model) -> float:
    """The learning rate of the last step taken (tf-keras evaluates the schedule per step)."""
    optimizer = model.optimizer
    lr = optimizer.learning_rate  # the current value, for a schedule too
    if callable(lr):  # a legacy optimizer hands back the schedule itself
        return float(lr(tf.maximum(optimizer.iterations - 1, 0)))
    return float(lr)


class _EpochLog(keras.callbacks.Callback):
    """Prints one flushed line per epoch and records the metrics."""

    def __init__(self, name: str, epochs: int, verbose: bool) -> None:
        super().__init__()
        self._name, self._epochs, self._verbose = name, epochs, verbose
        self._start = 0.0
        self.loss: list[float] = []
        self.accuracy: list[float] = []
        self.val_accuracy: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.loss.append(float(logs.get("loss", float("nan"))))
        self.accuracy.append(float(logs.get("accuracy", float("nan"))))
        if "val_accuracy" in logs:
            self.val_accuracy.append(float(logs["val_accuracy"]))
        if self._verbose:
            val = f" val_acc {self.val_accuracy[-1]:.4f}" if "val_accuracy" in logs else ""
            print(
                f"[qat {self._name}] epoch {epoch + 1}/{self._epochs} loss {self.loss[-1]:.4f} "
                f"acc {self.accuracy[-1]:.4f}{val} lr {_last_learning_rate(self.model):.3g} "
                f"{time.perf_counter() - self._start:.1f}s",
                flush=True,
            )


class _ScalarLog(keras.callbacks.Callback):
    """Per-epoch TensorBoard scalars without the ``tensorboard`` package.

    ``tf.summary.scalar`` lives in that package; ``tf.summary.write`` with the scalars
    plugin's metadata writes the same event records from TensorFlow alone.
    """

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self._writers = {
            run: tf.summary.create_file_writer(str(log_dir / run))
            for run in ("train", "validation")
        }
        self._metadata = summary_pb2.SummaryMetadata()
        self._metadata.plugin_data.plugin_name = "scalars"
        self._metadata.data_class = summary_pb2.DATA_CLASS_SCALAR

    def _write(self, run: str, values: dict[str, float], step: int) -> None:
        with self._writers[run].as_default():
            for name, value in values.items():
                tf.summary.write(
                    f"epoch_{name}",
                    tf.constant(value, tf.float32),
                    step=step,
                    metadata=self._metadata,
                )
        self._writers[run].flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        train = {k: float(v) for k, v in logs.items() if not k.startswith("val_")}
        train["learning_rate"] = _last_learning_rate(self.model)
        self._write("train", train, epoch)
        val = {k[len("val_") :]: float(v) for k, v in logs.items() if k.startswith("val_")}
        if val:
            self._write("validation", val, epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()


@contextlib.contextmanager
def _deterministic_ops() -> Iterator[None]:
    """TF's deterministic op implementations for the duration (restored afterwards)."""
    was = tf_config.is_op_determinism_enabled()
    tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            tf_config.disable_op_determinism()


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


def _optimizer(recipe: FinetuneRecipe, total_steps: int) -> keras.optimizers.Optimizer:
    lr: Any = recipe.learning_rate
    if recipe.lr_schedule is LRSchedule.COSINE:
        lr = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, max(1, total_steps))
    if recipe.optimizer is Optimizer.SGD:
        return keras.optimizers.SGD(learning_rate=lr, momentum=recipe.momentum)
    return keras.optimizers.Adam(learning_rate=lr)


def finetune(
    qat_model: keras.Model,
    recipe: FinetuneRecipe,
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
) -> FinetuneResult:
    """Fine-tunes a QAT classifier (logits or softmax out, integer labels) in place.

    Loss: sparse categorical cross-entropy, on logits or on probabilities as the model's
    output is (``from_logits``; None detects it with
    :func:`~tfquant.qat.outputs.outputs_probabilities`). Steps:
    ``epochs · ceil(N / recipe.batch_size)``; a cosine schedule decays from
    ``recipe.learning_rate`` to 0 over all of them.

    Args:
      qat_model: A model from :func:`~tfquant.qat.quantize_for_training`; it is
        compiled and trained in place.
      recipe: Optimizer, learning rate, schedule, batch size, BN freeze.
      x_train: Float inputs ``(N, ...)``.
      y_train: Integer labels ``(N,)``.
      epochs: Passes over the data (see :meth:`FinetuneRecipe.epochs_for`).
      seed: Seed of everything random in the run (``keras.utils.set_random_seed``): the
        shuffle order, dropout.
      log_dir: TensorBoard log directory (created), or None.
      checkpoint_dir: Directory for one checkpoint per epoch (created), or None.
      validation_data: Optional ``(x, y)`` evaluated after each epoch.
      verbose: Print one line per epoch.
      from_logits: The model outputs logits (True) or probabilities (False); None: detect.

    Returns:
      A :class:`FinetuneResult`.

    Raises:
      TfquantError: bad recipe, epochs, seed or data; ``recipe.bn_correction`` without
        BN-folded layers in the model; ``recipe.start_from_calibrated_ranges`` with a model
        whose activation ranges were never calibrated.
    """
    if not isinstance(recipe, FinetuneRecipe):
        raise TfquantError(
            f"recipe must be a FinetuneRecipe, got {type(recipe).__name__}; use "
            "nvidia_recipe(...) or whitepaper_recipe(...)"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TfquantError(
            f"epochs must be a positive integer, got {epochs!r}; see recipe.epochs_for(...)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TfquantError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0")
    x, y = _check_data(x_train, y_train, "training data")
    val = None
    if validation_data is not None:
        val = _check_data(*validation_data, "validation_data")
    if recipe.start_from_calibrated_ranges and ranges.has_default_activation_ranges(qat_model):
        raise TfquantError(
            f"recipe {recipe.name!r} starts from calibrated ranges, but every activation range "
            f"of model {qat_model.name!r} is still tfmot's [-6, 6]; pass calibration_data= or "
            "initial_ranges= to quantize_for_training, or use "
            "recipe.replace(start_from_calibrated_ranges=False)"
        )
    plain_bn, freezable = _batch_norm_layers(qat_model)
    if recipe.bn_correction and not freezable:
        raise TfquantError(
            f"recipe {recipe.name!r} asks for BN correction, but model {qat_model.name!r} has "
            "no BN-folded layers; build the QAT model with tfquant.algorithms.bn_fold layers, "
            "or use recipe.replace(bn_correction=False)"
        )

    if from_logits is None:
        from_logits = not outputs.outputs_probabilities(qat_model, x)
    steps_per_epoch = -(-len(x) // recipe.batch_size)
    total_steps = epochs * steps_per_epoch
    keras.utils.set_random_seed(seed)
    callbacks: list[keras.callbacks.Callback] = []
    log = _EpochLog(recipe.name, epochs, verbose)
    callbacks.append(log)
    freeze = None
    if recipe.freeze_bn_after_steps is not None and (plain_bn or freezable):
        freeze = _FreezeBatchNorm(recipe.freeze_bn_after_steps)
        callbacks.append(freeze)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(_ScalarLog(Path(log_dir)))
    checkpoint_pattern = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint_pattern = str(Path(checkpoint_dir) / "epoch_{epoch:03d}")
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                checkpoint_pattern, save_weights_only=True, save_format="tf"
            )
        )
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(recipe.batch_size)
    )
    if verbose:
        print(
            f"[qat {recipe.name}] {len(x)} examples, {epochs} epoch(s) x {steps_per_epoch} "
            f"steps, {recipe.optimizer} lr {recipe.learning_rate:.3g} ({recipe.lr_schedule}), "
            f"seed {seed}",
            flush=True,
        )
    with _deterministic_ops():
        qat_model.compile(
            optimizer=_optimizer(recipe, total_steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        qat_model.fit(
            dataset,
            epochs=epochs,
            validation_data=val,
            callbacks=callbacks,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        ranges.sync_weight_ranges(qat_model)
    checkpoints = (
        tuple(checkpoint_pattern.format(epoch=e) for e in range(1, epochs + 1))
        if checkpoint_pattern
        else ()
    )
    return FinetuneResult(
        recipe=recipe,
        epochs=epochs,
        steps=total_steps,
        seed=seed,
        loss=tuple(log.loss),
        accuracy=tuple(log.accuracy),
        val_accuracy=tuple(log.val_accuracy),
        seconds=round(seconds, 2),
        bn_frozen_at_step=freeze.frozen_at if freeze is not None else None,
        checkpoints=checkpoints,
        from_logits=bool(from_logits),
    )
