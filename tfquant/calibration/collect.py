"""One pass of the float model over the calibration set -> statistics for every tensor.

The model is the float .tflite that the TFLite converter's calibration step produces (see
:mod:`tfquant.convert.calibrated`): the same graph, with the same tensor names, that the
quantizer then turns into int8 / int16x8. Running *it* (rather than the Keras model) means the
statistics belong to exactly the tensors that get quantized, after the converter's fusions
(conv + BN + ReLU is one tensor here, as in the quantized model).

Each tensor to gather is read inside LiteRT right where it is produced: a tap (a CUSTOM op
right after its producer, :mod:`tfquant.tflite.runtime_statistics`) hands LiteRT's own
memory to the tensor's statistics, in LiteRT's CompiledModel with the builtin kernels. Where
the taps cannot run (LiteRT's C API does not load, LiteRT refuses the tapped model,
``TFQUANT_TAPS=0``), the tensors are made outputs of the model instead (a copy whose main
subgraph lists them as outputs; outputs cannot share the memory arena, so this costs ~1.8x a
forward pass on the zoo ViT, the taps ~1.15x) and the LiteRT interpreter runs it. Both use
the builtin kernels and no delegate (a delegate would compute fused partitions whose
intermediates differ from the builtin graph's), so both give the same statistics
(``CalibrationStatistics.gathered_in`` says which ran).

A tensor that only rearranges another gathered tensor R (a chain of RESHAPE, SQUEEZE,
EXPAND_DIMS and constant-permutation TRANSPOSEs:
:func:`tfquant.tflite.rearrangements.value_rearrangements`) is not gathered itself: it holds
R's values, so it gets a copy of R's statistics (min, max, the moving average's per-batch
extremes, count, mean, m2, Σ|x - mean| and the histogram are statistics of the multiset of
values; its own pass would sum the same values in another order, so the float64 sums equal
up to their last bits, and bit for bit for a copy in R's flat order). Only its per-channel
sums are its own: unless its channels are R's (channel = R's flat index mod R's last
dimension), they are taken from R's batches in R's tap, each of R's values added into the
copy's channel it lands in (:class:`~tfquant.calibration.observe.ChannelSums`, ~0.1 ns a
value against ~0.8 ns for gathering the tensor; 65 of the zoo ViT's 232 tensors, 24 of them
with their own channels: its attention transposes and the reshapes after them).

A tap runs right after the tensor's producer, before any op that could overwrite it in
place; outputs are never overwritten by an in-place kernel or reused by the memory planner,
so they are read as zero-copy views right after ``invoke()``. Either way each batch's values
are folded into :class:`~tfquant.calibration.statistics.TensorStatistics` at once (on the
output path by :func:`tfquant.calibration.observe.statistics_pass`, which the simulation and
QAT's range initialisation run over Keras models); nothing of size N is kept. (The
alternative, ``experimental_preserve_all_tensors``, keeps every tensor alive and made the
pass ~30% slower on the zoo ResNet.)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from typing import Any, Iterator, Mapping

import numpy as np

from tfquant.calibration.histogram import NUM_BINS
from tfquant.calibration.observe import ChannelSums, Observer, fan_out, statistics_pass
from tfquant.calibration.statistics import DEFAULT_EMA_CONSTANT, TensorStatistics
from tfquant.errors import TfquantError
from tfquant.progress import progress
from tfquant.qtypes import Runtime
from tfquant.tflite import flatbuffer, runtime_statistics
from tfquant.tflite.flatbuffer import with_outputs
from tfquant.tflite.rearrangements import Rearrangement, value_rearrangements
from tfquant.tflite.interpreter import make_interpreter

DEFAULT_BATCH_SIZE = 100


@dataclasses.dataclass(frozen=True)
class CalibrationStatistics:
    """Statistics of every calibrated tensor, by name, and how they were gathered.

    Attributes:
      tensors: tensor name -> its statistics, in tensor-index order.
      num_examples: calibration examples seen.
      batch_size: examples per interpreter invocation (the moving average's batch).
      ema_constant: c of the moving-average min/max.
      seconds: wall time of the pass.
      gathered_in: ``"taps"`` (read inside LiteRT where each tensor is produced,
        :mod:`tfquant.tflite.runtime_statistics`) or ``"outputs"`` (the tensors made model
        outputs and read after each ``invoke()``).
    """

    tensors: Mapping[str, TensorStatistics]
    num_examples: int
    batch_size: int
    ema_constant: float
    seconds: float
    gathered_in: str = "outputs"


def _batches(
    interpreter: Any, data: np.ndarray, batch_size: int, indices: list[int]
) -> Iterator[list[np.ndarray]]:
    """Per batch of ``data``: zero-copy views of tensors ``indices`` after ``invoke()``."""
    input_index = interpreter.get_input_details()[0]["index"]
    size = -1
    starts = range(0, len(data), batch_size)
    for begin in progress(starts, desc=f"statistics pass ({len(data)} examples)", unit="batch"):
        batch = data[begin : begin + batch_size]
        if len(batch) != size:
            size = len(batch)
            try:
                interpreter.resize_tensor_input(input_index, [size, *data.shape[1:]], strict=False)
                interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as e:
                raise TfquantError(
                    f"cannot run the float model on calibration inputs of shape "
                    f"{(size, *data.shape[1:])} ({' '.join(str(e).split())[:160]}); pass data "
                    "shaped like the model input"
                ) from None
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        yield [interpreter.tensor(index)() for index in indices]


def _check_inputs(count: int) -> None:
    if count != 1:
        raise TfquantError(
            f"the model has {count} inputs; calibration feeds exactly one, so calibrate a "
            "single-input model"
        )


Regrouped = dict[tuple[int, bytes], ChannelSums]
"""(source, its copy's channel layout) -> the copy's per-channel sums, taken from the source."""


def _layout(copy_of: Rearrangement) -> tuple[int, bytes]:
    assert copy_of.channel_index is not None
    return copy_of.source, copy_of.channel_index.tobytes() + copy_of.channels.to_bytes(8, "little")


def _statistics(
    tensors: Mapping[int, str], gathered: list[int], copies: Mapping[int, Rearrangement],
    ema_constant: float, num_bins: int,
) -> tuple[dict[int, TensorStatistics], Regrouped]:
    """Empty statistics of the gathered tensors, and the regrouped channel sums of copies
    (one per source and channel layout)."""
    stats = {index: TensorStatistics.empty(tensors[index], num_bins=num_bins) for index in gathered}
    regrouped = {
        _layout(c): ChannelSums(c.channel_index, c.channels) for c in copies.values() if c.channel_index is not None
    }
    return stats, regrouped


def _observers(stats: Mapping[int, TensorStatistics], regrouped: Regrouped, ema_constant: float) -> list[Observer]:
    """One observer per gathered tensor (its statistics, plus the channel sums of its copies)."""
    observers: list[Observer] = []
    for index, s in stats.items():
        # The bound method when it can (a partial with a keyword costs ~0.3 µs a call more).
        observe = s.update if ema_constant == DEFAULT_EMA_CONSTANT else functools.partial(
            s.update, ema_constant=ema_constant
        )
        extra = [o for (source, _), o in regrouped.items() if source == index]
        observers.append(fan_out(observe, *extra) if extra else observe)
    return observers


def _tapped_pass(
    float_tflite: Any, data: np.ndarray, batch_size: int, num_threads: int, gathered: list[int],
    stats: Mapping[int, TensorStatistics], regrouped: Regrouped, ema_constant: float,
) -> None:
    """The pass with every gathered tensor read by a tap inside LiteRT (no output copies).

    Raises:
      runtime_statistics.LiteRtError: LiteRT refused the tapped model or a batch shape
        (the caller then takes the output path, whose errors name the problem).
    """
    observers = _observers(stats, regrouped, ema_constant)
    with runtime_statistics.TappedModel(float_tflite, gathered, observers, num_threads=num_threads) as model:
        _check_inputs(model.num_inputs)
        starts = range(0, len(data), batch_size)
        for begin in progress(starts, desc=f"statistics pass ({len(data)} examples)", unit="batch"):
            model.run(data[begin : begin + batch_size])


def collect_statistics(
    float_tflite: bytes,
    data: np.ndarray,
    tensors: Mapping[int, str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_threads: int = 1,
    ema_constant: float = DEFAULT_EMA_CONSTANT,
    num_bins: int = NUM_BINS,
) -> CalibrationStatistics:
    """Runs ``float_tflite`` over ``data`` once and gathers statistics of ``tensors``.

    Args:
      float_tflite: a float model with a single input whose first axis is the batch.
      data: validated float32 calibration inputs (N, ...), N >= 1.
      tensors: tensor index (main subgraph) -> name, the tensors to gather.
      batch_size: examples per invocation; the last batch is smaller (no padding, so no
        example is counted twice).
      num_threads: interpreter threads.
      ema_constant: c of the moving-average min/max.
      num_bins: histogram bins.

    Raises:
      TfquantError: the model cannot be run on this data.
    """
    if len(data) == 0:
        raise TfquantError("the calibration set is empty; pass at least one example")
    start = time.perf_counter()
    copies = value_rearrangements(flatbuffer.read_graph(float_tflite), sorted(tensors))
    gathered = sorted(i for i in tensors if i not in copies)
    where = "outputs"
    if runtime_statistics.available() is None:
        try:
            stats, regrouped = _statistics(tensors, gathered, copies, ema_constant, num_bins)
            _tapped_pass(float_tflite, data, batch_size, num_threads, gathered, stats, regrouped, ema_constant)
            where = "taps"
        except runtime_statistics.LiteRtError:
            pass  # LiteRT refused the tapped model: the output path below (its own errors)
    if where == "outputs":
        stats, regrouped = _statistics(tensors, gathered, copies, ema_constant, num_bins)
        interpreter = make_interpreter(
            with_outputs(float_tflite, gathered), runtime=Runtime.BUILTIN, num_threads=num_threads
        )
        _check_inputs(len(interpreter.get_input_details()))
        observers = _observers(stats, regrouped, ema_constant)
        statistics_pass(_batches(interpreter, data, batch_size, gathered), observers)
        del interpreter
    for index, copy_of in copies.items():  # the same values: the same statistics
        stats[index] = dataclasses.replace(copy.deepcopy(stats[copy_of.source]), name=tensors[index])
        if copy_of.channel_index is not None:  # ... grouped into other channels
            sums = regrouped[_layout(copy_of)].sums
            stats[index].channel_sum = None if sums is None else sums.copy()
    by_name = {s.name: s for _, s in sorted(stats.items())}
    return CalibrationStatistics(
        tensors=by_name,
        num_examples=len(data),
        batch_size=batch_size,
        ema_constant=ema_constant,
        seconds=time.perf_counter() - start,
        gathered_in=where,
    )
