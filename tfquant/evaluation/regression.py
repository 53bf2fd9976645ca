"""Error of a .tflite whose output is not class scores (a regressor), run in batches in LiteRT.

Top-1 needs one output of class scores, (batch, K >= 2). For any other model -- one value per
example, several targets, a map or an image out -- ``evaluate`` compares every output value
ŷ with its float target y over all N examples (D values each):

    MAE = Σ|ŷ - y| / (N·D),   RMSE = sqrt(Σ(ŷ - y)² / (N·D)),   max |ŷ - y|,

accumulated in float64 batch by batch (outputs dequantized as :class:`BatchRunner` reads
them). The targets must have the model output's D values per example, in any shape
(``(N,)`` for a ``(batch, 1)`` output, ``(N, H, W, C)`` for an image).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

import numpy as np

from tfquant.errors import TfquantError
from tfquant.evaluation.accuracy import _batches, _interpreter_and_label
from tfquant.evaluation.interpreter import ModelLike
from tfquant.evaluation.runner import BatchRunner, check_batch_size
from tfquant.qtypes import Runtime


@dataclasses.dataclass(frozen=True)
class RegressionResult:
    """Error of the model's outputs against float targets, over every example.

    Attributes:
      mae: mean |ŷ - y| over all N·D output values.
      rmse: sqrt of the mean (ŷ - y)².
      max_abs_error: the largest |ŷ - y|.
      n_examples: N.
      values_per_example: D, the model output's values per example.
      seconds: wall time of the batched inference loop.
      batch_size: batch size the interpreter actually ran at.
      batch_fallback: why the model ran at its own batch size (None: no fallback).
    """

    mae: float
    rmse: float
    max_abs_error: float
    n_examples: int
    values_per_example: int
    seconds: float
    batch_size: int
    batch_fallback: str | None = None


def is_classifier_output(shape: Sequence[int]) -> bool:
    """True for one output of class scores, (batch, K >= 2): the shape top-1 is measured on."""
    return len(shape) == 2 and int(shape[1]) >= 2


def evaluate_regression(
    model: ModelLike,
    x: np.ndarray,
    y: np.ndarray,
    *,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    batch_size: int = 256,
    delegate_path: str | None = None,
) -> RegressionResult:
    """MAE, RMSE and max |ŷ - y| of a model's outputs over all of ``(x, y)``, batched in LiteRT.

    Raises:
      TfquantError: empty ``x``, a per-example shape different from the model input, targets
        that are not numbers, not one row per example or not the output's size per example.
    """
    check_batch_size(batch_size)
    interpreter, label = _interpreter_and_label(model, runtime, num_threads, delegate_path)
    runner = BatchRunner(interpreter, label=label)
    x = runner.check_examples(x)
    targets = np.asarray(y)
    if targets.dtype.kind not in "iuf" or targets.ndim == 0 or len(targets) != len(x):
        raise TfquantError(
            f"targets have dtype {targets.dtype} and shape {targets.shape} for {len(x)} examples; "
            "pass one numeric target row per example"
        )
    runner.prepare(x, batch_size)
    per_example = math.prod(int(d) for d in runner.output_shape()[1:])
    targets = targets.reshape(len(x), -1) if targets.size else targets.reshape(len(x), 0)
    if targets.shape[1] != per_example:
        raise TfquantError(
            f"{label} outputs {per_example} value(s) per example (shape {runner.output_shape()}) but the "
            f"targets have {targets.shape[1]} (shape {np.shape(y)}); pass targets shaped like the "
            "model output (or integer class labels for a classifier)"
        )
    start = time.perf_counter()
    abs_sum = sq_sum = 0.0
    worst = 0.0
    offset = 0
    for out in _batches(runner, x, batch_size, "evaluate", model):
        n = len(out)
        diff = out.reshape(n, -1).astype(np.float64) - targets[offset:offset + n]
        abs_sum += float(np.abs(diff).sum())
        sq_sum += float(np.square(diff).sum())
        worst = max(worst, float(np.abs(diff).max(initial=0.0)))
        offset += n
    assert offset == len(x)
    count = len(x) * per_example
    return RegressionResult(
        mae=abs_sum / count if count else 0.0,
        rmse=math.sqrt(sq_sum / count) if count else 0.0,
        max_abs_error=worst,
        n_examples=len(x),
        values_per_example=per_example,
        seconds=time.perf_counter() - start,
        batch_size=runner.native_batch if runner.fallback_reason else min(batch_size, len(x)),
        batch_fallback=runner.fallback_reason,
    )


def as_class_labels(output_shape: Sequence[int], y: Any) -> np.ndarray | None:
    """``y`` as integer class labels when ``evaluate`` should measure top-1, else None (measure
    :func:`evaluate_regression`).

    Top-1 needs class scores out (:func:`is_classifier_output`) and labels in: integers
    ``(N,)``, float-coded integers (``3.0``), or one-hot rows ``(N, K)`` (Keras's
    ``to_categorical`` gives float32), taken by argmax. Anything else -- float targets, or
    an output that is not class scores (a single sigmoid unit included) -- is a regression.
    """
    targets = np.asarray(y)
    if not is_classifier_output(output_shape) or targets.dtype.kind not in "iuf" or targets.size == 0:
        return None
    k = int(output_shape[1])
    flat = targets.reshape(len(targets), -1) if targets.ndim >= 1 else targets.reshape(1, 1)
    if flat.shape[1] == 1:
        values = flat[:, 0]
        if targets.dtype.kind in "iu":
            return values.astype(np.int64)
        return values.astype(np.int64) if np.all(values == np.round(values)) and values.min() >= 0 else None
    if flat.shape[1] == k and np.all((flat == 0) | (flat == 1)) and np.all(flat.sum(axis=1) == 1):
        return flat.argmax(axis=1).astype(np.int64)  # one-hot
    return None
