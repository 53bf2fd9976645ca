"""Calibrated ranges into real int8 / int16x8 models: calibrate once, export many.

TFLite's converter calibrates activations with min/max only. This module puts any
:mod:`tfquant.calibration` range into the flatbuffer, through the converter's own
calibrate-then-quantize path (why this path, not the AI Edge Quantizer or tfmot: see
BUILD_NOTES.md):

1. :func:`calibrate`: the converter runs with ``_experimental_calibrate_only`` and returns
   the float model annotated with a min/max per tensor to quantize (the exact graph the
   quantizer will turn into integers, after fusions). A single example is enough for that
   (its min/max are all overwritten). :func:`tfquant.calibration.collect_statistics` then
   runs this float model once over the whole calibration set, gathering every tensor's
   statistics.
2. :func:`export`: for each recipe, the chosen calibrator turns statistics into ranges,
   which are written into the annotated model's ``min``/``max`` fields (weights are clipped
   for weight calibrators other than max), and the converter's own quantizer finishes:
   ``mlir_quantize`` for int8 (what ``TFLiteConverter`` calls) and the calibration wrapper's
   ``QuantizeModel`` for int16x8 (likewise), with nothing fed, so the ranges in the model
   are the ones used (:func:`tfquant.tflite.converter.quantize_annotated`, where these private
   calls live). Then, as in the converter, the I/O types are set and read-only buffers
   deduplicated. With calibrator ``max`` the result is the converter's default
   model, tensor for tensor (tested).

Exporting another calibrator costs one range search and one quantizer call (well under a
second), not another conversion and forward pass.

Ranges written, per calibrator range [lo, hi] (:class:`~tfquant.calibration.base.Range`):
int8 affine: [lo, hi] (the quantizer widens it to contain 0 and nudges the zero point);
int8 symmetric: amax = max(|lo|, |hi|), written as [-amax·128/127, amax] so that z = 0 and
Δ = amax/127; int16x8: [lo, hi], which TFLite quantizes symmetrically with
Δ = max(|lo|, |hi|)/32767. Ops with fixed output ranges (SOFTMAX, LOGISTIC, TANH) and ops
that keep their input's scale (RESHAPE, MAX_POOL_2D, CONCATENATION, ...) override what is
written; ``inspect`` shows which tensors kept a calibrated range.
The ranges and the calibrator that chose them are embedded as metadata (``tfquant_ranges``:
a small JSON header and 12 bytes per tensor, keyed by the integer tensor that carries each
range; :func:`tfquant.convert.read_ranges`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from tfquant.calibration import (
    CalibrationStatistics,
    Calibrator,
    QuantTarget,
    Range,
    collect_statistics,
    make_calibrator,
    weight_amax,
)
from tfquant.convert import low_bit, representative
from tfquant.convert.metadata import embed_ranges, embed_recipe
from tfquant.convert.options import HINTS, IO_TF_DTYPE, check_int16x8_runs, run_converter
from tfquant.convert.source import check_recipe, load_source
from tfquant.errors import TfquantError
from tfquant.progress import stage
from tfquant.qtypes import ActivationScheme, Granularity, Mode, WeightCalibration
from tfquant.recipes import Recipe
from tfquant.tflite import flatbuffer
from tfquant.tflite.converter import quantize_annotated

# The TFLite converter quantizes these weighted ops' kernels (their weight operand and its
# output-channel axis are in tfquant.tflite.flatbuffer).
_CLIPPED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclasses.dataclass(frozen=True)
class CalibratedModel:
    """A float model annotated for quantization, with its calibration statistics.

    Attributes:
      float_model: the converter's calibrate-only flatbuffer (float, min/max per tensor).
      statistics: per-tensor statistics over the calibration set.
      tensors: tensor index -> name of the tensors that get a calibrated range.
      mode: int8 or int16x8 (int16x8 calibrates the LayerNorm-rewritten graph).
      num_calibration_examples, calibration_seed, calibration_data: the calibration set, as
        recipes record it.
      convert_seconds: time of the calibrate-only conversion.
      inputs: the calibration inputs (for sequential bias correction's per-layer passes).
    """

    float_model: bytes
    statistics: CalibrationStatistics
    tensors: dict[int, str]
    mode: Mode
    num_calibration_examples: int
    calibration_seed: int
    calibration_data: str | None
    convert_seconds: float
    inputs: np.ndarray | None = None


def _annotated_tensors(model: Any) -> dict[int, str]:
    """Main-subgraph tensors that carry a calibration min/max."""
    for k, subgraph in enumerate(model.subgraphs[1:], start=1):
        if any(_has_minmax(t) for t in subgraph.tensors):
            raise TfquantError(
                f"the model has control flow (subgraph {k} has tensors to calibrate), which "
                "tfquant calibrators do not support; convert without a calibrator (the "
                "converter's min/max)"
            )
    found = {i: flatbuffer.name(t.name) for i, t in enumerate(model.subgraphs[0].tensors) if _has_minmax(t)}
    if len(set(found.values())) != len(found):
        raise TfquantError(
            "the model has several tensors with one name, so ranges cannot be matched to "
            "tensors; convert without a calibrator"
        )
    return found


def _has_minmax(tensor: Any) -> bool:
    q = tensor.quantization
    return q is not None and q.min is not None and len(q.min) > 0


def calibrate(
    model: "tf.keras.Model | str | os.PathLike[str]",
    recipe: Recipe,
    *,
    calibration_data: np.ndarray,
    batch_size: int = 100,
) -> CalibratedModel:
    """Converts ``model`` to an annotated float model and gathers calibration statistics.

    Args:
      model: a Keras model or a path (as :func:`tfquant.convert.convert` takes).
      recipe: mode int8 or int16x8; its calibration set fields must describe
        ``calibration_data``.
      calibration_data: float32 calibration inputs (N, ...), N =
        ``recipe.num_calibration_examples``.
      batch_size: examples per interpreter invocation while gathering statistics.

    Raises:
      TfquantError: bad model, bad calibration data (empty, NaN/Inf, wrong shape), a mode
        without calibration, or a model with control flow.
    """
    check_recipe(recipe)
    if not recipe.mode.needs_calibration:
        raise TfquantError(f"mode {recipe.mode} has no calibration; use mode int8 or int16x8")
    source = load_source(model)
    x = representative.validate_calibration_data(calibration_data, recipe, source.input_shape(),
                                                 source.input_dtype())
    start = time.perf_counter()
    one = representative.representative_dataset(x[:1], batch_dim=source.input_shape()[0], batch_size=1)
    with stage(f"calibrate ({recipe.mode}): float model with the tensors to quantize"):
        annotated = run_converter(
            source, recipe.replace(num_calibration_examples=1), one, calibrate_only=True
        )
    convert_seconds = time.perf_counter() - start
    tensors = _annotated_tensors(flatbuffer.read(annotated))
    if source.input_shape()[0] not in (None, -1) and source.input_shape()[0] != batch_size:
        batch_size = int(source.input_shape()[0])
    statistics = collect_statistics(annotated, x, tensors, batch_size=batch_size)
    return CalibratedModel(
        float_model=annotated,
        statistics=statistics,
        tensors=tensors,
        mode=recipe.mode,
        num_calibration_examples=recipe.num_calibration_examples,
        calibration_seed=recipe.calibration_seed,
        calibration_data=recipe.calibration_data,
        convert_seconds=convert_seconds,
        inputs=x,
    )


def activation_ranges(
    calibrated: CalibratedModel, recipe: Recipe, *, calibrator: Calibrator | None = None
) -> dict[str, Range]:
    """The range the recipe's calibrator (or ``calibrator``) chooses for each annotated tensor."""
    if calibrator is None:
        calibrator = make_calibrator(
            recipe.calibrator, percentile=recipe.percentile, aciq_prior=recipe.aciq_prior
        )
    target = QuantTarget(
        bits=16 if recipe.mode is Mode.INT16X8 else 8,
        symmetric=recipe.activation_scheme is ActivationScheme.SYMMETRIC,
    )
    ranges = {}
    for name, stats in calibrated.statistics.tensors.items():
        r = calibrator.compute_range(stats, target)
        if not r.hi - r.lo > 0.0:  # a degenerate choice: keep what the tensor took
            r = Range(float(stats.min), float(stats.max))
        ranges[name] = r
    return ranges


def _written_range(r: Range, recipe: Recipe) -> tuple[float, float]:
    if recipe.mode is Mode.INT8 and recipe.activation_scheme is ActivationScheme.SYMMETRIC:
        amax = max(abs(r.lo), abs(r.hi))
        return -amax * 128.0 / 127.0, amax
    return r.lo, r.hi


def _clip_weights(model: Any, recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Clips weight buffers to the recipe's weight bounds; returns a per-tensor summary."""
    summary: dict[str, dict[str, Any]] = {}
    subgraph = model.subgraphs[0]
    done: set[int] = set()
    per_tensor = recipe.weight_granularity is Granularity.PER_TENSOR
    for op in subgraph.operators:
        kind = flatbuffer.op_name(model, op)
        if kind not in _CLIPPED_OPS or len(op.inputs) <= flatbuffer.WEIGHT_INPUT:
            continue
        tensor = subgraph.tensors[op.inputs[flatbuffer.WEIGHT_INPUT]]
        buffer = model.buffers[tensor.buffer]
        if (
            flatbuffer.type_name(tensor.type) != "FLOAT32"
            or buffer.data is None
            or len(buffer.data) == 0
            or tensor.buffer in done
        ):
            continue
        done.add(tensor.buffer)
        w = np.frombuffer(bytes(buffer.data), dtype=np.float32).reshape(tuple(tensor.shape))
        axis = None if per_tensor else flatbuffer.WEIGHT_CHANNEL_AXIS[kind]
        amax = weight_amax(
            w, axis=axis, method=recipe.weight_calibrator, percentile=recipe.weight_percentile
        )
        bound = amax.reshape([-1 if a == axis else 1 for a in range(w.ndim)]) if axis is not None else amax[0]
        clipped = np.clip(w, -bound, bound).astype(np.float32)
        buffer.data = np.frombuffer(clipped.tobytes(), dtype=np.uint8)
        summary[flatbuffer.name(tensor.name)] = {
            "calibrator": recipe.weight_calibrator.value
            + (f" {recipe.weight_percentile:g}" if recipe.weight_percentile else ""),
            "channels": int(amax.size),
            "amax_min": float(amax.min()),
            "amax_max": float(amax.max()),
            "clipped_fraction": float(np.mean(np.abs(w) > bound)),
        }
    return summary


def _quantized_tensors(tflite: bytes, names: list[str]) -> dict[str, int]:
    """Float tensor name -> index of the integer tensor that carries its range in ``tflite``.

    Inner tensors keep their names. With float I/O the model input is a float tensor that a
    QUANTIZE op turns into the integer one, and the output an integer tensor that a
    DEQUANTIZE op turns into the float one; their ranges belong to those integer twins.
    """
    model = flatbuffer.read(tflite)
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors
    index = {flatbuffer.name(t.name): i for i, t in enumerate(tensors)}
    twin: dict[int, int] = {}
    for op in subgraph.operators:
        kind = flatbuffer.op_name(model, op)
        if kind == "QUANTIZE" and op.inputs[0] in subgraph.inputs:
            twin[op.inputs[0]] = op.outputs[0]
        elif kind == "DEQUANTIZE" and op.outputs[0] in subgraph.outputs:
            twin[op.outputs[0]] = op.inputs[0]
    return {name: twin.get(index[name], index[name]) for name in names if name in index}


def _quantize(annotated: bytes, recipe: Recipe) -> bytes:
    """The converter's quantization step on an annotated model (see the module docstring)."""
    return quantize_annotated(
        annotated,
        int16x8=recipe.mode is Mode.INT16X8,
        io_dtype=IO_TF_DTYPE[recipe.io_dtype],
        per_tensor=recipe.weight_granularity is Granularity.PER_TENSOR,
        failure=f"TFLite quantizer failed for mode {recipe.mode}",
        hint=HINTS[recipe.mode],
    )


def export(calibrated: CalibratedModel, recipe: Recipe, *, calibrator: Calibrator | None = None) -> bytes:
    """Quantizes the calibrated model with the ranges ``recipe.calibrator`` chooses.

    Args:
      calibrated: from :func:`calibrate` (same mode and calibration set as ``recipe``).
      recipe: mode int8 or int16x8 with ``calibrator`` set.
      calibrator: a calibrator object that chooses the ranges instead of the recipe's (a
        study baseline outside the registry, e.g. fixed 2σ clipping); the ranges metadata
        names it.

    Returns:
      The .tflite flatbuffer, with the recipe (``tfquant_recipe``) and the ranges
      (``tfquant_ranges``) in its metadata.

    Raises:
      TfquantError: a recipe that does not match the calibration, or the quantizer failed.
    """
    check_recipe(recipe)
    if recipe.calibrator is None:
        raise TfquantError(
            "recipe.calibrator is not set; pick one (max, entropy, percentile, mse, aciq, "
            "moving_average), or use tfquant.convert.convert for the converter's own ranges"
        )
    mismatch = [
        (field, getattr(recipe, field), getattr(calibrated, field))
        for field in ("mode", "num_calibration_examples", "calibration_seed", "calibration_data")
        if getattr(recipe, field) != getattr(calibrated, field)
    ]
    if mismatch:
        field, want, have = mismatch[0]
        raise TfquantError(
            f"the recipe's {field} is {want!r} but the model was calibrated with {have!r}; "
            "calibrate again with this recipe"
        )
    with stage(f"quantize ({recipe.mode}, {recipe.calibrator} ranges)"):
        return _export(calibrated, recipe, calibrator)


def _export(calibrated: CalibratedModel, recipe: Recipe, calibrator: Calibrator | None = None) -> bytes:
    """:func:`export` after its checks: ranges, weight clipping, quantizer, metadata."""
    ranges = activation_ranges(calibrated, recipe, calibrator=calibrator)
    model = flatbuffer.read(calibrated.float_model)
    tensors = model.subgraphs[0].tensors
    for index, name in calibrated.tensors.items():
        lo, hi = _written_range(ranges[name], recipe)
        tensors[index].quantization.min = np.array([lo], dtype=np.float32)
        tensors[index].quantization.max = np.array([hi], dtype=np.float32)
    weights = (
        _clip_weights(model, recipe)
        if recipe.weight_calibrator is not WeightCalibration.MAX
        else {}
    )
    annotated = flatbuffer.write(model)
    tflite = _quantize(annotated, recipe)
    if recipe.mode is Mode.INT16X8:
        check_int16x8_runs(tflite)
    if recipe.is_low_bit:  # sub-8-bit grids, bit allocation, bias correction
        tflite, channel_bits = low_bit.rewrite(
            tflite, annotated, calibrated.statistics.tensors, recipe, inputs=calibrated.inputs
        )
        recipe = recipe.replace(channel_bits=channel_bits)
    label = (calibrator or make_calibrator(
        recipe.calibrator, percentile=recipe.percentile, aciq_prior=recipe.aciq_prior
    )).describe()
    twins = _quantized_tensors(tflite, list(ranges))
    order = [name for name in ranges if name in twins]
    header = {
        "calibrator": label,
        "statistics": {
            "num_examples": calibrated.statistics.num_examples,
            "batch_size": calibrated.statistics.batch_size,
            "ema_constant": calibrated.statistics.ema_constant,
        },
        "weights": weights,
        "fallbacks": {n: ranges[n].note for n in order if ranges[n].note},
    }
    tflite = embed_ranges(
        tflite, header, [twins[n] for n in order],
        [ranges[n].lo for n in order], [ranges[n].hi for n in order],
    )
    return embed_recipe(tflite, recipe)


def convert_calibrated(
    model: "tf.keras.Model | str | os.PathLike[str]",
    recipe: Recipe,
    *,
    calibration_data: np.ndarray | None,
) -> bytes:
    """:func:`calibrate` then :func:`export`: one model with ``recipe.calibrator``'s ranges."""
    return export(calibrate(model, recipe, calibration_data=calibration_data), recipe)
