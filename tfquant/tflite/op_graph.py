"""The main subgraph of a .tflite as plain data: each op with its tensors and options.

What a delegate-compatibility check needs from the flatbuffer alone (no interpreter): op
type and version, each operand's type, shape, whether it is a constant, its quantization
(number of scales: one per tensor, or one per channel) and the op's builtin options
(strides, fused activation, depth multiplier, ...). Read with the flatc-generated object API
of TFLite's ``schema.fbs`` (:mod:`tfquant.tflite.flatbuffer`).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from tfquant.errors import TfquantError
from tfquant.tflite import flatbuffer as fb

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclasses.dataclass(frozen=True)
class Operand:
    """One tensor an op reads or writes.

    Attributes:
      index: Tensor index in the main subgraph.
      dtype: Stored type name (``FLOAT32``, ``INT8``, ``INT16``, ``FLOAT16``, ...).
      shape: Static shape.
      constant: The tensor holds data in the flatbuffer (weights, biases, shape constants).
      n_scales: Number of quantization scales: 0 (not quantized), 1 (per-tensor), >1
        (per-channel).
      values: The data of a small constant INT32 tensor (shapes, axes, paddings), else ().
    """

    index: int
    dtype: str
    shape: tuple[int, ...]
    constant: bool
    n_scales: int
    values: tuple[int, ...] = ()

    @property
    def per_channel(self) -> bool:
        return self.n_scales > 1


@dataclasses.dataclass(frozen=True)
class OpNode:
    """One operator of the main subgraph.

    Attributes:
      index: Position in the subgraph's operator list (= LiteRT's node index).
      op: Builtin name (``CONV_2D``, ...) or the custom op's name.
      version: The op's version in the flatbuffer's operator code.
      inputs / outputs: The operands (optional inputs that are absent are left out).
      options: Builtin options as a dict (``strideW``, ``fusedActivationFunction`` as its
        name, ``depthMultiplier``, ...).
      consumers: Indices of the ops that read this op's outputs.
    """

    index: int
    op: str
    version: int
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    options: dict[str, Any]
    consumers: tuple[int, ...] = ()


def _options(op: Any) -> dict[str, Any]:
    raw = op.builtinOptions
    if raw is None:
        return {}
    out = {k: v for k, v in vars(raw).items() if isinstance(v, (int, float, bool))}
    if "fusedActivationFunction" in out:
        out["fusedActivationFunction"] = _ACTIVATIONS.get(out["fusedActivationFunction"], "OTHER")
    return out


def read_ops(tflite: bytes) -> list[OpNode]:
    """Every op of the main subgraph of ``tflite``, in order, with its operands and options."""
    try:
        model = fb.read(fb.check_tflite_bytes(tflite))
        subgraph = model.subgraphs[0]
    except (struct.error, IndexError, TypeError, AttributeError):
        raise TfquantError(
            "the model's flatbuffer does not parse (truncated or corrupt); re-export it with "
            "'python -m tfquant convert'"
        ) from None
    constants = fb.constant_tensors(tflite)

    def operand(i: int) -> Operand:
        t = subgraph.tensors[i]
        q = t.quantization
        n_scales = 0 if q is None or q.scale is None else len(q.scale)
        shape = tuple(int(d) for d in t.shape) if t.shape is not None else ()
        values: tuple[int, ...] = ()
        if i in constants and fb.type_name(t.type) == "INT32":
            data = model.buffers[t.buffer].data
            if data is not None and len(data) <= 64:
                raw = bytes(bytearray(data))
                values = tuple(
                    int.from_bytes(raw[k:k + 4], "little", signed=True) for k in range(0, len(raw), 4)
                )
        return Operand(i, fb.type_name(t.type), shape, i in constants, n_scales, values)

    nodes = []
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(subgraph.operators or []):
        for i in op.inputs if op.inputs is not None else []:
            readers.setdefault(int(i), []).append(k)
    for k, op in enumerate(subgraph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        name = fb.op_name(model, op)
        if name == "CUSTOM" and code.customCode:
            name = fb.name(code.customCode)
        outs = [int(i) for i in op.outputs]
        nodes.append(OpNode(
            index=k, op=name, version=int(code.version),
            inputs=tuple(operand(int(i)) for i in op.inputs if int(i) >= 0),
            outputs=tuple(operand(i) for i in outs),
            options=_options(op),
            consumers=tuple(sorted({c for i in outs for c in readers.get(i, [])})),
        ))
    return nodes
