"""XNNPACK's rules, as LiteRT 2.3.0's default delegate applies them (``xnnpack_delegate.cc``).

An op is delegated when XNNPACK has a kernel for it in the op's data type and its static
parameters are constants:

* activations (non-constant tensors) are FLOAT32, or INT8 / UINT8 with one scale (XNNPACK
  has no int16, int32, int64 or float16 activation kernels: an int16x8 model runs entirely
  on the builtin kernels);
* per-channel scales only on the constant weights (and biases) of CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED and TRANSPOSE_CONV;
* int8 constant weights beside float activations (dynamic-range models) only for CONV_2D and
  FULLY_CONNECTED (XNNPACK's dynamically-quantized kernels);
* the 8-bit op set is smaller than the float one (:data:`INT8_OPS` vs :data:`FLOAT_OPS`:
  e.g. SOFTMAX, AVERAGE_POOL_2D, HARD_SWISH, RELU, RELU6, SUB run in float only here);
* shape-like inputs (reshape shape, transpose-conv output shape, paddings, axes, sizes,
  permutations, slice bounds) must be constants;
* a DEQUANTIZE of a constant FLOAT16 tensor (an fp16 model's weights) is folded into the
  partition when every op that reads it is delegated (:func:`settle_fp16_dequantize`).
"""

from __future__ import annotations

from tfquant.tflite.op_graph import OpNode

FLOAT_OPS = frozenset({
    "ABS", "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "CONCATENATION", "CONV_2D",
    "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "FLOOR",
    "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MAXIMUM",
    "MEAN", "MINIMUM", "MUL", "NEG", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "ROUND", "RSQRT", "SLICE",
    "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQRT", "SQUARE", "SQUARED_DIFFERENCE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
"""Ops XNNPACK runs in float32."""
INT8_OPS = frozenset({
    "ADD", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "ELU", "FULLY_CONNECTED", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE",
    "REDUCE_MAX", "RESHAPE", "RESIZE_BILINEAR", "SLICE", "SPACE_TO_DEPTH", "SPLIT",
    "STRIDED_SLICE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
"""Ops XNNPACK runs on 8-bit quantized tensors."""
WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
"""Op -> input index of its weights (per-channel scales allowed there and on the bias)."""
DYNAMIC_RANGE_OPS = frozenset({"CONV_2D", "FULLY_CONNECTED"})
STATIC_INPUTS = {
    "RESHAPE": (1,), "TRANSPOSE_CONV": (0,), "PAD": (1,), "MEAN": (1,), "SUM": (1,),
    "REDUCE_MAX": (1,), "RESIZE_BILINEAR": (1,), "TRANSPOSE": (1,), "SPLIT": (0,),
    "SLICE": (1, 2), "STRIDED_SLICE": (1, 2, 3),
}
"""Op -> inputs that must be constants (shapes, paddings, axes, sizes, bounds)."""
_ACTIVATION_TYPES = {"FLOAT32", "INT8", "UINT8"}


def rule(op: OpNode, ops: list[OpNode]) -> str | None:
    """``None`` if XNNPACK takes ``op``, else why not."""
    name = op.op
    if name not in FLOAT_OPS:
        return f"{name} has no XNNPACK kernel"
    for i in STATIC_INPUTS.get(name, ()):
        if i < len(op.inputs) and not op.inputs[i].constant:
            return f"input {i} of {name} (a shape/axes/paddings tensor) is computed at run time, not a constant"
    if name == "DEQUANTIZE" and op.inputs[0].dtype == "FLOAT16":
        return None if op.inputs[0].constant else "DEQUANTIZE of a non-constant float16 tensor"
    shape_inputs = STATIC_INPUTS.get(name, ())
    acts = [t for k, t in enumerate(op.inputs) if not t.constant and k not in shape_inputs]
    acts += [t for t in op.outputs]
    bad = sorted({t.dtype for t in acts if t.dtype not in _ACTIVATION_TYPES})
    if bad:
        return f"{'/'.join(bad)} activations (XNNPACK runs float32 and 8-bit tensors only)"
    if name in ("QUANTIZE", "DEQUANTIZE"):
        kinds = {op.inputs[0].dtype, op.outputs[0].dtype}
        if "UINT8" in kinds:
            return f"{name} between uint8 and int8 (XNNPACK converts float <-> int8 only)"
        return None
    quantized = any(t.dtype in ("INT8", "UINT8") for t in acts)
    weight = WEIGHTED.get(name)
    for k, t in enumerate(op.inputs):
        if t.per_channel and not (weight is not None and k >= weight and t.constant):
            return f"per-channel scales on input {k} (only weights of conv / fully-connected may be per-channel)"
    for t in acts:
        if t.per_channel:
            return "per-channel scales on an activation tensor"
    if quantized:
        if name not in INT8_OPS:
            return f"{name} runs in float only in XNNPACK (no 8-bit kernel)"
        return None
    # Float activations: any constant 8-bit operand makes this a dynamic-range (hybrid) op.
    hybrid = [t for t in op.inputs if t.constant and t.dtype in ("INT8", "UINT8", "INT4")]
    if hybrid and name not in DYNAMIC_RANGE_OPS:
        return f"{name} with {hybrid[0].dtype} weights and float activations (dynamic range) has no XNNPACK kernel"
    return None


def settle_fp16_dequantize(ops: list[OpNode], reasons: list[str | None]) -> list[str | None]:
    """A constant-fp16 DEQUANTIZE is delegated iff every op reading its output is."""
    out = list(reasons)
    for op in ops:
        if op.op == "DEQUANTIZE" and op.inputs and op.inputs[0].dtype == "FLOAT16" and out[op.index] is None:
            refused = [c for c in op.consumers if out[c] is not None]
            if refused or not op.consumers:
                out[op.index] = (
                    f"its float16 weights feed op {refused[0] if refused else '-'}, "
                    "which XNNPACK does not take, so the dequantized copy stays on the CPU"
                )
    return out
