"""QGT vs PTQ vs plain QAT at b-bit weights, with exact packed model sizes (issue 3, item 5).

Quantization-Guided Training (arXiv 2103.06231; our reconstruction of its regulariser is in
:mod:`tfquant.algorithms.qgt`) against the two usual ways to reach b-bit weights, on the
trained zoo models. For each model and bit width b, starting from the trained float model
with its BatchNormalizations folded into the weights first (the deployed network,
:func:`tfquant.algorithms.fold_batch_norms`; every method fine-tunes and quantizes the folded
kernels, and the sizes are those of the folded model):

* ``ptq``: every Conv / DepthwiseConv2D / Dense kernel fake-quantized to b bits, symmetric
  narrow-range per output channel, Δ_c = max|W_c| / (2^(b-1) - 1); activations float.
* ``qat`` (plain QAT): fine-tune for ``epochs`` with every kernel replaced by Q_b(W) in the
  forward pass and the straight-through gradient dL/dW := dL/dQ_b(W)
  (:class:`WeightFakeQuantTrainer`), then hard-quantize as ``ptq``.
* ``qgt``: fine-tune the float kernels for the same steps with the same optimizer, adding
  λ(t) Σ_l R_l, R_l = mean((W_l - Q_b(W_l))²)/Δ_l², λ ramped linearly from 0 to
  ``qgt_strength[b]`` over the first ``qgt_ramp_fraction`` of the steps
  (:func:`tfquant.algorithms.apply_qgt`, :class:`~tfquant.algorithms.QGTRamp`), then
  hard-quantize as ``ptq``.
* ``size``: exact bytes with every kernel packed at b bits plus one float32 scale per
  output channel and every other weight float32
  (:func:`tfquant.algorithms.packed_size_bytes`), against all weights float32.
* ``bottleneck_float`` / ``bottleneck_qgt``: per layer, the grid residual R_l and the
  accuracy lost when only that layer is quantized to b bits
  (:func:`tfquant.algorithms.bottleneck_report`), before and after QGT.
* ``qgt_tflite`` (optional): the hard-quantized QGT model converted to an int8 .tflite;
  its int8 weights hold at most 2^b - 1 distinct values per channel (checked and recorded).
  This model also has int8 activations, so it is compared with ``qgt_a8_sim``, its
  simulation (b-bit weights, 8-bit activations), not with the weight-only cells.

Every accuracy except ``qgt_tflite`` is measured in TensorFlow (``executed_in: sim``;
sub-8-bit weights have no TFLite kernel, ``shared/docs/methods.md``, "Where TFLite stops").
Fine-tuning follows the zoo's training recipe (:mod:`tfquant.models.train`): Adam, the
model's batch size, softmax cross-entropy on logits, on the first 55,000 training images,
with a cosine decay from ``learning_rate_scale`` x the model's training peak LR to 0. Each
fine-tune starts from ``keras.utils.set_random_seed(seed)``, so a cell does not depend on
which cells ran before it (a resumed run trains what it trains as a fresh one would).

One JSON record per model x bits x cell is appended to ``results.jsonl`` as soon as it is
measured; the fine-tuned weights are kept in ``models/<model>/w<b>_<method>.h5``, so
an interrupted run resumes without re-training. ``results.md`` is rewritten from the
records at the end, with statements on whether QGT >= plain QAT >= PTQ held
(:func:`findings`), computed from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfquant.algorithms.qgt import (
    QGTRamp,
    apply_qgt,
    bottleneck_report,
    float32_size_bytes,
    layer_residuals,
    packed_size_bytes,
    qgt_regularizers,
)
from tfquant.algorithms.weight_grid import SymmetricWeightQuantizer, check_bits, kernel_of
from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.study.provenance import open_run
from tfquant.io_utils import append_jsonl, atomic_path, read_jsonl, write_json_atomic, write_text_atomic
from tfquant.qtypes import Granularity, Mode, Runtime
from tfquant.recipes import Recipe
from tfquant.simulation.spec import EXECUTED_IN_SIM, SimSpec

EXPERIMENT = "qgt"
RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"
EXECUTED_IN_TFLITE = "tflite"
TRAIN_EXAMPLES = 55_000
"""The zoo's training images: the first 55,000 of the train split (the last 5,000 validate)."""

FLOAT, SIZE, PTQ, QAT, QGT = "float", "size", "ptq", "qat", "qgt"
BOTTLENECK_FLOAT, BOTTLENECK_QGT = "bottleneck_float", "bottleneck_qgt"
QGT_A8_SIM, QGT_TFLITE = "qgt_a8_sim", "qgt_tflite"
METHODS = (QAT, QGT)
"""The two fine-tuning methods."""
BIT_CELLS = (SIZE, PTQ, BOTTLENECK_FLOAT, QAT, QGT, BOTTLENECK_QGT)
"""Cells measured for every model x bits (plus :data:`TFLITE_CELLS` when exporting)."""
TFLITE_CELLS = (QGT_A8_SIM, QGT_TFLITE)

TIE_PT = 0.2
"""'A >= B' allows A to be this many accuracy points (0.01 top-1) below B (test-set noise)."""

PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smoke": MappingProxyType({
        "models": ("cnn",), "bits": (2,), "epochs": 1.0, "train_examples": 384,
        "limit": 300, "num_calibration_examples": 100,
    }),
    "short": MappingProxyType({"models": ("cnn",), "bits": (2, 4), "epochs": 0.5, "limit": 2000}),
})
"""Named sizes: ``smoke`` (what the tests run) and ``short`` (the main job's version)."""


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QgtStudyConfig:
    """What the study runs.

    Attributes:
      models: Zoo models (rows).
      bits: Weight bit widths, each in [2, 8] (the simulation's range).
      dataset, data_dir: Data spec (as in :mod:`tfquant.data`) and its folder.
      epochs: Fine-tuning length of QAT and QGT in passes over ``train_examples`` (may be
        fractional: 0.5 = half the steps of one epoch).
      train_examples: Fine-tune on the first N training images; None = the zoo's 55,000.
      batch_size: Images per step; None = the batch size the model was trained with.
      learning_rate_scale: Peak LR = this x the model's training peak LR
        (:data:`tfquant.models.train.DEFAULT_CONFIGS`), cosine-decayed to 0.
      qgt_strength: Final λ of the QGT regulariser per bit width, ``{bits: λ}`` (a mapping
        or (bits, λ) pairs; one number = the same λ for every bit width); every entry of
        ``bits`` needs one. The defaults, 10 at 4 bits and 10,000 at 2 bits, are the best
        of λ in {10, 100, 1,000, 10,000} (ramped over all steps) for the default 3-epoch
        schedule on the 5,000 validation images (the end of the train split, never the
        test split), cnn / mobilenet_v1, hard-quantized validation top-1: at 4 bits
        0.908 / 0.905 at λ = 10, falling to 0.880 / 0.851 at λ = 10,000 (plain QAT 0.917 /
        0.908); at 2 bits 0.256 / 0.106 at λ = 10 rising to 0.350 / 0.137 at 10,000, every
        λ far below plain QAT (0.890 / 0.839).
      qgt_ramp_fraction: λ grows linearly over this fraction of the steps, in [0, 1].
      seed: ``keras.utils.set_random_seed`` before every fine-tune (and the data order).
      limit: Evaluate on the first N test images; None = the whole test split.
      export_tflite: Also convert the hard-quantized QGT model to int8 .tflite (cells
        ``qgt_a8_sim`` and ``qgt_tflite``).
      num_calibration_examples, calibration_seed: Activation calibration of those cells.
      runtime, threads: LiteRT interpreter of ``qgt_tflite``.
      eval_batch_size: Examples per forward pass in evaluation.
    """

    models: tuple[str, ...] = ("cnn", "mobilenet_v1")
    bits: tuple[int, ...] = (2, 4)
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    epochs: float = 3.0
    train_examples: int | None = None
    batch_size: int | None = None
    learning_rate_scale: float = 0.5
    qgt_strength: Mapping[int, float] | Sequence[tuple[int, float]] | float = (
        (2, 10_000.0), (4, 10.0),
    )
    qgt_ramp_fraction: float = 1.0
    seed: int = 0
    limit: int | None = None
    export_tflite: bool = True
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    runtime: Runtime = Runtime.XNNPACK
    threads: int = 1
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        from tfquant.models import ZOO

        if isinstance(self.models, str) or not self.models:
            raise TfquantError("no models to run; pass --models with at least one zoo model")
        unknown = [m for m in self.models if m not in ZOO]
        if unknown:
            raise TfquantError(f"unknown zoo model(s) {unknown}; choose from: {', '.join(ZOO)}")
        object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))
        if isinstance(self.bits, (str, int)) or not self.bits:
            raise TfquantError(f"bits must be a non-empty list of integers in [2, 8], got {self.bits!r}")
        bad = [b for b in self.bits if not _is_int(b) or not 2 <= b <= 8]
        if bad:
            raise TfquantError(
                f"bits {bad} are not simulated; weight bit widths must be integers in [2, 8]"
            )
        object.__setattr__(self, "bits", tuple(dict.fromkeys(int(b) for b in self.bits)))
        if not _is_number(self.epochs) or not math.isfinite(self.epochs) or self.epochs <= 0:
            raise TfquantError(f"epochs must be a number > 0 (fractions allowed), got {self.epochs!r}")
        object.__setattr__(self, "epochs", float(self.epochs))
        scale = self.learning_rate_scale
        if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
            raise TfquantError(f"learning_rate_scale must be a finite number > 0, got {scale!r}")
        object.__setattr__(self, "learning_rate_scale", float(scale))
        object.__setattr__(self, "qgt_strength", self._checked_strengths())
        ramp = self.qgt_ramp_fraction
        if not _is_number(ramp) or not 0.0 <= ramp <= 1.0:
            raise TfquantError(f"qgt_ramp_fraction must be a number in [0, 1], got {ramp!r}")
        object.__setattr__(self, "qgt_ramp_fraction", float(ramp))
        for name in ("num_calibration_examples", "threads", "eval_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise TfquantError(f"{name} must be a positive integer, got {value!r}")
        for name in ("seed", "calibration_seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise TfquantError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("train_examples", "batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise TfquantError(f"{name} must be a positive integer or None (the default), got {value!r}")
        if self.train_examples is not None and self.train_examples > TRAIN_EXAMPLES:
            raise TfquantError(
                f"train_examples={self.train_examples} exceeds the zoo's {TRAIN_EXAMPLES} training "
                "images (the rest of the train split is its validation set); use at most that"
            )
        if not isinstance(self.export_tflite, bool):
            raise TfquantError(f"export_tflite must be True or False, got {self.export_tflite!r}")
        object.__setattr__(self, "runtime", Runtime.parse(self.runtime, what="runtime"))
        if self.runtime is Runtime.DELEGATE:
            raise TfquantError("the study runs xnnpack or builtin; evaluate a delegate with 'python -m tfquant evaluate'")

    def _checked_strengths(self) -> tuple[tuple[int, float], ...]:
        value = self.qgt_strength
        example = "e.g. {2: 10000, 4: 10}, or one number for every bit width"
        if _is_number(value):
            pairs = [(b, value) for b in self.bits]
        else:
            try:
                pairs = list(value.items() if isinstance(value, Mapping) else value)
                pairs = [(int(b), lam) for b, lam in pairs]
            except (TypeError, ValueError):
                raise TfquantError(f"qgt_strength must map bit widths to λ ({example}), got {value!r}") from None
        strengths: dict[int, float] = {}
        for b, lam in pairs:
            if not _is_number(lam) or not math.isfinite(lam) or lam <= 0:
                raise TfquantError(f"qgt_strength for {b}-bit weights must be a finite number > 0, got {lam!r}")
            strengths[b] = float(lam)
        missing = [b for b in self.bits if b not in strengths]
        if missing:
            raise TfquantError(f"qgt_strength has no λ for bit width(s) {missing}; give one per bit width ({example})")
        return tuple(sorted((b, strengths[b]) for b in self.bits))

    def strength(self, bits: int) -> float:
        """Final λ of the QGT regulariser at ``bits``."""
        return dict(self.qgt_strength)[bits]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "QgtStudyConfig":
        """The config of preset ``name`` (:data:`PRESETS`), with ``overrides`` applied."""
        if name not in PRESETS:
            raise TfquantError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["models"], d["bits"] = list(self.models), list(self.bits)
        d["runtime"] = self.runtime.value
        d["qgt_strength"] = {str(b): lam for b, lam in self.qgt_strength}
        return d

    def cells(self) -> tuple[str, ...]:
        """The cells of one model x bits."""
        return BIT_CELLS + (TFLITE_CELLS if self.export_tflite else ())

    def weight_spec(self, bits: int) -> SimSpec:
        """b-bit symmetric per-channel weights, float activations (PTQ and hard quantization)."""
        return SimSpec(weight_bits=bits, activation_bits=None)

    def recipe(self) -> Recipe:
        """The int8 conversion recipe of ``qgt_tflite`` (calibration provenance filled in)."""
        return Recipe(
            mode=Mode.INT8, weight_granularity=Granularity.PER_CHANNEL,
            num_calibration_examples=self.num_calibration_examples,
            calibration_seed=self.calibration_seed, calibration_data=self.dataset,
        )


# ---------------------------------------------------------------------------- fine-tuning


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
    (e.g. :func:`tfquant.simulation.evaluate`). Not serialisable (a training-time wrapper).

    Args:
      bits: Weight bit width in [2, 16].
      per_channel: Per-output-channel scales (TFLite's) or one per kernel.
    """

    def __init__(self, bits: int, *args: Any, per_channel: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bits = check_bits(bits)
        self.quantized = [
            (found[0], SymmetricWeightQuantizer(bits, per_channel=per_channel, channel_axes=found[1]))
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
    """Fine-tuning length: ``passes`` progress epochs of ``steps_per_pass`` steps each."""

    passes: int
    steps_per_pass: int
    batch_size: int
    learning_rate: float

    @property
    def steps(self) -> int:
        return self.passes * self.steps_per_pass


def schedule(config: QgtStudyConfig, model_name: str, n_train: int) -> Schedule:
    """Steps = round(epochs x n_train / batch), split into ceil(epochs) progress epochs."""
    from tfquant.models.train import DEFAULT_CONFIGS

    trained = DEFAULT_CONFIGS[model_name]
    batch = config.batch_size or trained.batch_size
    passes = max(1, math.ceil(config.epochs))
    per_pass = max(1, round(config.epochs * n_train / batch / passes))
    return Schedule(passes, per_pass, batch, config.learning_rate_scale * trained.learning_rate)


class _Progress(keras.callbacks.Callback):
    """One flushed line per epoch: loss, train accuracy, Σ_l R_l, λ, seconds.

    Adds ``grid_residual`` (Σ_l R_l of the float kernels) and, for QGT, ``qgt_lambda`` to
    the epoch logs, so :class:`_ScalarLog` (called after this callback) records them too.
    """

    def __init__(self, label: str, bits: int, schedule: Schedule, log: Callable[[str], None]) -> None:
        super().__init__()
        self._label, self._bits, self._schedule, self._log = label, bits, schedule, log
        self._start = 0.0
        self.history: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["grid_residual"] = sum(layer_residuals(self.model, self._bits).values())
        regs = qgt_regularizers(self.model)
        text = ""
        if regs:
            logs["qgt_lambda"] = float(regs[0].current_strength())
            text = f" λ {logs['qgt_lambda']:.4g}"
        seconds = time.perf_counter() - self._start
        self.history.append({k: float(v) for k, v in logs.items()} | {"seconds": round(seconds, 2)})
        self._log(
            f"[{self._label}] epoch {epoch + 1}/{self._schedule.passes} "
            f"({self._schedule.steps_per_pass} steps) loss {logs.get('loss', math.nan):.4f} "
            f"acc {logs.get('accuracy', math.nan):.4f} ΣR {logs['grid_residual']:.4f}{text} "
            f"{seconds:.1f}s"
        )


class _ScalarLog(keras.callbacks.Callback):
    """Writes every epoch's logs as TensorBoard scalars under ``log_dir`` (``epoch_<name>``).

    Uses ``tf.summary.write`` with the scalars plugin's metadata, which is what
    ``tf.summary.scalar`` writes, so it works without the ``tensorboard`` package (not in
    the project's requirements; Keras' TensorBoard callback needs it) and TensorBoard
    reads the files.
    """

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        from tensorflow.core.framework import summary_pb2

        self._writer = tf.summary.create_file_writer(str(log_dir))
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with self._writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.write(f"epoch_{name}", tf.constant(float(value), tf.float32),
                                 step=epoch + 1, metadata=self._metadata)
        self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._writer.close()


def _plain_clone(model: keras.Model) -> keras.Model:
    """A functional clone of ``model`` with its weights (no regularisers, no wrappers)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def finetune(
    folded: keras.Model,
    method: str,
    bits: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: QgtStudyConfig,
    plan: Schedule,
    *,
    label: str,
    log: Callable[[str], None] = _progress.write,
    tensorboard_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Fine-tunes a copy of ``folded`` by plain QAT or QGT; returns it (float) and its stats.

    Adam with ``CosineDecay(plan.learning_rate, plan.steps)``, softmax cross-entropy on
    logits, the training images shuffled with ``config.seed`` (reshuffled every pass);
    ``keras.utils.set_random_seed(config.seed)`` first. QGT ramps λ over
    ``round(qgt_ramp_fraction x steps)`` steps. With ``tensorboard_dir``, every epoch's
    loss, accuracy, Σ_l R_l (and λ) are written there as TensorBoard scalars; with
    ``checkpoint_dir``, the weights are saved after every epoch as ``epochNNN.h5`` (Keras 2 HDF5).

    Returns:
      ``(model, stats)``: a plain functional clone of ``folded`` holding the fine-tuned
      float weights, and JSON-ready training statistics.
    """
    assert method in METHODS, method
    keras.utils.set_random_seed(config.seed)
    if method == QAT:
        base = _plain_clone(folded)
        trainer: keras.Model = WeightFakeQuantTrainer(
            bits, inputs=base.inputs, outputs=base.outputs, name=f"{folded.name}_qat"
        )
        callbacks: list[keras.callbacks.Callback] = []
    else:
        ramp_steps = round(config.qgt_ramp_fraction * plan.steps)
        trainer = apply_qgt(folded, bits, config.strength(bits), ramp_steps)
        callbacks = [QGTRamp()]
    trainer.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=keras.optimizers.schedules.CosineDecay(plan.learning_rate, plan.steps)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    data = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=config.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(plan.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    progress = _Progress(label, bits, plan, log)
    callbacks.append(progress)
    if tensorboard_dir is not None:
        callbacks.append(_ScalarLog(tensorboard_dir))
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(checkpoint_dir / "epoch{epoch:03d}.h5"), save_weights_only=True
        ))
    start = time.perf_counter()
    trainer.fit(data, epochs=plan.passes, steps_per_epoch=plan.steps_per_pass,
                callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    tuned = keras.models.clone_model(folded)
    for layer in tuned.layers:
        layer.set_weights(trainer.get_layer(layer.name).get_weights())
    last = progress.history[-1]
    stats = {
        "steps": plan.steps, "epochs": config.epochs, "batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate, "train_examples": len(x_train),
        "train_seconds": round(seconds, 2), "train_loss": last.get("loss"),
        "train_accuracy": last.get("accuracy"), "epoch_logs": progress.history,
    }
    if method == QGT:
        stats.update(qgt_strength=config.strength(bits), qgt_ramp_steps=round(config.qgt_ramp_fraction * plan.steps))
    return tuned, stats


# ----------------------------------------------------------------------------- the run


def _key(r: Mapping[str, Any]) -> tuple[str, int | None, str]:
    return (r["model"], r.get("bits"), r["cell"])


class _DropRetracingWarnings(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing".

    TensorFlow counts traces per Python code location, so the one trace per model that
    :class:`_Accuracy` and Keras' ``predict`` do for every (simulated, fine-tuned) model
    reads to it like a retracing loop.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing() -> Any:
    logger, drop = tf.get_logger(), _DropRetracingWarnings()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class _Accuracy:
    """Top-1 accuracy of float Keras models on one test set, one traced forward pass per model.

    Each model's ``model(x, training=False)`` is traced once with a batch dimension of None
    and kept (with the model) until :meth:`clear`, so :func:`bottleneck_report`'s repeated
    calls on a model whose kernels it edits in place cost no retracing.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        self._x, self._y, self._batch_size = x, np.asarray(y).reshape(-1), batch_size
        self._forward: dict[int, tuple[keras.Model, Callable[[tf.Tensor], tf.Tensor]]] = {}

    def clear(self) -> None:
        self._forward.clear()

    def __call__(self, model: keras.Model) -> float:
        entry = self._forward.get(id(model))
        if entry is None or entry[0] is not model:
            spec = tf.TensorSpec((None, *self._x.shape[1:]), tf.float32)
            entry = (model, tf.function(lambda b: model(b, training=False), input_signature=[spec]))
            self._forward[id(model)] = entry
        forward = entry[1]
        correct = 0
        for i in range(0, len(self._x), self._batch_size):
            logits = forward(tf.constant(self._x[i:i + self._batch_size]))
            correct += int(np.count_nonzero(np.argmax(logits, axis=-1) == self._y[i:i + self._batch_size]))
        return correct / len(self._x)


def hard_quantize(model: keras.Model, bits: int) -> keras.Model:
    """A plain clone of ``model`` whose kernels are rounded to their b-bit grid, Q_b(W)."""
    from tfquant.algorithms.weight_grid import round_to_grid

    clone = _plain_clone(model)
    for layer in clone.layers:
        found = kernel_of(layer)
        if found is not None:
            kernel, axes = found
            kernel.assign(round_to_grid(kernel, bits, channel_axes=axes))
    return clone


def int8_weight_levels(tflite: bytes) -> list[dict[str, Any]]:
    """Distinct int8 values per output channel of every per-channel int8 weight of a .tflite.

    Weights are the constant int8 tensors of rank >= 2 (conv, depthwise and fully-connected
    kernels); channels run along each tensor's ``quantized_dimension``.
    """
    from tfquant.evaluation import inspect_model, load_interpreter

    interpreter = load_interpreter(tflite, runtime=Runtime.BUILTIN)
    out = []
    for t in inspect_model(tflite).tensors:
        if not (t.constant and t.dtype == "int8" and len(t.shape) >= 2):
            continue
        w = np.asarray(interpreter.get_tensor(t.index))
        axis = t.quantized_dimension if t.is_per_channel else 0
        channels = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        out.append({
            "tensor": t.name, "shape": list(t.shape), "num_scales": len(t.scales),
            "max_distinct_per_channel": max(len(np.unique(c)) for c in channels),
        })
    return out


def _bottleneck(model: keras.Model, bits: int, evaluate: Callable[[keras.Model], float]) -> dict[str, Any]:
    """:func:`bottleneck_report` as record fields: rows in layer order, each with its rank
    (1 = worst), ``residual_sum`` and the float ``baseline_accuracy`` the losses are against."""
    report = bottleneck_report(model, bits, evaluate)
    rank = {row.name: i + 1 for i, row in enumerate(report)}
    by_name = {row.name: row for row in report}
    rows = [
        {"layer": name, "params": by_name[name].params, "residual": by_name[name].residual,
         "accuracy": by_name[name].metric, "loss_pt": 100.0 * by_name[name].degradation,
         "rank": rank[name]}
        for name in layer_residuals(model, bits)
    ]
    return {"baseline_accuracy": report[0].metric + report[0].degradation,
            "residual_sum": sum(r["residual"] for r in rows), "layers": rows}


def run_qgt_study(
    config: QgtStudyConfig,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = _progress.write,
    tensorboard_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) the study into ``out_dir``; returns all records of the run.

    Layout: ``config.json`` (config, weights' sha256, provenance of every invocation),
    ``results.jsonl``, ``models/<model>/w<b>_{qat,qgt}.h5`` (+ ``.train.json``
    with the training statistics), ``models/<model>/w<b>_qgt.tflite`` (+ recipe) when
    exporting, ``results.md``. TensorBoard logs and per-epoch checkpoints go to
    ``<dir>/<model>/w<b>_<method>/`` when those folders are given (they are not part of
    the config: they do not change results).

    Raises:
      TfquantError: ``out_dir`` holds a run with a different config; data or model errors.
        A conversion that fails is recorded with an ``error`` instead.
    """
    with _quiet_retracing():
        return _run(config, Path(out_dir), log, tensorboard_dir, checkpoint_dir)


def _run(
    config: QgtStudyConfig,
    out: Path,
    log: Callable[[str], None],
    tensorboard_dir: str | Path | None,
    checkpoint_dir: str | Path | None,
) -> list[dict[str, Any]]:
    from tfquant import convert, data, models, simulation
    from tfquant.algorithms.bn_fold import fold_batch_norms
    from tfquant.evaluation import evaluate_accuracy, file_size
    from tfquant.models.keras_apps import load_weights_file

    open_run(out, {
        "config": config.to_dict(),
        "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in config.models},
    })
    results_path = out / RESULTS_JSONL
    done = {_key(r) for r in read_jsonl(results_path) if "error" not in r}
    todo_all = [(m, None, FLOAT) for m in config.models] + [
        (m, b, c) for m in config.models for b in config.bits for c in config.cells()
    ]
    if all(k in done for k in todo_all):
        log(f"{out}: every record is present; nothing to run")
        records = read_jsonl(results_path)
        write_text_atomic(out / RESULTS_MD, results_markdown(records, config))
        return records

    x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
    x_all, y_all, _ = data.load_numpy(config.dataset, "train", data_dir=config.data_dir)
    n_train = config.train_examples or TRAIN_EXAMPLES
    if n_train > len(x_all):
        raise TfquantError(f"{config.dataset} has {len(x_all)} training images, fewer than the {n_train} to fine-tune on")
    x_train, y_train = x_all[:n_train], y_all[:n_train]
    x_cal = None
    if config.export_tflite:
        x_cal = data.calibration_set(config.dataset, config.num_calibration_examples,
                                     seed=config.calibration_seed, data_dir=config.data_dir)
    log(f"test set: {info.name}/test, {len(x_test)} examples; fine-tuning on {n_train} training images")

    evaluate = _Accuracy(x_test, y_test, config.eval_batch_size)

    def sim_accuracy(model: keras.Model, spec: SimSpec, calibration_data: np.ndarray | None = None) -> float:
        """Top-1 of ``simulation.simulate(model, spec)``: what ``simulation.evaluate`` gives."""
        return evaluate(simulation.simulate(model, spec, calibration_data=calibration_data))

    def record(rec: dict[str, Any]) -> None:
        append_jsonl(results_path, rec)
        done.add(_key(rec))
        where = f"({rec['executed_in']})" if "executed_in" in rec else ""
        tag = f"{rec['model']:>13} {'w' + str(rec['bits']) if rec.get('bits') else '':>3} {rec['cell']:<17}"
        if "error" in rec:
            log(f"{tag} failed: {rec['error']}")
        elif "accuracy" in rec:
            log(f"{tag} top-1 {rec['accuracy']:.4f} {where}")
        elif rec["cell"] == SIZE:
            log(f"{tag} {rec['packed_bytes']} B packed vs {rec['float32_bytes']} B float32 ({rec['ratio']:.2f}x)")
        else:
            worst = min(rec["layers"], key=lambda r: r["rank"])
            log(f"{tag} worst layer {worst['layer']} ({worst['loss_pt']:+.2f} pt alone), ΣR {rec['residual_sum']:.4f}")

    for model_name in _progress.progress(config.models, desc="QGT study", unit="model"):
        if all((model_name, b, c) in done for (m, b, c) in todo_all if m == model_name):
            continue
        keras.backend.clear_session()
        evaluate.clear()
        folded = fold_batch_norms(models.build(model_name))
        plan = schedule(config, model_name, n_train)
        folder = out / "models" / model_name
        base = {"experiment": EXPERIMENT, "model": model_name, "n_examples": len(x_test)}
        if (model_name, None, FLOAT) not in done:
            record({**base, "bits": None, "cell": FLOAT, "executed_in": EXECUTED_IN_SIM,
                    "accuracy": evaluate(folded), "bn_folded": True})
        for bits in config.bits:
            cell_base = {**base, "bits": bits}
            spec = config.weight_spec(bits)
            if (model_name, bits, SIZE) not in done:
                packed, full = packed_size_bytes(folded, bits), float32_size_bytes(folded)
                record({**cell_base, "cell": SIZE, "packed_bytes": packed, "float32_bytes": full,
                        "ratio": full / packed, "bn_folded": True, "per_channel_scales": True})
            if (model_name, bits, PTQ) not in done:
                record({**cell_base, "cell": PTQ, "executed_in": EXECUTED_IN_SIM,
                        "accuracy": sim_accuracy(folded, spec), "spec": spec.to_dict()})
            if (model_name, bits, BOTTLENECK_FLOAT) not in done:
                record({**cell_base, "cell": BOTTLENECK_FLOAT, "executed_in": EXECUTED_IN_SIM,
                        "of": "trained", **_bottleneck(folded, bits, evaluate)})
            tuned: dict[str, keras.Model] = {}
            for method in METHODS:
                needs = [c for c in config.cells() if (model_name, bits, c) not in done
                         and (c == method or (method == QGT and c in (BOTTLENECK_QGT, *TFLITE_CELLS)))]
                if not needs:
                    continue
                weights = folder / f"w{bits}_{method}.h5"
                stats_path = weights.with_name(f"w{bits}_{method}.train.json")
                if weights.exists() and stats_path.exists():
                    model = keras.models.clone_model(folded)
                    load_weights_file(model, weights)
                    stats = json.loads(stats_path.read_text())
                    log(f"[{model_name} w{bits} {method}] fine-tuned weights loaded from {weights}")
                else:
                    sub = Path(model_name) / f"w{bits}_{method}"
                    model, stats = finetune(
                        folded, method, bits, x_train, y_train, config, plan,
                        label=f"{model_name} w{bits} {method}", log=log,
                        tensorboard_dir=Path(tensorboard_dir) / sub if tensorboard_dir else None,
                        checkpoint_dir=Path(checkpoint_dir) / sub if checkpoint_dir else None,
                    )
                    weights.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(weights) as tmp:
                        model.save_weights(str(tmp), save_format="h5")
                    write_json_atomic(stats_path, stats)
                tuned[method] = model
                if (model_name, bits, method) in done:
                    continue
                record({**cell_base, "cell": method, "executed_in": EXECUTED_IN_SIM,
                        "accuracy": sim_accuracy(model, spec), "float_accuracy": evaluate(model),
                        "residual_sum": sum(layer_residuals(model, bits).values()),
                        "spec": spec.to_dict(), "weights_path": str(weights),
                        **{k: v for k, v in stats.items() if k != "epoch_logs"}})
            if QGT not in tuned:
                continue
            qgt_model = tuned[QGT]
            if (model_name, bits, BOTTLENECK_QGT) not in done:
                record({**cell_base, "cell": BOTTLENECK_QGT, "executed_in": EXECUTED_IN_SIM,
                        "of": "qgt", **_bottleneck(qgt_model, bits, evaluate)})
            if not config.export_tflite:
                continue
            hard = hard_quantize(qgt_model, bits)
            if (model_name, bits, QGT_A8_SIM) not in done:
                a8 = SimSpec(weight_bits=bits, activation_bits=8)
                record({**cell_base, "cell": QGT_A8_SIM, "executed_in": EXECUTED_IN_SIM,
                        "accuracy": sim_accuracy(hard, a8, calibration_data=x_cal),
                        "spec": a8.to_dict(), "num_calibration_examples": len(x_cal)})
            if (model_name, bits, QGT_TFLITE) not in done:
                recipe = config.recipe()
                path = folder / f"w{bits}_qgt.tflite"
                rec = {**cell_base, "cell": QGT_TFLITE, "executed_in": EXECUTED_IN_TFLITE,
                       "recipe": recipe.to_dict(), "tflite_path": str(path),
                       "runtime": config.runtime.value, "threads": config.threads}
                try:
                    tflite = convert.convert(hard, recipe, calibration_data=x_cal)
                    convert.save(tflite, str(path), recipe)
                    levels = int8_weight_levels(tflite)
                    acc = evaluate_accuracy(tflite, x_test, y_test, runtime=config.runtime,
                                            num_threads=config.threads, batch_size=config.eval_batch_size)
                except TfquantError as e:
                    record({**rec, "error": str(e)})
                    continue
                allowed = 2 ** bits - 1
                record({**rec, "accuracy": acc.accuracy, "n_correct": acc.n_correct,
                        "size_bytes": file_size(path), "weight_levels": levels,
                        "max_distinct_per_channel": max(w["max_distinct_per_channel"] for w in levels),
                        "allowed_levels": allowed,
                        "on_b_bit_grid": all(w["max_distinct_per_channel"] <= allowed for w in levels)})
    records = read_jsonl(results_path)
    write_text_atomic(out / RESULTS_MD, results_markdown(records, config))
    return records


# ----------------------------------------------------------------------------- findings


HELD, NOT_HELD, PARTLY, NOT_TESTED = "held", "did not hold", "partly", "not tested"


@dataclasses.dataclass(frozen=True)
class Finding:
    """Whether QGT >= plain QAT >= PTQ held at one bit width.

    Attributes:
      bits: The weight bit width.
      verdict: ``held`` (both links on every model), ``partly`` (some links), ``did not
        hold`` (no link held anywhere) or ``not tested``.
      text: Per model, the two comparisons with their margins.
    """

    bits: int
    verdict: str
    text: str


def _accuracies(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int | None, str], float]:
    return {_key(r): float(r["accuracy"]) for r in records if "error" not in r and "accuracy" in r}


def _link(a_name: str, a: float, b_name: str, b: float) -> tuple[bool, str]:
    gap = 100.0 * (a - b) + 0.0
    ok = gap >= -TIE_PT
    sign = ">=" if ok else "<"
    return ok, f"{a_name} {a:.4f} {sign} {b_name} {b:.4f} ({gap:+.2f} pt)"


def findings(records: Sequence[Mapping[str, Any]], models: Sequence[str], bits: Sequence[int]) -> list[Finding]:
    """Per bit width, did QGT >= plain QAT >= PTQ hold on every model (ties within TIE_PT)?"""
    acc = _accuracies(records)
    out = []
    for b in bits:
        parts, links = [], []
        for m in models:
            if not all((m, b, c) in acc for c in (PTQ, QAT, QGT)):
                continue
            ok1, t1 = _link("QGT", acc[(m, b, QGT)], "plain QAT", acc[(m, b, QAT)])
            ok2, t2 = _link("plain QAT", acc[(m, b, QAT)], "PTQ", acc[(m, b, PTQ)])
            links += [ok1, ok2]
            parts.append(f"{m}: {t1}; {t2}")
        if not links:
            out.append(Finding(b, NOT_TESTED, "no records"))
            continue
        verdict = HELD if all(links) else NOT_HELD if not any(links) else PARTLY
        out.append(Finding(b, verdict, ". ".join(parts)))
    return out


# ----------------------------------------------------------------------------- markdown


def _r(residual: float) -> str:
    """A grid residual R: 4 decimals, or 2 significant digits below 0.001 (QGT drives R to ~0)."""
    return f"{residual:.4f}" if residual >= 1e-3 or residual == 0 else f"{residual:.1e}"


def bottleneck_summary(before: Mapping[str, Any], after: Mapping[str, Any] | None) -> str:
    """One sentence on a model x bits' bottlenecks: worst layer alone, largest R, before/after.

    The bottleneck is the layer whose quantization alone costs the most accuracy
    (rank 1); whether it is also the layer with the largest residual R says whether R
    alone would have found it.
    """

    def describe(report: Mapping[str, Any], when: str) -> str:
        rows = report["layers"]
        worst = min(rows, key=lambda r: r["rank"])
        top_r = max(rows, key=lambda r: (r["residual"], r["layer"]))
        same = ("which is also the layer with the largest R" if top_r["layer"] == worst["layer"]
                else f"while the largest R is in {top_r['layer']} ({_r(top_r['residual'])})")
        return (f"{when} the bottleneck is {worst['layer']} ({worst['loss_pt']:+.2f} pt alone, "
                f"R {_r(worst['residual'])}), {same}")

    text = describe(before, "Trained:")
    if after is not None:
        text += "; " + describe(after, "after QGT").replace("after QGT the", "after QGT, the", 1)
    return text + "."


def _acc_text(r: Mapping[str, Any] | None, errors: list[str]) -> str:
    if r is None:
        return ""
    if "error" in r:
        errors.append(f"- {r['model']} / w{r['bits']} / {r['cell']}: {r['error']}")
        return "failed¹"
    return f"{r['accuracy']:.4f} ({r['executed_in']})"


def results_markdown(records: Sequence[Mapping[str, Any]], config: QgtStudyConfig) -> str:
    """The accuracy/size table, the bottleneck tables, what ran where and the findings."""
    from tfquant.evaluation import markdown_table

    by = {_key(r): r for r in records}
    n_test = "the whole test split" if config.limit is None else f"the first {config.limit} test images"
    n_train = config.train_examples or TRAIN_EXAMPLES
    plans = {m: schedule(config, m, n_train) for m in config.models}
    plan_text = "; ".join(f"{m}: {p.steps} steps of {p.batch_size} images, peak LR {p.learning_rate:g}"
                          for m, p in plans.items())
    errors: list[str] = []
    lines = [
        f"# QGT vs PTQ vs plain QAT at b-bit weights ({config.dataset})",
        "",
        f"Top-1 accuracy on {n_test}. Every model has its BatchNormalizations folded into the "
        "weights first (the deployed network); all methods quantize and fine-tune those "
        "folded Conv / DepthwiseConv2D / Dense kernels, and the sizes are the folded model's. "
        "Weights: symmetric narrow-range per output channel, Δ_c = max|W_c| / (2^(b-1) - 1); "
        "activations float. `PTQ` quantizes the trained model; `plain QAT` fine-tunes through "
        "the fake-quantized weights (straight-through gradient) and `QGT` fine-tunes the float "
        "weights with the grid regulariser λ(t) Σ_l mean((W_l - Q_b(W_l))²)/Δ_l² (our "
        "reconstruction of arXiv 2103.06231), both for the same steps and optimizer, then "
        "both are hard-quantized exactly like PTQ. "
        f"Fine-tuning: {config.epochs:g} epoch(s) over {n_train} training images ({plan_text}; "
        f"Adam, cosine decay to 0, seed {config.seed}); QGT λ ramps linearly from 0 to "
        + ", ".join(f"{lam:g} at {b} bits" for b, lam in config.qgt_strength)
        + (" over all steps" if config.qgt_ramp_fraction == 1.0
           else f" over the first {config.qgt_ramp_fraction:.0%} of the steps")
        + " (chosen on validation "
        "images, see `tfquant.experiments.qgt.QgtStudyConfig`). "
        "`packed bytes` = every kernel packed at b bits plus one float32 scale per output "
        "channel, all other weights float32; `ratio` = float32 bytes / packed bytes "
        "(32/b alone would overstate it).",
        "",
        "## Accuracy and size",
        "",
    ]
    rows = []
    for m in config.models:
        for b in config.bits:
            size = by.get((m, b, SIZE))
            rows.append({
                "model": m, "bits": b,
                "float": _acc_text(by.get((m, None, FLOAT)), errors),
                "ptq": _acc_text(by.get((m, b, PTQ)), errors),
                "qat": _acc_text(by.get((m, b, QAT)), errors),
                "qgt": _acc_text(by.get((m, b, QGT)), errors),
                "packed": size["packed_bytes"] if size else None,
                "float32": size["float32_bytes"] if size else None,
                "ratio": f"{size['ratio']:.2f}x" if size else None,
            })
    lines.append(markdown_table(rows, ["model", "bits", "float", "ptq", "qat", "qgt", "packed", "float32", "ratio"],
                                headers={"ptq": "PTQ", "qat": "plain QAT", "qgt": "QGT",
                                         "packed": "packed bytes", "float32": "float32 bytes"}).rstrip("\n"))
    lines += ["", "## Before the rounding", "",
              "The fine-tuned models in float, before their hard quantization, and Σ_l R_l "
              "(0 = every kernel on its b-bit grid; uniform rounding error gives 1/12 per layer). "
              "QAT's float weights are only its shadow weights; QGT's float accuracy minus its "
              "quantized accuracy is what the last rounding costs.", ""]
    rows = []
    for m in config.models:
        for b in config.bits:
            row: dict[str, Any] = {"model": m, "bits": b}
            for cell in (BOTTLENECK_FLOAT, QAT, QGT):
                r = by.get((m, b, cell))
                if r and "error" not in r and "residual_sum" in r:
                    row[f"{cell}_res"] = _r(r["residual_sum"])
                    if cell != BOTTLENECK_FLOAT:
                        row[f"{cell}_float"] = f"{r['float_accuracy']:.4f}"
                        row[f"{cell}_cost"] = f"{100 * (r['float_accuracy'] - r['accuracy']):+.2f}"
            rows.append(row)
    lines.append(markdown_table(
        rows, ["model", "bits", f"{BOTTLENECK_FLOAT}_res", "qat_float", "qat_res", "qgt_float", "qgt_res", "qgt_cost"],
        headers={f"{BOTTLENECK_FLOAT}_res": "ΣR trained", "qat_float": "QAT float", "qat_res": "ΣR QAT",
                 "qgt_float": "QGT float", "qgt_res": "ΣR QGT", "qgt_cost": "QGT rounding cost pt"},
    ).rstrip("\n"))
    lines += ["", "## Compression bottlenecks per layer", "",
              "Per layer: R = its grid residual mean((W - Q_b(W))²)/Δ², and `alone` = accuracy "
              "points lost when only that layer's kernel is quantized to b bits, against the "
              "same model in float (sim, `bottleneck_report`); `#` ranks the layers by that "
              "loss (1 = the bottleneck). `trained` = the BN-folded zoo model, `QGT` = after "
              "QGT fine-tuning (its float accuracy is the `QGT float` column above).", ""]
    for m in config.models:
        for b in config.bits:
            before, after = by.get((m, b, BOTTLENECK_FLOAT)), by.get((m, b, BOTTLENECK_QGT))
            if not before or "error" in before:
                continue
            after_rows = {r["layer"]: r for r in after["layers"]} if after and "error" not in after else {}
            rows = []
            for r in before["layers"]:
                a = after_rows.get(r["layer"])
                rows.append({
                    "layer": r["layer"], "params": r["params"], "r0": _r(r["residual"]),
                    "l0": f"{r['loss_pt']:+.2f}", "k0": r["rank"],
                    "r1": _r(a["residual"]) if a else None, "l1": f"{a['loss_pt']:+.2f}" if a else None,
                    "k1": a["rank"] if a else None,
                })
            lines += [f"### {m}, {b}-bit weights", "", markdown_table(
                rows, ["layer", "params", "r0", "l0", "k0", "r1", "l1", "k1"],
                headers={"r0": "R trained", "l0": "alone pt trained", "k0": "# trained",
                         "r1": "R QGT", "l1": "alone pt QGT", "k1": "# QGT"},
            ).rstrip("\n"), "", bottleneck_summary(before, after if after_rows else None), ""]
    if config.export_tflite:
        lines += ["## The QGT model as an int8 .tflite", "",
                  "The hard-quantized QGT model converted with `Recipe(mode=int8)` (per-channel "
                  f"weights, int8 activations calibrated by min/max on {config.num_calibration_examples} "
                  f"training images, seed {config.calibration_seed}): its int8 weights are the b-bit "
                  "grid values re-expressed with Δ8 = max|W_c| / 127, so each channel holds at most "
                  "2^b - 1 distinct int8 values (checked below). The activations are int8, so the "
                  "comparison is its simulation `W{b}A8 sim`, not the weight-only cells above.", ""]
        rows = []
        for m in config.models:
            for b in config.bits:
                t, s = by.get((m, b, QGT_TFLITE)), by.get((m, b, QGT_A8_SIM))
                ok = t and "error" not in t
                rows.append({
                    "model": m, "bits": b, "sim": _acc_text(s, errors), "tflite": _acc_text(t, errors),
                    "levels": f"{t['max_distinct_per_channel']} <= {t['allowed_levels']}: "
                              f"{'yes' if t['on_b_bit_grid'] else 'NO'}" if ok else None,
                    "bytes": t["size_bytes"] if ok else None,
                })
        lines += [markdown_table(rows, ["model", "bits", "sim", "tflite", "levels", "bytes"],
                                 headers={"sim": "QGT W{b}A8", "tflite": "QGT int8 .tflite",
                                          "levels": "max distinct int8 per channel",
                                          "bytes": ".tflite bytes (int8 storage)"}).rstrip("\n"), ""]
    lines += ["## What ran where", "",
              "- **sim** (TensorFlow; `tfquant.simulation` fake quantization of the BN-folded "
              "Keras model): `float` (nothing quantized), `PTQ`, `plain QAT`, `QGT`, the "
              "bottleneck reports" + (" and `QGT W{b}A8`" if config.export_tflite else "")
              + ". Sub-8-bit weights have no TFLite kernel (methods.md, 'Where TFLite stops').",
              ("- **tflite** (LiteRT interpreter, " f"{config.runtime.value}, {config.threads} thread(s)): "
               "`QGT int8 .tflite` only, the b-bit weights stored as int8 values on the b-bit grid."
               if config.export_tflite else
               "- **tflite**: nothing (run with export_tflite to add the QGT model as an int8 .tflite)."),
              "", "## Did QGT >= plain QAT >= PTQ hold?", "",
              f"Computed from the records above; a tie within {TIE_PT:g} pt counts as >= (one test "
              f"image is {100.0 / (config.limit or 10000):.2f} pt).", ""]
    for f in findings(records, config.models, config.bits):
        lines.append(f"- **{f.bits}-bit weights: {f.verdict}**. {f.text}.")
    if errors:
        lines += ["", "¹ Not produced or not runnable (the reason, as tfquant reported it):", "", *errors]
    return "\n".join(lines) + "\n"
