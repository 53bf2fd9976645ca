"""Top-1 accuracy and float logits of a .tflite classifier, run in batches in LiteRT."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterable

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfquant.errors import TfquantError
from tfquant.evaluation.interpreter import ModelLike, describe_model, load_interpreter
from tfquant.evaluation.runner import BatchRunner, check_batch_size
from tfquant.progress import progress
from tfquant.qtypes import Runtime


@dataclasses.dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy over every example.

    Attributes:
      accuracy: ``n_correct / n_examples``.
      n_examples: Examples evaluated (all of ``x``).
      n_correct: Examples whose argmax logit equals the label.
      seconds: Wall time of the batched inference loop (input quantization, ``invoke``,
        output readback), excluding model loading.
      batch_size: Batch size the interpreter actually ran at.
      requested_batch_size: Batch size asked for.
      batch_fallback: Why the model ran at its own batch size instead (``None``: no fallback).
    """

    accuracy: float
    n_examples: int
    n_correct: int
    seconds: float
    batch_size: int
    requested_batch_size: int = 0
    batch_fallback: str | None = None

    @property
    def examples_per_second(self) -> float:
        return self.n_examples / self.seconds if self.seconds > 0 else float("inf")


def _interpreter_and_label(
    model: "ModelLike | Interpreter", runtime: Runtime | str, num_threads: int,
    delegate_path: str | None,
) -> tuple[Interpreter, str]:
    if isinstance(model, Interpreter):
        try:
            model.allocate_tensors()  # a no-op when already allocated; a fresh one needs it
        except RuntimeError as e:
            raise TfquantError(
                f"LiteRT cannot prepare the given interpreter ({' '.join(str(e).split())[:200]}); "
                "load the model with tfquant.evaluation.load_interpreter"
            ) from None
        return model, "the model"
    interpreter = load_interpreter(
        model, runtime=runtime, num_threads=num_threads, delegate_path=delegate_path
    )
    return interpreter, describe_model(model)


def _batches(
    runner: BatchRunner, x: np.ndarray, batch_size: int, what: str, model: object
) -> Iterable[np.ndarray]:
    """``runner.run`` with progress on stderr (a bar on a terminal; see :mod:`tfquant.progress`)."""
    step = runner.native_batch if runner.fallback_reason else min(batch_size, len(x))
    if isinstance(model, (str, os.PathLike)):
        name = os.path.basename(os.fspath(model))
    else:
        name = "the model" if isinstance(model, Interpreter) else describe_model(model)
    return progress(
        runner.run(x, batch_size), total=-(-len(x) // step),
        desc=f"{what} {name} ({len(x)} examples)", unit="batch",
    )


def _check_labels(y: Any, n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        raise TfquantError(
            f"y has shape {y.shape} (one-hot?); pass integer class labels of shape ({n},), "
            "e.g. y.argmax(axis=1)"
        )
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TfquantError(
            f"y must be a 1-D array of integer class labels, got dtype {y.dtype} shape {y.shape}; "
            "convert it with y.astype('int64')"
        )
    if len(y) != n:
        raise TfquantError(
            f"x has {n} examples but y has {len(y)} labels; pass matching x and y"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise TfquantError(
            f"labels span [{lo}, {hi}] but the model outputs {num_classes} classes; "
            "evaluate on the dataset the model was trained for"
        )
    return y


def predict(
    model_or_interpreter: "ModelLike | Interpreter",
    x: np.ndarray,
    *,
    batch_size: int = 256,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    delegate_path: str | None = None,
) -> np.ndarray:
    """Float outputs (logits) of the model for every example of ``x``.

    Quantized outputs are dequantized, ``logits = (q - z) · Δ``; quantized inputs are
    quantized from ``x`` with the input's scale and zero point.

    Args:
      model_or_interpreter: A .tflite path or bytes, or an interpreter from
        :func:`load_interpreter` (then ``runtime``, ``num_threads`` and ``delegate_path`` are
        not used).
      x: Float examples, shape ``(N, *model_input_shape[1:])`` (NHWC images).
      batch_size: Examples per ``invoke``.
      runtime: See :func:`load_interpreter`.
      num_threads: See :func:`load_interpreter`.
      delegate_path: See :func:`load_interpreter`.

    Returns:
      float32 array of shape ``(N, *output_shape[1:])``.
    """
    check_batch_size(batch_size)
    interpreter, label = _interpreter_and_label(model_or_interpreter, runtime, num_threads, delegate_path)
    runner = BatchRunner(interpreter, label=label)
    x = runner.check_examples(x)
    runner.prepare(x, batch_size)
    out: np.ndarray | None = None
    start = 0
    for chunk in _batches(runner, x, batch_size, "predict", model_or_interpreter):
        if out is None:
            out = np.empty((len(x), *chunk.shape[1:]), dtype=np.float32)
        out[start:start + len(chunk)] = chunk
        start += len(chunk)
    assert out is not None and start == len(x)
    return out


def evaluate_accuracy(
    model: "ModelLike | Interpreter",
    x: np.ndarray,
    y: np.ndarray,
    *,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    batch_size: int = 256,
    delegate_path: str | None = None,
) -> AccuracyResult:
    """Top-1 accuracy of a classifier over all of ``(x, y)``, batched in LiteRT.

    ``correct_i = [argmax_k logits_ik == y_i]``, ``accuracy = Σ correct_i / N``. The input's
    batch dimension is resized to ``batch_size`` (and once more for a last partial batch);
    a model that refuses the resize runs at its own batch size and the result says why.

    Args:
      model: A .tflite path or bytes, or an interpreter from :func:`load_interpreter`.
      x: Float examples ``(N, H, W, C)`` preprocessed as in training.
      y: Integer labels ``(N,)``.
      runtime: ``xnnpack``, ``builtin`` or ``delegate`` (see :func:`load_interpreter`).
      num_threads: Interpreter threads.
      batch_size: Examples per ``invoke``.
      delegate_path: External delegate library for ``runtime='delegate'``.

    Raises:
      TfquantError: empty ``x``, ``len(x) != len(y)``, per-example shape different from the
        model's input, labels out of range, or an output that is not ``(N, num_classes)``.
    """
    check_batch_size(batch_size)
    interpreter, label = _interpreter_and_label(model, runtime, num_threads, delegate_path)
    runner = BatchRunner(interpreter, label=label)
    x = runner.check_examples(x)
    y_arr = np.asarray(y)
    if y_arr.ndim >= 1 and len(y_arr) != len(x):
        raise TfquantError(f"x has {len(x)} examples but y has {len(y_arr)} labels; pass matching x and y")
    runner.prepare(x, batch_size)
    out_shape = runner.output_shape()
    if len(out_shape) != 2 or out_shape[1] < 2:
        raise TfquantError(
            f"{label} outputs shape {out_shape}, not (batch, num_classes); evaluate a classifier "
            "whose last layer gives one logit per class"
        )
    labels = _check_labels(y_arr, len(x), out_shape[1])
    start = time.perf_counter()
    n_correct = 0
    offset = 0
    for logits in _batches(runner, x, batch_size, "evaluate", model):
        n_correct += int(np.count_nonzero(logits.argmax(axis=1) == labels[offset:offset + len(logits)]))
        offset += len(logits)
    seconds = time.perf_counter() - start
    assert offset == len(x)
    return AccuracyResult(
        accuracy=n_correct / len(x),
        n_examples=len(x),
        n_correct=n_correct,
        seconds=seconds,
        batch_size=runner.native_batch if runner.fallback_reason else min(batch_size, len(x)),
        requested_batch_size=batch_size,
        batch_fallback=runner.fallback_reason,
    )


def convert_and_evaluate(
    model: Any,
    recipe: Any,
    out_path: str | os.PathLike[str],
    x: Any,
    y: Any,
    *,
    calibration_data: Any = None,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    batch_size: int = 256,
) -> tuple[bytes, AccuracyResult]:
    """A model's .tflite made, kept and measured: :func:`tfquant.convert.convert_and_save` at
    ``out_path`` (calibration data used only when the recipe calibrates), then
    :func:`evaluate_accuracy` on ``(x, y)`` in LiteRT.

    Raises:
      TfquantError: as the conversion, the save and the evaluation.
    """
    from tfquant.convert import convert_and_save

    tflite = convert_and_save(model, recipe, out_path, calibration_data=calibration_data)
    return tflite, evaluate_accuracy(out_path, x, y, runtime=runtime, num_threads=num_threads, batch_size=batch_size)
