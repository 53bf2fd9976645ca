"""The one .tflite flatbuffer reader / writer: ops, tensors, weights, metadata entries.

Built on the schema classes and helpers that ship with ``ai_edge_litert``
(``schema_py_generated``: the flatc-generated reader and object API of TFLite's
``schema.fbs``; ``tools.flatbuffer_utils``: bytes <-> ``ModelT``). No TensorFlow.

Metadata: TFLite's schema lets a model carry named entries (``Model.metadata``), each
pointing at a raw buffer (the converter itself adds ``min_runtime_version`` and
``CONVERSION_METADATA``); the interpreter ignores unknown ones, so a model with an extra
entry runs exactly as before. :func:`embed_bytes` / :func:`read_bytes` write and read one.

Weights: the weight operand of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED is input 1,
of TRANSPOSE_CONV input 1 too (its inputs are output_shape, weights, input). The output
channel axis, which TFLite stores as ``quantized_dimension`` of a per-channel weight, is
axis 3 of a DEPTHWISE_CONV_2D kernel (1, H, W, C·M) and axis 0 of the others (O, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from tfquant.errors import TfquantError
from tfquant.tflite.flatbuffer_edit import read_graph, with_taps  # noqa: F401  (without unpacking)

FILE_IDENTIFIER = b"TFL3"
WEIGHT_INPUT = 1
"""Index of the weight operand of every op in :data:`WEIGHT_CHANNEL_AXIS`."""
WEIGHT_CHANNEL_AXIS = {
    "CONV_2D": 0,
    "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 0,
    "TRANSPOSE_CONV": 0,
}
"""Weighted op -> output-channel axis of its weight tensor (TFLite ``quantized_dimension``)."""
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def read(tflite: bytes) -> Any:
    """The flatbuffer as a mutable object tree (``schema.ModelT``)."""
    return flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))


def write(model: Any) -> bytes:
    """Serializes a ``schema.ModelT`` back to .tflite bytes."""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def name(raw: bytes | str | None) -> str | None:
    """A tensor or metadata name as text (the object API gives bytes)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def op_name(model: Any, op: Any) -> str:
    """Builtin name (``CONV_2D``, ...) of operator ``op`` of ``model`` (a ``ModelT``).

    Op codes above 127 live in ``builtinCode``, older ones in ``deprecatedBuiltinCode``; the
    larger of the two is the op's.
    """
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return _OP_NAMES.get(builtin, str(builtin))


def type_name(tensor_type: int) -> str:
    """``schema.TensorType`` value -> its name (``INT8``, ``INT4``, ``FLOAT32``, ...)."""
    return _TYPE_NAMES.get(tensor_type, str(tensor_type))


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    """The weight operand of one conv / depthwise / fully-connected / transpose-conv op.

    Attributes:
      op: Builtin op name.
      index: Tensor index in the main subgraph.
      tensor: Tensor name.
      stored_type: Type as stored in the flatbuffer (``INT8``, ``INT4``, ``FLOAT32``, ...;
        LiteRT unpacks INT4 to int8 at load, so only the flatbuffer tells).
      shape: Tensor shape.
      channel_axis: Output-channel axis (:data:`WEIGHT_CHANNEL_AXIS`).
      scales: Quantization scales (empty: float; one: per tensor; else per channel).
      quantized_dimension: Axis of the per-channel scales as stored.
    """

    op: str
    index: int
    tensor: str
    stored_type: str
    shape: tuple[int, ...]
    channel_axis: int
    scales: tuple[float, ...]
    quantized_dimension: int


def weight_tensors(tflite: bytes) -> list[WeightTensor]:
    """The weight tensor of every weighted op of the main subgraph, in op order."""
    model = read(tflite)
    subgraph = model.subgraphs[0]
    out = []
    for op in subgraph.operators or []:
        kind = op_name(model, op)
        if kind not in WEIGHT_CHANNEL_AXIS or len(op.inputs) <= WEIGHT_INPUT:
            continue
        index = int(op.inputs[WEIGHT_INPUT])
        t = subgraph.tensors[index]
        q = t.quantization
        scales = () if q is None or q.scale is None else tuple(float(s) for s in q.scale)
        out.append(WeightTensor(
            op=kind, index=index, tensor=name(t.name), stored_type=type_name(t.type),
            shape=tuple(int(d) for d in t.shape), channel_axis=WEIGHT_CHANNEL_AXIS[kind],
            scales=scales, quantized_dimension=0 if q is None else int(q.quantizedDimension),
        ))
    return out


def constant_tensors(tflite: bytes) -> set[int]:
    """Indices of main-subgraph tensors whose buffer holds data (weights and constants)."""
    model = schema.Model.GetRootAs(tflite, 0)
    subgraph = model.Subgraphs(0)
    found = set()
    for i in range(subgraph.TensorsLength()):
        buffer = model.Buffers(subgraph.Tensors(i).Buffer())
        if buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1):
            found.add(i)
    return found


def tensor_name(tflite: bytes, index: int) -> str:
    """Name of tensor ``index`` of the main subgraph (reads only that tensor)."""
    return name(schema.Model.GetRootAs(tflite, 0).Subgraphs(0).Tensors(int(index)).Name())


VALUE_COPY_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})
"""Ops whose output holds their input 0's values, byte for byte in the same (row-major) order."""


def value_copies(tflite: bytes, indices: list[int]) -> dict[int, int]:
    """Tensors of ``indices`` that are byte-for-byte copies of another tensor of ``indices``.

    A tensor made by an op of :data:`VALUE_COPY_OPS` from a tensor of the same type holds the
    same values in the same flat order, so any statistic of the flattened values (even a
    floating-point sum, whose result depends on the order) is the same for both. Statistics
    per channel of the last axis (``TensorStatistics.channel_sum``, bias correction's expected
    input) are the same only when the last dimension is too (channel = flat index mod C), so a
    copy must also keep the last dimension (a Flatten's RESHAPE does not).

    Returns:
      copy index -> source index (a tensor of ``indices`` that is not itself a copy).
    """
    model = read(tflite)
    subgraph = model.subgraphs[0]
    wanted = {int(i) for i in indices}
    parent: dict[int, int] = {}
    for op in subgraph.operators:
        if op_name(model, op) not in VALUE_COPY_OPS or len(op.outputs) != 1 or len(op.inputs) < 1:
            continue
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        a, b = subgraph.tensors[src] if src >= 0 else None, subgraph.tensors[dst]
        if a is not None and a.type == b.type and _last_dim(a) is not None and _last_dim(a) == _last_dim(b):
            parent[dst] = src
    copies: dict[int, int] = {}
    for i in sorted(wanted):
        j = source = i
        while j in parent:  # up the chain of copies, to its first tensor in ``indices``
            j = parent[j]
            if j in wanted:
                source = j
        if source != i:
            copies[i] = source
    return copies


def _last_dim(tensor: Any) -> int | None:
    """The tensor's last dimension (None when its shape is unknown or a scalar's)."""
    shape = getattr(tensor, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) > 0 else None


def with_outputs(tflite: bytes, indices: list[int]) -> bytes:
    """A copy of the model whose main subgraph also outputs tensors ``indices``."""
    model = read(tflite)
    subgraph = model.subgraphs[0]
    outputs = [int(i) for i in subgraph.outputs]
    subgraph.outputs = np.array(outputs + [i for i in indices if i not in outputs], dtype=np.int32)
    return write(model)


def one_op_model() -> bytes:
    """A minimal valid model: one float RELU, input ``x`` -> output ``y``, shape [1]."""
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.RELU
    code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
    code.version = 1
    model.operatorCodes = [code]
    model.buffers = [schema.BufferT()]
    tensors = []
    for tensor_name_ in (b"x", b"y"):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = [1], schema.TensorType.FLOAT32, 0, tensor_name_
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs, subgraph.operators = tensors, [0], [1], [op]
    model.subgraphs = [subgraph]
    return write(model)


def computation_fingerprint(tflite: bytes) -> str:
    """A hash of what a model computes, ignoring its metadata.

    Covers every subgraph's operators (op code, inputs, outputs, options) and tensors (name,
    type, shape, scales, zero points, constant data), not the metadata entries (recipe,
    ranges, the converter's ``CONVERSION_METADATA``). Two models with the same fingerprint
    give the same outputs in the same runtime, so a sweep evaluates such twins once.
    """
    m = read(tflite)
    h = hashlib.sha256()

    def add(*parts: object) -> None:
        for p in parts:
            h.update(repr(p).encode() if not isinstance(p, (bytes, bytearray)) else bytes(p))
            h.update(b"\x00")

    for code in m.operatorCodes:
        add(code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
    for sg in m.subgraphs:
        add(list(sg.inputs), list(sg.outputs))
        for op in sg.operators:
            add(op.opcodeIndex, list(op.inputs), list(op.outputs), op.builtinOptionsType,
                vars(op.builtinOptions) if op.builtinOptions is not None else None)
        for t in sg.tensors:
            q = t.quantization
            data = m.buffers[t.buffer].data if t.buffer < len(m.buffers) else None
            add(t.name, t.type, list(t.shape) if t.shape is not None else None,
                None if q is None or q.scale is None else np.asarray(q.scale).tobytes(),
                None if q is None or q.zeroPoint is None else np.asarray(q.zeroPoint).tobytes(),
                None if q is None else q.quantizedDimension,
                b"" if data is None else np.asarray(data).tobytes())
    return h.hexdigest()


def check_tflite_bytes(tflite: object, *, what: str = "tflite") -> bytes:
    """Returns ``tflite`` as bytes after checking it is a TFLite flatbuffer.

    Raises:
      TfquantError: not bytes, or no ``TFL3`` file identifier.
    """
    if not isinstance(tflite, (bytes, bytearray, memoryview)):
        raise TfquantError(
            f"{what} must be the bytes returned by tfquant.convert.convert(), got "
            f"{type(tflite).__name__}"
        )
    data = bytes(tflite)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise TfquantError(
            f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier); pass the bytes "
            "returned by tfquant.convert.convert()"
        )
    return data


def model_bytes(tflite: bytes | str | os.PathLike[str]) -> bytes:
    """The checked flatbuffer bytes of ``tflite`` (bytes, or the path of a .tflite file)."""
    if isinstance(tflite, (str, os.PathLike)):
        path = Path(tflite)
        if not path.is_file():
            raise TfquantError(
                f"tflite file {str(path)!r} does not exist; pass the path of a .tflite file"
            )
        return check_tflite_bytes(path.read_bytes(), what=f"file {str(path)!r}")
    return check_tflite_bytes(tflite)


def embed_bytes(tflite: bytes, entry_name: str, raw: bytes) -> bytes:
    """Returns ``tflite`` with ``raw`` stored under the metadata entry ``entry_name``.

    An existing entry of that name is replaced (its old buffer stays, unreferenced).
    Tensors, ops and weights are unchanged.
    """
    model = read(check_tflite_bytes(tflite))
    payload = schema.BufferT()
    payload.data = np.frombuffer(raw, dtype=np.uint8)
    model.buffers.append(payload)
    entry = schema.MetadataT()
    entry.name = entry_name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if name(m.name) != entry_name] + [entry]
    return write(model)


def read_bytes(data: bytes, entry_name: str) -> bytes | None:
    """The raw bytes of metadata entry ``entry_name`` of model ``data``, or ``None``.

    Raises:
      TfquantError: not a TFLite model.
    """
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if name(entry.Name()) != entry_name:
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # large-model layout: data lives after the flatbuffer
                raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                array = buffer.DataAsNumpy()  # 0, not an array, when the buffer is empty
                raw = array.tobytes() if isinstance(array, np.ndarray) else b""
            return raw
    except (IndexError, ValueError, TypeError, struct.error) as e:
        raise TfquantError(
            f"the tflite model is corrupt (its flatbuffer does not parse: {type(e).__name__}); "
            "re-export it with tfquant.convert"
        ) from None
    return None


_NUMPY_TYPES = {"INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "FLOAT32": np.float32,
                "INT16": np.int16, "UINT8": np.uint8}


@dataclasses.dataclass(frozen=True)
class WeightedOp:
    """One conv / depthwise / fully-connected op of the main subgraph and its operands.

    Attributes:
      op: Builtin op name (a key of :data:`WEIGHT_CHANNEL_AXIS` but TRANSPOSE_CONV).
      position: The op's index in the subgraph's operator list.
      input: Tensor index of its activation input.
      weight: Tensor index of its weights.
      bias: Tensor index of its bias, or -1 when it has none.
      channel_axis: Output-channel axis of the weights.
    """

    op: str
    position: int
    input: int
    weight: int
    bias: int
    channel_axis: int


def weighted_ops(model: Any) -> list[WeightedOp]:
    """CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED ops of ``model`` (a ``ModelT``), in order."""
    subgraph = model.subgraphs[0]
    out = []
    for position, op in enumerate(subgraph.operators or []):
        kind = op_name(model, op)
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2:
            continue
        bias = int(op.inputs[2]) if len(op.inputs) > 2 else -1
        out.append(WeightedOp(op=kind, position=position, input=int(op.inputs[0]),
                              weight=int(op.inputs[WEIGHT_INPUT]), bias=bias,
                              channel_axis=WEIGHT_CHANNEL_AXIS[kind]))
    return out


def producer_inputs(model: Any, index: int) -> tuple[str, list[int]] | None:
    """``(op name, input tensor indices)`` of the op that outputs tensor ``index``, or None."""
    for op in model.subgraphs[0].operators or []:
        if index in [int(i) for i in op.outputs]:
            return op_name(model, op), [int(i) for i in op.inputs]
    return None


def tensor_info(model: Any, index: int) -> tuple[str, str, tuple[int, ...]]:
    """``(name, type name, shape)`` of main-subgraph tensor ``index`` of ``model``."""
    t = model.subgraphs[0].tensors[index]
    return name(t.name), type_name(t.type), tuple(int(d) for d in t.shape)


def tensor_quantization(model: Any, index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(scales, zero points, quantized dimension)`` of tensor ``index`` (empty if float)."""
    q = model.subgraphs[0].tensors[index].quantization
    if q is None or q.scale is None:
        return np.zeros(0), np.zeros(0, np.int64), 0
    zp = np.zeros(len(q.scale), np.int64) if q.zeroPoint is None else np.asarray(q.zeroPoint, np.int64)
    return np.asarray(q.scale, np.float64), zp, int(q.quantizedDimension)


def tensor_data(model: Any, index: int) -> np.ndarray:
    """The constant data of tensor ``index`` as a numpy array of its type and shape.

    Raises:
      TfquantError: the tensor holds no data or has a type this reader does not know.
    """
    t = model.subgraphs[0].tensors[index]
    kind = type_name(t.type)
    buffer = model.buffers[t.buffer]
    if kind not in _NUMPY_TYPES or buffer.data is None or len(buffer.data) == 0:
        raise TfquantError(
            f"tensor {name(t.name)!r} ({kind}) holds no constant data tfquant can read; "
            "re-export the model with tfquant.convert"
        )
    raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
    return np.frombuffer(raw, dtype=_NUMPY_TYPES[kind]).reshape(tuple(int(d) for d in t.shape)).copy()


def set_tensor_data(
    model: Any, index: int, data: np.ndarray, *, scales: np.ndarray, quantized_dimension: int
) -> None:
    """Replaces the data and the (symmetric, z = 0) scales of constant tensor ``index``.

    ``data`` must have the tensor's shape and numpy type. A buffer shared with another tensor
    (the converter deduplicates equal constants) is not touched: the tensor gets a new one.
    """
    subgraph = model.subgraphs[0]
    t = subgraph.tensors[index]
    want = _NUMPY_TYPES[type_name(t.type)]
    array = np.ascontiguousarray(data)
    if array.dtype != want or tuple(array.shape) != tuple(int(d) for d in t.shape):
        raise ValueError(f"data {array.dtype}{array.shape} does not fit tensor {index}")  # internal
    payload = np.frombuffer(array.tobytes(), dtype=np.uint8)
    shared = sum(1 for other in subgraph.tensors if other.buffer == t.buffer) > 1
    if shared:
        buffer = schema.BufferT()
        model.buffers.append(buffer)
        t.buffer = len(model.buffers) - 1
    model.buffers[t.buffer].data = payload
    q = t.quantization if t.quantization is not None else schema.QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32).reshape(-1)
    q.zeroPoint = np.zeros(q.scale.size, np.int64)
    q.quantizedDimension = int(quantized_dimension)
    t.quantization = q


def add_bias(model: Any, position: int, data: np.ndarray, *, scales: np.ndarray, tensor_name: str) -> int:
    """Gives operator ``position`` (a conv / fully-connected op without a bias) an int32
    bias tensor holding ``data`` at ``scales``; returns the new tensor's index."""
    subgraph = model.subgraphs[0]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(data, np.int32).tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    t = schema.TensorT()
    t.shape = np.array([int(np.size(data))], np.int32)
    t.type = schema.TensorType.INT32
    t.buffer = len(model.buffers) - 1
    t.name = tensor_name
    q = schema.QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32).reshape(-1)
    q.zeroPoint = np.zeros(q.scale.size, np.int64)
    q.quantizedDimension = 0
    t.quantization = q
    subgraph.tensors.append(t)
    index = len(subgraph.tensors) - 1
    op = subgraph.operators[position]
    inputs = [int(i) for i in op.inputs][:2]
    op.inputs = np.array(inputs + [index], np.int32)
    return index


def replicate_per_tensor_scales(tflite: bytes, op: str = "DEPTHWISE_CONV_2D") -> tuple[bytes, int]:
    """Stores the one scale of each per-tensor int8 weight of ``op`` once per output channel.

    The weights stay per-tensor quantized (the same integers, every channel's scale equal to
    the tensor's), only the scale array is repeated along the output-channel axis. Why: in
    ai-edge-litert 2.3.0 the hybrid (dynamic-range) DEPTHWISE_CONV_2D kernel reads one scale
    per output channel even when the tensor has one: the converter writes that scale on
    quantized_dimension 0, which passes the kernel's check "scales == dims[quantized_dimension]"
    (a depthwise filter is (1, H, W, C)), and the kernel then reads C scales, past the end of
    the array, and outputs garbage (BUILD_NOTES.md, "Dynamic-range per-tensor collapse"; reproduced in
    ``tests/convert/test_dynamic_depthwise.py``). Returns ``(model, tensors changed)``.
    """
    model = read(tflite)
    changed = 0
    for w in weighted_ops(model):
        _, kind, shape = tensor_info(model, w.weight)
        scales, _, _ = tensor_quantization(model, w.weight)
        if w.op != op or kind != "INT8" or scales.size != 1 or shape[w.channel_axis] == 1:
            continue
        set_tensor_data(model, w.weight, tensor_data(model, w.weight),
                        scales=np.full(shape[w.channel_axis], scales[0]), quantized_dimension=w.channel_axis)
        changed += 1
    return (write(model), changed) if changed else (tflite, 0)


def set_float_data(model: Any, index: int, data: np.ndarray) -> None:
    """Replaces the data of FLOAT32 constant tensor ``index`` (a new buffer if it was shared)."""
    subgraph = model.subgraphs[0]
    t = subgraph.tensors[index]
    array = np.ascontiguousarray(data, np.float32)
    if type_name(t.type) != "FLOAT32" or tuple(array.shape) != tuple(int(d) for d in t.shape):
        raise ValueError(f"data {array.shape} does not fit float tensor {index}")  # internal
    if sum(1 for other in subgraph.tensors if other.buffer == t.buffer) > 1:
        model.buffers.append(schema.BufferT())
        t.buffer = len(model.buffers) - 1
    model.buffers[t.buffer].data = np.frombuffer(array.tobytes(), dtype=np.uint8)
