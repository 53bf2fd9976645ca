"""Mixed-precision models: per-layer int8 / int16x8 / float in one .tflite (issue 11).

Calibrate once, emit many candidates cheaply:

1. :func:`calibrate_mixed`: the model is converted once to a float .tflite (a Keras model's
   LayerNormalization / hard-swish are first rewritten as for int16x8, exactly, so an op
   promoted to int16 has a kernel; :mod:`tfquant.convert.rewrites`) and one statistics pass
   (:func:`tfquant.calibration.collect_statistics`) gathers every activation tensor.
2. :func:`plan`: the recipe's rules (:mod:`tfquant.recipes.layers`, last match wins) give
   each op a precision; an op AEQ cannot quantize stays float, and an op asked to run int16
   is checked first (:func:`tfquant.tflite.int16_kernels.check`: known-op table, then a
   cached one-op trial in a child process) and falls back to float with the reason recorded.
   So does an op whose int32 bias would overflow at its input's scale (AEQ wraps it
   silently; :func:`tfquant.tflite.aeq.bias_overflow`).
3. :func:`export_mixed`: each tensor's range comes from its calibrator (the rule's, else
   the recipe's) for the bit width of the op that produces it; AI Edge Quantizer writes the
   model op by op with these ranges injected (:mod:`tfquant.tflite.aeq`). The recipe
   (``tfquant_recipe``) and the per-op plan (``tfquant_precision``) are embedded;
   ``inspect`` shows both.

One more candidate therefore costs a range lookup and one AEQ call, not a conversion and
not a statistics pass (measured: experiments/bench_mixed_precision.py, BUILD_NOTES.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np

from tfquant.calibration import CalibrationStatistics, QuantTarget, Range, collect_statistics, make_calibrator
from tfquant.convert import representative, rewrites
from tfquant.convert.metadata import embed_ranges, embed_recipe
from tfquant.convert.options import run_converter
from tfquant.convert.source import check_recipe, load_source
from tfquant.errors import TfquantError
from tfquant.progress import stage
from tfquant.qtypes import ActivationScheme, Calibration, Granularity, Mode
from tfquant.recipes import Recipe
from tfquant.recipes.layers import Precision, precision_of
from tfquant.tflite import aeq, flatbuffer, int16_kernels
from tfquant.tflite.runtime_check import check_runs

PRECISION_METADATA_NAME = "tfquant_precision"
_TYPE_PRECISION = {"INT8": "int8", "INT16": "int16x8", "FLOAT32": "float"}


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One op of the float model.

    Attributes:
      index: position in the main subgraph.
      op_type: TFLite builtin op name.
      tensor: the op's first output tensor name (its name when the model is not Keras).
      scope: AEQ's scope of the op (output names joined by ``;``, trailing ``;``).
      layer: the Keras layer the op belongs to (``None`` when unknown).
      inputs, outputs: activation (non-constant) tensor names read / written.
    """

    index: int
    op_type: str
    tensor: str
    scope: str
    layer: str | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def name(self) -> str:
        """The layer name for Keras models, else the output tensor name."""
        return self.layer or self.tensor


@dataclasses.dataclass(frozen=True)
class MixedCalibration:
    """A float model, its ops, and statistics of every activation tensor."""

    float_model: bytes
    statistics: CalibrationStatistics
    ops: tuple[OpInfo, ...]
    num_calibration_examples: int
    calibration_seed: int
    calibration_data: str | None
    convert_seconds: float
    statistics_seconds: float


@dataclasses.dataclass(frozen=True)
class OpPlan:
    """The precision one op gets: ``requested`` by the rules, ``precision`` emitted, and why
    they differ (``reason``; empty when equal)."""

    op: OpInfo
    requested: Precision
    precision: Precision
    reason: str = ""
    calibrator: Calibration | None = None
    percentile: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.op.name, "op": self.op.op_type, "tensor": self.op.tensor,
            "requested": self.requested.value, "precision": self.precision.value,
            **({"reason": self.reason} if self.reason else {}),
        }


def _layer_names(keras_model: Any) -> set[str]:
    names: set[str] = set()
    stack = [keras_model]
    while stack:
        m = stack.pop()
        for layer in getattr(m, "layers", []):
            names.add(layer.name)
            if hasattr(layer, "layers"):
                stack.append(layer)
    return names


def _layer_of(tensor_names: list[str], known: set[str]) -> str | None:
    """The Keras layer an op belongs to: the last path component of its output names that
    is a layer name (TFLite names tensors ``model/layer/Op;model/layer/Op2``)."""
    for full in tensor_names:
        for part in full.split(";"):
            components = part.split("/")
            for c in reversed(components[:-1] or components):
                if c in known:
                    return c
    return None


def list_ops(float_tflite: bytes, layer_names: set[str] | None = None) -> tuple[OpInfo, ...]:
    """The ops of the float model's main subgraph (see :class:`OpInfo`)."""
    model = flatbuffer.read(float_tflite)
    subgraph = model.subgraphs[0]
    constants = flatbuffer.constant_tensors(float_tflite)
    tname = {i: flatbuffer.name(t.name) for i, t in enumerate(subgraph.tensors)}
    ops = []
    for k, op in enumerate(subgraph.operators):
        outs = [tname[i] for i in op.outputs if i >= 0]
        ins = [tname[i] for i in op.inputs if i >= 0 and i not in constants]
        ops.append(OpInfo(
            index=k, op_type=flatbuffer.op_name(model, op), tensor=outs[0] if outs else f"op{k}",
            scope=aeq.op_scope(outs),
            # a graph output is named by the signature; its weights still carry the layer
            layer=_layer_of(outs + [tname[i] for i in op.inputs if i in constants], layer_names or set()),
            inputs=tuple(ins), outputs=tuple(outs),
        ))
    return tuple(ops)


# Ops whose output keeps its input's quantization (range / scale): a tensor's precision is
# decided where it is produced, so promotion walks up through them to the real producer.
PASS_THROUGH_OPS = frozenset({
    "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "STRIDED_SLICE", "SLICE",
    "GATHER", "PAD", "PADV2", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SPLIT", "PACK", "UNPACK",
})


def promotion_group(ops: tuple[OpInfo, ...], name: str) -> list[str]:
    """Layer ``name`` with the layers that must change precision with it, in graph order.

    A tensor's precision is set where it is produced and must hold where it is read: an
    int8 reader requantizes a promoted output back to int8, and an input produced in int8
    has lost its resolution before the layer sees it. So a layer is promoted together with
    (a) the layers reading its outputs and (b) the layers producing its inputs, walking
    through :data:`PASS_THROUGH_OPS` (max-pool, reshape, ...) down to the ops that use the
    values and up to the op that computed them.
    """
    producer = {t: op for op in ops for t in op.outputs}
    group = {name}
    mine = [op for op in ops if op.name == name]
    frontier = {t for op in mine for t in op.outputs}
    while frontier:  # readers, down through pass-through ops
        reached: set[str] = set()
        for op in ops:
            if op.name != name and op.name not in group and frontier.intersection(op.inputs):
                group.add(op.name)
                if op.op_type in PASS_THROUGH_OPS:
                    reached.update(op.outputs)
        frontier = reached
    stack = [t for op in mine for t in op.inputs]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        src = producer[t]
        if src.name == name:
            continue
        group.add(src.name)
        if src.op_type in PASS_THROUGH_OPS:
            stack.extend(src.inputs)
    ordered = [name]
    for op in ops:
        if op.name in group and op.name not in ordered:
            ordered.append(op.name)
    return ordered


def _activation_tensors(float_tflite: bytes) -> dict[int, str]:
    model = flatbuffer.read(float_tflite)
    subgraph = model.subgraphs[0]
    constants = flatbuffer.constant_tensors(float_tflite)
    used: set[int] = set()
    for op in subgraph.operators:
        used.update(i for i in list(op.inputs) + list(op.outputs) if i >= 0 and i not in constants)
    return {
        i: flatbuffer.name(subgraph.tensors[i].name)
        for i in sorted(used)
        if flatbuffer.type_name(subgraph.tensors[i].type) == "FLOAT32"
    }


def float_model(model: Any, *, custom_objects: Any = None) -> tuple[bytes, set[str]]:
    """The float .tflite the mixed models are cut from, and the Keras layer names."""
    source = load_source(model, custom_objects=custom_objects)
    names: set[str] = set()
    if source.keras_model is not None:
        names = _layer_names(source.keras_model)
        source = dataclasses.replace(source, keras_model=rewrites.rewrite_for_int16x8(source.keras_model))
    with stage("convert (float model for mixed precision)"):
        tflite = run_converter(source, Recipe(mode=Mode.FP32), None)
    return tflite, names


def calibrate_mixed(
    model: Any, recipe: Recipe, *, calibration_data: np.ndarray, batch_size: int = 100,
    custom_objects: Any = None,
) -> MixedCalibration:
    """Converts ``model`` to float once and gathers every activation tensor's statistics."""
    check_recipe(recipe)
    if not recipe.mode.needs_calibration:
        raise TfquantError(f"mode {recipe.mode} has no calibration; use mode int8 or int16x8")
    source = load_source(model, custom_objects=custom_objects)
    x = representative.validate_calibration_data(calibration_data, recipe, source.input_shape(),
                                                 source.input_dtype())
    start = time.perf_counter()
    tflite, names = float_model(source.keras_model if source.keras_model is not None else model)
    convert_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if source.input_shape()[0] not in (None, -1):
        batch_size = int(source.input_shape()[0])
    statistics = collect_statistics(tflite, x, _activation_tensors(tflite), batch_size=batch_size)
    return MixedCalibration(
        float_model=tflite, statistics=statistics, ops=list_ops(tflite, names),
        num_calibration_examples=recipe.num_calibration_examples,
        calibration_seed=recipe.calibration_seed, calibration_data=recipe.calibration_data,
        convert_seconds=convert_seconds, statistics_seconds=time.perf_counter() - start,
    )


def _range(stats: Any, calibrator: Calibration, percentile: float | None, bits: int, symmetric: bool,
           cache: dict) -> Range:
    key = (stats.name, calibrator, percentile, bits, symmetric)
    if key not in cache:
        r = make_calibrator(calibrator, percentile=percentile).compute_range(stats, QuantTarget(bits=bits, symmetric=symmetric))
        if not r.hi - r.lo > 0.0:
            r = Range(float(stats.min), float(stats.max))
        cache[key] = r
    return cache[key]


def plan(calibrated: MixedCalibration, recipe: Recipe, *, ranges: dict | None = None) -> list[OpPlan]:
    """Each op's precision under ``recipe`` (rules, AEQ support, int16 kernel check)."""
    base = Precision.INT16X8 if recipe.mode is Mode.INT16X8 else Precision.INT8
    per_channel = recipe.weight_granularity is Granularity.PER_CHANNEL
    plans = []
    for op in calibrated.ops:
        requested, rule = precision_of(recipe.layer_rules, base, op.layer, op.tensor, op.op_type)
        precision, reason = requested, ""
        if requested is Precision.INT8 and not aeq.supports(op.op_type, "int8", per_channel=per_channel):
            precision, reason = Precision.FLOAT, f"AI Edge Quantizer has no int8 config for {op.op_type}"
        if precision is Precision.INT16X8:  # the table, AEQ's support, then a one-op trial
            verdict = int16_kernels.check(calibrated.float_model, op.index, ranges or {})
            if not verdict.ok:
                precision, reason = Precision.FLOAT, verdict.reason
        calibrator = rule.calibrator if rule is not None and rule.calibrator is not None else recipe.calibrator
        percentile = (rule.percentile if rule is not None and rule.calibrator is not None else recipe.percentile)
        plans.append(OpPlan(op, requested, precision, reason, calibrator, percentile))
    return plans


def tensor_ranges(calibrated: MixedCalibration, recipe: Recipe, plans: list[OpPlan] | None = None,
                  cache: dict | None = None) -> dict[str, tuple[float, float]]:
    """(min, max) per activation tensor: the producing op's calibrator, at its bit width
    (graph inputs: the recipe's calibrator at the base bit width)."""
    cache = {} if cache is None else cache
    symmetric8 = recipe.activation_scheme is ActivationScheme.SYMMETRIC
    producer: dict[str, OpPlan] = {}
    for p in plans or []:
        for name in p.op.outputs:
            producer[name] = p
    base16 = recipe.mode is Mode.INT16X8
    out = {}
    for name, stats in calibrated.statistics.tensors.items():
        p = producer.get(name)
        is16 = (p.precision is Precision.INT16X8) if p is not None and p.precision is not Precision.FLOAT else base16
        calibrator = p.calibrator if p is not None and p.calibrator is not None else recipe.calibrator
        percentile = p.percentile if p is not None and p.calibrator is not None else recipe.percentile
        r = _range(stats, calibrator, percentile, 16 if is16 else 8, True if is16 else symmetric8, cache)
        out[name] = (r.lo, r.hi)
    return out


def _keep_overflowing_biases_float(calibrated: MixedCalibration, recipe: Recipe, plans: list[OpPlan],
                                   ranges: dict[str, tuple[float, float]], cache: dict,
                                   ) -> tuple[list[OpPlan], dict[str, tuple[float, float]]]:
    """Ops whose int32 bias AI Edge Quantizer would overflow (|b_c| / (s_in · s_w,c) > 2^31,
    :func:`tfquant.tflite.aeq.bias_overflow`; AEQ wraps it silently) fall back to float with
    the reason recorded, as the int16 kernel check's do; the ranges follow the new plan
    (repeated until no op changes: a fallback can change the ranges its neighbours see)."""
    per_channel = recipe.weight_granularity is Granularity.PER_CHANNEL
    key = ("bias_ratios", per_channel, calibrated.float_model)
    if key not in cache:
        cache[key] = aeq.bias_ratios(calibrated.float_model, per_channel=per_channel)
    ratios = cache[key]
    symmetric8 = recipe.activation_scheme is ActivationScheme.SYMMETRIC
    while True:
        changed = False
        for i, p in enumerate(plans):
            entry = ratios.get(p.op.scope)
            if p.precision is Precision.FLOAT or entry is None or entry[0] not in ranges:
                continue
            q = aeq.bias_overflow(entry[1], ranges[entry[0]], p.precision.value, int8_symmetric=symmetric8)
            if q > aeq.BIAS_LIMIT:
                plans[i] = dataclasses.replace(p, precision=Precision.FLOAT, reason=(
                    f"int32 bias overflow at {p.precision.value}: |bias| / (input scale x weight scale) reaches "
                    f"{q:.3g} > 2^31 (AI Edge Quantizer would wrap it silently); kept float"))
                changed = True
        if not changed:
            return plans, ranges
        ranges = tensor_ranges(calibrated, recipe, plans, cache)


def export_mixed(calibrated: MixedCalibration, recipe: Recipe, *, cache: dict | None = None,
                 metadata: bool = True) -> tuple[bytes, list[OpPlan]]:
    """The mixed .tflite of ``recipe`` (rules applied, kernels checked) and its per-op plan.

    ``metadata=False`` leaves out the recipe, ranges and plan (``tfquant_*`` entries): a
    search candidate that is only evaluated skips three flatbuffer rewrites, which cost
    several times the AEQ call itself on the ViT (pure-Python flatbuffer packing).
    ``cache`` (a dict kept across calls) memoizes the calibrators' range searches.
    """
    check_recipe(recipe)
    if recipe.calibrator is None:
        raise TfquantError("a mixed-precision export needs recipe.calibrator; add calibrator='max' (or another)")
    cache = {} if cache is None else cache
    first = tensor_ranges(calibrated, recipe, None, cache)
    plans = plan(calibrated, recipe, ranges=first)
    ranges = tensor_ranges(calibrated, recipe, plans, cache)
    plans, ranges = _keep_overflowing_biases_float(calibrated, recipe, plans, ranges, cache)
    chosen = {p.op.scope: (p.op.op_type, p.precision.value) for p in plans if p.precision is not Precision.FLOAT}
    tflite = aeq.quantize(
        calibrated.float_model, chosen, ranges,
        per_channel=recipe.weight_granularity is Granularity.PER_CHANNEL,
        int8_symmetric=recipe.activation_scheme is ActivationScheme.SYMMETRIC,
    )
    if any(p.precision is Precision.INT16X8 for p in plans):
        with stage("mixed model runtime check (child process)"):
            check_runs(tflite, what="the mixed-precision model")
    if not metadata:
        return tflite, plans
    tflite = _embed_ranges(tflite, ranges, recipe, calibrated)
    tflite = flatbuffer.embed_bytes(tflite, PRECISION_METADATA_NAME, json.dumps(
        {"backend": "ai-edge-quantizer", "ops": [p.to_dict() for p in plans]}, sort_keys=True).encode())
    return embed_recipe(tflite, recipe), plans


def _embed_ranges(tflite: bytes, ranges: dict[str, tuple[float, float]], recipe: Recipe,
                  calibrated: MixedCalibration) -> bytes:
    """The chosen ranges of the quantized tensors as ``tfquant_ranges`` (``inspect`` shows them)."""
    model = flatbuffer.read(tflite)
    index = {flatbuffer.name(t.name): i for i, t in enumerate(model.subgraphs[0].tensors)
             if flatbuffer.type_name(t.type) in ("INT8", "INT16")}
    names = [n for n in ranges if n in index]
    header = {
        "calibrator": recipe.calibration_label + (" (per-layer rules may override)" if recipe.layer_rules else ""),
        "statistics": {"num_examples": calibrated.statistics.num_examples,
                       "batch_size": calibrated.statistics.batch_size,
                       "ema_constant": calibrated.statistics.ema_constant},
        "weights": {}, "fallbacks": {},
    }
    return embed_ranges(tflite, header, [index[n] for n in names],
                        [ranges[n][0] for n in names], [ranges[n][1] for n in names])


def convert_mixed(model: Any, recipe: Recipe, *, calibration_data: np.ndarray, custom_objects: Any = None) -> bytes:
    """:func:`calibrate_mixed` then :func:`export_mixed`."""
    calibrated = calibrate_mixed(model, recipe, calibration_data=calibration_data, custom_objects=custom_objects)
    with stage("quantize (mixed precision, AI Edge Quantizer)"):
        return export_mixed(calibrated, recipe)[0]


def read_precision(tflite: bytes | str | os.PathLike[str]) -> dict | None:
    """The per-op plan embedded by :func:`export_mixed`, or ``None``."""
    raw = flatbuffer.read_bytes(flatbuffer.model_bytes(tflite), PRECISION_METADATA_NAME)
    return None if raw is None else json.loads(raw.decode("utf-8"))


def format_precision(precision: dict) -> str:
    """The per-op precision table ``inspect`` prints for a mixed model."""
    ops = precision.get("ops", [])
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["precision"]] = counts.get(op["precision"], 0) + 1
    lines = [f"per-op precision ({precision.get('backend')}): "
             + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
    for op in ops:
        note = f"  (asked {op['requested']}: {op['reason']})" if op.get("reason") else ""
        lines.append(f"  {op['precision']:<8} {op['op']:<18} {op['name']}{note}")
    return "\n".join(lines)


def emitted_precisions(tflite: bytes) -> dict[str, str]:
    """Output tensor name -> int8 / int16x8 / float as the .tflite actually stores it."""
    model = flatbuffer.read(tflite)
    subgraph = model.subgraphs[0]
    return {
        flatbuffer.name(t.name): _TYPE_PRECISION.get(flatbuffer.type_name(t.type), flatbuffer.type_name(t.type))
        for t in subgraph.tensors
    }
