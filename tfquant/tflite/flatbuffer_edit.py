"""Byte-level .tflite edits and reads that skip the flatbuffers object API.

:func:`tfquant.tflite.flatbuffer.read` unpacks the whole model into Python objects
(``schema.ModelT``) and :func:`~tfquant.tflite.flatbuffer.write` packs every object back:
on the zoo ViT (290 ops, 379 tensors, 382 buffers) that is 35 ms + 23 ms, a quarter of
the statistics pass's overhead over a 1000-image forward pass (0.26 s). The statistics pass
needs neither: it only *adds* tap ops (:func:`with_taps`) and only *reads* the main
subgraph's ops and tensors (:func:`read_graph`). Measured side by side in one process (CPU,
medians of 7; BUILD_NOTES.md, "Statistics pass set-up without the object API"):
ViT set-up 58 -> 4.8 ms (read + rearrangements 34 -> 2.0, taps 22.5 -> 1.3, LiteRT 1.5),
mobilenet_v2 11.5 -> 1.3 ms, mobilenet_v1 5.8 -> 0.8 ms.

:func:`with_taps`: a flatbuffer's offsets are unsigned and point forward, and a builder
writes back to front, so the old buffer is placed verbatim at the end of a new
``flatbuffers.Builder`` (its start 16-byte aligned, as TFLite aligns buffer data) and only
the new tables are built in front of it: the tap ``OperatorCode`` / ``Operator`` tables, a
new subgraph 0 (operators with the taps interleaved, no outputs), new ``SignatureDef`` s
(no outputs) and a new ``Model`` root. Every other table, vector and string (tensors,
buffers and their data, subgraphs 1.., metadata, the ops themselves) is referenced where it
already is; the old root and subgraph 0 stay in the file unreferenced (the ViT with 187 taps:
618 kB -> 632 kB, the object API's 628 kB). The tap tables themselves are written as raw
bytes with one shared vtable per kind (:func:`_tap_tables`). Field layouts are TFLite's ``schema.fbs`` as generated in
``ai_edge_litert.schema_py_generated``; a table with more fields than that schema knows,
buffers stored outside the flatbuffer (``Buffer.offset`` > 1, external buffers: their
offsets are absolute file positions) or a non-TFLite buffer give None, and the caller takes
the object-API path. The result parses to the same object tree as the object-API edit
(tests/tflite/test_runtime_statistics.py).

:func:`read_graph`: the lazy reader's view of the model with the object API's attribute
names (``subgraphs[0].operators[i].opcodeIndex / inputs / outputs``, ``tensors[i].type /
shape / shapeSignature / buffer / name``, ``operatorCodes[k]``, ``buffers[b].data``), each
tensor and buffer read only when asked for.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

_IDENTIFIER = b"TFL3"
_ALIGN = 16  # TFLite aligns buffer data to 16 bytes; the old buffer keeps that alignment
_CUSTOM = schema.BuiltinOperator.CUSTOM
# Field kinds per slot ("o": offset to a table / vector / string; else a scalar's struct code)
_MODEL = ("I", "o", "o", "o", "o", "o", "o", "o", "o", "o")
_SUBGRAPH = ("o", "o", "o", "o", "o", "i")
_SIGNATURE = ("o", "o", "o", "o", "I")
_SIZES = {"I": 4, "i": 4}
_MODEL_EXTERNAL = (8, 9)  # external_buffer_groups, external_buffers


class _Unsupported(Exception):
    """A model this editor does not handle (the caller takes the object-API path)."""


def _u32(buf: bytes, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _field(buf: bytes, table: int, slot: int) -> int:
    """Absolute position of field ``slot`` of the table at ``table``, 0 when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    size = struct.unpack_from("<H", buf, vtable)[0]
    at = 4 + 2 * slot
    if at >= size:
        return 0
    offset = struct.unpack_from("<H", buf, vtable + at)[0]
    return table + offset if offset else 0


def _num_fields(buf: bytes, table: int) -> int:
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    return (struct.unpack_from("<H", buf, vtable)[0] - 4) // 2


def _target(buf: bytes, table: int, slot: int) -> int:
    """Position of what offset field ``slot`` points at (a vector's length), 0 when absent."""
    at = _field(buf, table, slot)
    return at + _u32(buf, at) if at else 0


def _tables(buf: bytes, vector: int) -> np.ndarray:
    """Positions of the tables of the offset vector at ``vector`` (0: absent, no tables)."""
    if not vector:
        return np.zeros(0, np.int64)
    n = _u32(buf, vector)
    slots = vector + 4 + 4 * np.arange(n, dtype=np.int64)
    return slots + np.frombuffer(buf, "<u4", n, vector + 4).astype(np.int64)


def _ints(buf: bytes, vector: int) -> np.ndarray:
    return np.frombuffer(buf, "<i4", _u32(buf, vector), vector + 4) if vector else np.zeros(0, np.int32)


def _scalar(buf: bytes, table: int, slot: int, code: str, default: int) -> int:
    at = _field(buf, table, slot)
    return struct.unpack_from("<" + code, buf, at)[0] if at else default


def _vector(buf: bytes, table: int, slot: int, dtype: str) -> np.ndarray | None:
    """The object API's value of a vector field: None when absent, else a numpy array."""
    at = _target(buf, table, slot)
    return np.frombuffer(buf, dtype, _u32(buf, at), at + 4) if at else None


def _string(buf: bytes, table: int, slot: int) -> bytes | None:
    at = _target(buf, table, slot)
    return buf[at + 4 : at + 4 + _u32(buf, at)] if at else None


def _check_fields(buf: bytes, table: int, kinds: tuple[str, ...]) -> None:
    if _num_fields(buf, table) > len(kinds):
        raise _Unsupported("a table has fields this schema does not know")


def _offset_vector(builder: flatbuffers.Builder, offsets: np.ndarray) -> int:
    """A vector of uoffsets to the builder offsets ``offsets`` (one bulk write)."""
    n = len(offsets)
    builder.StartVector(4, n, 4)
    start = builder.Offset()
    # element i sits 4 (n - i) bytes before ``start`` (from the end); it stores the distance
    # from itself forward to its target
    relative = start + 4 * (n - np.arange(n, dtype=np.int64)) - np.asarray(offsets, np.int64)
    head = builder.head - 4 * n
    builder.Bytes[head : builder.head] = relative.astype("<u4").tobytes()
    builder.head = head
    return builder.EndVector()


def _copy_table(
    builder: flatbuffers.Builder, buf: bytes, table: int, kinds: tuple[str, ...], base: int,
    replace: dict[int, int],
) -> int:
    """A new table with the fields of the old one at ``table`` (offsets still pointing at the
    old objects, at builder offset ``base`` - position), but fields ``replace`` (slot -> new
    builder offset)."""
    _check_fields(buf, table, kinds)
    builder.StartObject(len(kinds))
    for slot, kind in enumerate(kinds):
        if slot in replace:
            builder.PrependUOffsetTRelative(replace[slot])
            builder.Slot(slot)
            continue
        at = _field(buf, table, slot)
        if not at:
            continue
        if kind == "o":
            builder.PrependUOffsetTRelative(base - (at + _u32(buf, at)))
        else:
            builder.Prep(_SIZES[kind], 0)
            builder.head -= _SIZES[kind]
            struct.pack_into("<" + kind, builder.Bytes, builder.head, struct.unpack_from("<" + kind, buf, at)[0])
        builder.Slot(slot)
    return builder.EndObject()


def _external_data(buf: bytes, model: int, subgraphs: np.ndarray) -> bool:
    """Whether some buffer or custom options live outside the flatbuffer (the large-model
    layout: absolute file positions, which moving the flatbuffer would break)."""
    if any(_field(buf, model, slot) for slot in _MODEL_EXTERNAL):
        return True
    for buffer in _tables(buf, _target(buf, model, 4)).tolist():
        if _scalar(buf, buffer, 1, "Q", 0) > 1:  # Buffer.offset
            return True
    return any(
        _scalar(buf, op, 9, "Q", 0) > 1  # Operator.large_custom_options_offset
        for subgraph in subgraphs.tolist() for op in _tables(buf, _target(buf, subgraph, 3)).tolist()
    )


def with_taps(tflite: bytes | Any, indices: Sequence[int], custom_code: str) -> bytes:
    """A copy of the model with a CUSTOM op ``f"{custom_code}{k}"`` reading tensor
    ``indices[k]`` of the main subgraph right after the op that produces it (first, for a
    graph input): one input, no outputs, so the memory planner keeps the tensor alive only
    until the tap has read it. The taps are the model's only results: the main subgraph and
    its signatures lose their outputs (tap an output to read it), so no tensor is copied out
    and none needs a buffer sized before the run.

    Bytes are edited as bytes (:func:`add_taps`; 1.3 ms instead of the object API's 22.5 on
    the zoo ViT, and no 34 ms read before); where that editor declines, and for a model already read
    (:func:`tfquant.tflite.flatbuffer.read`, then edited in place), :func:`add_taps_unpacked`.
    """
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        edited = add_taps(tflite, indices, custom_code)
        if edited is not None:
            return edited
    return add_taps_unpacked(tflite, indices, custom_code)


def add_taps_unpacked(tflite: bytes | Any, indices: Sequence[int], custom_code: str) -> bytes:
    """:func:`with_taps` through the object API (unpack, edit, pack: any model)."""
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    else:
        model = tflite
    subgraph = model.subgraphs[0]
    subgraph.outputs = np.array([], dtype=np.int32)
    for signature in model.signatureDefs or []:
        signature.outputs = []
    first = len(model.operatorCodes)
    for k in range(len(indices)):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = _CUSTOM
        code.customCode, code.version = f"{custom_code}{k}".encode(), 1
        model.operatorCodes.append(code)
    after = _after_producers([[int(o) for o in op.outputs] for op in subgraph.operators], indices)
    operators = []
    for position in range(-1, len(subgraph.operators)):
        if position >= 0:
            operators.append(subgraph.operators[position])
        for k in after.get(position, []):
            tap = schema.OperatorT()
            tap.opcodeIndex, tap.inputs, tap.outputs = first + k, [int(indices[k])], []
            operators.append(tap)
    subgraph.operators = operators
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _after_producers(outputs: list[list[int]], indices: Sequence[int]) -> dict[int, list[int]]:
    """Producer position (-1: a graph input) -> the taps k that follow it."""
    producer = {o: position for position, op in enumerate(outputs) for o in op}
    after: dict[int, list[int]] = {}
    for k, index in enumerate(indices):
        after.setdefault(producer.get(int(index), -1), []).append(k)
    return after


def add_taps(tflite: bytes, indices: Sequence[int], custom_code: str) -> bytes | None:
    """:func:`with_taps` on the bytes, building only the new tables (module docstring);
    None when the model is one this editor does not handle."""
    try:
        return _with_taps(bytes(tflite), [int(i) for i in indices], custom_code)
    except (_Unsupported, struct.error, ValueError, IndexError):
        return None


def _with_taps(buf: bytes, indices: list[int], custom_code: str) -> bytes:
    if len(buf) < 8 or buf[4:8] != _IDENTIFIER or len(buf) >= 2**31 - 2**20:
        raise _Unsupported("not a TFLite flatbuffer under 2 GB")
    model = _u32(buf, 0)
    _check_fields(buf, model, _MODEL)
    subgraphs = _tables(buf, _target(buf, model, 2))
    if _external_data(buf, model, subgraphs):
        raise _Unsupported("data outside the flatbuffer")
    codes = _tables(buf, _target(buf, model, 1))
    signatures = _tables(buf, _target(buf, model, 7))
    if not len(subgraphs):
        raise _Unsupported("no subgraph")
    subgraph = int(subgraphs[0])
    operators = _tables(buf, _target(buf, subgraph, 3))
    after = _after_producers([_ints(buf, _target(buf, op, 2)).tolist() for op in operators.tolist()], indices)

    builder = flatbuffers.Builder(len(buf) + 1024 + 96 * len(indices) + 4 * (len(operators) + len(codes)))
    builder.Prep(_ALIGN, len(buf))  # the old buffer's first byte lands 16-byte aligned
    builder.head -= len(buf)
    builder.Bytes[builder.head : builder.head + len(buf)] = buf
    base = builder.Offset()  # builder offset of the old byte 0: old position p is base - p

    first = len(codes)
    block, code_at, tap_at, empty_at = _tap_tables(indices, custom_code, first)
    builder.Prep(4, len(block))
    builder.head -= len(block)
    builder.Bytes[builder.head : builder.head + len(block)] = block
    start = builder.Offset()  # builder offset of the block's byte 0
    new_codes, taps, empty = [start - r for r in code_at], [start - r for r in tap_at], start - empty_at
    ops = [taps[k] for k in after.get(-1, [])]
    for position, op in enumerate(operators.tolist()):
        ops.append(base - op)
        ops.extend(taps[k] for k in after.get(position, []))
    new_ops = _offset_vector(builder, np.array(ops, np.int64))
    main = _copy_table(builder, buf, subgraph, _SUBGRAPH, base, {2: empty, 3: new_ops})
    new_signatures = [_copy_table(builder, buf, int(s), _SIGNATURE, base, {1: empty}) for s in signatures]
    replace = {
        1: _offset_vector(builder, np.concatenate([base - codes, np.array(new_codes, np.int64)])),
        2: _offset_vector(builder, np.concatenate([[main], base - subgraphs[1:]])),
    }
    if _field(buf, model, 7):
        replace[7] = _offset_vector(builder, np.array(new_signatures, np.int64))
    root = _copy_table(builder, buf, model, _MODEL, base, replace)
    builder.Finish(root, file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


# The tap tables as raw bytes (one shared vtable per table kind): the Builder's generic
# calls cost ~20 us a tap (4 ms of the ViT's 187 taps), this ~2 us. Positions r are relative
# to the block's start; uoffsets point forward (strings, the inputs vector and the shared
# empty vector come after the tables that use them), soffsets to the vtables backward.
_CODE_VTABLE = struct.pack("<6H", 12, 16, 12, 4, 0, 8)  # deprecated_builtin_code, custom_code, -, builtin_code
_TAP_VTABLE = struct.pack("<6H", 10, 16, 4, 8, 12, 0)  # opcode_index, inputs, outputs (+ 2 bytes padding)


def _tap_tables(indices: list[int], custom_code: str, first: int) -> tuple[bytes, list[int], list[int], int]:
    """Tap k's OperatorCode (CUSTOM, ``f"{custom_code}{k}"``) and Operator (opcode ``first``
    + k, inputs [indices[k]], outputs the shared empty vector) as bytes:
    ``(block, OperatorCode positions, Operator positions, empty vector position)``."""
    parts, code_at, tap_at = [_CODE_VTABLE, _TAP_VTABLE], [], []
    r = len(_CODE_VTABLE) + len(_TAP_VTABLE)
    texts = [f"{custom_code}{k}".encode() for k in range(len(indices))]
    end = r + sum(40 + (len(t) + 8) // 4 * 4 for t in texts)  # the empty vector
    for k, (index, text) in enumerate(zip(indices, texts)):
        code_at.append(r)
        tap_at.append(r + 16)
        string = text + b"\0" * (4 - len(text) % 4)  # NUL-terminated, padded to 4 bytes
        parts.append(struct.pack(
            "<iIiB3x" "iIII" "Ii" "I", r, 40 - 4, _CUSTOM, _CUSTOM,  # OperatorCode at r
            r + 16 - len(_CODE_VTABLE), first + k, 8, end - (r + 28),  # Operator at r + 16
            1, index,  # inputs vector at r + 32
            len(text)) + string)  # the custom code string at r + 40
        r += 44 + len(string)
    parts.append(struct.pack("<I", 0))
    return b"".join(parts), code_at, tap_at, end


class _Lazy(Sequence[Any]):
    """A read-only list whose items are made on first access."""

    def __init__(self, length: int, make: Callable[[int], Any]) -> None:
        self._length, self._make = length, make
        self._items: dict[int, Any] = {}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._length))]
        i = int(i)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(i)
        if i not in self._items:
            self._items[i] = self._make(i)
        return self._items[i]


class GraphTensor:
    """One tensor with ``schema.TensorT``'s attribute names (what :func:`read_graph` reads)."""

    __slots__ = ("shape", "type", "buffer", "name", "shapeSignature")

    def __init__(self, buf: bytes, table: int) -> None:
        self.shape, self.shapeSignature = _vector(buf, table, 0, "<i4"), _vector(buf, table, 7, "<i4")
        self.type, self.buffer = _scalar(buf, table, 1, "b", 0), _scalar(buf, table, 2, "I", 0)
        self.name = _string(buf, table, 3)


class GraphBuffer:
    """One buffer with ``schema.BufferT``'s ``data`` (None when it has none)."""

    __slots__ = ("data",)

    def __init__(self, buf: bytes, table: int) -> None:
        self.data = _vector(buf, table, 0, "u1")


class GraphOperator:
    """One operator with ``schema.OperatorT``'s ``opcodeIndex``, ``inputs``, ``outputs``."""

    __slots__ = ("opcodeIndex", "inputs", "outputs")

    def __init__(self, buf: bytes, table: int) -> None:
        self.opcodeIndex = _scalar(buf, table, 0, "I", 0)
        self.inputs, self.outputs = _vector(buf, table, 1, "<i4"), _vector(buf, table, 2, "<i4")


class GraphOperatorCode:
    """One operator code with ``schema.OperatorCodeT``'s attribute names."""

    __slots__ = ("deprecatedBuiltinCode", "customCode", "version", "builtinCode")

    def __init__(self, buf: bytes, table: int) -> None:
        self.deprecatedBuiltinCode, self.customCode = _scalar(buf, table, 0, "b", 0), _string(buf, table, 1)
        self.version, self.builtinCode = _scalar(buf, table, 2, "i", 1), _scalar(buf, table, 3, "i", 0)


class GraphSubgraph:
    """One subgraph: ``operators`` (read at once), ``tensors`` (read when asked), ``inputs``,
    ``outputs``."""

    def __init__(self, buf: bytes, table: int) -> None:
        self.operators = [GraphOperator(buf, op) for op in _tables(buf, _target(buf, table, 3)).tolist()]
        tensors = _tables(buf, _target(buf, table, 0)).tolist()
        self.tensors = _Lazy(len(tensors), lambda i: GraphTensor(buf, tensors[i]))
        self.inputs, self.outputs = _vector(buf, table, 1, "<i4"), _vector(buf, table, 2, "<i4")


class GraphModel:
    """The graph of a .tflite model with ``schema.ModelT``'s attribute names, read lazily."""

    def __init__(self, buf: bytes) -> None:
        model = _u32(buf, 0)
        self.operatorCodes = [GraphOperatorCode(buf, c) for c in _tables(buf, _target(buf, model, 1)).tolist()]
        subgraphs = _tables(buf, _target(buf, model, 2)).tolist()
        self.subgraphs = _Lazy(len(subgraphs), lambda i: GraphSubgraph(buf, subgraphs[i]))
        buffers = _tables(buf, _target(buf, model, 4)).tolist()
        self.buffers = _Lazy(len(buffers), lambda b: GraphBuffer(buf, buffers[b]))


def read_graph(tflite: bytes) -> GraphModel:
    """The model's operator codes, subgraphs (ops, tensors) and buffers, read lazily, under
    the object API's attribute names, so the helpers of :mod:`tfquant.tflite.flatbuffer`
    that take a read model (``op_name``, ``tensor_data``, ``value_rearrangements``) take it
    too. Read-only: edits need :func:`tfquant.tflite.flatbuffer.read`."""
    return GraphModel(bytes(tflite))
