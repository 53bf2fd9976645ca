"""What is inside a .tflite: per-tensor dtype, shape, scales and zero points; op counts.

Read from the LiteRT interpreter of the main subgraph (subgraph 0), without allocating tensors
(so a model with ops this runtime cannot prepare can still be inspected) and without
delegates (so the ops are the model's own: CONV_2D, FULLY_CONNECTED, QUANTIZE, ...).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

import numpy as np

from tfquant.errors import TfquantError
from tfquant.evaluation.report import text_table
from tfquant.qtypes import Runtime
from tfquant.tflite.flatbuffer import computation_fingerprint as _fingerprint
from tfquant.tflite.flatbuffer import constant_tensors
from tfquant.tflite.interpreter import (
    ModelLike,
    describe_model,
    make_interpreter,
    node_names,
    read_model,
)

_NAME_WIDTH = 48


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph.

    Attributes:
      index: Tensor index.
      name: Tensor name.
      dtype: numpy dtype name (``float32``, ``int8``, ``int32``, ...).
      shape: Shape (as stored; the batch dimension of inputs is usually 1).
      scales: Quantization scales Δ: empty (not quantized), one (per-tensor) or one per
        channel along ``quantized_dimension``.
      zero_points: Zero points z, one per scale.
      quantized_dimension: Axis of per-channel quantization (meaningful with > 1 scale).
      constant: The tensor has data in the flatbuffer (weights, biases, constants), as
        opposed to an activation computed at run time.
    """

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    constant: bool = False

    @property
    def is_quantized(self) -> bool:
        return len(self.scales) > 0

    @property
    def is_per_channel(self) -> bool:
        return len(self.scales) > 1

    @classmethod
    def from_details(cls, d: dict[str, Any]) -> "TensorInfo":
        qp = d["quantization_parameters"]
        return cls(
            index=int(d["index"]),
            name=str(d["name"]),
            dtype=np.dtype(d["dtype"]).name,
            shape=tuple(int(s) for s in d["shape"]),
            scales=tuple(float(s) for s in np.asarray(qp["scales"]).reshape(-1)),
            zero_points=tuple(int(z) for z in np.asarray(qp["zero_points"]).reshape(-1)),
            quantized_dimension=int(qp["quantized_dimension"]),
        )


@dataclasses.dataclass(frozen=True)
class ModelReport:
    """Contents of a .tflite model.

    Attributes:
      path: File path, or ``None`` when inspected from bytes.
      size_bytes: Size of the flatbuffer.
      tensors: Every tensor of the main subgraph with its quantization parameters.
      op_counts: Builtin op name (``CONV_2D``, ``QUANTIZE``, ...) -> count, main subgraph.
      ops: Op names in execution order.
      inputs: The model's input tensors.
      outputs: The model's output tensors.
      num_subgraphs: Subgraphs in the model (control flow adds some; only subgraph 0 is
        listed).
    """

    path: str | None
    size_bytes: int
    tensors: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    ops: tuple[str, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    num_subgraphs: int

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    def tensor(self, name: str) -> TensorInfo:
        """The tensor called ``name``."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise TfquantError(f"no tensor named {name!r}; see report.tensors for the names")


def inspect_model(model: ModelLike) -> ModelReport:
    """Lists tensors (dtype, shape, scales, zero points) and op counts of a .tflite model.

    Raises:
      TfquantError: missing or corrupt file.
    """
    data = read_model(model)
    interpreter = make_interpreter(data, runtime=Runtime.BUILTIN, label=describe_model(model),
                                   check=not isinstance(model, (bytes, bytearray, memoryview)))
    ops = node_names(interpreter)
    constant = constant_tensors(data)
    tensors = tuple(
        dataclasses.replace(TensorInfo.from_details(d), constant=int(d["index"]) in constant)
        for d in interpreter.get_tensor_details()
    )
    return ModelReport(
        path=None if isinstance(model, (bytes, bytearray, memoryview)) else os.fspath(model),
        size_bytes=len(data),
        tensors=tensors,
        op_counts=dict(collections.Counter(ops)),
        ops=ops,
        inputs=tuple(TensorInfo.from_details(d) for d in interpreter.get_input_details()),
        outputs=tuple(TensorInfo.from_details(d) for d in interpreter.get_output_details()),
        num_subgraphs=int(interpreter.num_subgraphs()),
    )


def representable_range(t: TensorInfo) -> tuple[float, float]:
    """[Δ·(q_min - z), Δ·(q_max - z)] of a per-tensor quantized int8 / int16 tensor."""
    bits = np.dtype(t.dtype).itemsize * 8
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale, zero = t.scales[0], t.zero_points[0]
    return scale * (qmin - zero), scale * (qmax - zero)


def _kept(t: TensorInfo, lo: float, hi: float) -> bool:
    """Whether the model's range is the calibrated one, up to the quantizer's widening to
    contain 0 (affine) or to ±amax (symmetric), and zero-point nudging (1.5 steps)."""
    model_lo, model_hi = representable_range(t)
    step = 1.5 * t.scales[0]
    amax = max(abs(lo), abs(hi))
    affine = abs(model_lo - min(lo, 0.0)) <= step and abs(model_hi - max(hi, 0.0)) <= step
    symmetric = abs(model_hi - amax) <= step and model_lo <= -amax + step
    return affine or symmetric


def format_activation_ranges(
    report: ModelReport, ranges: dict | None, recipe: Any | None
) -> str:
    """Each quantized activation's range in the model and which calibrator chose it.

    Args:
      report: from :func:`inspect_model`.
      ranges: the model's ``tfquant_ranges`` metadata (``tfquant.convert.read_ranges``), or
        ``None``.
      recipe: the embedded recipe (``tfquant.convert.read_recipe``), or ``None``.
    """
    activations = [
        t for t in report.tensors
        if not t.constant and len(t.scales) == 1 and t.dtype in ("int8", "int16")
    ]
    if not activations:
        return "activation ranges: none (no per-tensor int8/int16 activations)"
    calibrated = (ranges or {}).get("activations", {})
    if ranges is not None:
        source = "tfquant calibrator, see 'chosen by'"
    elif recipe is not None and getattr(recipe, "calibrator", None) is None:
        source = "the TFLite converter's own min/max calibration"
    else:
        source = "unknown (no tfquant calibration metadata)"
    records = []
    for t in activations:
        lo, hi = representable_range(t)
        entry = calibrated.get(t.name)
        if entry is None:
            chosen = "converter min/max" if ranges is None and recipe is not None else "set by the op / quantizer"
            cal = "-"
        else:
            cal = f"[{entry['min']:.4g}, {entry['max']:.4g}]"
            chosen = entry["calibrator"] if _kept(t, entry["min"], entry["max"]) else "set by the op (calibrated range not used)"
        records.append({
            "index": t.index, "name": _short(t.name), "dtype": t.dtype,
            "model_range": f"[{lo:.4g}, {hi:.4g}]", "calibrated": cal, "chosen_by": chosen,
        })
    table = text_table(
        records,
        ["index", "name", "dtype", "model_range", "calibrated", "chosen_by"],
        headers={"model_range": "range in model", "calibrated": "calibrated range", "chosen_by": "chosen by"},
    ).rstrip("\n")
    return f"activation ranges (source: {source}):\n{table}"


def _short(name: str, width: int = _NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def format_scales(t: TensorInfo) -> str:
    """``-`` (float), ``0.00392`` (per-tensor) or ``32 ch [1.2e-03, 4.5e-03] axis 0``."""
    if not t.scales:
        return "-"
    if len(t.scales) == 1:
        return f"{t.scales[0]:.6g}"
    return f"{len(t.scales)} ch [{min(t.scales):.3g}, {max(t.scales):.3g}] axis {t.quantized_dimension}"


def format_zero_points(t: TensorInfo) -> str:
    """``-``, ``-128``, ``0 (all 32)`` or ``[-3, 5] (32)`` for per-channel zero points."""
    if not t.zero_points:
        return "-"
    if len(t.zero_points) == 1:
        return str(t.zero_points[0])
    lo, hi = min(t.zero_points), max(t.zero_points)
    n = len(t.zero_points)
    return f"{lo} (all {n})" if lo == hi else f"[{lo}, {hi}] ({n})"


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def format_report(report: ModelReport) -> str:
    """Human-readable text for ``python -m tfquant inspect``: tensors table, then op counts."""
    where = report.path if report.path is not None else "<bytes>"
    lines = [
        f"model: {where} ({report.size_bytes:,} bytes, {report.num_ops} ops, "
        f"{len(report.tensors)} tensors, {report.num_subgraphs} subgraph(s); subgraph 0 below)"
    ]
    for role, infos in (("input", report.inputs), ("output", report.outputs)):
        for t in infos:
            q = f", scale {format_scales(t)}, zero point {format_zero_points(t)}" if t.is_quantized else ""
            lines.append(f"{role}: {t.name} {t.dtype} {_shape(t.shape)}{q}")
    records = [
        {
            "index": t.index,
            "name": _short(t.name),
            "dtype": t.dtype,
            "shape": _shape(t.shape),
            "scales": format_scales(t),
            "zero_points": format_zero_points(t),
        }
        for t in report.tensors
    ]
    lines.append("")
    lines.append(
        text_table(
            records,
            ["index", "name", "dtype", "shape", "scales", "zero_points"],
            headers={"scales": "scale(s)", "zero_points": "zero point(s)"},
        ).rstrip("\n")
    )
    lines.append("")
    lines.append("ops:")
    width = max((len(k) for k in report.op_counts), default=0)
    for name, count in sorted(report.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name.ljust(width)}  {count}")
    return "\n".join(lines) + "\n"


def computation_fingerprint(model: ModelLike) -> str:
    """A hash of what a model computes, ignoring its metadata (see
    :func:`tfquant.tflite.flatbuffer.computation_fingerprint`): equal fingerprints, equal
    outputs in the same runtime.
    """
    return _fingerprint(read_model(model))
