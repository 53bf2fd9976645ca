"""Fine-tuning toward a b-bit weight grid: plain weight QAT (straight-through) and QGT.

Two ways to fine-tune a (BN-folded) float model so that its kernels survive b-bit
quantization, both through the one training loop (:func:`tfquant.training.fit`) with the
same optimizer, schedule and data order:

* plain QAT of the weights (:class:`WeightFakeQuantTrainer`): every step runs the forward
  pass and the gradient at Q_b(W) and applies that gradient to the float W -- the
  straight-through estimator W + stop_gradient(Q_b(W) - W) (Krishnamoorthi 2018, arXiv
  1806.08342, Sec. 2.4);
* QGT (:func:`tfquant.algorithms.qgt.apply_qgt`): the float W with the grid regulariser
  λ(t) Σ_l mean((W_l - Q_b(W_l))²)/Δ_l², λ ramped by :class:`~tfquant.algorithms.qgt.QGTRamp`
  (our reconstruction of arXiv 2103.06231).

:func:`finetune_weights` runs either; :func:`hard_quantize` rounds the result to its grid.
Q_b is :func:`tfquant.algorithms.weight_grid.round_to_grid`: symmetric, narrow range, per
output channel, Δ_c = max|W_c| / (2^(b-1) - 1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Literal, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant import progress as _progress
from tfquant import training
from tfquant.algorithms.qgt import QGTRamp, apply_qgt, layer_residuals, qgt_regularizers, regularized_kernels
from tfquant.algorithms.weight_grid import (
    SymmetricWeightQuantizer,
    check_bits,
    check_scale,
    kernel_of,
    round_to_grid,
    weight_scale,
)
from tfquant.errors import TfquantError

Method = Literal["qat", "qgt"]
"""``qat``: plain weight QAT (straight-through); ``qgt``: the QGT regulariser."""


class WeightFakeQuantTrainer(keras.Model):
    """Plain QAT of the weights: trains float kernels through their b-bit fake quantization.

    Build it like a functional model, ``WeightFakeQuantTrainer(bits, inputs=m.inputs,
    outputs=m.outputs)`` (it shares ``m``'s layers). Each training step replaces every
    Conv / DepthwiseConv2D / Dense kernel W by Q_b(W)
    (:class:`~tfquant.algorithms.SymmetricWeightQuantizer`: symmetric, narrow range, per
    output channel, Δ_c = max|W_c| / (2^(b-1) - 1)), computes the loss and its gradient at
    Q_b(W), puts W back and applies that gradient to W. That is the straight-through
    estimator W + stop_gradient(Q_b(W) - W) (Krishnamoorthi 2018, arXiv 1806.08342, Sec.
    2.4) with nothing clipped, since Δ_c covers max|W_c|. Activations stay float, and so
    does the model between steps: evaluate it with a hard quantization of the weights
    (:func:`hard_quantize`, or :func:`tfquant.simulation.evaluate`). Not serialisable (a
    training-time wrapper).

    Args:
      bits: Weight bit width in [2, 16].
      per_channel: Per-output-channel scales (TFLite's) or one per kernel.
      scale: Δ_c from ``max`` |W_c| or ``mse`` (:func:`~tfquant.algorithms.weight_grid.mse_scale`).

    Raises:
      TfquantError: If the model has no Conv / Dense kernel.
    """

    def __init__(self, bits: int, *args: Any, per_channel: bool = True, scale: str = "max",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bits = check_bits(bits)
        self.quantized = [
            (found[0], SymmetricWeightQuantizer(bits, per_channel=per_channel, channel_axes=found[1],
                                                scale=scale))
            for found in (kernel_of(layer) for layer in self.layers)
            if found is not None
        ]
        if not self.quantized:
            raise TfquantError(
                f"model {self.name!r} has no Conv/Dense kernel to fake-quantize; plain QAT "
                "needs at least one Dense, Conv or DepthwiseConv2D layer"
            )

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y = data
        floats = [kernel.read_value() for kernel, _ in self.quantized]
        for kernel, quantize in self.quantized:
            kernel.assign(quantize(kernel))
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            loss = self.compiled_loss(y, logits, regularization_losses=self.losses)
        grads = tape.gradient(loss, self.trainable_variables)
        for (kernel, _), value in zip(self.quantized, floats):
            kernel.assign(value)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.compiled_metrics.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Fine-tuning length: ``passes`` progress epochs of ``steps_per_pass`` steps each.

    Attributes:
      passes: Epochs as Keras counts them (one progress line each).
      steps_per_pass: Optimizer steps per pass.
      batch_size: Examples per step.
      learning_rate: Peak of the cosine decay (to 0 over :attr:`steps`).
      epochs: The requested length in passes over the training data (may be fractional).
    """

    passes: int
    steps_per_pass: int
    batch_size: int
    learning_rate: float
    epochs: float

    @property
    def steps(self) -> int:
        """Optimizer steps in all."""
        return self.passes * self.steps_per_pass

    @classmethod
    def for_epochs(
        cls, epochs: float, n_train: int, *, batch_size: int, learning_rate: float
    ) -> "Schedule":
        """Steps = round(epochs x n_train / batch), split into ceil(epochs) progress epochs."""
        passes = max(1, math.ceil(epochs))
        per_pass = max(1, round(epochs * n_train / batch_size / passes))
        return cls(passes, per_pass, batch_size, learning_rate, float(epochs))


def plain_clone(model: keras.Model) -> keras.Model:
    """A functional clone of ``model`` with its weights (no regularisers, no wrappers)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def grid_steps(model: keras.Model, bits: int, *, scale: str = "max",
               grid: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """``{layer: Δ}`` of every top-level kernel: ``grid[layer]`` if given (QGT's frozen grid),
    else computed from the kernel by ``scale`` -- the grid :func:`hard_quantize` rounds to."""
    check_scale(scale)
    grid = grid or {}
    out = {}
    for layer in model.layers:
        found = kernel_of(layer)
        if found is not None:
            kernel, axes = found
            out[layer.name] = (np.asarray(grid[layer.name], np.float32) if layer.name in grid else
                               weight_scale(kernel, bits, channel_axes=axes, scale=scale).numpy())
    return out


def hard_quantize(model: keras.Model, bits: int, *, scale: str = "max",
                  grid: Mapping[str, Any] | None = None) -> keras.Model:
    """A plain clone of ``model`` whose kernels are rounded to their b-bit grid, Q_b(W).

    Δ per output channel from the final kernel by ``scale`` (``max`` / ``mse``), or, for a
    layer named in ``grid`` ({layer: Δ, shape broadcastable to its kernel}), that Δ: the grid
    QGT froze for its finish (``stats["grid"]`` of :func:`finetune_weights`).
    """
    check_scale(scale)
    grid = grid or {}
    clone = plain_clone(model)
    for layer in clone.layers:
        found = kernel_of(layer)
        if found is not None:
            kernel, axes = found
            step = grid.get(layer.name)
            kernel.assign(round_to_grid(kernel, bits, channel_axes=axes, scale=scale,
                                        step=None if step is None else np.asarray(step, np.float32)))
    return clone


def _grid_extras(bits: int, scale: str = "max") -> dict[str, training.callbacks.Extra]:
    """Per-epoch Σ_l R_l of the float kernels and, for QGT, the current λ."""

    def lam(model: keras.Model) -> float | None:
        regs = qgt_regularizers(model)
        return float(regs[0].current_strength()) if regs else None

    return {
        "grid_residual": lambda model: sum(layer_residuals(model, bits, scale=scale).values()),
        "qgt_lambda": lam,
    }


def finetune_weights(
    folded: keras.Model,
    method: Method,
    bits: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    plan: Schedule,
    seed: int,
    qgt_strength: float | None = None,
    qgt_ramp_fraction: float = 1.0,
    scale: str = "max",
    qgt_finish_fraction: float = 0.0,
    qgt_finish_factor: float = 1.0,
    label: str,
    log: Callable[[str], None] = _progress.write,
    tensorboard_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Fine-tunes a copy of ``folded`` by plain QAT or QGT; returns it (float) and its stats.

    Adam with ``CosineDecay(plan.learning_rate, plan.steps)``, softmax cross-entropy on
    logits, the training images shuffled with ``seed`` (reshuffled every pass, passes
    joined), :func:`tfquant.training.fit`; ``seed_everything(seed)`` first, before the copy
    is made. QGT ramps λ to ``qgt_strength`` over ``round(qgt_ramp_fraction x steps)``
    steps. ``scale`` (``max`` / ``mse``) chooses every kernel's grid step Δ_c, for QAT's
    fake quantization and QGT's regulariser alike. QGT's finish (``qgt_finish_fraction`` > 0):
    for the last ``round(qgt_finish_fraction x steps)`` steps the grid is frozen and λ grows
    geometrically by ``qgt_finish_factor`` (:class:`~tfquant.algorithms.qgt.QGTRegularizer`);
    the frozen Δ of every layer is returned in ``stats["grid"]`` for :func:`hard_quantize`.
    With ``tensorboard_dir``, every epoch's loss, accuracy, Σ_l R_l (and λ) are
    written there as TensorBoard scalars; with ``checkpoint_dir``, the weights are saved
    after every epoch as ``epochNNN.h5`` (Keras 2 HDF5).

    Returns:
      ``(model, stats)``: a plain functional clone of ``folded`` holding the fine-tuned
      float weights, and JSON-ready training statistics (``epoch_logs`` = per-epoch logs).

    Raises:
      TfquantError: An unknown method, or QGT without ``qgt_strength``.
    """
    if method not in ("qat", "qgt"):
        raise TfquantError(f"method must be 'qat' or 'qgt', got {method!r}")
    if method == "qgt" and qgt_strength is None:
        raise TfquantError("QGT needs qgt_strength (the final λ); pass e.g. qgt_strength=10.0")
    training.seed_everything(seed)
    ramp_steps = round(qgt_ramp_fraction * plan.steps)
    callbacks: list[keras.callbacks.Callback] = []
    if method == "qat":
        base = plain_clone(folded)
        trainer: keras.Model = WeightFakeQuantTrainer(
            bits, inputs=base.inputs, outputs=base.outputs, name=f"{folded.name}_qat", scale=scale
        )
    else:
        finish = round(qgt_finish_fraction * plan.steps)
        trainer = apply_qgt(folded, bits, qgt_strength, ramp_steps, scale=scale,
                            finish_start=plan.steps - finish if finish > 0 else None,
                            finish_steps=max(1, finish), finish_factor=qgt_finish_factor)
        callbacks.append(QGTRamp())
    progress = training.EpochLog(label, plan.passes, log=log, extras=_grid_extras(bits, scale),
                                 detail=f" ({plan.steps_per_pass} steps)")
    result = training.fit(
        trainer, x_train, y_train,
        epochs=plan.passes, steps_per_epoch=plan.steps_per_pass, batch_size=plan.batch_size,
        seed=seed, reseed=False,
        optimizer=training.cosine_adam(plan.learning_rate, plan.steps),
        loss=training.sparse_cross_entropy(from_logits=True),
        progress=progress, callbacks=callbacks, log_dir=tensorboard_dir,
        checkpoints=(os.path.join(checkpoint_dir, "epoch{epoch:03d}.h5")
                     if checkpoint_dir is not None else None),
    )
    tuned = keras.models.clone_model(folded)
    for layer in tuned.layers:
        layer.set_weights(trainer.get_layer(layer.name).get_weights())
    last = result.history[-1]
    stats = {
        "steps": plan.steps, "epochs": plan.epochs, "batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate, "train_examples": len(x_train),
        "train_seconds": round(result.seconds, 2), "train_loss": last.get("loss"),
        "train_accuracy": last.get("accuracy"), "epoch_logs": list(result.history),
    }
    if method == "qgt":
        stats.update(qgt_strength=qgt_strength, qgt_ramp_steps=ramp_steps)
        grid = {name: reg.frozen_grid() for name, (reg, _) in regularized_kernels(trainer).items()}
        if any(g is not None for g in grid.values()):
            stats["grid"] = {name: g.tolist() for name, g in grid.items() if g is not None}
    return tuned, stats


def cached_finetune(
    weights: str | os.PathLike[str],
    folded: keras.Model,
    method: Method,
    bits: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    label: str,
    log: Callable[[str], None] = _progress.write,
    **finetune_args: Any,
) -> tuple[keras.Model, dict[str, Any]]:
    """:func:`finetune_weights`, kept in ``weights`` (Keras 2 HDF5) and its statistics beside it
    (``<stem>.train.json``); when both exist they are loaded instead (a resumed run).

    ``finetune_args`` are :func:`finetune_weights`' keyword arguments (plan, seed, ...).
    """
    import json
    from pathlib import Path

    from tfquant.io_utils import atomic_path, write_json_atomic
    from tfquant.models.keras_apps import load_weights_file

    weights = Path(weights)
    stats_path = weights.with_name(f"{weights.stem}.train.json")
    if weights.exists() and stats_path.exists():
        model = keras.models.clone_model(folded)
        load_weights_file(model, weights)
        log(f"[{label}] fine-tuned weights loaded from {weights}")
        return model, json.loads(stats_path.read_text())
    model, stats = finetune_weights(folded, method, bits, x_train, y_train, label=label, log=log, **finetune_args)
    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as tmp:
        model.save_weights(str(tmp), save_format="h5")
    write_json_atomic(stats_path, stats)
    return model, stats
