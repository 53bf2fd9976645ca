"""The Hexagon delegate's documented op support (``tensorflow/lite/delegates/hexagon/README.md``).

"We only support quantized models ... all op support is for quantized versions": 8-bit
activations (int8 per the 8-bit quantization spec, or legacy uint8); float, float16 and int16
tensors stay on the CPU. Inputs and outputs of at most 4 dimensions. The per-op constraints
of :func:`rule` are those the README lists (verified there by ``IsNodeSupportedByHexagon``).
"""

from __future__ import annotations

from tfquant.evaluation.delegates.common import activations, fused_activation
from tfquant.tflite.op_graph import OpNode

OPS = frozenset({
    "ADD", "ARG_MAX", "ARG_MIN", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D",
    "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "HARD_SWISH", "L2_NORMALIZATION",
    "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "PACK",
    "PAD", "QUANTIZE", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "STRIDED_SLICE", "SUB", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})
_RELU_FAMILY = {"NONE", "RELU", "RELU6", "RELU_N1_TO_1"}
MAX_STRIDE = 3
MAX_RESIZE = 65


def _stride(op: OpNode) -> int:
    return max(int(op.options.get("strideW", 1)), int(op.options.get("strideH", 1)))


def rule(op: OpNode, ops: list[OpNode]) -> str | None:
    """``None`` if the Hexagon delegate takes ``op``, else why not."""
    name = op.op
    if name not in OPS:
        return f"{name} is not in the Hexagon delegate's supported ops"
    acts = activations(op)
    not8 = sorted({t.dtype for t in acts if t.dtype not in ("INT8", "UINT8")} - {"INT32"})
    if not8:
        return f"{'/'.join(not8)} tensors (Hexagon runs 8-bit quantized ops only)"
    if any(len(t.shape) > 4 for t in acts):
        return "a tensor of rank > 4"
    act = fused_activation(op)
    if name in ("ADD", "MUL", "SUB") and act not in _RELU_FAMILY:
        return f"{name} with fused {act} (only relu activations)"
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_NORMALIZATION") and act != "NONE":
        return f"{name} with a fused activation ({act})"
    if name in ("CONV_2D", "TRANSPOSE_CONV") and _stride(op) > MAX_STRIDE:
        return f"{name} stride {_stride(op)} > {MAX_STRIDE}"
    if name == "TRANSPOSE_CONV" and max(op.options.get("dilationWFactor", 1), op.options.get("dilationHFactor", 1)) != 1:
        return "TRANSPOSE_CONV with dilation"
    if name == "DEPTHWISE_CONV_2D":
        weights = op.inputs[1].shape if len(op.inputs) > 1 else ()
        if len(weights) == 4 and weights[2] != 3:
            return f"DEPTHWISE_CONV_2D filter width {weights[2]} (Hexagon: 3 only)"
        if int(op.options.get("depthMultiplier", 1)) != 1:
            return f"DEPTHWISE_CONV_2D depth_multiplier {op.options.get('depthMultiplier')} (Hexagon: 1 only)"
        dilated = max(op.options.get("dilationWFactor", 1), op.options.get("dilationHFactor", 1)) > 1
        if dilated and _stride(op) != 1:
            return "DEPTHWISE_CONV_2D dilation with stride > 1"
        if _stride(op) > MAX_STRIDE:
            return f"DEPTHWISE_CONV_2D stride {_stride(op)} > {MAX_STRIDE}"
    if name == "RESIZE_BILINEAR":
        size = op.inputs[1].values if len(op.inputs) > 1 else ()
        if size and max(size) > MAX_RESIZE:
            return f"RESIZE_BILINEAR to {max(size)} > {MAX_RESIZE}"
    return None
