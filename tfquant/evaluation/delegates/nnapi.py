"""NNAPI's rules: the first Android API level of each operation and operand type.

From Android's NNAPI operation list (``ANEURALNETWORKS_*``, "available since API level N")
and operand types: TENSOR_QUANT8_ASYMM (uint8) and float32 since 27, per-channel int8
weights (TENSOR_QUANT8_SYMM_PER_CHANNEL) and float16 since 29, signed int8 activations
(TENSOR_QUANT8_ASYMM_SIGNED) since 30. The TFLite NNAPI delegate does not take
dynamic-range (hybrid: float activations, 8-bit weights) ops, nor int16 activations.
:data:`DEFAULT_API_LEVEL` is 30 (Android 11); whether a given phone's driver then runs an op
on its accelerator, or NNAPI's own CPU fallback, is only seen on the phone.
"""

from __future__ import annotations

from tfquant.evaluation.delegates.common import activations
from tfquant.tflite.op_graph import OpNode

DEFAULT_API_LEVEL = 30
OPS = {
    "ADD": 27, "AVERAGE_POOL_2D": 27, "CONCATENATION": 27, "CONV_2D": 27,
    "DEPTHWISE_CONV_2D": 27, "DEPTH_TO_SPACE": 27, "DEQUANTIZE": 27, "FLOOR": 27,
    "FULLY_CONNECTED": 27, "L2_NORMALIZATION": 27, "LOGISTIC": 27, "LSTM": 27,
    "MAX_POOL_2D": 27, "MUL": 27, "RELU": 27, "RELU6": 27, "RELU_N1_TO_1": 27, "RESHAPE": 27,
    "RESIZE_BILINEAR": 27, "SOFTMAX": 27, "SPACE_TO_DEPTH": 27, "TANH": 27,
    "BATCH_TO_SPACE_ND": 28, "DIV": 28, "MEAN": 28, "PAD": 28, "SPACE_TO_BATCH_ND": 28,
    "SQUEEZE": 28, "STRIDED_SLICE": 28, "SUB": 28, "TRANSPOSE": 28,
    "ABS": 29, "ARG_MAX": 29, "ARG_MIN": 29, "EXP": 29, "GATHER": 29, "LEAKY_RELU": 29,
    "LOG": 29, "MAXIMUM": 29, "MINIMUM": 29, "NEG": 29, "PRELU": 29, "QUANTIZE": 29,
    "REDUCE_MAX": 29, "REDUCE_MIN": 29, "RESIZE_NEAREST_NEIGHBOR": 29, "RSQRT": 29,
    "SIN": 29, "SLICE": 29, "SPLIT": 29, "SQRT": 29, "SUM": 29, "TRANSPOSE_CONV": 29,
    "HARD_SWISH": 30, "ELU": 30,
}
"""TFLite op -> first Android API level whose NNAPI has the operation."""
TYPE_API = {"FLOAT32": 27, "UINT8": 27, "INT32": 27, "FLOAT16": 29, "INT8": 30}
"""Activation type -> first API level (int8 = TENSOR_QUANT8_ASYMM_SIGNED)."""
PER_CHANNEL_API = 29


def rule(op: OpNode, ops: list[OpNode], api_level: int = DEFAULT_API_LEVEL) -> str | None:
    """``None`` if NNAPI at ``api_level`` takes ``op``, else why not."""
    name = op.op
    if name not in OPS:
        return f"{name} has no NNAPI operation"
    if OPS[name] > api_level:
        return f"{name} needs Android API {OPS[name]} (target {api_level})"
    acts = activations(op)
    for t in acts:
        need = TYPE_API.get(t.dtype)
        if need is None:
            return f"{t.dtype} tensors (no NNAPI operand type; int16 activations are not supported)"
        if need > api_level:
            return f"{t.dtype} tensors need Android API {need} (target {api_level})"
    if any(t.per_channel for t in op.inputs) and PER_CHANNEL_API > api_level:
        return f"per-channel weights need Android API {PER_CHANNEL_API} (target {api_level})"
    float_acts = all(t.dtype in ("FLOAT32", "FLOAT16") for t in acts)
    if float_acts and name != "DEQUANTIZE" and any(
        t.constant and t.dtype in ("INT8", "UINT8") for t in op.inputs
    ):
        return f"{name} with 8-bit weights and float activations (dynamic range; the NNAPI delegate refuses hybrid ops)"
    return None
