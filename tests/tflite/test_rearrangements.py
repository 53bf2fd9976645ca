"""Rearranged tensors as views of their source: which values land in which channel.

Small graphs are written with the flatbuffer schema's object API (no TensorFlow), and each
rearranged tensor Y is also computed with numpy from a random source R: the per-channel sums
that :class:`~tfquant.calibration.observe.ChannelSums` takes from R's batches must be
``Y.reshape(-1, C).sum(0)``, what gathering Y itself gives.
"""

from __future__ import annotations

import os

from typing import Callable

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from tfquant.calibration import fused
from tfquant.calibration.observe import ChannelSums
from tfquant.tflite.rearrangements import value_rearrangements


class Graph:
    """A one-subgraph ``ModelT`` built op by op (shape = signature with -1 as 1)."""

    def __init__(self) -> None:
        self.model = schema.ModelT()
        self.model.buffers = [schema.BufferT()]
        self.model.operatorCodes = []
        self.subgraph = schema.SubGraphT()
        self.subgraph.tensors, self.subgraph.operators = [], []
        self.model.subgraphs = [self.subgraph]

    def tensor(self, signature: list[int] | None, data: np.ndarray | None = None, *, kind: int = 0) -> int:
        t = schema.TensorT()
        t.type = kind if data is None else {np.dtype(np.int32): schema.TensorType.INT32}[data.dtype]
        t.name = f"t{len(self.subgraph.tensors)}".encode()
        if signature is not None:
            t.shapeSignature = list(signature)
            t.shape = [1 if d < 0 else d for d in signature]
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(data.tobytes(), np.uint8).tolist()
            t.buffer = len(self.model.buffers)
            self.model.buffers.append(buffer)
        self.subgraph.tensors.append(t)
        return len(self.subgraph.tensors) - 1

    def const(self, values: list[int]) -> int:
        data = np.asarray(values, np.int32)
        return self.tensor(list(data.shape), data)

    def op(self, kind: str, inputs: list[int], signature: list[int] | None, *, out_kind: int = 0) -> int:
        code = getattr(schema.BuiltinOperator, kind)
        codes = [c.builtinCode for c in self.model.operatorCodes]
        if code not in codes:
            c = schema.OperatorCodeT()
            c.builtinCode = code
            c.deprecatedBuiltinCode = min(code, 127)
            self.model.operatorCodes.append(c)
            codes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex = codes.index(code)
        op.inputs = list(inputs)
        out = self.tensor(signature, kind=out_kind)
        op.outputs = [out]
        self.subgraph.operators.append(op)
        return out

    def reshape(self, x: int, signature: list[int]) -> int:
        return self.op("RESHAPE", [x, self.const(signature)], signature)

    def transpose(self, x: int, perm: list[int], signature: list[int]) -> int:
        return self.op("TRANSPOSE", [x, self.const(perm)], signature)


def _sums(channel_index: np.ndarray, channels: int, batches: list[np.ndarray]) -> np.ndarray:
    observer = ChannelSums(channel_index, channels)
    for batch in batches:
        observer(batch)
    return observer.sums


@pytest.fixture(params=["numba", "numpy"])
def kernels(request, monkeypatch) -> str:
    if request.param == "numpy":
        monkeypatch.setattr(fused, "AVAILABLE", False)
    elif os.environ.get("TFQUANT_NUMBA") == "0":
        pytest.skip("TFQUANT_NUMBA=0: the compiled kernels are switched off on purpose")
    else:  # numba is pinned in requirements.txt: its absence is a broken install, not a skip
        assert fused.AVAILABLE, "numba does not import; reinstall requirements.txt"
    return request.param


def _check(graph: Graph, wanted: list[int], expected: dict[int, tuple[int, Callable[[np.ndarray], np.ndarray]]],
           source_shapes: dict[int, Callable[[int], tuple[int, ...]]]) -> None:
    """Every tensor of ``expected`` is a rearrangement of its source (and no other tensor is);
    its channel sums from the source's batches equal those of the numpy rearrangement."""
    found = value_rearrangements(graph.model, wanted)
    assert set(found) == set(expected), (sorted(found), sorted(expected))
    rng = np.random.default_rng(0)
    for index, (source, rearrange) in expected.items():
        r = found[index]
        assert r.source == source, index
        batches = [rng.standard_normal(source_shapes[source](b)).astype(np.float32) for b in (3, 2)]
        ys = [rearrange(x) for x in batches]
        channels = ys[0].shape[-1] if ys[0].ndim else 1
        assert r.channels == channels, index
        want = sum(y.reshape(-1, channels).sum(axis=0, dtype=np.float64) for y in ys)
        if r.channel_index is None:  # the source's own channels
            got = sum(x.reshape(-1, channels).sum(axis=0, dtype=np.float64) for x in batches)
        else:
            got = _sums(r.channel_index, r.channels, batches)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=str(index))


def test_attention_like_transposes_and_reshapes_are_views_of_the_source(kernels) -> None:
    g = Graph()
    r = g.tensor([-1, 6, 8])
    heads = g.reshape(r, [-1, 6, 2, 4])  # [B, T, H·D] -> [B, T, H, D]
    bhtd = g.transpose(heads, [0, 2, 1, 3], [-1, 2, 6, 4])
    bhdt = g.transpose(bhtd, [0, 1, 3, 2], [-1, 2, 4, 6])  # the last axis moves
    back = g.transpose(bhdt, [0, 3, 1, 2], [-1, 6, 2, 4])
    merged = g.reshape(back, [-1, 6, 8])  # a reshape after transposes
    mixed = g.reshape(bhtd, [-1, 2, 24])  # channels = (T, D)
    split = g.reshape(bhdt, [-1, 4, 12])  # splits the D axis between two dimensions
    batch_last = g.transpose(r, [1, 2, 0], [6, 8, -1])  # the batch in the channel axis
    batch_back = g.transpose(batch_last, [2, 0, 1], [-1, 6, 8])
    expanded = g.op("EXPAND_DIMS", [r, g.const([3])], [-1, 6, 8, 1])
    squeezed = g.op("SQUEEZE", [expanded], [-1, 6, 8])
    leading = g.op("EXPAND_DIMS", [bhdt, g.const([1])], [-1, 1, 2, 4, 6])
    b = [-1]
    expected = {
        heads: (r, lambda x: x.reshape(len(x), 6, 2, 4)),
        bhtd: (r, lambda x: x.reshape(len(x), 6, 2, 4).transpose(0, 2, 1, 3)),
        bhdt: (r, lambda x: x.reshape(len(x), 6, 2, 4).transpose(0, 2, 3, 1)),
        back: (r, lambda x: x.reshape(len(x), 6, 2, 4)),
        merged: (r, lambda x: x),
        mixed: (r, lambda x: x.reshape(len(x), 6, 2, 4).transpose(0, 2, 1, 3).reshape(len(x), 2, 24)),
        split: (r, lambda x: x.reshape(len(x), 6, 2, 4).transpose(0, 2, 3, 1).reshape(len(x), 4, 12)),
        batch_back: (r, lambda x: x),
        expanded: (r, lambda x: x[..., None]),
        squeezed: (r, lambda x: x),
        leading: (r, lambda x: x.reshape(len(x), 6, 2, 4).transpose(0, 2, 3, 1)[:, None]),
    }
    wanted = [r, *expected, batch_last]
    _check(g, wanted, expected, {r: lambda n: (n, 6, 8)})
    found = value_rearrangements(g.model, wanted)
    assert found[merged].channel_index is None and found[squeezed].channel_index is None
    assert found[bhdt].channel_index is not None and batch_last not in found
    del b


def test_run_time_reshapes_of_a_tensordot_are_followed(kernels) -> None:
    """Keras' Tensordot: [B, T, C] -> [B·T, C] with a shape computed at run time, the matmul,
    and [B·T, C] -> [B, T, C] back (a source whose first dimension is B·T)."""
    g = Graph()
    r = g.tensor([-1, 4, 6])
    shape = g.op("SHAPE", [r], [3], out_kind=schema.TensorType.INT32)
    rows = g.op("REDUCE_PROD", [g.op("GATHER", [shape, g.const([0, 1])], [2], out_kind=2), g.const([0])], None,
                out_kind=2)
    cols = g.op("REDUCE_PROD", [g.op("GATHER", [shape, g.const([2])], [1], out_kind=2), g.const([0])], None,
                out_kind=2)
    flat = g.op("RESHAPE", [r, g.op("PACK", [rows, cols], [2], out_kind=2)], [-1, -1])
    matmul = g.tensor([-1, 6])  # [B·T, C]
    unflat = g.reshape(matmul, [-1, 4, 6])
    swapped = g.transpose(unflat, [0, 2, 1], [-1, 6, 4])
    expected = {
        flat: (r, lambda x: x.reshape(-1, 6)),
        unflat: (matmul, lambda x: x.reshape(-1, 4, 6)),
        swapped: (matmul, lambda x: x.reshape(-1, 4, 6).transpose(0, 2, 1)),
    }
    _check(g, [r, matmul, *expected], expected, {r: lambda n: (n, 4, 6), matmul: lambda n: (4 * n, 6)})
    found = value_rearrangements(g.model, [r, matmul, *expected])
    assert found[flat].channel_index is None and found[unflat].channel_index is None


def test_what_cannot_be_derived_is_gathered() -> None:
    g = Graph()
    dynamic = g.tensor([-1, -1, 8])  # a dynamic inner dimension
    moved = g.transpose(dynamic, [0, 2, 1], [-1, 8, -1])
    r = g.tensor([-1, 6, 8])
    perm = g.op("ADD", [g.const([0, 2, 1]), g.const([0, 0, 0])], [3], out_kind=2)
    computed = g.op("TRANSPOSE", [r, perm], [-1, 8, 6])  # a permutation known only at run time
    unknown_shape = g.op("RESHAPE", [r, g.op("ADD", [g.const([0, 0]), g.const([0, 0])], [2], out_kind=2)],
                         [-1, -1])
    other_type = g.op("RESHAPE", [r, g.const([-1, 48])], [-1, 48], out_kind=schema.TensorType.FLOAT16)
    static = g.tensor([1, 6, 8])  # a static batch of 1 may be run with 100: [8, 6, 1] -> [8, 6, 100]
    reversed_static = g.transpose(static, [2, 1, 0], [8, 6, 1])
    wanted = [dynamic, moved, r, computed, unknown_shape, other_type, static, reversed_static]
    assert value_rearrangements(g.model, wanted) == {}


def test_channel_sums_skip_batches_of_another_layout() -> None:
    """A batch whose size is not a multiple of one example's values cannot be regrouped: the
    sums become None (no per-channel mean) rather than wrong."""
    observer = ChannelSums(np.arange(6) % 3, 3)
    observer(np.ones((2, 6), np.float32))
    np.testing.assert_array_equal(observer.sums, [4.0, 4.0, 4.0])
    observer(np.ones(5, np.float32))
    observer(np.ones((2, 6), np.float32))
    assert observer.sums is None


def test_with_a_dynamic_inner_dimension_only_the_flat_rule_holds(kernels) -> None:
    """No view of [B, T, 8] with T unknown: a transpose that keeps the last axis and a reshape
    in its flat order are still copies (channel = flat index mod C); a reshape after a
    transpose of the other axes is not."""
    g = Graph()
    r = g.tensor([-1, -1, 8])
    kept = g.transpose(r, [1, 0, 2], [-1, -1, 8])
    flat = g.reshape(r, [-1, 4])
    after = g.reshape(kept, [-1, 4])
    expected = {kept: (r, lambda x: x.transpose(1, 0, 2)), flat: (r, lambda x: x.reshape(-1, 4))}
    _check(g, [r, kept, flat, after], expected, {r: lambda n: (n, 5, 8)})
