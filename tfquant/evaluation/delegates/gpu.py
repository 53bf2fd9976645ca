"""The GPU delegate's documented op support ("GPU delegates for LiteRT", supported ops).

Documented: the ops of :data:`OPS`, in 16- and 32-bit float, at version 1 unless listed
higher (DEPTHWISE_CONV_2D v1-2, RESIZE_BILINEAR v1-3, LSTM v2); "enabling quantization
support allows the corresponding versions, e.g. ADD v2", i.e. 8-bit quantized models run
(the delegate dequantizes them), with QUANTIZE / DEQUANTIZE at their edges. Most ops take
tensors of at most 4 dimensions. No int16 and no 64-bit tensors; int32 only as constants.
"""

from __future__ import annotations

from tfquant.evaluation.delegates.common import activations
from tfquant.tflite.op_graph import OpNode

OPS = {
    "ADD": 1, "AVERAGE_POOL_2D": 1, "CONCATENATION": 1, "CONV_2D": 1, "DEPTHWISE_CONV_2D": 2,
    "EXP": 1, "FULLY_CONNECTED": 1, "LOGICAL_AND": 1, "LOGISTIC": 1, "LSTM": 2,
    "MAX_POOL_2D": 1, "MAXIMUM": 1, "MINIMUM": 1, "MUL": 1, "PAD": 1, "PRELU": 1, "RELU": 1,
    "RELU6": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 3, "SOFTMAX": 1, "STRIDED_SLICE": 1,
    "SUB": 1, "TRANSPOSE_CONV": 1,
}
"""Documented op -> highest supported version for float models."""
QUANTIZED_EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
MAX_RANK = 4


def rule(op: OpNode, ops: list[OpNode]) -> str | None:
    """``None`` if the GPU delegate takes ``op``, else why not."""
    name = op.op
    if name not in OPS and name not in QUANTIZED_EDGE_OPS:
        return f"{name} is not in the GPU delegate's supported ops"
    acts = activations(op)
    bad = sorted({t.dtype for t in acts if t.dtype not in ("FLOAT32", "FLOAT16", "INT8", "UINT8")})
    if bad:
        return f"{'/'.join(bad)} tensors (the GPU delegate computes in float16/float32, 8-bit models dequantized)"
    if name == "DEQUANTIZE" and op.inputs[0].dtype == "FLOAT16" and not op.inputs[0].constant:
        return "DEQUANTIZE of a non-constant float16 tensor"
    quantized = any(t.dtype in ("INT8", "UINT8") for t in acts)
    if any(len(t.shape) > MAX_RANK for t in acts):
        return f"a tensor of rank > {MAX_RANK}"
    if name in OPS and not quantized and op.version > OPS[name]:
        return f"{name} version {op.version} (documented: versions 1-{OPS[name]} in float)"
    return None
