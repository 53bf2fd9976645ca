"""Single-image latency of a .tflite in LiteRT: warm-up, then timed ``invoke()`` calls."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tfquant.errors import TfquantError
from tfquant.evaluation.interpreter import ModelLike, describe_model, load_interpreter
from tfquant.evaluation.runner import BatchRunner
from tfquant.qtypes import Runtime


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Statistics of ``runs`` timed ``invoke()`` calls, in milliseconds.

    Attributes:
      median_ms: Median latency.
      p90_ms: 90th percentile (linear interpolation between order statistics).
      min_ms: Fastest run.
      mean_ms: Mean latency.
      runs: Timed invokes.
      warmup: Untimed invokes before them.
      num_threads: Interpreter threads.
      runtime: ``xnnpack``, ``builtin`` or ``delegate``.
      batch_size: Examples per invoke: 1 unless the model has a fixed larger batch.
    """

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    warmup: int
    num_threads: int
    runtime: str
    batch_size: int = 1


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TfquantError(f"{name} must be an integer >= {minimum}, got {value!r}")


def measure_latency(
    model: ModelLike,
    *,
    runtime: Runtime | str = Runtime.XNNPACK,
    num_threads: int = 1,
    warmup: int = 20,
    runs: int = 100,
    delegate_path: str | None = None,
    sample: np.ndarray | None = None,
) -> LatencyResult:
    """Times single-image (batch 1) inference: ``invoke()`` alone, with ``time.perf_counter_ns``.

    The input is set once by a first, checked invoke; ``warmup`` more untimed invokes
    (first-run allocation, caches) precede ``runs`` timed ones. Input quantization and output readback are not timed.

    Args:
      model: A .tflite path or bytes.
      runtime: ``xnnpack``, ``builtin`` or ``delegate`` (see :func:`load_interpreter`).
      num_threads: Interpreter threads.
      warmup: Untimed invokes (>= 0).
      runs: Timed invokes (>= 1).
      delegate_path: External delegate library for ``runtime='delegate'``.
      sample: One float example, shape ``(1, H, W, C)`` or ``(H, W, C)``; default uniform
        random values in [0, 1) (latency does not depend on the values).
    """
    runtime = Runtime.parse(runtime, what="runtime")
    _check_count("warmup", warmup, 0)
    _check_count("runs", runs, 1)
    interpreter = load_interpreter(
        model, runtime=runtime, num_threads=num_threads, delegate_path=delegate_path
    )
    runner = BatchRunner(interpreter, label=describe_model(model))
    if sample is None:
        if any(d < 0 for d in runner.example_shape):
            raise TfquantError(
                f"{describe_model(model)} has a dynamic input shape {runner.example_shape}; "
                "pass sample= one example of the shape to time"
            )
        sample = np.random.default_rng(0).random((1, *runner.example_shape), dtype=np.float32)
    sample = np.asarray(sample)
    if sample.ndim == len(runner.input.shape_signature) - 1:
        sample = sample[None]
    sample = runner.check_examples(sample, name="sample")
    if len(sample) != 1:
        raise TfquantError(f"sample must hold one example, got {len(sample)}; pass x[:1]")
    batch = runner.prepare(sample, 1)
    if batch != 1:
        sample = np.repeat(sample, batch, axis=0)
    runner.invoke(sample)  # sets the input once; a model that cannot run fails here, clearly
    invoke = interpreter.invoke
    for _ in range(warmup):
        invoke()
    times_ns = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        t0 = clock()
        invoke()
        times_ns[i] = clock() - t0
    ms = times_ns / 1e6
    return LatencyResult(
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        min_ms=float(ms.min()),
        mean_ms=float(ms.mean()),
        runs=runs,
        warmup=warmup,
        num_threads=num_threads,
        runtime=runtime.value,
        batch_size=batch,
    )
