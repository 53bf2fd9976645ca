"""The whole QAT flow for one model, as ``python -m tfquant qat`` runs it: :func:`run_qat`.

quantize_for_training (calibrated activation ranges) -> finetune (the chosen schedule, the
loss matching the model's output) -> BN re-estimation (``auto``) -> export_tflite -> accuracy
of the .tflite in LiteRT against float, a warning when it is far below -> a
:class:`~tfquant.qat.record.QatRecord`.

The stages are public, so an experiment runs the same code with its own choices
(:mod:`tfquant.experiments.whitepaper_qat`): :func:`train_qat` (quantize -- tfmot, or
BN-folded layers -- check that every kernel is fake-quantized, fine-tune, re-estimate BN) and
:func:`export_and_compare` (int8 .tflite and its agreement with the QAT Keras model).

Learning rate of the float training, which the schedules scale: see
:mod:`tfquant.qat.original` (given, zoo, saved optimizer, else 1e-3).

Fine-tuning schedules (``finetune_schedule``, :class:`~tfquant.qat.schedules.ScheduleName`):

* ``auto`` (the default) -- NVIDIA's schedule (:func:`~tfquant.qat.nvidia_schedule`:
  Adam, cosine, LR 1% of the original) followed by batch-norm re-estimation
  (:func:`~tfquant.qat.bn_reestimate.reestimate_batch_norm`); below 8-bit weights
  the learning rate is :data:`LOW_BIT_LR_FRACTION` = 10% of the original (10x NVIDIA's).
  Measured with ``epochs=2`` on small models outside the zoo (experiments/qat_outside_zoo.py,
  BUILD_NOTES): a short fine-tune leaves each BN's moving statistics those of the float
  network (momentum 0.99 moves them ~20% in 22 steps) while 4-bit kernels shift every
  channel; re-estimating them is what brings 4-bit back (digits SE-ResNet: 0.808 -> 0.982,
  float 0.992), the larger LR adapts the weights to the coarse grid in the few steps there are.
* ``nvidia`` / ``whitepaper`` -- the named schedules as they are (no re-estimation), what
  the zoo experiments use.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant import qtypes
from tfquant.errors import TfquantError
from tfquant.evaluation.fidelity import FidelityReport, compare
from tfquant.qat import outputs
from tfquant.qat.annotate import float_kernels, quantize_for_training
from tfquant.qat.bn_correction import BnFold, quantize_folded_for_training
from tfquant.qat.bn_reestimate import DEFAULT_REESTIMATION_EXAMPLES, reestimate_batch_norm
from tfquant.qat.export import export_tflite
from tfquant.qat.finetune import FinetuneResult, finetune
from tfquant.qat.original import OriginalTraining, original_training
from tfquant.qat.record import QatRecord, json_ready
from tfquant.qat.schedules import (
    FinetuneSchedule,
    ScheduleName,
    nvidia_schedule,
    whitepaper_schedule,
)
from tfquant.qat.spec import QatSpec

LOW_BIT_LR_FRACTION = 0.1
FAR_BELOW_FLOAT_POINTS = 5.0
HELD_OUT_FRACTION = 0.1
MAX_HELD_OUT = 1000
MIN_TRAIN_FOR_HOLD_OUT = 100


@dataclasses.dataclass(frozen=True)
class QatOutcome:
    """What :func:`run_qat` produced.

    Attributes:
      tflite: The int8 .tflite (float I/O), without metadata.
      record: The run as a :class:`~tfquant.qat.record.QatRecord` (the CLI writes it as
        ``OUT.qat.json``).
      qat_model: The fine-tuned QAT Keras model.
      finetune: The fine-tune's :class:`~tfquant.qat.FinetuneResult`.
      fidelity: QAT Keras vs .tflite on the eval data (None without eval data).
      float_accuracy: Top-1 of the float model on the check data (eval data, else held-out
        training data; None when neither exists).
      qat_accuracy: Top-1 of the .tflite (LiteRT) on the same data.
      warnings: One-line warnings (also in ``record.warnings``).
    """

    tflite: bytes
    record: QatRecord
    qat_model: keras.Model
    finetune: FinetuneResult
    fidelity: FidelityReport | None
    float_accuracy: float | None
    qat_accuracy: float | None
    warnings: tuple[str, ...]


def make_schedule(
    name: "ScheduleName | str", original: OriginalTraining, *, weight_bits: int
) -> tuple[FinetuneSchedule, bool]:
    """Schedule ``name`` for a float training ``original``, and whether BN is re-estimated after.

    ``auto``: :func:`~tfquant.qat.nvidia_schedule` with, below 8-bit weights, the
    learning rate ``LOW_BIT_LR_FRACTION · original.learning_rate``; BN re-estimated after
    fine-tuning. ``nvidia`` / ``whitepaper``: the named schedules, no re-estimation.

    Raises:
      TfquantError: an unknown name.
    """
    choice = ScheduleName.parse(name, what="fine-tuning schedule")
    if choice is ScheduleName.AUTO:
        schedule = nvidia_schedule(original)
        if weight_bits < 8:
            return schedule.replace(
                name="auto", learning_rate=LOW_BIT_LR_FRACTION * original.learning_rate
            ), True
        return schedule.replace(name="auto"), True
    if choice is ScheduleName.NVIDIA:
        return nvidia_schedule(original), False
    return whitepaper_schedule(original, bn_correction=False), False


@dataclasses.dataclass(frozen=True)
class TrainedQat:
    """What :func:`train_qat` produced.

    Attributes:
      qat_model: The fine-tuned QAT Keras model.
      finetune: The fine-tune's :class:`~tfquant.qat.FinetuneResult`.
      from_logits: The loss took the model's output as logits.
      bn_reestimated: BatchNormalization layers re-estimated after the fine-tune.
      start_accuracy: Top-1 of the QAT Keras model before fine-tuning (None: not asked).
    """

    qat_model: keras.Model
    finetune: FinetuneResult
    from_logits: bool
    bn_reestimated: int
    start_accuracy: float | None = None


def keras_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of a (float or QAT) Keras classifier in inference mode."""
    p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return float(np.count_nonzero(p.argmax(axis=-1) == np.asarray(y))) / len(y)


def train_qat(
    model: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_calibration: np.ndarray,
    *,
    schedule: FinetuneSchedule,
    epochs: int,
    spec: QatSpec = QatSpec(),
    bn_fold: "BnFold | str" = BnFold.TFMOT,
    seed: int = 0,
    reestimate: bool = False,
    start_data: tuple[np.ndarray, np.ndarray, int] | None = None,
    log_dir: "str | os.PathLike[str] | None" = None,
    checkpoint_dir: "str | os.PathLike[str] | None" = None,
    verbose: bool = True,
    prepare: "Callable[[keras.Model, bool], list[keras.callbacks.Callback]] | None" = None,
    skip_layers: Sequence[str] = (),
) -> TrainedQat:
    """Quantize, check, fine-tune and (optionally) re-estimate BN: the training half of QAT.

    1. :func:`~tfquant.qat.quantize_for_training` (``bn_fold`` ``tfmot``) or
       :func:`~tfquant.qat.bn_correction.quantize_folded_for_training` (``naive`` /
       ``corrected``, the fold the schedule's ``bn_correction`` says), activation ranges
       calibrated (max) on ``x_calibration``;
    2. every kernel must be fake-quantized (:func:`~tfquant.qat.annotate.float_kernels`; a
       second guard: quantize_for_training already raises on one left in float);
    3. with ``start_data = (x, y, batch_size)``, the QAT Keras model's top-1 before training;
    4. :func:`~tfquant.qat.finetune`, cross-entropy on logits or on probabilities as the float
       model outputs (:func:`~tfquant.qat.outputs.outputs_probabilities` on the calibration
       data);
    5. ``reestimate``: BN statistics re-estimated on a seeded random subset of (up to 1024)
       training examples in the QAT graph.

    ``prepare(qat_model, from_logits)``, when given, runs after step 3 and returns extra
    fine-tuning callbacks (per-layer bit widths: :mod:`tfquant.qat.bit_allocation`).
    ``skip_layers``: names of layers left unquantized (they stay float in the QAT model and
    in the export).

    Raises:
      TfquantError: a BN fold the schedule's ``bn_correction`` contradicts, the errors of
        the stages, and a kernel left in float.
    """
    fold = BnFold.parse(bn_fold, what="BN fold")
    if fold is not BnFold.TFMOT and schedule.bn_correction != (fold is BnFold.CORRECTED):
        raise TfquantError(
            f"bn_fold {fold.value!r} needs a schedule with bn_correction="
            f"{fold is BnFold.CORRECTED}, got schedule {schedule.name!r} with bn_correction="
            f"{schedule.bn_correction}; use schedule.replace(bn_correction=...)"
        )
    if fold is BnFold.TFMOT:  # validates the calibration data against the model
        qat_model = quantize_for_training(
            model, weight_bits=spec.weight_bits, activation_bits=spec.activation_bits,
            weight_granularity=spec.weight_granularity, calibration_data=x_calibration,
            skip_layers=skip_layers)
    else:
        qat_model = quantize_folded_for_training(model, schedule, spec=spec,
                                                 calibration_data=x_calibration, skip_layers=skip_layers)
    unquantized = float_kernels(qat_model)
    if unquantized:
        raise TfquantError(
            f"QAT left the kernels of {', '.join(unquantized)} without a weight fake quant, "
            "so the model would not be what it says")
    start = None
    if start_data is not None:
        start = keras_accuracy(qat_model, start_data[0], start_data[1], batch_size=start_data[2])
    probabilities = outputs.outputs_probabilities(model, np.asarray(x_calibration, np.float32))
    extra = prepare(qat_model, not probabilities) if prepare is not None else []
    result = finetune(
        qat_model, schedule, x_train, y_train, epochs=epochs, seed=seed, log_dir=log_dir,
        checkpoint_dir=checkpoint_dir, verbose=verbose, from_logits=not probabilities,
        callbacks=extra,
    )
    n_bn = 0
    if reestimate:  # a seeded random subset: training data sorted by class must not bias it
        pick = np.random.default_rng(seed).permutation(len(x_train))[:DEFAULT_REESTIMATION_EXAMPLES]
        n_bn = reestimate_batch_norm(qat_model, np.asarray(x_train, np.float32)[np.sort(pick)])
    return TrainedQat(qat_model=qat_model, finetune=result, from_logits=not probabilities,
                      bn_reestimated=n_bn, start_accuracy=start)


def export_and_compare(
    qat_model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 256,
    runtime: "qtypes.Runtime | str" = qtypes.Runtime.XNNPACK,
) -> tuple[bytes, FidelityReport]:
    """The int8 .tflite of a fine-tuned QAT model and its agreement with it on ``(x, y)``.

    :func:`~tfquant.qat.export_tflite`, then :func:`tfquant.evaluation.fidelity.compare`
    (which validates ``x`` and ``y``).

    Raises:
      TfquantError: the model does not export, or LiteRT cannot run the export.
    """
    tflite = export_tflite(qat_model)
    return tflite, compare(qat_model, tflite, x, y, batch_size=batch_size, runtime=runtime)


def export_run(
    trained: TrainedQat,
    path: "str | os.PathLike[str]",
    x: np.ndarray,
    y: np.ndarray,
    *,
    record: dict[str, Any],
    started: float,
    batch_size: int = 256,
    runtime: "qtypes.Runtime | str" = qtypes.Runtime.XNNPACK,
) -> tuple[bytes, FidelityReport]:
    """:func:`export_and_compare` a :func:`train_qat` run, then write the .tflite at ``path``
    and its ``.qat.json`` beside it.

    The :class:`QatRecord` is ``record`` (what the caller knows: model, data, spec, schedule,
    ...) plus what the run measured: ``from_logits``, ``finetune``, ``train_seconds`` (since
    ``started``, a :func:`time.perf_counter` value), the .tflite's accuracy on ``(x, y)`` and
    the fidelity report.

    Raises:
      TfquantError: as :func:`export_and_compare`.
    """
    from pathlib import Path

    from tfquant.io_utils import write_bytes_atomic, write_text_atomic

    tflite, report = export_and_compare(trained.qat_model, x, y, batch_size=batch_size, runtime=runtime)
    path = Path(path)
    write_bytes_atomic(path, tflite)
    write_text_atomic(path.with_suffix(".qat.json"), QatRecord(
        **record, from_logits=trained.from_logits, train_seconds=round(time.perf_counter() - started, 1),
        finetune=json_ready(trained.finetune), qat_accuracy=report.tflite_accuracy,
        accuracy_data=f"{report.n_examples} eval examples", fidelity=json_ready(report)).to_json())
    return tflite, report


def _split_held_out(
    x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(x_fit, y_fit, x_held, y_held): 10% (at most 1000) held out when N >= 100."""
    if len(x) < MIN_TRAIN_FOR_HOLD_OUT:
        return x, y, None, None
    n_held = min(MAX_HELD_OUT, max(1, int(round(HELD_OUT_FRACTION * len(x)))))
    order = np.random.default_rng(seed).permutation(len(x))
    held, fit = np.sort(order[:n_held]), np.sort(order[n_held:])
    return x[fit], y[fit], x[held], y[held]


def _check_skip_layers(skip_layers: Sequence[str], bit_budget: float | None) -> None:
    """Refuses ``skip_layers`` with ``bit_budget`` (the names themselves, and a string
    passed instead of a list, are checked by :func:`~tfquant.qat.quantize_for_training`)."""
    if len(skip_layers) and bit_budget is not None:
        raise TfquantError(
            "--skip_layers and --bit_budget cannot be combined (the per-layer bit allocation "
            "assumes every Conv/Dense kernel is quantized); drop one of them")


def run_qat(
    model: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_calibration: np.ndarray,
    *,
    epochs: int,
    weight_bits: int = 8,
    weight_granularity: str = "per_channel",
    seed: int = 0,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    finetune_schedule: "ScheduleName | str" = ScheduleName.AUTO,
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    log_dir: "str | os.PathLike[str] | None" = None,
    checkpoint_dir: "str | os.PathLike[str] | None" = None,
    original: Any = None,
    model_path: "str | os.PathLike[str] | None" = None,
    verbose: bool = True,
    bit_budget: float | None = None,
    bit_allocation: str = "qbitopt",
    skip_layers: Sequence[str] = (),
) -> QatOutcome:
    """Quantization-aware fine-tuning of a float classifier, int8 export, and a check against float.

    1. :func:`train_qat`: activation ranges calibrated (max) on ``x_calibration``, the
       schedule (see the module docstring for ``auto``), ``auto``: BN statistics
       re-estimated;
    2. :func:`~tfquant.qat.export_tflite`;
    3. accuracy of the float model and of the .tflite (LiteRT) on ``(x_eval, y_eval)`` (with
       :func:`export_and_compare`'s fidelity report), or, without eval data, on 10% of the
       training data (at most 1000 examples, seeded) held out of the fine-tune (N >= 100;
       otherwise no check). When the .tflite is more than :data:`FAR_BELOW_FLOAT_POINTS` =
       5 points below float a one-line warning is printed (stderr) and recorded.

    Args:
      model: The trained float tf_keras model (not modified).
      x_train, y_train: Fine-tuning inputs (float, preprocessed) and integer labels.
      x_calibration: Inputs for the initial activation ranges (no labels needed).
      epochs: Fine-tuning epochs.
      weight_bits: 8, 4 or 2 (sub-8-bit weights are int8 values on the b-bit grid).
      weight_granularity: ``per_channel`` or ``per_tensor``.
      seed: Seed of the fine-tune and of the held-out split.
      learning_rate: LR the float model was trained with (overrides everything else).
      batch_size: Fine-tuning batch size; None: ``original``'s, else 128.
      finetune_schedule: ``auto`` (default), ``nvidia`` or ``whitepaper``.
      x_eval, y_eval: Labelled data for the fidelity check and the float comparison.
      log_dir, checkpoint_dir: TensorBoard scalars / per-epoch checkpoints (see finetune).
      original: How the float model was trained (a zoo :class:`TrainConfig`), used when
        ``learning_rate`` is None.
      model_path: The model's file, whose saved optimizer gives the LR when neither
        ``learning_rate`` nor ``original`` does
        (:func:`~tfquant.qat.original.saved_learning_rate`); else 1e-3.
      verbose: Print progress lines.
      bit_budget: Average weight bits over all kernels (parameter-weighted, met exactly);
        each layer gets its own b in {2..8} by ``bit_allocation`` (``fixed``, ``oneshot``,
        ``qbitopt``; :mod:`tfquant.qat.bit_allocation`), ``weight_bits`` is ignored.
      skip_layers: Names of layers to leave unquantized: they run in float in the QAT model
        and in the .tflite (the export then allows float ops). For layers QAT cannot
        quantize (LayerNormalization, MultiHeadAttention, Conv1D, custom layers: the error
        names them), at the cost of float ops (and the quantize / dequantize around them).

    Returns:
      A :class:`QatOutcome`.

    Raises:
      TfquantError: bad arguments or data, an unknown schedule, and the errors of the stages.
    """
    if (x_eval is None) != (y_eval is None):
        raise TfquantError("x_eval and y_eval go together; pass both or neither")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TfquantError(f"epochs must be a positive integer, got {epochs!r}; e.g. 2")
    outputs.check_classifier(model)
    _check_skip_layers(skip_layers, bit_budget)
    orig = original_training(learning_rate, original, model_path, batch_size)
    plan = None
    if bit_budget is not None:
        from tfquant.qat.bit_allocation import BitAllocationPlan

        plan = BitAllocationPlan(bit_budget, bit_allocation, seed=seed)
        weight_bits = plan.annotation_bits
    schedule, reestimate = make_schedule(finetune_schedule, orig, weight_bits=weight_bits)
    x_train = np.asarray(x_train)
    y_train = np.asarray(y_train)
    if len(x_train) != len(y_train):
        raise TfquantError(
            f"x_train has {len(x_train)} examples but y_train {len(y_train)} labels; pass "
            "matching arrays"
        )
    if x_eval is None:
        x_fit, y_fit, x_check, y_check = _split_held_out(x_train, y_train, seed)
        check_what = (
            f"{len(x_check)} held-out training examples" if x_check is not None else None
        )
    else:
        x_fit, y_fit = x_train, y_train
        x_check, y_check = np.asarray(x_eval, np.float32), np.asarray(y_eval)
        check_what = f"{len(x_check)} eval examples"
    if verbose:
        print(
            f"[qat] original learning rate {orig.learning_rate:.3g} "
            f"({orig.source.replace('_', ' ')}), "
            f"schedule {schedule.name}: {schedule.optimizer} lr {schedule.learning_rate:.3g}, "
            f"batch {schedule.batch_size}",
            flush=True,
        )
    start = time.perf_counter()
    trained = train_qat(
        model, x_fit, y_fit, x_calibration, schedule=schedule, epochs=epochs,
        spec=QatSpec(weight_bits=weight_bits, weight_granularity=weight_granularity), seed=seed,
        reestimate=reestimate, log_dir=log_dir, checkpoint_dir=checkpoint_dir, verbose=verbose,
        prepare=(plan.prepare(model, x_fit, y_fit, epochs * -(-len(x_fit) // schedule.batch_size))
                 if plan is not None else None),
        skip_layers=skip_layers,
    )
    qat_model = trained.qat_model
    tflite = export_tflite(qat_model, allow_float_ops=bool(skip_layers))
    train_seconds = time.perf_counter() - start
    fidelity = None
    float_acc = qat_acc = None
    if x_check is not None:
        from tfquant.evaluation import evaluate_accuracy

        if x_eval is not None:
            fidelity = compare(qat_model, tflite, x_check, y_check)  # validates x_eval, y_eval
            qat_acc = fidelity.tflite_accuracy
            if verbose:
                print(fidelity.summary(), flush=True)
        else:
            qat_acc = float(evaluate_accuracy(tflite, x_check, y_check).accuracy)
        float_acc = keras_accuracy(model, np.asarray(x_check, np.float32), y_check)
    warnings: list[str] = []
    if float_acc is not None and qat_acc is not None:
        drop = 100.0 * (float_acc - qat_acc)
        if drop > FAR_BELOW_FLOAT_POINTS:
            warnings.append(
                f"warning: the QAT .tflite reaches top-1 {qat_acc:.4f}, {drop:.1f} points below "
                f"float ({float_acc:.4f}) on {check_what}; fine-tune longer (--epochs), with a "
                "larger --original_learning_rate, or use more weight bits"
            )
    for line in warnings:
        print(line, file=sys.stderr, flush=True)
    record = QatRecord(
        weight_bits=weight_bits,
        weight_granularity=str(getattr(weight_granularity, "value", weight_granularity)),
        epochs=epochs,
        seed=seed,
        train_examples=int(len(x_fit)),
        held_out_examples=int(len(x_check)) if x_eval is None and x_check is not None else 0,
        num_calibration_examples=int(len(x_calibration)),
        finetune_recipe_choice=str(ScheduleName.parse(finetune_schedule)),
        finetune_recipe=schedule.to_dict(),
        original_learning_rate=orig.learning_rate,
        learning_rate_source=orig.source,
        from_logits=trained.from_logits,
        bn_reestimated=trained.bn_reestimated,
        train_seconds=round(train_seconds, 1),
        finetune=json_ready(trained.finetune),
        float_accuracy=float_acc,
        qat_accuracy=qat_acc,
        accuracy_data=check_what,
        warnings=tuple(warnings),
        fidelity=json_ready(fidelity) if fidelity is not None else None,
        skip_layers=tuple(skip_layers),  # a list of names: quantize_for_training refused a string
    )
    if plan is not None:
        record = record.replace(**plan.record_fields(qat_model))
        if verbose:
            print(f"[qat] per-layer weight bits ({plan.name}, mean {record.mean_weight_bits:.4f} for a "
                  f"budget of {bit_budget:g}): {record.layer_bits}", flush=True)
    return QatOutcome(
        tflite=tflite, record=record, qat_model=qat_model, finetune=trained.finetune,
        fidelity=fidelity, float_accuracy=float_acc, qat_accuracy=qat_acc,
        warnings=tuple(warnings),
    )
