"""One pass of the float model over the calibration set -> statistics for every tensor.

The model is the float .tflite that the TFLite converter's calibration step produces (see
:mod:`tfquant.convert.calibrated`): the same graph, with the same tensor names, that the
quantizer then turns into int8 / int16x8. Running *it* (rather than the Keras model) means the
statistics belong to exactly the tensors that get quantized, after the converter's fusions
(conv + BN + ReLU is one tensor here, as in the quantized model).

The tensors to gather are made outputs of the model (a copy whose main subgraph lists them as
outputs), and the LiteRT interpreter runs it with the builtin kernels and no delegate (a
delegate would compute fused partitions whose intermediates differ from the builtin graph's).
Outputs are never overwritten by an in-place kernel or reused by the memory planner, so each
batch's values are read as zero-copy views right after ``invoke()`` and folded into
:class:`~tfquant.calibration.statistics.TensorStatistics`; nothing of size N is kept. (The
alternative, ``experimental_preserve_all_tensors``, keeps every tensor alive and made the
pass ~30% slower on the zoo ResNet.)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from ai_edge_litert.tools import flatbuffer_utils

from tfquant.calibration.histogram import NUM_BINS
from tfquant.calibration.statistics import DEFAULT_EMA_CONSTANT, TensorStatistics
from tfquant.errors import TfquantError
from tfquant.progress import progress

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
    """

    tensors: Mapping[str, TensorStatistics]
    num_examples: int
    batch_size: int
    ema_constant: float
    seconds: float


def _with_outputs(float_tflite: bytes, indices: list[int]) -> bytes:
    """A copy of the model whose main subgraph also outputs tensors ``indices``."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_tflite))
    subgraph = model.subgraphs[0]
    outputs = [int(i) for i in subgraph.outputs]
    subgraph.outputs = np.array(outputs + [i for i in indices if i not in outputs], dtype=np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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
    interpreter = Interpreter(
        model_content=_with_outputs(float_tflite, sorted(tensors)),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=num_threads,
    )
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise TfquantError(
            f"the model has {len(inputs)} inputs; calibration feeds exactly one, so calibrate a "
            "single-input model"
        )
    input_index = inputs[0]["index"]
    stats = {index: TensorStatistics.empty(name, num_bins=num_bins) for index, name in tensors.items()}
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
        for index, s in stats.items():
            s.update(interpreter.tensor(index)(), ema_constant=ema_constant)
    del interpreter
    by_name = {s.name: s for _, s in sorted(stats.items())}
    return CalibrationStatistics(
        tensors=by_name,
        num_examples=len(data),
        batch_size=batch_size,
        ema_constant=ema_constant,
        seconds=time.perf_counter() - start,
    )
