"""Evaluator overhead: :func:`evaluate_accuracy` against a hand-written interpreter loop.

The raw loop is what a careful user writes by hand: one interpreter, the input resized once to
the batch size, then for each preloaded batch: quantize (the same
:func:`tfquant.numerics.quantize` maths), ``set_tensor``, ``invoke``, ``get_tensor``, argmax.
The last partial batch is zero-padded to the full batch (outside the timed region) so the
raw loop needs no second resize. Both sides are timed end to end from the model bytes
(interpreter creation and allocation included), interleaved (ABBA order) over ``repeats``,
and compared by the median throughput. ``experiments/bench_evaluator.py`` runs this on the
Fashion-MNIST test set.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np
from tfquant.errors import TfquantError
from tfquant.evaluation.accuracy import evaluate_accuracy
from tfquant.evaluation.runner import TensorIO, check_batch_size
from tfquant.qtypes import Runtime
from tfquant.tflite.interpreter import make_interpreter, read_model


@dataclasses.dataclass(frozen=True)
class ThroughputComparison:
    """Images per second of the evaluator and of the raw loop over the same examples.

    Attributes:
      n_examples: Examples per pass.
      batch_size: Examples per invoke.
      num_threads: Interpreter threads.
      repeats: Timed passes of each side.
      evaluator_images_per_s: One value per repeat.
      raw_images_per_s: One value per repeat.
      evaluator_accuracy: Top-1 accuracy the evaluator reported.
      raw_accuracy: Top-1 accuracy of the raw loop (must match).
    """

    n_examples: int
    batch_size: int
    num_threads: int
    repeats: int
    evaluator_images_per_s: tuple[float, ...]
    raw_images_per_s: tuple[float, ...]
    evaluator_accuracy: float
    raw_accuracy: float

    @property
    def evaluator_median(self) -> float:
        return statistics.median(self.evaluator_images_per_s)

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw_images_per_s)

    @property
    def ratio(self) -> float:
        """Median evaluator throughput / median raw-loop throughput."""
        return self.evaluator_median / self.raw_median

    @property
    def paired_ratio(self) -> float:
        """Median over repeats of evaluator / raw throughput measured back to back.

        Less sensitive than :attr:`ratio` to load from other processes that changes between
        repeats, since both runs of a pair see nearly the same machine.
        """
        return statistics.median(
            e / r for e, r in zip(self.evaluator_images_per_s, self.raw_images_per_s)
        )


def preload_batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Splits ``x`` into batches of ``batch_size``, zero-padding the last one."""
    batches = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        if len(xb) < batch_size:
            xb = np.concatenate([xb, np.zeros((batch_size - len(xb), *x.shape[1:]), x.dtype)])
        batches.append(np.ascontiguousarray(xb))
    return batches


def raw_loop_correct(
    model: bytes, batches: list[np.ndarray], y: np.ndarray, *, num_threads: int = 1
) -> int:
    """Correct top-1 predictions of the hand-written loop (XNNPACK, default op resolver)."""
    interpreter = make_interpreter(model, runtime=Runtime.XNNPACK, num_threads=num_threads)
    inp = interpreter.get_input_details()[0]
    out_index = interpreter.get_output_details()[0]["index"]
    batch_size = len(batches[0])
    interpreter.resize_tensor_input(inp["index"], [batch_size, *batches[0].shape[1:]])
    interpreter.allocate_tensors()
    io = TensorIO.from_details(inp, role="input", label="the model")
    n_correct, start = 0, 0
    for xb in batches:
        interpreter.set_tensor(io.index, io.to_tensor(xb))
        interpreter.invoke()
        logits = interpreter.get_tensor(out_index)
        take = min(batch_size, len(y) - start)
        n_correct += int(np.count_nonzero(logits[:take].argmax(axis=1) == y[start:start + take]))
        start += take
    return n_correct


def compare_throughput(
    model: "str | bytes",
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int = 256,
    repeats: int = 5,
    num_threads: int = 1,
) -> ThroughputComparison:
    """Times :func:`evaluate_accuracy` (xnnpack) and :func:`raw_loop_correct` side by side.

    One untimed pass of each warms caches; then ``repeats`` timed passes alternate the order
    (raw, evaluator), (evaluator, raw), ... so slow drifts of the machine hit both equally.
    """
    check_batch_size(batch_size)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise TfquantError(f"repeats must be an integer >= 1, got {repeats!r}")
    data = read_model(model)
    x = np.ascontiguousarray(x)
    y = np.asarray(y)
    batches = preload_batches(x, batch_size)
    n = len(x)

    def run_evaluator() -> tuple[float, float]:
        t0 = time.perf_counter()
        result = evaluate_accuracy(data, x, y, batch_size=batch_size, num_threads=num_threads)
        return n / (time.perf_counter() - t0), result.accuracy

    def run_raw() -> tuple[float, float]:
        t0 = time.perf_counter()
        correct = raw_loop_correct(data, batches, y, num_threads=num_threads)
        return n / (time.perf_counter() - t0), correct / n

    run_evaluator()
    run_raw()
    ev_ips, raw_ips = [], []
    ev_acc = raw_acc = float("nan")
    for r in range(repeats):
        order = (run_raw, run_evaluator) if r % 2 == 0 else (run_evaluator, run_raw)
        for fn in order:
            ips, acc = fn()
            if fn is run_evaluator:
                ev_ips.append(ips)
                ev_acc = acc
            else:
                raw_ips.append(ips)
                raw_acc = acc
    return ThroughputComparison(
        n_examples=n,
        batch_size=batch_size,
        num_threads=num_threads,
        repeats=repeats,
        evaluator_images_per_s=tuple(ev_ips),
        raw_images_per_s=tuple(raw_ips),
        evaluator_accuracy=ev_acc,
        raw_accuracy=raw_acc,
    )
