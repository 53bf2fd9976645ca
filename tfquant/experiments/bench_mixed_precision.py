"""What one more mixed-precision candidate costs, next to one conversion (issue 11, item 5).

Per zoo model (resnet and the ViT by default), side by side, wall and CPU seconds:

* ``conversion``: one full calibrated int8 conversion from the Keras model
  (:func:`tfquant.convert.convert` with calibrator max: the converter's calibrate-only
  pass, the statistics pass, the quantizer);
* ``calibrate``: the mixed path's one-time cost (:func:`tfquant.convert.mixed.calibrate_mixed`:
  float conversion + statistics pass over every activation tensor);
* ``candidate``: one more candidate once the statistics exist: one AEQ export
  (:func:`tfquant.convert.mixed.export_mixed`, no metadata: a search candidate is only
  evaluated; int16 candidates include their kernel checks and whole-model test run) for a
  different rule set, timed over
  ``candidates`` configurations (single layers promoted to int16x8 or float, calibrator
  swaps), with and without the accuracy run on ``eval_examples`` test images;
* ``sweep``: the whole single-layer sensitivity sweep
  (:func:`tfquant.evaluation.sensitivity.analyze`, every layer, only-this-layer int8 and
  promoted-to-int16 candidates, accuracy on ``eval_examples`` images).

CPU seconds (user + system of this process, all threads, and of its child processes, e.g.
the int16 runtime checks) are reported next to wall seconds because the machine is shared. Results: one record per model through the study
runner (results.jsonl, results.md).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.study import ModelCell, Record, RecordSet, Study, header, run_study
from tfquant.study.settings import zoo_fingerprint

NAME = "bench_mixed_precision"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchConfig:
    models: tuple[str, ...] = ("resnet", "vit")
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    num_calibration_examples: int = 200
    candidates: int = 8
    eval_examples: int = 200
    sweep: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchRecord(Record):
    experiment: str
    model: str
    executed_in: str
    n_ops: int | None = None
    n_layers: int | None = None
    conversion_s: float | None = None
    conversion_cpu_s: float | None = None
    calibrate_s: float | None = None
    calibrate_cpu_s: float | None = None
    statistics_s: float | None = None
    candidate_export_s: float | None = None
    candidate_export_cpu_s: float | None = None
    candidate_eval_s: float | None = None
    candidates: int | None = None
    sweep_s: float | None = None
    sweep_cpu_s: float | None = None
    sweep_candidates: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, NAME)


def _cpu() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children
    (the int16 runtime checks run in child processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Clock:
    def __enter__(self) -> "_Clock":
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = _cpu() - self.cpu


class BenchMixedPrecision(Study[ModelCell, BenchRecord]):
    name = NAME
    record_type = BenchRecord

    def __init__(self, config: BenchConfig) -> None:
        self.config = config

    def fingerprint(self) -> Mapping[str, Any]:
        return zoo_fingerprint(self.config.to_dict(), self.config.models)

    def cells(self) -> list[ModelCell]:
        return [ModelCell(model=m, cell=NAME) for m in self.config.models]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)

    def measure(self, todo: Sequence[ModelCell], log: Callable[[str], None]) -> Iterator[BenchRecord]:
        from tfquant import convert, data
        from tfquant.convert import mixed
        from tfquant.evaluation import sensitivity
        from tfquant.evaluation.accuracy import evaluate_accuracy
        from tfquant.models import build
        from tfquant.recipes import Recipe
        from tfquant.recipes.layers import LayerRule, Precision

        c = self.config
        x_cal = data.calibration_set(c.dataset, c.num_calibration_examples, data_dir=c.data_dir)
        x, y, _ = data.load_numpy(c.dataset, "test", data_dir=c.data_dir, limit=c.eval_examples)
        for cell in todo:
            common = {"experiment": NAME, "model": cell.model, "executed_in": "tflite"}
            try:
                model = build(cell.model)
                recipe = Recipe(mode="int8", calibrator="max", num_calibration_examples=len(x_cal))
                with _Clock() as conv:
                    convert.convert(model, recipe, calibration_data=x_cal)
                with _Clock() as cal_clock:
                    cal = mixed.calibrate_mixed(model, recipe, calibration_data=x_cal)
                units = list(sensitivity.layer_units(cal))
                rng = np.random.default_rng(0)
                picks = [units[i] for i in rng.choice(len(units), size=min(c.candidates, len(units)), replace=False)]
                cache: dict = {}
                mixed.export_mixed(cal, recipe.replace(layer_rules=(LayerRule(precision="int8"),)), cache=cache)
                configs = []
                for k, name in enumerate(picks):
                    precision = Precision.INT16X8 if k % 2 == 0 else Precision.FLOAT
                    calibrator = ("max", "entropy", "mse")[k % 3]
                    configs.append(recipe.replace(calibrator=calibrator, layer_rules=(
                        LayerRule(precision="int8"), sensitivity.only_rule(name, precision))))
                exports, cpus, evals = [], [], []
                for r in configs:
                    with _Clock() as ex:
                        tfl, _ = mixed.export_mixed(cal, r, cache=cache, metadata=False)
                    exports.append(ex.wall)
                    cpus.append(ex.cpu)
                    with _Clock() as ev:
                        evaluate_accuracy(tfl, x, y)
                    evals.append(ev.wall)
                rec: dict[str, Any] = dict(
                    n_ops=len(cal.ops), n_layers=len(units),
                    conversion_s=round(conv.wall, 3), conversion_cpu_s=round(conv.cpu, 3),
                    calibrate_s=round(cal_clock.wall, 3), calibrate_cpu_s=round(cal_clock.cpu, 3),
                    statistics_s=round(cal.statistics_seconds, 3),
                    candidate_export_s=round(float(np.median(exports)), 3),
                    candidate_export_cpu_s=round(float(np.median(cpus)), 3),
                    candidate_eval_s=round(float(np.median(evals)), 3), candidates=len(configs),
                )
                log(f"{cell.model}: conversion {conv.wall:.1f} s ({conv.cpu:.1f} s CPU); one more candidate "
                    f"{rec['candidate_export_s']:.2f} s export ({rec['candidate_export_cpu_s']:.2f} s CPU) + "
                    f"{rec['candidate_eval_s']:.2f} s accuracy on {len(x)} images")
                if c.sweep:
                    with _Clock() as sw:
                        report = sensitivity.analyze(cal, recipe, x, y, x_debug=x_cal[:4], promote=True)
                    rec.update(sweep_s=round(sw.wall, 1), sweep_cpu_s=round(sw.cpu, 1),
                               sweep_candidates=2 * len(report.layers) + 2)
                    log(f"{cell.model}: sensitivity sweep over {len(report.layers)} layers in {sw.wall:.0f} s "
                        f"({sw.cpu:.0f} s CPU)")
                yield BenchRecord(**common, **rec)
            except TfquantError as e:
                yield BenchRecord(**common, error=str(e))


def run_bench(config: BenchConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write) -> RecordSet:
    return run_study(BenchMixedPrecision(config), Path(out_dir), log=log)


def results_markdown(records: RecordSet, config: BenchConfig) -> str:
    from tfquant.evaluation import markdown_table

    lines = header(
        "Marginal cost of a mixed-precision candidate vs one conversion",
        f"Wall seconds (CPU seconds, user + system incl. child processes, in brackets) on the shared 2-core machine. "
        f"Calibration: {config.num_calibration_examples} images; accuracy runs on {config.eval_examples} "
        "test images in the LiteRT interpreter (no cell simulated). `conversion`: one calibrated int8 "
        "conversion from Keras. `calibrate once`: float conversion + statistics pass of the mixed path. "
        "`candidate`: median over the candidates of one AEQ export from the existing statistics, and "
        "its accuracy run. `sweep`: every layer only-int8 and promoted-to-int16, plus float and full int8.")
    rows = []
    for m in config.models:
        r = records.ok((m, NAME))
        if r is None:
            continue
        rows.append({
            "model": m, "ops / layers": f"{r.n_ops} / {r.n_layers}",
            "conversion": f"{r.conversion_s:.1f} ({r.conversion_cpu_s:.1f})",
            "calibrate once": f"{r.calibrate_s:.1f} ({r.calibrate_cpu_s:.1f})",
            "candidate export": f"{r.candidate_export_s:.2f} ({r.candidate_export_cpu_s:.2f})",
            "candidate accuracy": f"{r.candidate_eval_s:.2f}",
            "export / conversion (CPU)": f"{r.candidate_export_cpu_s / r.conversion_cpu_s:.3f}",
            "sweep": "" if r.sweep_s is None else f"{r.sweep_s:.0f} ({r.sweep_cpu_s:.0f}), {r.sweep_candidates} candidates",
        })
    cols = ["model", "ops / layers", "conversion", "calibrate once", "candidate export", "candidate accuracy",
            "export / conversion (CPU)", "sweep"]
    return "\n".join(lines + ["", markdown_table(rows, cols).rstrip("\n")]) + "\n"
