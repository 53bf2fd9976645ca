"""The 1% workflow as one function: a Keras model and an accuracy budget in, a measured
int8 / int16x8 / float .tflite out (issue 11; Wu et al. 2020, methods.md section 2).

Steps (every candidate is one AEQ export from the *same* statistics, evaluated in LiteRT):

1. calibrate once (:func:`tfquant.convert.mixed.calibrate_mixed`): the float .tflite and
   one statistics pass; weights are per-channel max (AEQ's min/max per output channel);
2. try the activation calibrators (max, entropy, percentile 99.9 / 99.99 / 99.999, mse) on
   the whole model in int8 and keep the most accurate;
3. while ``float − candidate > max_drop``: rank the layers by single-layer sensitivity
   (accuracy drop with only that layer int8), then promote the most sensitive layer
   not yet promoted, together with the layers reading its output and producing its inputs
   (:func:`tfquant.convert.mixed.promotion_group`), to **int16x8 activations first** (the
   model stays integer-only); keep it if it helps; otherwise (int16 refused by the kernel
   check, or no gain) try **float** for that group and keep that if it helps;
4. optionally (``allow_qat``) finish with QAT (:func:`tfquant.qat.run_qat`: NVIDIA's
   fine-tune schedule, whole model int8, from the float model) when the calibrators and
   promotion miss the budget; the QAT model is kept if it beats the best candidate.

All choices are made on a *validation* slice of the evaluation data (a seeded half); the
final accuracy is reported on the other half, which no choice saw. The result says whether
the budget held on the validation slice; the caller refuses to write a model that misses it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

from tfquant.convert import mixed
from tfquant.errors import TfquantError
from tfquant.evaluation.accuracy import evaluate_accuracy
from tfquant.evaluation.latency import measure_latency
from tfquant.qtypes import Calibration
from tfquant.recipes import Recipe
from tfquant.recipes.layers import LayerRule, Precision
from tfquant.evaluation.sensitivity import layer_units, only_rule

# (calibrator, percentile) tried in step 2, in this order (ties keep the earlier one).
CALIBRATORS: tuple[tuple[Calibration, float | None], ...] = (
    (Calibration.MAX, None), (Calibration.ENTROPY, None), (Calibration.PERCENTILE, 99.9),
    (Calibration.PERCENTILE, 99.99), (Calibration.PERCENTILE, 99.999), (Calibration.MSE, None),
)
ALL_INT8 = LayerRule(precision=Precision.INT8)


@dataclasses.dataclass
class Step:
    """One candidate of the search (a row of the step log)."""

    step: int
    kind: str
    description: str
    calibrator: str
    accuracy: float
    drop: float
    size_bytes: int
    latency_ms: float | None
    kept: bool
    layers: dict[str, list[str]]
    refused: dict[str, str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AutoquantResult:
    """The chosen model and how it was found."""

    tflite: bytes | None
    recipe: Recipe | None
    qat_record: str | None
    met: bool
    max_drop: float
    float_accuracy_val: float
    accuracy_val: float
    float_accuracy_report: float
    accuracy_report: float | None
    n_val: int
    n_report: int
    steps: list[Step]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("tflite", "recipe", "steps", "qat_record")}
        d["recipe"] = self.recipe.to_dict() if self.recipe is not None else None
        d["steps"] = [s.to_dict() for s in self.steps]
        return d


def split_eval(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the validation half and the report half of ``n`` examples (seeded)."""
    if n < 2:
        raise TfquantError(f"the evaluation data has {n} example(s); autoquant needs at least 2 (half to choose, half to report)")
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half:])


def _layers_by_precision(plans: list[mixed.OpPlan]) -> tuple[dict[str, list[str]], dict[str, str]]:
    per_layer: dict[str, set[str]] = {}
    refused: dict[str, str] = {}
    for p in plans:
        per_layer.setdefault(p.op.name, set()).add(p.precision.value)
        if p.precision is not p.requested:
            refused.setdefault(p.op.name, f"{p.op.op_type}: {p.reason}"[:200])
    out: dict[str, list[str]] = {"int8": [], "int16x8": [], "float": [], "mixed": []}
    for name, kinds in per_layer.items():
        out[next(iter(kinds)) if len(kinds) == 1 else "mixed"].append(name)
    return out, refused


def autoquant(
    model: Any,
    x_cal: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    base: Recipe,
    max_drop: float = 0.01,
    seed: int = 0,
    latency_runs: int = 20,
    max_promotions: int | None = None,
    qat: Callable[[], tuple[bytes, str]] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> AutoquantResult:
    """Searches the cheapest configuration within ``max_drop`` of float (module docstring).

    Args:
      model: Keras model (or path) to quantize.
      x_cal: calibration images (the input contract applied).
      x_eval, y_eval: labelled evaluation examples, split into validation / report halves.
      base: recipe fields every candidate shares (mode int8, calibration provenance, input).
      max_drop: the budget, a fraction (0.01 = one point of top-1).
      seed: seed of the validation / report split.
      latency_runs: single-image invokes timed per candidate (XNNPACK); 0 skips.
      max_promotions: at most this many promotion steps (default: every layer).
      qat: ``allow_qat``: a function returning a QAT int8 .tflite and its QAT record (JSON
        text), tried when the calibrators and promotion miss the budget.
      log: one line per step (progress).
    """
    if not 0.0 <= max_drop < 1.0:
        raise TfquantError(f"max_drop is a fraction in [0, 1), got {max_drop!r} (0.01 = one point)")
    val, rep = split_eval(len(x_eval), seed)
    xv, yv, xr, yr = x_eval[val], y_eval[val], x_eval[rep], y_eval[rep]
    t0 = time.perf_counter()
    calibrated = mixed.calibrate_mixed(model, base.replace(calibrator=Calibration.MAX), calibration_data=x_cal)
    seconds = {"calibrate": time.perf_counter() - t0}
    float_val = evaluate_accuracy(calibrated.float_model, xv, yv).accuracy
    steps: list[Step] = []
    cache: dict = {}

    def candidate(kind: str, what: str, recipe: Recipe) -> tuple[Step, bytes, Recipe]:
        start = time.perf_counter()
        tflite, plans = mixed.export_mixed(calibrated, recipe, cache=cache, metadata=False)
        acc = evaluate_accuracy(tflite, xv, yv).accuracy
        latency = measure_latency(tflite, runs=latency_runs, warmup=2).median_ms if latency_runs > 0 else None
        layers, refused = _layers_by_precision(plans)
        step = Step(len(steps) + 1, kind, what, recipe.calibration_label, acc, float_val - acc, len(tflite),
                    latency, False, layers, refused, time.perf_counter() - start)
        steps.append(step)
        log(f"step {step.step} {kind}: {what}: top-1 {acc:.4f} (drop {step.drop:+.4f})")
        return step, tflite, recipe

    best: tuple[Step, bytes, Recipe] | None = None
    t0 = time.perf_counter()
    for calibrator, percentile in CALIBRATORS:
        r = base.replace(calibrator=calibrator, percentile=percentile, layer_rules=(ALL_INT8,))
        cand = candidate("calibrator", f"all int8, {r.calibration_label}", r)
        if best is None or cand[0].accuracy > best[0].accuracy:
            best = cand
    assert best is not None
    best[0].kept = True
    seconds["calibrators"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if best[0].drop > max_drop:
        best = _promote(calibrated, best, candidate, max_drop, max_promotions, xv, yv, float_val, cache, log)
    seconds["promotion"] = time.perf_counter() - t0
    qat_record = None
    if best[0].drop > max_drop and qat is not None:
        t0 = time.perf_counter()
        tflite, record_text = qat()
        acc = evaluate_accuracy(tflite, xv, yv).accuracy
        step = Step(len(steps) + 1, "qat", "QAT fine-tune, whole model int8", "qat", acc, float_val - acc,
                    len(tflite), None, acc > best[0].accuracy, {}, {}, time.perf_counter() - t0)
        steps.append(step)
        log(f"step {step.step} qat: top-1 {acc:.4f} (drop {step.drop:+.4f})")
        if step.kept:
            best = (step, tflite, None)
            qat_record = record_text
        seconds["qat"] = step.seconds
    met = best[0].drop <= max_drop
    if met and best[2] is not None:  # the chosen candidate again, with its recipe, ranges and plan embedded
        best = (best[0], mixed.export_mixed(calibrated, best[2], cache=cache)[0], best[2])
    float_rep = evaluate_accuracy(calibrated.float_model, xr, yr).accuracy
    acc_rep = evaluate_accuracy(best[1], xr, yr).accuracy if met else None
    return AutoquantResult(
        tflite=best[1] if met else None, recipe=best[2] if met else None, qat_record=qat_record if met else None,
        met=met, max_drop=max_drop,
        float_accuracy_val=float_val, accuracy_val=best[0].accuracy, float_accuracy_report=float_rep,
        accuracy_report=acc_rep, n_val=len(xv), n_report=len(xr), steps=steps,
        seconds={**seconds, "statistics_pass": calibrated.statistics_seconds,
                 "float_conversion": calibrated.convert_seconds},
    )


def _promote(calibrated, best, candidate, max_drop, max_promotions, xv, yv, float_val, cache, log):
    """Step 3: rank layers by single-layer sensitivity, promote greedily (int16 first)."""
    recipe = best[2]
    ranking = []
    for name in layer_units(calibrated):
        rules = (LayerRule(precision=Precision.FLOAT), only_rule(name, Precision.INT8))
        tflite, _ = mixed.export_mixed(calibrated, recipe.replace(layer_rules=rules), cache=cache, metadata=False)
        ranking.append((float_val - evaluate_accuracy(tflite, xv, yv).accuracy, name))
    ranking.sort(key=lambda t: -t[0])
    log("sensitivity: " + ", ".join(f"{n} {d:+.3f}" for d, n in ranking[:8]))
    rules = list(recipe.layer_rules)
    done: set[str] = set()
    promotions = 0
    for drop, name in ranking:
        if best[0].drop <= max_drop or (max_promotions is not None and promotions >= max_promotions):
            break
        if name in done:
            continue
        group = [g for g in mixed.promotion_group(calibrated.ops, name) if g not in done]
        promotions += 1
        for precision in (Precision.INT16X8, Precision.FLOAT):
            trial = recipe.replace(layer_rules=tuple(rules) + tuple(only_rule(g, precision) for g in group))
            cand = candidate("promote", f"{'+'.join(group)} -> {precision} (single-layer drop {drop:+.3f})", trial)
            if cand[0].accuracy > best[0].accuracy:
                cand[0].kept = True
                best = cand
                rules = list(trial.layer_rules)
                done.update(group)
                break
    return best


def steps_markdown(result: AutoquantResult) -> str:
    """The step log as markdown: every candidate's accuracy, size, latency and layers."""
    lines = [
        f"# autoquant: budget {100 * result.max_drop:.2f} points of top-1 "
        f"({'met' if result.met else 'NOT met'} on the validation slice)",
        "",
        f"Validation slice ({result.n_val} examples; all choices): float {result.float_accuracy_val:.4f}, "
        f"chosen {result.accuracy_val:.4f}. Report slice ({result.n_report} examples, unseen by the search): "
        f"float {result.float_accuracy_report:.4f}, chosen "
        + (f"{result.accuracy_report:.4f}" if result.accuracy_report is not None else "n/a")
        + ". All accuracies measured in the TFLite interpreter; latency: XNNPACK, 1 thread, median.",
        "",
        "| step | kind | candidate | top-1 (val) | drop | size (B) | latency ms | int8 / int16x8 / float layers | kept |",
        "|---:|---|---|---:|---:|---:|---:|---|---|",
    ]
    for s in result.steps:
        counts = " / ".join(str(len(s.layers.get(k, []))) for k in ("int8", "int16x8", "float"))
        promoted = ", ".join(s.layers.get("int16x8", [])[:6] + [f"{n} (float)" for n in s.layers.get("float", [])[:6]])
        lat = f"{s.latency_ms:.3f}" if s.latency_ms is not None else ""
        lines.append(
            f"| {s.step} | {s.kind} | {s.description} | {s.accuracy:.4f} | {s.drop:+.4f} | {s.size_bytes:,} | {lat} | "
            f"{counts}{': ' + promoted if promoted else ''} | {'yes' if s.kept else ''} |"
        )
    return "\n".join(lines) + "\n"
