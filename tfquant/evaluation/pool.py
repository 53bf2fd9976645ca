"""Accuracy of several .tflite files at once, in worker processes.

Accuracy does not depend on what else the machine runs, so sweeps that only need accuracy
(e.g. the calibration experiment) evaluate models side by side, one per core. Latency is
never measured here: it needs an otherwise idle machine.

Workers are *spawned* (not forked: the parent usually has TensorFlow's threads running) and
import only ``tfquant.evaluation`` (LiteRT and numpy). The evaluation set is sent to each
worker once, at start-up. Workers report no progress (the caller reports its own loop).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any

import numpy as np

from tfquant.evaluation.accuracy import AccuracyResult, evaluate_accuracy
from tfquant.qtypes import Runtime

_DATA: dict[str, Any] = {}


def _init_worker(x: np.ndarray, y: np.ndarray, options: dict[str, Any]) -> None:
    from tfquant import _quiet, progress

    progress.set_enabled(False)  # side-by-side workers drawing bars on one terminal would garble it
    _quiet.warm_up_litert()  # LiteRT's one-time XNNPACK notice, filtered
    _DATA.update(x=x, y=y, options=options)


def _evaluate(path: str, overrides: dict[str, Any]) -> AccuracyResult:
    return evaluate_accuracy(path, _DATA["x"], _DATA["y"], **{**_DATA["options"], **overrides})


class AccuracyPool:
    """``submit(path)`` -> a future of :class:`AccuracyResult`; ``workers=1`` runs inline.

    Args:
      x, y: the evaluation set (as for :func:`evaluate_accuracy`).
      workers: processes evaluating at once (at most one per core is useful).
      runtime, num_threads, batch_size: as for :func:`evaluate_accuracy`.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        workers: int = 1,
        runtime: Runtime | str = Runtime.XNNPACK,
        num_threads: int = 1,
        batch_size: int = 256,
    ) -> None:
        self._options = dict(runtime=Runtime.parse(runtime, what="runtime"), num_threads=num_threads,
                             batch_size=batch_size)
        self._x, self._y = x, y
        self._executor: concurrent.futures.Executor | None = None
        if workers > 1:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(np.ascontiguousarray(x), np.asarray(y), self._options),
            )

    def submit(
        self, path: str, *, runtime: Runtime | str | None = None
    ) -> "concurrent.futures.Future[AccuracyResult]":
        """Queues ``path``; ``runtime`` overrides the pool's for this model."""
        overrides = {} if runtime is None else {"runtime": Runtime.parse(runtime, what="runtime")}
        if self._executor is not None:
            return self._executor.submit(_evaluate, path, overrides)
        future: concurrent.futures.Future[AccuracyResult] = concurrent.futures.Future()
        try:
            future.set_result(evaluate_accuracy(path, self._x, self._y, **{**self._options, **overrides}))
        except Exception as e:  # delivered through the future, as a worker's would be
            future.set_exception(e)
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "AccuracyPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
