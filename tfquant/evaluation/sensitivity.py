"""Per-layer error analysis and single-layer sensitivity, in the interpreter (issue 11).

For a model calibrated once (:func:`tfquant.convert.mixed.calibrate_mixed`):

* **per-tensor errors** between the float model and the fully quantized one (int8 or
  int16x8) on a debug set, both run with every tensor preserved
  (:func:`tfquant.tflite.interpreter.make_interpreter` ``preserve_all_tensors``), at each
  layer's output tensor f (float) and q (dequantized, ``(q_int - z)·Δ``):

  - ``mse`` = mean((f - q)²);
  - ``sqnr_db`` = 10·log10(Σf² / Σ(f - q)²) (signal-to-quantization-noise ratio);
  - ``cosine`` = Σ f·q / (‖f‖·‖q‖);
  - ``rmse_over_scale`` = sqrt(mse) / Δ: the TF QuantizationDebugger's reading (methods.md
    section 6): pure rounding noise of a uniform quantizer gives 1/sqrt(12) ≈ 0.289; layers
    far above it clip or lose resolution.

* **single-layer sensitivity** (NVIDIA's workflow, Wu et al. 2020 section 6 / methods.md
  section 2): ``accuracy_drop`` = float accuracy − accuracy with *only that layer*
  quantized (everything else float); ``promotion_gain`` = accuracy with everything
  quantized but that layer promoted (int8 → int16x8, or int16x8 → float) − accuracy of the
  fully quantized model. A layer is promoted together with the layers reading its output
  and producing its inputs (``promoted_with``; :func:`tfquant.convert.mixed.promotion_group`):
  an int8 reader would requantize the promoted output to int8 with the same range, and an
  input produced in int8 has lost its resolution already.

A "layer" is a Keras layer (all the ops the converter made from it) for Keras models, else
one op named by its output tensor. Each candidate is one AEQ export from the same
statistics (no conversion, no statistics pass) plus one accuracy run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any, Callable

import numpy as np

from tfquant.convert import mixed
from tfquant.evaluation.accuracy import evaluate_accuracy
from tfquant.qtypes import Mode, Runtime
from tfquant.recipes import Recipe
from tfquant.recipes.layers import LayerRule, Precision
from tfquant.tflite import aeq
from tfquant.tflite.interpreter import make_interpreter

RMSE_OVER_SCALE_ROUNDING = 1.0 / math.sqrt(12.0)


@dataclasses.dataclass
class LayerSensitivity:
    """One layer's row of the report (see the module docstring for the metrics)."""

    name: str
    op: str
    ops: int
    tensor: str
    accuracy_drop: float
    accuracy_quantized_alone: float
    promotion_gain: float | None = None
    promoted_to: str | None = None
    promoted_with: list[str] = dataclasses.field(default_factory=list)
    mse: float | None = None
    sqnr_db: float | None = None
    cosine: float | None = None
    rmse_over_scale: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def layer_units(calibrated: mixed.MixedCalibration, *, per_channel: bool = True) -> dict[str, list[mixed.OpInfo]]:
    """Layer name -> its ops, in graph order, for layers with at least one op AEQ quantizes."""
    units: dict[str, list[mixed.OpInfo]] = {}
    for op in calibrated.ops:
        units.setdefault(op.name, []).append(op)
    return {
        name: ops for name, ops in units.items()
        if any(aeq.supports(o.op_type, "int8", per_channel=per_channel) for o in ops)
    }


def _main_op(ops: list[mixed.OpInfo]) -> str:
    weighted = [o.op_type for o in ops if o.op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                                        "BATCH_MATMUL", "TRANSPOSE_CONV")]
    return weighted[0] if weighted else ops[0].op_type


def only_rule(name: str, precision: Precision) -> LayerRule:
    """The rule selecting exactly layer ``name`` (its Keras name or its tensor name)."""
    return LayerRule(layers=re.escape(name), precision=precision)


def _dequantized(interpreter: Any, detail: dict[str, Any]) -> np.ndarray | None:
    try:
        v = interpreter.get_tensor(detail["index"])
    except ValueError:
        return None
    q = detail.get("quantization_parameters", {})
    scales, zps = q.get("scales"), q.get("zero_points")
    if v.dtype in (np.int8, np.int16, np.uint8) and scales is not None and len(scales) == 1:
        return (v.astype(np.float64) - float(zps[0])) * float(scales[0])
    return v.astype(np.float64) if v.dtype in (np.float32, np.float64) else None


def tensor_errors(float_tflite: bytes, quant_tflite: bytes, x: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """MSE, SQNR, cosine and RMSE / scale per tensor in ``names`` over the debug set ``x``."""
    ref = make_interpreter(float_tflite, runtime=Runtime.BUILTIN, preserve_all_tensors=True, allocate=True)
    got = make_interpreter(quant_tflite, runtime=Runtime.BUILTIN, preserve_all_tensors=True, allocate=True)
    ref_d = {d["name"]: d for d in ref.get_tensor_details()}
    got_d = {d["name"]: d for d in got.get_tensor_details()}
    wanted = [n for n in names if n in ref_d and n in got_d]
    sums = {n: np.zeros(4) for n in wanted}  # Σ(f-q)², Σf², Σf·q, Σq²
    count = dict.fromkeys(wanted, 0)
    for interp in (ref, got):
        detail = interp.get_input_details()[0]
        interp.resize_tensor_input(detail["index"], [1, *x.shape[1:]])
        interp.allocate_tensors()
    for example in x:
        for interp in (ref, got):
            detail = interp.get_input_details()[0]
            value = example[None]
            scale, zp = detail["quantization"]
            if detail["dtype"] != np.float32 and scale:
                info = np.iinfo(detail["dtype"])
                value = np.clip(np.round(value / scale + zp), info.min, info.max)
            interp.set_tensor(detail["index"], value.astype(detail["dtype"]))
            interp.invoke()
        for n in wanted:
            f = _dequantized(ref, ref_d[n])
            q = _dequantized(got, got_d[n])
            if f is None or q is None or f.shape != q.shape:
                continue
            d = f - q
            sums[n] += [np.sum(d * d), np.sum(f * f), np.sum(f * q), np.sum(q * q)]
            count[n] += f.size
    out = {}
    for n in wanted:
        if not count[n]:
            continue
        err, ff, fq, qq = sums[n]
        mse = err / count[n]
        scales = got_d[n].get("quantization_parameters", {}).get("scales")
        scale = float(scales[0]) if scales is not None and len(scales) == 1 else None
        out[n] = {
            "mse": float(mse),
            "sqnr_db": float(10 * math.log10(ff / err)) if err > 0 and ff > 0 else float("inf"),
            "cosine": float(fq / math.sqrt(ff * qq)) if ff > 0 and qq > 0 else float("nan"),
            "rmse_over_scale": float(math.sqrt(mse) / scale) if scale else None,
        }
    return out


@dataclasses.dataclass
class SensitivityReport:
    """The whole analysis: float / fully quantized accuracy, the rows, timings."""

    mode: str
    calibrator: str
    float_accuracy: float
    quantized_accuracy: float
    n_eval: int
    n_debug: int
    layers: list[LayerSensitivity]
    seconds: dict[str, float]
    runtime: str = "interpreter (LiteRT, XNNPACK where it applies)"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        return d


def analyze(
    calibrated: mixed.MixedCalibration,
    recipe: Recipe,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    x_debug: np.ndarray,
    promote: bool = True,
    on_layer: Callable[[str], None] | None = None,
) -> SensitivityReport:
    """Per-layer errors and single-layer sensitivity of ``recipe.mode`` (int8 / int16x8).

    Args:
      calibrated: the float model and its statistics.
      recipe: mode int8 or int16x8 and a calibrator (no layer rules: this is the analysis).
      x_eval, y_eval: the examples the accuracies are measured on.
      x_debug: the debug set of the per-tensor errors.
      promote: also measure each layer's promotion gain.
      on_layer: called with each layer's name before it is measured (progress).
    """
    start = time.perf_counter()
    mode_precision = Precision.INT16X8 if recipe.mode is Mode.INT16X8 else Precision.INT8
    promoted = Precision.FLOAT if mode_precision is Precision.INT16X8 else Precision.INT16X8
    cache: dict = {}

    def accuracy(rules: tuple[LayerRule, ...]) -> tuple[float, list[mixed.OpPlan]]:
        tflite, plans = mixed.export_mixed(calibrated, recipe.replace(layer_rules=rules), cache=cache, metadata=False)
        return evaluate_accuracy(tflite, x_eval, y_eval).accuracy, plans

    float_acc = evaluate_accuracy(calibrated.float_model, x_eval, y_eval).accuracy
    full, _ = mixed.export_mixed(calibrated, recipe.replace(layer_rules=(LayerRule(precision=mode_precision),)),
                                 cache=cache, metadata=False)
    full_acc = evaluate_accuracy(full, x_eval, y_eval).accuracy
    units = layer_units(calibrated, per_channel=recipe.weight_granularity.value == "per_channel")
    outputs = {name: ops[-1].tensor for name, ops in units.items()}
    errors = tensor_errors(calibrated.float_model, full, x_debug, list(outputs.values()))
    seconds = {"float_and_full": time.perf_counter() - start}
    rows = []
    t0 = time.perf_counter()
    for name, ops in units.items():
        if on_layer is not None:
            on_layer(name)
        alone, _ = accuracy((LayerRule(precision=Precision.FLOAT), only_rule(name, mode_precision)))
        row = LayerSensitivity(
            name=name, op=_main_op(ops), ops=len(ops), tensor=outputs[name],
            accuracy_drop=float_acc - alone, accuracy_quantized_alone=alone,
            **errors.get(outputs[name], {}),
        )
        if promote:
            group = mixed.promotion_group(calibrated.ops, name)
            acc, plans = accuracy((LayerRule(precision=mode_precision), *(only_rule(g, promoted) for g in group)))
            row.promotion_gain = acc - full_acc
            row.promoted_to = promoted.value
            row.promoted_with = group[1:]
            refused = [p for p in plans if p.op.name in group and p.precision is not p.requested]
            if refused:
                row.note = f"{len(refused)} op(s) stayed {refused[0].precision}: {refused[0].reason}"[:200]
        rows.append(row)
    seconds["per_layer"] = time.perf_counter() - t0
    seconds["per_candidate"] = seconds["per_layer"] / max(1, len(rows) * (2 if promote else 1))
    rows.sort(key=lambda r: (-r.accuracy_drop, -(r.mse or 0.0)))
    return SensitivityReport(
        mode=recipe.mode.value, calibrator=recipe.calibration_label, float_accuracy=float_acc,
        quantized_accuracy=full_acc, n_eval=len(x_eval), n_debug=len(x_debug), layers=rows, seconds=seconds,
    )


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def to_markdown(report: SensitivityReport) -> str:
    """The report as a markdown table (most sensitive layer first)."""
    lines = [
        f"# Per-layer sensitivity ({report.mode}, activation ranges: {report.calibrator})",
        "",
        f"Float top-1 {report.float_accuracy:.4f}, fully {report.mode} {report.quantized_accuracy:.4f} "
        f"on {report.n_eval} examples; per-tensor errors on {report.n_debug} debug examples; "
        f"all in the TFLite interpreter. accuracy_drop: float minus only-this-layer-{report.mode}; "
        f"promotion_gain: fully {report.mode} with this layer promoted minus fully {report.mode}. "
        f"RMSE/scale of pure rounding noise: {RMSE_OVER_SCALE_ROUNDING:.3f}.",
        "",
        "| layer | op | ops | accuracy_drop | promotion_gain | MSE | SQNR dB | cosine | RMSE/scale | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.layers:
        lines.append(
            f"| {r.name} | {r.op} | {r.ops} | {r.accuracy_drop:+.4f} | {_fmt(r.promotion_gain, '+.4f')} | "
            f"{_fmt(r.mse, '.3g')} | {_fmt(r.sqnr_db, '.1f')} | {_fmt(r.cosine, '.4f')} | "
            f"{_fmt(r.rmse_over_scale, '.3f')} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def model_explorer_node_data(report: SensitivityReport, calibrated: mixed.MixedCalibration) -> dict[str, Any]:
    """Node data for Google's Model Explorer, to load on the float .tflite.

    The format of Model Explorer's "node data" files (as AI Edge Quantizer's
    ``create_json_for_model_explorer`` writes them): ``{"results": {node: {"value": v}},
    "thresholds": [{"value": t, "bgColor": color}]}``, nodes keyed by their output tensor
    names. Value: the layer's accuracy drop, on every op of the layer.
    """
    drops = {r.name: r.accuracy_drop for r in report.layers}
    results = {}
    for op in calibrated.ops:
        if op.name in drops:
            for tensor in op.outputs:
                results[tensor] = {"value": float(drops[op.name])}
    worst = max([abs(v) for v in drops.values()] + [1e-3])
    thresholds = [
        {"value": worst * f, "bgColor": color}
        for f, color in ((0.05, "rgb(200, 255, 0)"), (0.25, "rgb(200, 170, 0)"), (0.5, "rgb(220, 85, 0)"),
                         (1.0, "rgb(230, 0, 0)"))
    ]
    return {"results": results, "thresholds": thresholds}


def bar_chart(report: SensitivityReport, path: str, *, top: int = 40) -> None:
    """Accuracy drop per layer (most sensitive first), as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.layers[:top]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.5))
    ax.barh([r.name for r in rows][::-1], [100 * r.accuracy_drop for r in rows][::-1], color="tab:red")
    ax.set_xlabel(f"top-1 drop (points) with only this layer {report.mode}")
    ax.set_title(f"Per-layer sensitivity ({report.mode}, {report.calibrator}), interpreter")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
