"""The one training loop: zoo training, the QAT fine-tune and the QGT / plain-QAT fine-tunes.

:func:`fit` is Keras ``fit`` over ``(x, y)`` shuffled with ``seed`` (reshuffled every epoch,
``tf.data`` ``shuffle(N, seed)``), batched, optionally augmented per batch, and prefetched;
``epochs`` passes of ``ceil(N / batch_size)`` steps, or of ``steps_per_epoch`` steps over the
repeated data. Around it, in one place: seeding (:func:`~tfquant.training.seed_everything`),
TensorFlow's deterministic ops, progress lines and history (:class:`EpochLog`), TensorBoard
scalars (:class:`ScalarLog`), a checkpoint per epoch (:func:`checkpoint`) and any callbacks
the caller adds (BN freeze, QGT's λ ramp). A model with its own ``train_step`` (QGT's
straight-through weight fake-quant trainer) trains through the same loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Callable, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.training.callbacks import EpochLog, ScalarLog, checkpoint
from tfquant.training.seeding import deterministic_ops, seed_everything

Augment = Callable[[tf.Tensor, tf.Tensor], "tuple[tf.Tensor, tf.Tensor]"]
"""A per-batch ``(images, labels) -> (images, labels)`` map."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did.

    Attributes:
        epochs: Epochs run.
        steps: Optimizer steps run.
        seconds: Wall time of Keras ``fit`` (not rounded).
        history: Per epoch, the logs (loss, metrics, validation, extras) and ``seconds``.
        checkpoints: Checkpoint paths written, one per epoch (empty without checkpoints).
    """

    epochs: int
    steps: int
    seconds: float
    history: tuple[dict[str, float], ...]
    checkpoints: tuple[str, ...] = ()

    def series(self, key: str) -> tuple[float, ...]:
        """The value of ``key`` after each epoch that logged it."""
        return tuple(h[key] for h in self.history if key in h)


def batches(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    repeat: bool = False,
    augment: Augment | None = None,
) -> tf.data.Dataset:
    """``(x, y)`` shuffled with ``seed`` (a new order every pass), batched, augmented, prefetched.

    With ``repeat`` the shuffled passes follow each other without a boundary (a batch can
    span two passes), for a fixed number of steps per epoch.
    """
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True
    )
    if repeat:
        data = data.repeat()
    data = data.batch(batch_size)
    if augment is not None:
        data = data.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    optimizer: keras.optimizers.Optimizer,
    loss: keras.losses.Loss,
    progress: EpochLog,
    metrics: Sequence[str] = ("accuracy",),
    steps_per_epoch: int | None = None,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    validation_batch_size: int | None = None,
    augment: Augment | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    log_dir: str | os.PathLike[str] | None = None,
    checkpoints: str | os.PathLike[str] | None = None,
    reseed: bool = True,
    deterministic: bool = False,
) -> FitResult:
    """Compiles ``model`` and trains it in place; returns a :class:`FitResult`.

    Args:
        model: A Keras model (its own ``train_step`` is used if it has one).
        x: Inputs ``(N, ...)``.
        y: Labels ``(N,)``.
        epochs: Passes (epochs as Keras counts them).
        batch_size: Examples per step.
        seed: The shuffle seed; with ``reseed`` also :func:`seed_everything` first.
        optimizer: The optimizer (with its learning-rate schedule).
        loss: The loss.
        progress: The :class:`EpochLog` (line per epoch, history); it runs after
            ``callbacks`` and before the TensorBoard and checkpoint callbacks, so its
            extras are logged to TensorBoard.
        metrics: Compiled metrics.
        steps_per_epoch: Steps per epoch over the repeated data; None = ``ceil(N /
            batch_size)`` over one pass.
        validation_data: ``(x, y)`` evaluated after each epoch, or None.
        validation_batch_size: Batch size of the validation pass (None: Keras's 32).
        augment: Per-batch augmentation, or None.
        callbacks: Callbacks run first, in order (BN freeze, QGT's λ ramp, ...).
        log_dir: TensorBoard scalars there (:class:`ScalarLog`), or None.
        checkpoints: Weights after every epoch to this pattern (``{epoch:03d}`` = epoch
            from 1; see :func:`checkpoint`), or None.
        reseed: Call :func:`seed_everything` (``seed``) first. False when the caller has
            seeded earlier on purpose (before building or cloning the model, so the
            initial weights and dropout follow the seed as they always did).
        deterministic: TensorFlow's deterministic ops for the run (restored afterwards).
    """
    if reseed:
        seed_everything(seed)
    data = batches(x, y, batch_size=batch_size, seed=seed, repeat=steps_per_epoch is not None,
                   augment=augment)
    steps = steps_per_epoch if steps_per_epoch is not None else -(-len(x) // batch_size)
    every: list[keras.callbacks.Callback] = [*callbacks, progress]
    if log_dir is not None:
        every.append(ScalarLog(log_dir))
    if checkpoints is not None:
        every.append(checkpoint(checkpoints))
    with deterministic_ops() if deterministic else contextlib.nullcontext():
        model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
        start = time.perf_counter()
        model.fit(
            data,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation_data,
            validation_batch_size=validation_batch_size,
            callbacks=every,
            verbose=0,
        )
        seconds = time.perf_counter() - start
    written = (
        tuple(str(checkpoints).format(epoch=e) for e in range(1, epochs + 1)) if checkpoints else ()
    )
    return FitResult(epochs=epochs, steps=epochs * steps, seconds=seconds,
                     history=tuple(progress.history), checkpoints=written)


def cosine_adam(learning_rate: float, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam with ``CosineDecay(learning_rate, total_steps)``: from the peak to 0 (Loshchilov &
    Hutter 2017, SGDR, without restarts)."""
    return keras.optimizers.Adam(
        learning_rate=keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
    )


def sparse_cross_entropy(*, from_logits: bool = True) -> keras.losses.Loss:
    """Softmax cross-entropy with integer labels, on logits or on probabilities."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
