"""Accuracy of a .tflite over a split, data-parallel on Ray when the split is large.

``accuracy = Σ_shards n_correct_s / Σ_shards n_s`` -- the shards' correct counts summed, so
the result is exactly :func:`~tfquant.evaluation.evaluate_accuracy` on the whole split (top-1
per example does not depend on which batch it ran in: the interpreter runs each example's
logits independently, and the count is an integer).

A split of more than ``shard_examples`` examples, inside a process connected to Ray (the
study runner's workers are), is cut into ``ceil(N / shard_examples)`` contiguous shards; each
shard is a Ray task that loads the model once (from its bytes: no shared file system needed)
and counts its correct examples. The split itself goes to the object store once
(``ray.put``), shared by every shard on a node. Smaller splits, or no Ray, run in this process.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Any

import numpy as np

from tfquant.evaluation.accuracy import AccuracyResult, evaluate_accuracy
from tfquant.qtypes import Runtime

SHARD_EXAMPLES = 10_000
"""Examples per shard by default (Fashion-MNIST's test split is one shard; ImageNet's is five)."""


_REMOTE: list[Any] = []  # the Ray task of _count_shard, made once per process


def _ray_ready() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _count_shard(model: bytes, x: np.ndarray, y: np.ndarray, lo: int, hi: int, options: dict[str, Any]) -> AccuracyResult:
    from tfquant import _quiet, progress

    progress.set_enabled(False)
    _quiet.warm_up_litert()
    return evaluate_accuracy(model, x[lo:hi], y[lo:hi], **options)


def evaluate_accuracy_sharded(
    model: str | os.PathLike[str] | bytes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    shards: int,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    batch_size: int = 256,
) -> AccuracyResult:
    """Top-1 accuracy of ``model`` over ``(x, y)`` in ``shards`` Ray tasks (see the module doc).

    Needs a Ray connection (:func:`tfquant.study.cluster.connect`, or a Ray worker).
    """
    import ray

    data = model if isinstance(model, bytes) else open(model, "rb").read()
    options = dict(runtime=Runtime.parse(runtime, what="runtime"), num_threads=num_threads, batch_size=batch_size)
    n = len(x)
    shards = max(1, min(int(shards), n))
    bounds = [(n * i // shards, n * (i + 1) // shards) for i in range(shards)]
    if not _REMOTE:
        _REMOTE.append(ray.remote(num_cpus=1)(_count_shard))
    task = _REMOTE[0]
    model_ref, x_ref, y_ref = ray.put(data), ray.put(np.ascontiguousarray(x)), ray.put(np.asarray(y))
    parts: list[AccuracyResult] = ray.get([task.remote(model_ref, x_ref, y_ref, lo, hi, options) for lo, hi in bounds])
    n_correct = sum(p.n_correct for p in parts)
    n_examples = sum(p.n_examples for p in parts)
    assert n_examples == n
    fallback = next((p.batch_fallback for p in parts if p.batch_fallback), None)
    return AccuracyResult(
        accuracy=n_correct / n_examples, n_examples=n_examples, n_correct=n_correct,
        seconds=max(p.seconds for p in parts), batch_size=parts[0].batch_size,
        requested_batch_size=batch_size, batch_fallback=fallback,
    )


class Evaluator:
    """``submit(path)`` -> a finished future of :class:`AccuracyResult` over one split.

    Replaces the former two-process pool: cells now run side by side as Ray workers (see
    :mod:`tfquant.study.cluster`), and a split larger than ``shard_examples`` is evaluated in
    shards across the cluster (:func:`evaluate_accuracy_sharded`).

    Args:
      x, y: the evaluation set (as for :func:`evaluate_accuracy`).
      runtime, num_threads, batch_size: as for :func:`evaluate_accuracy`.
      shard_examples: Largest split evaluated in one piece.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        runtime: Runtime | str = Runtime.XNNPACK,
        num_threads: int = 1,
        batch_size: int = 256,
        shard_examples: int = SHARD_EXAMPLES,
    ) -> None:
        self._options = dict(runtime=Runtime.parse(runtime, what="runtime"), num_threads=num_threads,
                             batch_size=batch_size)
        self._x, self._y = x, y
        self.shards = math.ceil(len(x) / shard_examples) if len(x) else 1

    def accuracy(self, path: str, *, runtime: Runtime | str | None = None) -> AccuracyResult:
        """Accuracy of ``path``; ``runtime`` overrides the evaluator's for this model."""
        options = dict(self._options)
        if runtime is not None:
            options["runtime"] = Runtime.parse(runtime, what="runtime")
        if self.shards > 1 and _ray_ready():
            return evaluate_accuracy_sharded(path, self._x, self._y, shards=self.shards, **options)
        return evaluate_accuracy(path, self._x, self._y, **options)

    def submit(
        self, path: str, *, runtime: Runtime | str | None = None
    ) -> "concurrent.futures.Future[AccuracyResult]":
        """:meth:`accuracy` as a finished future (an error is delivered through it)."""
        future: concurrent.futures.Future[AccuracyResult] = concurrent.futures.Future()
        try:
            future.set_result(self.accuracy(path, runtime=runtime))
        except Exception as e:  # delivered through the future, as the callers expect
            future.set_exception(e)
        return future

    def close(self) -> None:
        """Nothing to release (kept so callers can use it as a context manager)."""

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
