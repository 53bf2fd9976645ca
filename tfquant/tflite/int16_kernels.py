"""Does LiteRT have an int16x8 kernel for this op, in this configuration? Asked before emission.

A mixed model must never abort in LiteRT (:mod:`tfquant.tflite.runtime_check`: an int16 op
without a kernel raises at ``invoke()``, or aborts the process inside a larger graph). So
before :mod:`tfquant.convert.mixed` gives an op int16 activations it asks :func:`check`:

1. the known-op tables: :data:`NO_INT16_KERNEL` (ops the converter or AEQ would emit in int16
   but LiteRT 2.3.0 cannot run, e.g. ``SQUARED_DIFFERENCE``) refuses at once; ops AEQ has
   no int16 config for are refused too (they would stay float anyway);
2. a one-op trial: the op is cut out of the float model (its non-constant inputs become the
   model inputs, its outputs the model outputs, weights kept), quantized with int16
   activations by AEQ with the calibrated ranges, and invoked once on zeros in a child
   process (:func:`tfquant.tflite.runtime_check.check_runs`), so a crash costs an error, not
   the caller. :data:`KNOWN_INT16_KERNELS` lists the ops LiteRT documents int16x8 kernels
   for (the TFLite 16x8 quantization spec); the trial confirms the op *in this
   configuration* (fused activation, strides, ranks, input ranges) and catches kernels that
   refuse to prepare (e.g. an int16 output scale so small that ``6 / scale`` overflows).

Verdicts are cached per configuration (op type, builtin options, input / output ranks, which
inputs are constant) for the life of the process, so a model with 12 identical encoder
blocks pays one trial per distinct op configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from tfquant.errors import TfquantError
from tfquant.tflite import aeq, flatbuffer
from tfquant.tflite.runtime_check import NO_INT16_KERNEL, check_runs

# The TFLite int16x8 spec's ops with reference int16 kernels (LiteRT 2.3.0); a trial still
# confirms each configuration.
KNOWN_INT16_KERNELS = frozenset({
    "ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "RESHAPE", "SOFTMAX", "LOGISTIC", "TANH",
    "MEAN", "SUM", "PAD", "PADV2", "TRANSPOSE", "STRIDED_SLICE", "SLICE", "BATCH_MATMUL",
    "GATHER", "SPLIT", "PACK", "UNPACK", "RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "MAXIMUM", "MINIMUM", "RSQRT", "GELU",
})


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an op may get int16 activations, and why (``source``: table / trial / aeq)."""

    ok: bool
    reason: str
    source: str


_CACHE: dict[tuple, Verdict] = {}


def _options_key(op: Any) -> str:
    options = op.builtinOptions
    if options is None:
        return ""
    return repr(sorted((k, repr(v)) for k, v in vars(options).items()))


def _config_key(model: Any, op: Any, constants: set[int]) -> tuple:
    tensors = model.subgraphs[0].tensors
    ins = tuple((len(tensors[i].shape), i in constants) if i >= 0 else None for i in op.inputs)
    outs = tuple(len(tensors[i].shape) for i in op.outputs)
    return (flatbuffer.op_name(model, op), int(op.builtinOptionsType), _options_key(op), ins, outs)


def one_op_model(float_tflite: bytes, op_index: int) -> bytes:
    """Op ``op_index`` of the main subgraph cut out as a model of its own (float)."""
    model = flatbuffer.read(float_tflite)
    constants = flatbuffer.constant_tensors(float_tflite)
    subgraph = model.subgraphs[0]
    op = subgraph.operators[op_index]
    subgraph.operators = [op]
    subgraph.inputs = np.array([i for i in op.inputs if i >= 0 and i not in constants], dtype=np.int32)
    subgraph.outputs = np.array(list(op.outputs), dtype=np.int32)
    model.signatureDefs = []
    model.subgraphs = [subgraph]
    return flatbuffer.write(model)


def check(float_tflite: bytes, op_index: int, ranges: Mapping[str, tuple[float, float]]) -> Verdict:
    """May op ``op_index`` of ``float_tflite`` run with int16 activations in LiteRT?

    Args:
      float_tflite: the float model the op belongs to.
      op_index: the op's index in the main subgraph.
      ranges: calibrated (min, max) per activation tensor name (for the trial's quantization).
    """
    model = flatbuffer.read(float_tflite)
    op = model.subgraphs[0].operators[op_index]
    op_type = flatbuffer.op_name(model, op)
    if op_type in NO_INT16_KERNEL:
        return Verdict(False, f"LiteRT has no int16 kernel for {op_type} (known-op table)", "table")
    if not aeq.supports(op_type, "int16x8"):
        return Verdict(False, f"AI Edge Quantizer has no int16x8 config for {op_type}", "aeq")
    key = _config_key(model, op, flatbuffer.constant_tensors(float_tflite))
    if key in _CACHE:
        return _CACHE[key]
    verdict = _trial(float_tflite, op_index, op_type, ranges)
    _CACHE[key] = verdict
    return verdict


def _trial(float_tflite: bytes, op_index: int, op_type: str, ranges: Mapping[str, tuple[float, float]]) -> Verdict:
    single = one_op_model(float_tflite, op_index)
    model = flatbuffer.read(single)
    subgraph = model.subgraphs[0]
    constants = flatbuffer.constant_tensors(single)
    names = [flatbuffer.name(subgraph.tensors[i].name) for i in subgraph.operators[0].outputs]
    used = {
        flatbuffer.name(subgraph.tensors[i].name)
        for i in list(subgraph.operators[0].inputs) + list(subgraph.operators[0].outputs)
        if i >= 0 and i not in constants
    }
    trial_ranges = {n: ranges.get(n, (-1.0, 1.0)) for n in used}
    known = op_type in KNOWN_INT16_KERNELS
    try:
        quantized = aeq.quantize(single, {aeq.op_scope(names): (op_type, "int16x8")}, trial_ranges)
    except TfquantError as e:
        # AEQ cannot write some ops alone (e.g. x * x of one graph input); the table decides
        # and the whole candidate is test-run before it is used (tfquant.convert.mixed).
        return Verdict(known, f"known-op table (no one-op trial: {e})"[:300], "table")
    try:
        check_runs(quantized, what=f"a one-op int16x8 {op_type} model")
    except TfquantError as e:
        return Verdict(False, f"one-op int16x8 trial failed: {e}", "trial")
    note = "known-op table, confirmed by a one-op trial" if known else "not in the known-op table; a one-op trial ran"
    return Verdict(True, note, "trial")


def clear_cache() -> None:
    """Forgets cached verdicts (tests)."""
    _CACHE.clear()
