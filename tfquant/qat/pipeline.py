"""The whole QAT flow for one model, as ``python -m tfquant qat`` runs it: :func:`run_qat`.

quantize_for_training (calibrated activation ranges) -> finetune (the chosen recipe, the loss
matching the model's output) -> BN re-estimation (``auto``) -> export_tflite -> accuracy of
the .tflite in LiteRT against float, a warning when it is far below -> a JSON-ready record.

Learning rate of the float training, which the recipes scale (priority, first wins):

1. ``learning_rate`` given (the CLI's ``--original_learning_rate``);
2. ``original`` given (a zoo model's :class:`tfquant.models.train.TrainConfig`);
3. the optimizer saved in the model file (``model_path``; :func:`saved_learning_rate`);
4. :data:`DEFAULT_LEARNING_RATE` = 1e-3, Keras's Adam default: what a user who wrote
   ``optimizer="adam"`` trained with, the most common case; the recipes take a fraction of
   it, so an LR off by a few times only scales a fine-tune of a few hundred steps.

Fine-tuning recipes (``finetune_recipe``):

* ``auto`` (the default) -- NVIDIA's recipe (:func:`~tfquant.qat.nvidia_recipe`:
  Adam, cosine, LR 1% of the original) followed by batch-norm re-estimation
  (:func:`~tfquant.qat.bn_reestimate.reestimate_batch_norm`); below 8-bit weights
  the learning rate is :data:`LOW_BIT_LR_FRACTION` = 10% of the original (10x NVIDIA's).
  Measured with ``epochs=2`` on small models outside the zoo (experiments/qat_outside_zoo.py,
  BUILD_NOTES): a short fine-tune leaves each BN's moving statistics those of the float
  network (momentum 0.99 moves them ~20% in 22 steps) while 4-bit kernels shift every
  channel; re-estimating them is what brings 4-bit back (digits SE-ResNet: 0.808 -> 0.982,
  float 0.992), the larger LR adapts the weights to the coarse grid in the few steps there are.
* ``nvidia`` / ``whitepaper`` -- the presets as they are (no re-estimation), what the zoo
  experiments use.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant.qat import outputs
from tfquant.qat.annotate import quantize_for_training
from tfquant.qat.bn_reestimate import (
    DEFAULT_REESTIMATION_EXAMPLES,
    reestimate_batch_norm,
)
from tfquant.qat.export import export_tflite
from tfquant.evaluation.fidelity import FidelityReport, compare
from tfquant.qat.finetune import FinetuneResult, finetune
from tfquant.qat.recipes import FinetuneRecipe, nvidia_recipe, whitepaper_recipe
from tfquant.errors import TfquantError

DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_BATCH_SIZE = 128
LOW_BIT_LR_FRACTION = 0.1
FAR_BELOW_FLOAT_POINTS = 5.0
HELD_OUT_FRACTION = 0.1
MAX_HELD_OUT = 1000
MIN_TRAIN_FOR_HOLD_OUT = 100
FINETUNE_RECIPES = ("auto", "nvidia", "whitepaper")


@dataclasses.dataclass(frozen=True)
class _Original:
    """The float training a recipe is a fraction of (learning rate and batch size)."""

    learning_rate: float
    batch_size: int


@dataclasses.dataclass(frozen=True)
class QatOutcome:
    """What :func:`run_qat` produced.

    Attributes:
      tflite: The int8 .tflite (float I/O), without metadata.
      record: JSON-ready description of the run (the CLI writes it as ``OUT.qat.json``).
      qat_model: The fine-tuned QAT Keras model.
      finetune: The fine-tune's :class:`~tfquant.qat.FinetuneResult`.
      fidelity: QAT Keras vs .tflite on the eval data (None without eval data).
      float_accuracy: Top-1 of the float model on the check data (eval data, else held-out
        training data; None when neither exists).
      qat_accuracy: Top-1 of the .tflite (LiteRT) on the same data.
      warnings: One-line warnings (also in ``record["warnings"]``).
    """

    tflite: bytes
    record: dict[str, Any]
    qat_model: keras.Model
    finetune: FinetuneResult
    fidelity: FidelityReport | None
    float_accuracy: float | None
    qat_accuracy: float | None
    warnings: tuple[str, ...]


def _lr_from_config(value: Any) -> float | None:
    """A learning rate from a serialized optimizer's ``learning_rate`` (a number or a schedule)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        config = value.get("config", value)
        if isinstance(config, Mapping):
            for key in ("initial_learning_rate", "learning_rate"):
                if key in config:
                    return _lr_from_config(config[key])
            values = config.get("values")
            if isinstance(values, (list, tuple)) and values:
                return _lr_from_config(values[0])
            if "value" in config:  # a serialized tensor / variable
                return _lr_from_config(config["value"])
    return None


def _lr_from_optimizer(optimizer: Any) -> float | None:
    """The LR of a serialized optimizer: a name (its Keras default) or a config dict."""
    if optimizer is None:
        return None
    if isinstance(optimizer, str):
        try:
            return float(keras.backend.get_value(keras.optimizers.get(optimizer).learning_rate))
        except (ValueError, TypeError):
            return None
    if isinstance(optimizer, Mapping):
        config = optimizer.get("config", {})
        if not isinstance(config, Mapping):
            return None
        for key in ("learning_rate", "lr"):
            if key in config:
                return _lr_from_config(config[key])
    return None


def _saved_model_training_config(path: Path) -> Any:
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = path / "keras_metadata.pb"
    if not metadata.is_file():
        return None
    saved = saved_metadata_pb2.SavedMetadata()
    saved.ParseFromString(metadata.read_bytes())
    for node in saved.nodes:
        if node.node_path == "root":
            return json.loads(node.metadata).get("training_config")
    return None


def saved_learning_rate(path: "str | os.PathLike[str]") -> float | None:
    """The learning rate recorded with the optimizer in a saved Keras model, without loading it.

    Reads the compile / training config the file keeps: ``.keras`` (``config.json`` ->
    ``compile_config.optimizer``), ``.h5`` (the ``training_config`` attribute ->
    ``optimizer_config``) or a Keras SavedModel directory (``keras_metadata.pb``, root node
    -> ``training_config``). A schedule gives its initial learning rate
    (``initial_learning_rate``; a piecewise-constant schedule its first value); an optimizer
    saved by name (``compile(optimizer="adam")``) gives that optimizer's Keras default.

    Args:
      path: A ``.keras`` / ``.h5`` / ``.hdf5`` file or a SavedModel directory.

    Returns:
      The learning rate, or None when the file records no optimizer (saved uncompiled, with
      ``include_optimizer=False``, a plain TF SavedModel) or one whose LR cannot be read.

    Raises:
      TfquantError: ``path`` does not exist or is not a readable Keras model file.
    """
    path = Path(path)
    if not path.exists():
        raise TfquantError(f"model file {str(path)!r} does not exist; pass the saved model's path")
    try:
        if path.is_dir():
            training = _saved_model_training_config(path)
            return _lr_from_optimizer((training or {}).get("optimizer_config"))
        if path.suffix.lower() in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("training_config")
            if raw is None:
                return None
            training = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            return _lr_from_optimizer(training.get("optimizer_config"))
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
        return _lr_from_optimizer((config.get("compile_config") or {}).get("optimizer"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError) as e:
        raise TfquantError(
            f"cannot read the training config of {str(path)!r} ({type(e).__name__}: {e}); "
            "pass a .keras / .h5 file or a Keras SavedModel directory, or give "
            "--original_learning_rate"
        ) from None


def _original(
    learning_rate: float | None,
    original: Any,
    model_path: "str | os.PathLike[str] | None",
    batch_size: int | None,
) -> tuple[_Original, str]:
    if learning_rate is not None:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not (
            learning_rate > 0 and np.isfinite(learning_rate)
        ):
            raise TfquantError(
                f"learning_rate must be a positive number, got {learning_rate!r}; pass the LR "
                "the float model was trained with"
            )
        lr, source = float(learning_rate), "given"
    elif original is not None:
        lr, source = float(original.learning_rate), "zoo"
    else:
        saved = saved_learning_rate(model_path) if model_path is not None else None
        if saved is not None and saved > 0:
            lr, source = saved, "saved_optimizer"
        else:
            lr, source = DEFAULT_LEARNING_RATE, "default"
    if batch_size is None:
        batch_size = int(getattr(original, "batch_size", DEFAULT_BATCH_SIZE))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TfquantError(f"batch_size must be a positive integer, got {batch_size!r}; e.g. 128")
    return _Original(learning_rate=lr, batch_size=batch_size), source


def make_recipe(name: str, original: Any, *, weight_bits: int) -> tuple[FinetuneRecipe, bool]:
    """Recipe ``name`` for a float training ``original``, and whether BN is re-estimated after.

    ``auto``: :func:`~tfquant.qat.nvidia_recipe` with, below 8-bit weights, the
    learning rate ``LOW_BIT_LR_FRACTION · original.learning_rate``; BN re-estimated after
    fine-tuning. ``nvidia`` / ``whitepaper``: the presets, no re-estimation.

    Raises:
      TfquantError: an unknown name.
    """
    if name == "auto":
        recipe = nvidia_recipe(original)
        if weight_bits < 8:
            recipe = recipe.replace(
                name="auto", learning_rate=LOW_BIT_LR_FRACTION * original.learning_rate
            )
        else:
            recipe = recipe.replace(name="auto")
        return recipe, True
    if name == "nvidia":
        return nvidia_recipe(original), False
    if name == "whitepaper":
        return whitepaper_recipe(original, bn_correction=False), False
    raise TfquantError(
        f"unknown fine-tuning recipe {name!r}; choose one of {', '.join(FINETUNE_RECIPES)}"
    )


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


def _float_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    p = np.asarray(model.predict(x, batch_size=256, verbose=0))
    return float(np.mean(p.argmax(axis=-1) == y))


def _json(value: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(value), default=str))


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
    finetune_recipe: str = "auto",
    x_eval: np.ndarray | None = None,
    y_eval: np.ndarray | None = None,
    log_dir: "str | os.PathLike[str] | None" = None,
    checkpoint_dir: "str | os.PathLike[str] | None" = None,
    original: Any = None,
    model_path: "str | os.PathLike[str] | None" = None,
    verbose: bool = True,
) -> QatOutcome:
    """Quantization-aware fine-tuning of a float classifier, int8 export, and a check against float.

    1. :func:`~tfquant.qat.quantize_for_training` with activation ranges calibrated
       (max) on ``x_calibration``;
    2. :func:`~tfquant.qat.finetune` with the recipe (see the module docstring for
       ``auto``), cross-entropy on logits or on probabilities as the model outputs
       (:func:`~tfquant.qat.outputs.outputs_probabilities`);
    3. ``auto``: BN statistics re-estimated on (up to 1024) training examples in the QAT graph;
    4. :func:`~tfquant.qat.export_tflite`;
    5. accuracy of the float model and of the .tflite (LiteRT) on ``(x_eval, y_eval)``, or,
       without eval data, on 10% of the training data (at most 1000 examples, seeded) held out
       of the fine-tune (N >= 100; otherwise no check). When the .tflite is more than
       :data:`FAR_BELOW_FLOAT_POINTS` = 5 points below float a one-line warning is printed
       (stderr) and recorded.

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
      finetune_recipe: ``auto`` (default), ``nvidia`` or ``whitepaper``.
      x_eval, y_eval: Labelled data for the fidelity check and the float comparison.
      log_dir, checkpoint_dir: TensorBoard scalars / per-epoch checkpoints (see finetune).
      original: How the float model was trained (a zoo :class:`TrainConfig`), used when
        ``learning_rate`` is None.
      model_path: The model's file, whose saved optimizer gives the LR when neither
        ``learning_rate`` nor ``original`` does (:func:`saved_learning_rate`); else
        :data:`DEFAULT_LEARNING_RATE`.
      verbose: Print progress lines.

    Returns:
      A :class:`QatOutcome`.

    Raises:
      TfquantError: bad arguments or data, an unknown recipe, and the errors of the stages.
    """
    if (x_eval is None) != (y_eval is None):
        raise TfquantError("x_eval and y_eval go together; pass both or neither")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise TfquantError(f"epochs must be a positive integer, got {epochs!r}; e.g. 2")
    orig, lr_source = _original(learning_rate, original, model_path, batch_size)
    recipe, reestimate = make_recipe(finetune_recipe, orig, weight_bits=weight_bits)
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
            f"({lr_source.replace('_', ' ')}), "
            f"recipe {recipe.name}: {recipe.optimizer} lr {recipe.learning_rate:.3g}, batch "
            f"{recipe.batch_size}",
            flush=True,
        )
    start = time.perf_counter()
    qat_model = quantize_for_training(  # validates the calibration data against the model
        model,
        weight_bits=weight_bits,
        weight_granularity=weight_granularity,
        calibration_data=x_calibration,
    )
    probabilities = outputs.outputs_probabilities(model, np.asarray(x_calibration, np.float32))
    result = finetune(
        qat_model, recipe, x_fit, y_fit, epochs=epochs, seed=seed, log_dir=log_dir,
        checkpoint_dir=checkpoint_dir, verbose=verbose, from_logits=not probabilities,
    )
    n_bn = 0
    if reestimate:  # a seeded random subset: training data sorted by class must not bias it
        pick = np.random.default_rng(seed).permutation(len(x_fit))[:DEFAULT_REESTIMATION_EXAMPLES]
        n_bn = reestimate_batch_norm(qat_model, np.asarray(x_fit, np.float32)[np.sort(pick)])
    tflite = export_tflite(qat_model)
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
        float_acc = _float_accuracy(model, np.asarray(x_check, np.float32), y_check)
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
    record: dict[str, Any] = {
        "weight_bits": weight_bits,
        "activation_bits": 8,
        "weight_granularity": str(getattr(weight_granularity, "value", weight_granularity)),
        "epochs": epochs,
        "seed": seed,
        "train_examples": int(len(x_fit)),
        "held_out_examples": int(len(x_check)) if x_eval is None and x_check is not None else 0,
        "num_calibration_examples": int(len(x_calibration)),
        "finetune_recipe_choice": finetune_recipe,
        "finetune_recipe": recipe.to_dict(),
        "original_learning_rate": orig.learning_rate,
        "learning_rate_source": lr_source,
        "from_logits": not probabilities,
        "bn_reestimated": n_bn,
        "train_seconds": round(train_seconds, 1),
        "finetune": _json(result),
        "float_accuracy": float_acc,
        "qat_accuracy": qat_acc,
        "accuracy_data": check_what,
        "warnings": warnings,
    }
    if fidelity is not None:
        record["fidelity"] = _json(fidelity)
    return QatOutcome(
        tflite=tflite, record=record, qat_model=qat_model, finetune=result, fidelity=fidelity,
        float_accuracy=float_acc, qat_accuracy=qat_acc, warnings=tuple(warnings),
    )
