"""NVIDIA's partial-quantization table (Wu et al. 2020, Table 6 / section 6.1) on the zoo, with
int16x8 promotion next to float fallback, every cell measured in the LiteRT interpreter.

The question: when full int8 loses more than a point, how many of the most sensitive layers
must leave int8, and what does leaving cost? Cases where int8 loses (made on purpose, each
explained in results.md):

* ``cnn_outlier``: the trained zoo CNN with one output channel of ``conv2`` scaled by
  :data:`OUTLIER_SCALE` and the matching input channel of ``conv3`` divided by it. ReLU
  and max-pooling are positively homogeneous, so the float model computes the same
  function; but with per-tensor max ranges, ``conv2``'s output range is set by the outlier
  channel and the other 31 channels keep a few int8 levels (the case cross-layer
  equalization exists for).
* ``vit_entropy``: the zoo ViT with entropy-calibrated activations (full run only): GELU,
  softmax and residual sums with long tails, where a KL-chosen clip can cut what matters.

Columns: float; full int8; int8 + the k most sensitive layers in float (k = 1..K); int8 + the
same k layers promoted to int16x8 activations; the whole model int16x8. Layers are ranked
once per case by single-layer sensitivity (accuracy drop with only that layer int8) on
:data:`RANK_EXAMPLES` *training* images, so the ranking never sees the test split; a layer
is promoted with the layers reading its output and producing its inputs
(:func:`tfquant.convert.mixed.promotion_group`); k counts ranked layers not already covered.
All variants come from one statistics pass (AI Edge Quantizer with injected ranges,
:mod:`tfquant.convert.mixed`). Accuracy, size, and single-image latency under XNNPACK and
the builtin kernels: int16x8 runs on reference kernels (XNNPACK has none), float fallback
inserts QUANTIZE / DEQUANTIZE pairs; the table shows what each costs.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.study import Footnotes, Record, RecordSet, Study, header, run_study
from tfquant.study.settings import zoo_fingerprint

NAME = "nvidia_partial"
OUTLIER_SCALE = 100.0
RANK_EXAMPLES = 500
CASES: Mapping[str, Mapping[str, Any]] = {
    "cnn_outlier": {"model": "cnn", "calibrator": "max", "outlier": ("conv2", "conv3", 0)},
    "vit_entropy": {"model": "vit", "calibrator": "entropy", "outlier": None},
}
CASE_NOTES = {
    "cnn_outlier": (
        f"zoo CNN, `conv2` output channel 0 x{OUTLIER_SCALE:g} and `conv3`'s matching input channel "
        f"/{OUTLIER_SCALE:g} (same float function: ReLU and max-pool are positively homogeneous); "
        "per-tensor max ranges: `conv2`'s int8 range is spent on the outlier channel."
    ),
    "vit_entropy": "zoo ViT, entropy (KL) activation ranges: long-tailed GELU / softmax / residual tensors.",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvidiaPartialConfig:
    """Cases, promoted-layer counts, data and timing settings."""

    cases: tuple[str, ...] = ("cnn_outlier",)
    max_layers: int = 3
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    num_calibration_examples: int = 500
    calibration_seed: int = 0
    limit: int | None = None
    latency_runs: int = 50

    def __post_init__(self) -> None:
        unknown = [c for c in self.cases if c not in CASES]
        if unknown or not self.cases:
            raise TfquantError(f"unknown or no case(s) {unknown}; choose from: {', '.join(CASES)}")
        object.__setattr__(self, "cases", tuple(self.cases))
        if self.max_layers < 1:
            raise TfquantError(f"max_layers must be >= 1, got {self.max_layers}")

    def columns(self) -> list[str]:
        k = range(1, self.max_layers + 1)
        return ["float", "int8", *(f"int8+{i}_float" for i in k), *(f"int8+{i}_int16" for i in k), "int16x8"]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartialCell:
    case: str
    column: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.case, self.column)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartialRecord(Record):
    """One variant of one case, measured in the interpreter (``executed_in: tflite``)."""

    experiment: str
    case: str
    column: str
    model: str
    calibrator: str
    executed_in: str
    accuracy: float | None = None
    n_examples: int | None = None
    size_bytes: int | None = None
    latency_xnnpack_ms: float | None = None
    latency_builtin_ms: float | None = None
    promoted: tuple[str, ...] = ()
    layers: dict[str, int] | None = None
    refused: dict[str, str] | None = None
    export_seconds: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.case, self.column)


def outlier_model(model: Any, producer: str, consumer: str, channel: int, scale: float = OUTLIER_SCALE) -> Any:
    """``model`` with ``producer``'s output ``channel`` x ``scale`` and ``consumer``'s input
    channel / ``scale`` (same float function through ReLU / max-pool), in place."""
    kernel, bias = model.get_layer(producer).get_weights()
    kernel[..., channel] *= scale
    bias[channel] *= scale
    model.get_layer(producer).set_weights([kernel, bias])
    weights = model.get_layer(consumer).get_weights()
    weights[0][..., channel, :] /= scale
    model.get_layer(consumer).set_weights(weights)
    return model


class NvidiaPartial(Study[PartialCell, PartialRecord]):
    name = NAME
    record_type = PartialRecord

    def __init__(self, config: NvidiaPartialConfig) -> None:
        self.config = config

    def fingerprint(self) -> Mapping[str, Any]:
        models = sorted({CASES[c]["model"] for c in self.config.cases})
        return zoo_fingerprint(self.config.to_dict(), models, {c: dict(CASES[c]) for c in self.config.cases})

    def cells(self) -> list[PartialCell]:
        return [PartialCell(case=c, column=col) for c in self.config.cases for col in self.config.columns()]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)

    def measure(self, todo: Sequence[PartialCell], log: Callable[[str], None]) -> Iterator[PartialRecord]:
        from tfquant import data
        from tfquant.convert import mixed
        from tfquant.evaluation.accuracy import evaluate_accuracy
        from tfquant.evaluation.latency import measure_latency
        from tfquant.evaluation.sensitivity import layer_units, only_rule
        from tfquant.models import build
        from tfquant.recipes import Recipe
        from tfquant.recipes.layers import LayerRule, Precision

        config = self.config
        x_test, y_test, _ = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
        x_rank, y_rank, _ = data.load_numpy(config.dataset, "train", data_dir=config.data_dir, limit=RANK_EXAMPLES)
        x_cal = data.calibration_set(config.dataset, config.num_calibration_examples,
                                     seed=config.calibration_seed, data_dir=config.data_dir)
        wanted = {c.key for c in todo}
        for case in _progress.progress(config.cases, desc="partial quantization", unit="case"):
            if not any(k[0] == case for k in wanted):
                continue
            spec = CASES[case]
            model = build(spec["model"])
            if spec["outlier"] is not None:
                model = outlier_model(model, *spec["outlier"])
            base = Recipe(mode="int8", calibrator=spec["calibrator"], num_calibration_examples=len(x_cal),
                          calibration_seed=config.calibration_seed, calibration_data=config.dataset)
            calibrated = mixed.calibrate_mixed(model, base, calibration_data=x_cal)
            cache: dict = {}

            def export(rules: tuple[LayerRule, ...]) -> tuple[bytes, list[Any]]:
                return mixed.export_mixed(calibrated, base.replace(layer_rules=rules), cache=cache, metadata=False)

            float_rank = evaluate_accuracy(calibrated.float_model, x_rank, y_rank).accuracy
            ranking = []
            for name in layer_units(calibrated):
                tfl, _ = export((LayerRule(precision=Precision.FLOAT), only_rule(name, Precision.INT8)))
                ranking.append((float_rank - evaluate_accuracy(tfl, x_rank, y_rank).accuracy, name))
            ranking.sort(key=lambda t: -t[0])
            log(f"{case}: sensitivity (train slice) " + ", ".join(f"{n} {d:+.3f}" for d, n in ranking[:5]))
            order = [n for _, n in ranking]
            common = {"experiment": NAME, "case": case, "model": spec["model"], "calibrator": spec["calibrator"],
                      "executed_in": "tflite"}
            for column in config.columns():
                if (case, column) not in wanted:
                    continue
                start = time.perf_counter()
                promoted: list[str] = []
                try:
                    if column == "float":
                        tflite, plans = calibrated.float_model, []
                    elif column == "int16x8":
                        tflite, plans = export((LayerRule(precision=Precision.INT16X8),))
                    else:
                        rules = [LayerRule(precision=Precision.INT8)]
                        if "+" in column:
                            k, kind = column.split("+")[1].split("_")
                            precision = Precision.FLOAT if kind == "float" else Precision.INT16X8
                            picks = [n for n in order]
                            taken = 0
                            for name in picks:  # the k most sensitive layers not yet covered
                                if taken == int(k):
                                    break
                                if name in promoted:
                                    continue
                                taken += 1
                                for g in mixed.promotion_group(calibrated.ops, name):
                                    if g not in promoted:
                                        promoted.append(g)
                                        rules.append(only_rule(g, precision))
                        tflite, plans = export(tuple(rules))
                    seconds = time.perf_counter() - start
                    acc = evaluate_accuracy(tflite, x_test, y_test)
                    lat = {rt: measure_latency(tflite, runtime=rt, runs=config.latency_runs, warmup=5).median_ms
                           for rt in ("xnnpack", "builtin")}
                except TfquantError as e:
                    yield PartialRecord(**common, column=column, error=str(e))
                    continue
                counts: dict[str, int] = {}
                refused: dict[str, str] = {}
                for p in plans:
                    counts[p.precision.value] = counts.get(p.precision.value, 0) + 1
                    if p.precision is not p.requested:
                        refused[p.op.name] = p.reason[:160]
                log(f"{case:>12} {column:<14} top-1 {acc.accuracy:.4f}  {len(tflite) / 1024:7.1f} KiB  "
                    f"xnnpack {lat['xnnpack']:.3f} ms  builtin {lat['builtin']:.3f} ms")
                yield PartialRecord(
                    **common, column=column, accuracy=acc.accuracy, n_examples=acc.n_examples,
                    size_bytes=len(tflite), latency_xnnpack_ms=round(lat["xnnpack"], 4),
                    latency_builtin_ms=round(lat["builtin"], 4), promoted=tuple(promoted),
                    layers=counts or None, refused=refused or None, export_seconds=round(seconds, 3),
                )


def run_nvidia_partial(config: NvidiaPartialConfig, out_dir: str | Path, *,
                       log: Callable[[str], None] = _progress.write) -> RecordSet:
    """Runs (or resumes) the study into ``out_dir``."""
    return run_study(NvidiaPartial(config), Path(out_dir), log=log)


def results_markdown(records: RecordSet, config: NvidiaPartialConfig) -> str:
    """One table per case: rows = variants; accuracy, drop, size, latency, promoted layers."""
    from tfquant.evaluation import markdown_table

    lines = header(
        f"NVIDIA partial quantization, int16 promotion vs float fallback ({config.dataset})",
        "Every cell ran in the LiteRT interpreter (`executed_in: tflite`, 1 thread) on "
        f"{'the whole test split' if config.limit is None else f'the first {config.limit} test images'}; "
        f"no cell is simulated (`sim`). Calibration: {config.num_calibration_examples} training images; "
        "weights per-channel max; activations per-tensor, the case's calibrator. Layers ranked by "
        f"single-layer int8 sensitivity on {RANK_EXAMPLES} training images; `int8+k_float` leaves the k "
        "most sensitive layers (with the layers reading their outputs and producing their inputs; k counts ranked layers not already covered) in float, `int8+k_int16` gives "
        "the same layers int16 activations (int8 weights). Latency: median single-image invoke, "
        "XNNPACK and builtin kernels (int16x8 has only reference kernels).")
    notes = Footnotes()
    for case in config.cases:
        f = records.ok((case, "float"))
        rows = []
        for column in config.columns():
            r = records.get((case, column))
            if r is None:
                continue
            if r.failed:
                rows.append({"variant": column, "top-1": notes.failed(f"{case} / {column}", r.error)})
                continue
            rows.append({
                "variant": column, "top-1": f"{r.accuracy:.4f}",
                "drop (pt)": "" if f is None else f"{100 * (f.accuracy - r.accuracy):+.2f}",
                "size KiB": f"{r.size_bytes / 1024:.1f}",
                "XNNPACK ms": f"{r.latency_xnnpack_ms:.3f}", "builtin ms": f"{r.latency_builtin_ms:.3f}",
                "left int8": ", ".join(r.promoted) + (f" ({len(r.refused)} op(s) refused int16)" if r.refused else ""),
            })
        lines += ["", f"## {case}", "", CASE_NOTES[case], "",
                  markdown_table(rows, ["variant", "top-1", "drop (pt)", "size KiB", "XNNPACK ms", "builtin ms",
                                        "left int8"]).rstrip("\n")]
    return "\n".join(lines + notes.lines()) + "\n"
