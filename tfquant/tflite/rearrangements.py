"""Tensors that hold another tensor's values, rearranged: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE.

A chain of these ops (TRANSPOSE with a constant permutation) from a tensor R, with R's dtype,
makes a tensor Y that holds exactly R's values, in another order. Every statistic of the
multiset of values (min, max, count, mean, Σ(x - mean)², Σ|x - mean|, the |x| histogram, and
the per-batch extremes of the moving average) is then R's. Only the sums per channel of Y's
last axis (``TensorStatistics.channel_sum``) are Y's own; :func:`value_rearrangements` says,
for each such Y, which of R's values fall into which of Y's channels.

The mapping is kept as a *view* of R (the way ``numpy`` composes reshapes and transposes):

* S: R's shape split into finer axes, with size-1 axes dropped (a reshape may split an axis
  of R, never merge two: merged axes stay separate axes of S whose indices run together);
  S[0] is R's first dimension, a symbol N (``shapeSignature`` -1: the batch, or batch·T for
  a tensor flattened to rows; a static first dimension is not trusted to stay so), times a fraction once a reshape splits a
  static inner factor off it (R = [N, C] reshaped to [N/T, T, C]); no channel axis holds it;
* P: the order in which Y's flat (row-major) order reads S's axes (R.reshape(S).transpose(P)
  is Y's values in Y's flat order);
* each axis of Y is a run of consecutive axes of that transposed view.

A TRANSPOSE permutes the runs; a RESHAPE to dimensions d₁..dₖ walks the view's axes in
order and gives each dᵢ the next axes whose sizes multiply to dᵢ, splitting an axis of S
in two (outer, inner) when dᵢ ends inside it (and failing when no split fits: then the
values are not a product of axes of R and Y is gathered itself). Y's channel of one of R's
values is then the row-major index, over the axes of Y's last run, of that value's position.

Y's dimensions come from ``shapeSignature`` (``shape`` when there is none), its one -1 taken
as the size left over. A RESHAPE whose new shape is computed at run time (Keras' Tensordot
flattens [B, T, C] to [B·T, C] with SHAPE -> GATHER -> REDUCE_PROD -> PACK, signature
[-1, -1]) is followed by evaluating that small graph with B as a symbol (SHAPE of a tensor of
the chain, GATHER with constant indices, REDUCE_PROD, CONCATENATION, PACK, CAST; each on 1-D
vectors or scalars, so their axis is 0 and no op options are needed). Where no view can be
derived (a -1 in another dimension of R, another op in the shape's graph), the simpler rule
that needs only static last dimensions still holds (:func:`_flat_rearrangements`:
TRANSPOSEs that keep the last axis last, reshapes in R's flat order, channel = R's flat
index mod C). Anything else (a non-constant permutation, a channel axis that contains the
batch, a reshape after a transpose of a tensor with a dynamic inner dimension) leaves the
tensor gathered.

Only these model attributes are read: ``subgraphs[0].operators[i].opcodeIndex / inputs /
outputs``, ``tensors[i].type / shape / shapeSignature / buffer``, :func:`flatbuffer.op_name`
and :func:`flatbuffer.tensor_data`.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from tfquant.errors import TfquantError
from tfquant.tflite import flatbuffer

REARRANGING_OPS = flatbuffer.VALUE_COPY_OPS | {"TRANSPOSE"}
"""Ops whose output holds their input 0's values, reordered (TRANSPOSE: a constant permutation)."""
_SHAPE_OPS = frozenset({"SHAPE", "GATHER", "REDUCE_PROD", "CONCATENATION", "PACK", "CAST"})
"""Ops of a run-time shape computation that :func:`value_rearrangements` evaluates."""

Size = tuple[int | Fraction, int]
"""A dimension c·Bᵏ: k = 0, a static size c; k = 1, c times the batch B (c may be a fraction:
a model that flattens [B, T, C] to [B·T, C] has R = [B·T, C] and a reshape back to B)."""


@dataclasses.dataclass(frozen=True)
class _Batch:
    """The dynamic axis of a split shape: ``coefficient`` times R's first dimension."""

    coefficient: int | Fraction


@dataclasses.dataclass(frozen=True)
class Rearrangement:
    """A tensor that holds the values of ``source``, reordered.

    Attributes:
      source: the tensor R whose values these are (a tensor asked for, not itself a
        rearrangement).
      channel_index: None when the channels of the last axis are R's own (then the
        per-channel sums are R's, bit for bit); else, for each value of one example of R
        (R's values from one batch index, in R's flat order; all of R when R has no dynamic
        batch), the channel of the last axis it lands in.
      channels: the number of channels (the size of the last axis; 1 for a scalar).
    """

    source: int
    channel_index: np.ndarray | None
    channels: int

    def __eq__(self, other: object) -> bool:  # the index array compared by value
        if not isinstance(other, Rearrangement):
            return NotImplemented
        a, b = self.channel_index, other.channel_index
        same_index = a is None and b is None or a is not None and b is not None and np.array_equal(a, b)
        return (self.source, self.channels) == (other.source, other.channels) and same_index


@dataclasses.dataclass
class _View:
    """Y as a view of its source R: R.reshape(split).transpose(order), then runs of axes."""

    root: int
    split: list[int | _Batch]  # S: sizes of R's axes split finer (a _Batch only at 0), no size 1
    order: list[int]  # P: axes of S in Y's flat order
    runs: list[list[int]]  # Y's axes: positions in ``order`` (consecutive; empty for size 1)

    def sizes(self) -> list[Size]:
        return [_product(self.split[self.order[t]] for t in run) for run in self.runs]

    def transpose(self, perm: Sequence[int]) -> "_View | None":
        if sorted(perm) != list(range(len(self.runs))):
            return None
        order = [self.order[t] for p in perm for t in self.runs[p]]
        runs, start = [], 0
        for p in perm:
            runs.append(list(range(start, start + len(self.runs[p]))))
            start += len(self.runs[p])
        return _View(self.root, list(self.split), order, runs)

    def reshape(self, dims: Sequence[Size]) -> "_View | None":
        """The view with Y's axes regrouped into ``dims`` (None when no split of R fits)."""
        split, order = list(self.split), list(self.order)
        runs: list[list[int]] = []
        t = 0
        for c, k in dims:
            run: list[int] = []
            while (c, k) != (1, 0):
                if t >= len(order):
                    return None
                a = split[order[t]]
                if isinstance(a, _Batch):
                    ratio = Fraction(c) / a.coefficient if k == 1 else Fraction(0)
                    if ratio.denominator == 1 and ratio >= 1:  # the whole axis
                        c, k = int(ratio), 0
                    elif ratio > 0 and ratio.numerator == 1:  # its outer part: c·N = (q·N / m)
                        self._split(split, order, t, [_Batch(c), ratio.denominator])
                        c, k = 1, 0
                    else:
                        return None
                elif k == 1:  # the batch axis comes later in this run: all of this axis
                    c = _number(Fraction(c) / a)
                elif isinstance(c, int) and c % a == 0:
                    c //= a
                elif isinstance(c, int) and a % c == 0:  # dims end inside this axis: split it
                    self._split(split, order, t, [c, a // c])
                    c = 1
                else:
                    return None
                run.append(t)
                t += 1
            runs.append(run)
        if t != len(order):
            return None
        return _View(self.root, split, order, runs)

    @staticmethod
    def _split(split: list[int | _Batch], order: list[int], t: int, parts: list[int | _Batch]) -> None:
        """Splits axis order[t] of ``split`` into (outer, inner) ``parts``, in place."""
        s = order[t]
        split[s : s + 1] = parts
        order[:] = [o + 1 if o > s else o for o in order]
        order.insert(t + 1, s + 1)

    def channels(self) -> tuple[np.ndarray, int] | None:
        """(channel of each value of one example of R, number of channels), or None when
        the last axis holds the batch."""
        axes = [self.order[t] for t in self.runs[-1]] if self.runs else []
        if any(isinstance(self.split[s], _Batch) for s in axes):
            return None
        batched = bool(self.split) and isinstance(self.split[0], _Batch)
        example = [int(a) for a in (self.split[1:] if batched else self.split)]
        index = np.zeros(example, dtype=np.int64)
        stride = 1
        for s in reversed(axes):  # row-major over the last run, in Y's order
            position = s - 1 if batched else s
            shape = [1] * len(example)
            shape[position] = example[position]
            index += np.arange(example[position], dtype=np.int64).reshape(shape) * stride
            stride *= example[position]
        return index.reshape(-1), stride


def value_rearrangements(tflite: bytes | Any, indices: list[int]) -> dict[int, Rearrangement]:
    """Tensors of ``indices`` that hold the values of another tensor of ``indices``, reordered.

    See the module docstring: chains of :data:`REARRANGING_OPS` of one dtype from a tensor R
    of ``indices`` (through tensors not in ``indices`` too), mapped as views of R.

    Returns:
      tensor -> its :class:`Rearrangement` (its source R is in ``indices`` and not a key).

    ``tflite`` may also be the model already read (:func:`flatbuffer.read`; it is not changed).
    """
    model = flatbuffer.read(tflite) if isinstance(tflite, (bytes, bytearray)) else tflite
    subgraph = model.subgraphs[0]
    wanted = {int(i) for i in indices}
    producers = {int(o): op for op in subgraph.operators for o in op.outputs}
    views: dict[int, _View] = {}
    kinds = [(op, flatbuffer.op_name(model, op)) for op in subgraph.operators]
    rearranging = [(op, kind) for op, kind in kinds if kind in REARRANGING_OPS]
    for op, kind in rearranging:
        if len(op.outputs) != 1 or len(op.inputs) < 1:
            continue
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        if src < 0 or subgraph.tensors[src].type != subgraph.tensors[dst].type:
            continue
        view = views.get(src) or (_root_view(subgraph.tensors[src], src) if src in wanted else None)
        if view is None:
            continue
        if kind == "TRANSPOSE":
            perm = _constant(model, op.inputs[1] if len(op.inputs) > 1 else -1)
            new = None if perm is None else view.transpose([int(p) for p in perm.reshape(-1)])
        else:
            dims = _dims(subgraph.tensors[dst], _product(s for s in view.split))
            if dims is None and kind == "RESHAPE" and len(op.inputs) > 1:
                dims = _run_time_shape(model, producers, int(op.inputs[1]), {src: view.sizes()}, view)
            new = None if dims is None else view.reshape(dims)
        if new is not None and _fits(new, subgraph.tensors[dst]):
            views[dst] = new
    result: dict[int, Rearrangement] = {}
    for index in sorted(wanted & views.keys()):
        view = views[index]
        if view.root in views:  # the root is itself a rearrangement of an earlier tensor
            continue
        mapping = view.channels()
        if mapping is None:
            continue  # the channel axis holds the batch: gathered itself
        channel_index, channels = mapping
        root_signature = _signature(subgraph.tensors[view.root]) or [-1]
        if root_signature[-1] == channels and np.array_equal(
            channel_index, np.arange(channel_index.size) % channels
        ):  # channel = flat index mod C, as R's own channels (its last axis)
            result[index] = Rearrangement(view.root, None, channels)
        else:
            result[index] = Rearrangement(view.root, channel_index, channels)
    return _with_flat_copies(result, _flat_rearrangements(model, rearranging, wanted), subgraph)


def _flat_rearrangements(
    model: Any, rearranging: list[tuple[Any, str]], wanted: set[int]
) -> dict[int, tuple[int, int | None]]:
    """The rule that needs no static shape but the last dimension, for tensors that are not
    views (e.g. with a dynamic inner dimension): a chain of reshapes (same flat order) and
    TRANSPOSEs that keep the last axis last (every value keeps its last-axis index) from R;
    a reshape after a transpose that moved other axes is not followed.

    Returns:
      tensor -> (R, C): C None when the channels are R's own, else the static last dimension
      of a reshape in R's flat order (channel = R's flat index mod C).
    """
    subgraph = model.subgraphs[0]
    rule: dict[int, tuple[int, int | None, bool]] = {}  # tensor -> (root, C, flat order is R's)
    for op, kind in rearranging:  # (op, its name) for the ops of REARRANGING_OPS, in order
        if len(op.outputs) != 1 or len(op.inputs) < 1:
            continue
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        if src < 0 or subgraph.tensors[src].type != subgraph.tensors[dst].type:
            continue
        if src in rule:
            root, channels, flat = rule[src]
        elif src in wanted:
            root, channels, flat = src, None, True
        else:
            continue
        if kind == "TRANSPOSE":
            perm = _constant(model, op.inputs[1] if len(op.inputs) > 1 else -1)
            order = [] if perm is None else [int(a) for a in perm.reshape(-1)]
            if order and order[-1] == len(order) - 1:
                rule[dst] = (root, channels, flat and order == sorted(order))
        elif flat:
            last, root_last = _static_last_dim(subgraph.tensors[dst]), _static_last_dim(subgraph.tensors[root])
            if last is not None:
                rule[dst] = (root, None if last == root_last else last, True)
    return {i: (root, channels) for i, (root, channels, _) in rule.items() if i in wanted}


def _static_last_dim(tensor: Any) -> int | None:
    signature = _signature(tensor)
    return signature[-1] if signature and signature[-1] > 0 else None


def _with_flat_copies(
    views: dict[int, Rearrangement], flat: dict[int, tuple[int, int | None]], subgraph: Any
) -> dict[int, Rearrangement]:
    """The views, plus the flat rule's copies that are not views, as long as no copy is the
    source of another (such a flat copy is gathered instead)."""
    result = dict(views)
    for index, (root, channels) in flat.items():
        if index not in result:
            last = _static_last_dim(subgraph.tensors[root]) or 0
            index_of = None if channels is None else np.arange(channels, dtype=np.int64)
            result[index] = Rearrangement(root, index_of, channels or last)
    while True:
        sources = {r.source for r in result.values()}
        clash = sorted(i for i in result if i in sources)
        if not clash:
            return result
        for i in clash:
            if i not in views:
                del result[i]
            else:  # a view's tensor is the source of flat copies: gather those
                for j in [j for j, r in result.items() if r.source == i and j not in views]:
                    del result[j]


def _number(x: int | Fraction) -> int | Fraction:
    """An integral fraction as an int (ints keep the common, static case fast)."""
    return int(x) if isinstance(x, Fraction) and x.denominator == 1 else x


def _product(sizes: Any) -> Size:
    c: int | Fraction = 1
    k = 0
    for a in sizes:
        if isinstance(a, _Batch):
            c, k = c * a.coefficient, k + 1
        elif isinstance(a, tuple):
            c, k = c * a[0], k + a[1]
        else:
            c *= int(a)
    return _number(c), k


def _signature(tensor: Any) -> list[int] | None:
    signature = getattr(tensor, "shapeSignature", None)
    shape = signature if signature is not None and len(signature) > 0 else getattr(tensor, "shape", None)
    if shape is None:
        return None
    return [int(d) for d in shape]


def _fits(view: _View, tensor: Any) -> bool:
    """The view has the tensor's rank and its static dimensions."""
    signature = _signature(tensor)
    if signature is None or len(signature) != len(view.runs):
        return False
    return all(d < 0 or size == (d, 0) for d, size in zip(signature, view.sizes()))


def _root_view(tensor: Any, index: int) -> _View | None:
    """R as a view of itself, its first dimension the symbol N (whatever its size at run time:
    a model with a static batch may still be run on other batch sizes, so a static first
    dimension is not trusted either; the views of such a model then fail to match their static
    signatures, and its tensors keep the flat rule); None when another dimension is dynamic
    or the shape is unknown."""
    signature = _signature(tensor)
    if signature is None or any(d < 0 for d in signature[1:]) or 0 in signature:
        return None
    split: list[int | _Batch] = []
    runs: list[list[int]] = []
    for axis, d in enumerate(signature):
        if axis == 0:
            split.append(_Batch(1))
        elif d != 1:
            split.append(d)
        runs.append([len(split) - 1] if axis == 0 or d != 1 else [])
    return _View(index, split, list(range(len(split))), runs)


def _dims(tensor: Any, total: Size) -> list[Size] | None:
    """The tensor's dimensions from its signature, its one -1 the size left over (None when
    there is more than one -1 or the sizes do not fit ``total``)."""
    signature = _signature(tensor)
    if signature is None or sum(d < 0 for d in signature) > 1:
        return None
    return _fill(signature, total)


def _fill(dims: Sequence[int | Size], total: Size) -> list[Size] | None:
    """Dimensions with a -1 replaced by the size left over of ``total``."""
    sizes = [(int(d), 0) if not isinstance(d, tuple) else d for d in dims]
    known = _product(s for s in sizes if s[0] >= 0)
    missing = [i for i, s in enumerate(sizes) if s[0] < 0]
    if len(missing) > 1 or known[0] == 0:
        return None
    if missing:
        sizes[missing[0]] = (_number(Fraction(total[0]) / known[0]), total[1] - known[1])
    if _product(sizes) != total or any(k not in (0, 1) or (k == 0 and not isinstance(c, int)) for c, k in sizes):
        return None
    return sizes


def _constant(model: Any, index: int) -> np.ndarray | None:
    if index < 0:
        return None
    try:
        return flatbuffer.tensor_data(model, int(index))
    except (TfquantError, IndexError, ValueError, AttributeError, TypeError):
        return None


def _run_time_shape(
    model: Any, producers: dict[int, Any], index: int, known: dict[int, list[Size]], view: _View
) -> list[Size] | None:
    """The new shape of a RESHAPE computed at run time, with the batch as a symbol."""
    value = _evaluate(model, producers, index, known, depth=0)
    if value is None or not isinstance(value, list):
        return None
    return _fill(value, _product(s for s in view.split))


def _evaluate(
    model: Any, producers: dict[int, Any], index: int, known: dict[int, list[Size]], depth: int
) -> list[Size] | Size | None:
    """A 1-D int vector (list) or scalar (tuple) of sizes c·Bᵏ computed by shape ops, or None.

    Constants keep their -1 as (-1, 0) (a reshape's "the rest")."""
    if depth > 16 or index < 0:
        return None
    data = _constant(model, index)
    tensor = model.subgraphs[0].tensors[index]
    if data is not None:
        if data.dtype.kind not in "iu" or data.ndim > 1:
            return None
        return [(int(v), 0) for v in data.reshape(-1)] if data.ndim == 1 else (int(data), 0)
    op = producers.get(index)
    if op is None:
        return None
    kind = flatbuffer.op_name(model, op)
    if kind not in _SHAPE_OPS:
        return None
    inputs = [int(i) for i in op.inputs]
    shape = getattr(tensor, "shape", None)
    scalar = shape is None or len(shape) == 0
    if kind == "SHAPE":
        return list(known[inputs[0]]) if inputs[0] in known else None
    args = [_evaluate(model, producers, i, known, depth + 1) for i in inputs]
    if any(a is None for a in args):
        return None
    if kind == "CAST":
        return args[0]
    if kind == "GATHER":
        params, positions = args
        if not isinstance(params, list):
            return None
        picks = positions if isinstance(positions, list) else [positions]
        if any(p[1] != 0 or not 0 <= p[0] < len(params) for p in picks):
            return None
        chosen = [params[int(p[0])] for p in picks]
        return chosen if isinstance(positions, list) else chosen[0]
    if kind == "REDUCE_PROD":
        values, axes = args
        axis = [a[0] for a in (axes if isinstance(axes, list) else [axes])]
        if not isinstance(values, list) or axis not in ([0], [-1]):
            return None
        if any(v[0] < 0 for v in values):
            return None
        product = _product(values)
        return product if scalar else [product]
    if kind == "CONCATENATION":
        if not all(isinstance(a, list) for a in args):
            return None
        return [v for a in args for v in a]
    if kind == "PACK":
        if not all(isinstance(a, tuple) for a in args) or scalar:
            return None
        return list(args)
    return None
