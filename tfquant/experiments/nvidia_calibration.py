"""NVIDIA's calibration study on the zoo: one int8 / int16x8 model per calibrator, measured in
the LiteRT interpreter.

Wu et al. 2020 ("Integer Quantization for Deep Learning Inference", arXiv 2004.09602),
Table 3's question on our models: which activation calibrator keeps a model closest to
float? Rows are zoo models; columns are float (the fp32 .tflite), ``converter`` (the TFLite
converter's own min/max calibration), and tfquant's calibrators (max, entropy, four
percentiles, MSE, ACIQ), all with per-channel max weights. For each model and mode the
statistics are gathered once (:func:`tfquant.convert.calibrated.calibrate`) and each column
is exported from them, then every .tflite runs over the whole test split in the interpreter.

Models that come out identical (same tensors, scales and data; e.g. at 16 bits entropy
often picks the max) are evaluated once; the record says which column it shares. A model that
another experiment of the same run has already evaluated on the same data with the same
settings (the main job's ptq_zoo makes the float and ``converter`` models byte for byte) takes
its accuracy from the run's accuracy log (:mod:`tfquant.evaluation.reuse`). Each model x mode runs on one Ray
worker (:meth:`NvidiaCalibration.batch_key`), several side by side (accuracy does not depend on
load; no latency is measured here). Cells: model x mode x column, plus each model's float; one
:class:`NvidiaCalibrationRecord` per cell, run and resumed by :func:`tfquant.study.run_study`
into ``<results_dir>/<run_name>/nvidia_calibration/``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode, Runtime
from tfquant.recipes import Recipe
from tfquant.study import Footnotes, Record, RecordSet, Study, header, run_study
from tfquant.study.settings import ZooStudySettings, interpreter_runtime

NAME = "nvidia_calibration"
FLOAT = "float"
CONVERTER_DEFAULT = "converter"
_EARLIER_COLUMN_NAMES = MappingProxyType({"tflite": CONVERTER_DEFAULT})  # accepted in --columns

COLUMNS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        CONVERTER_DEFAULT: {},
        "max": {"calibrator": "max"},
        "entropy": {"calibrator": "entropy"},
        "percentile_99.9": {"calibrator": "percentile", "percentile": 99.9},
        "percentile_99.99": {"calibrator": "percentile", "percentile": 99.99},
        "percentile_99.999": {"calibrator": "percentile", "percentile": 99.999},
        "percentile_99.9999": {"calibrator": "percentile", "percentile": 99.9999},
        "mse": {"calibrator": "mse"},
        "aciq": {"calibrator": "aciq", "aciq_prior": "laplace"},
        "aciq_gaussian": {"calibrator": "aciq", "aciq_prior": "gaussian"},
        "moving_average": {"calibrator": "moving_average"},
    }
)
"""Column name -> recipe fields. The first nine after ``converter`` are the paper's columns."""

DEFAULT_COLUMNS: tuple[str, ...] = (
    CONVERTER_DEFAULT, "max", "entropy", "percentile_99.9", "percentile_99.99",
    "percentile_99.999", "percentile_99.9999", "mse", "aciq",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvidiaCalibrationConfig(ZooStudySettings):
    """What the study runs: :class:`ZooStudySettings` plus modes, columns and the runtime."""

    modes: tuple[Mode, ...] = (Mode.INT8, Mode.INT16X8)
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    runtime: Runtime = Runtime.XNNPACK

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(_EARLIER_COLUMN_NAMES.get(c, c) for c in self.columns))
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown:
            raise TfquantError(f"unknown column(s) {unknown}; choose from: {', '.join(COLUMNS)}")
        modes = tuple(Mode.parse(m, what="mode") for m in self.modes)
        if any(not m.needs_calibration for m in modes):
            raise TfquantError("the calibration study runs modes int8 and int16x8 only")
        object.__setattr__(self, "modes", modes)
        object.__setattr__(self, "runtime", interpreter_runtime(self.runtime, what="the calibration study"))
        super().__post_init__()

    def recipe(self, mode: Mode, column: str) -> Recipe:
        return Recipe(
            mode=mode,
            num_calibration_examples=self.num_calibration_examples,
            calibration_seed=self.calibration_seed,
            calibration_data=self.dataset,
            **COLUMNS[column],
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvidiaCalibrationCell:
    """One cell: ``column`` of ``model`` at ``mode`` (``float``/``float``: the fp32 model)."""

    model: str
    mode: str
    column: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.mode, self.column)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvidiaCalibrationRecord(Record):
    """What one cell measured (field names are the results.jsonl keys).

    ``same_model_as``: the column whose exported model is identical (evaluated once).
    ``range_fallbacks``: tensors that kept their [min, max] (calibrated columns only).
    """

    experiment: str
    model: str
    mode: str
    column: str
    runtime: str
    threads: int
    executed_in: str
    tflite_path: str
    recipe: dict[str, Any]
    size_bytes: int | None = None
    same_model_as: str | None = None
    range_fallbacks: int | None = None
    convert_seconds: float | None = None
    export_seconds: float | None = None
    calibrate_seconds: float | None = None
    statistics_seconds: float | None = None
    accuracy: float | None = None
    n_examples: int | None = None
    eval_seconds: float | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model, self.mode, self.column)


class NvidiaCalibration(Study[NvidiaCalibrationCell, NvidiaCalibrationRecord]):
    """The calibration study as a study (see the module docstring); ``out`` holds the .tflite files."""

    name = NAME
    record_type = NvidiaCalibrationRecord

    def __init__(self, config: NvidiaCalibrationConfig, out: Path) -> None:
        self.config, self.out = config, out

    def fingerprint(self) -> Mapping[str, Any]:
        from tfquant import models
        from tfquant.calibration.statistics import DEFAULT_EMA_CONSTANT

        return {
            "config": self.config.to_dict(),
            "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in self.config.models},
            "ema_constant": DEFAULT_EMA_CONSTANT,
        }

    def cells(self) -> list[NvidiaCalibrationCell]:
        out = []
        for m in self.config.models:
            out.append(NvidiaCalibrationCell(model=m, mode=FLOAT, column=FLOAT))
            out += [NvidiaCalibrationCell(model=m, mode=mode.value, column=c)
                    for mode in self.config.modes for c in self.config.columns]
        return out

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)

    def batch_key(self, cell: NvidiaCalibrationCell) -> tuple[str, str]:
        """One worker per model x mode: the statistics are gathered once for all its columns."""
        return (cell.model, cell.mode)

    def failed_record(self, cell: NvidiaCalibrationCell, error: str) -> NvidiaCalibrationRecord:
        if cell.mode == FLOAT:
            recipe, name = Recipe(mode=Mode.FP32), "fp32"
        else:
            recipe, name = self.config.recipe(Mode(cell.mode), cell.column), f"{cell.mode}_{cell.column}"
        return NvidiaCalibrationRecord(
            experiment=NAME, model=cell.model, mode=cell.mode, column=cell.column,
            runtime=self.config.runtime.value, threads=self.config.threads, executed_in="tflite",
            tflite_path=str(self.out / "models" / cell.model / f"{name}.tflite"), recipe=recipe.to_dict(),
            error=error)

    def measure(
        self, todo: Sequence[NvidiaCalibrationCell], log: Callable[[str], None]
    ) -> Iterator[NvidiaCalibrationRecord]:
        from tfquant import convert, data, models
        from tfquant.convert import calibrated as calibrated_mod
        from tfquant.evaluation import Evaluator, computation_fingerprint, file_size
        from tfquant.evaluation.reuse import LOG_NAME as ACCURACY_LOG, AccuracyLog

        config, out = self.config, self.out
        todo_keys = {c.key for c in todo}
        x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
        log(f"test set: {info.name}/test, {len(x_test)} examples")
        x_cal = data.calibration_set(
            config.dataset, config.num_calibration_examples, seed=config.calibration_seed,
            data_dir=config.data_dir,
        )
        pool = Evaluator(x_test, y_test, runtime=config.runtime, num_threads=config.threads,
                         batch_size=config.batch_size)
        # Models another experiment of the run already measured (ptq_zoo's fp32, int8 per
        # channel and int16x8 are the float and converter columns here) are not run again.
        accuracy_log = AccuracyLog(out.parent / ACCURACY_LOG, x_test, y_test, runtime=config.runtime.value,
                                   threads=config.threads, batch_size=config.batch_size)
        # (future, fingerprint, group): group[0] owns the evaluation, group[1:] are identical models
        pending: list[tuple[Any, str, list[dict[str, Any]]]] = []
        finished: dict[str, tuple[str, Any]] = {}  # fingerprint -> (owner column, accuracy)

        def measured(r: dict[str, Any], acc: Any) -> NvidiaCalibrationRecord:
            full = {**r, "accuracy": acc.accuracy, "n_examples": acc.n_examples,
                    "eval_seconds": round(acc.seconds, 3)}
            same = f" (same model as {full['same_model_as']})" if full.get("same_model_as") else ""
            log(f"{full['model']:>14} {full['mode']:<8} {full['column']:<20} top-1 "
                f"{acc.accuracy:.4f}  {full['size_bytes'] / 1024:7.1f} KiB{same}")
            return NvidiaCalibrationRecord(**full)

        def finish(block: bool) -> Iterator[NvidiaCalibrationRecord]:
            """Records of finished evaluations (all of them when ``block``)."""
            for item in list(pending):
                future, fp, group = item
                if not block and not future.done():
                    continue
                pending.remove(item)
                try:
                    acc = future.result()
                except TfquantError as e:
                    log(f"{group[0]['model']:>14} {group[0]['mode']:<8} {group[0]['column']:<20} failed: {e}")
                    yield from (NvidiaCalibrationRecord(**r, error=str(e)) for r in group)
                    continue
                finished[fp] = (group[0]["column"], acc)
                accuracy_log.put(accuracy_log.key(fp), acc)
                yield from (measured(r, acc) for r in group)

        def submit(path: Path, rec: dict[str, Any]) -> Iterator[NvidiaCalibrationRecord]:
            """Queues ``path`` for evaluation, or attaches it to an identical model's group."""
            rec["size_bytes"] = file_size(path)
            fp = computation_fingerprint(str(path))
            if fp in finished:
                owner, acc = finished[fp]
                yield measured({**rec, "same_model_as": owner}, acc)
                return
            logged = accuracy_log.get(accuracy_log.key(fp))
            if logged is not None:
                finished[fp] = (rec["column"], logged)
                yield measured(rec, logged)
                return
            for _, other, group in pending:
                if other == fp:
                    group.append({**rec, "same_model_as": group[0]["column"]})
                    return
            pending.append((pool.submit(str(path)), fp, [rec]))

        try:
            for model_name in _progress.progress(config.models, desc="NVIDIA calibration study", unit="model"):
                keras_model: list[Any] = []

                def model(name: str = model_name) -> Any:
                    if not keras_model:
                        keras_model.append(models.build(name))
                    return keras_model[0]

                base = {"experiment": NAME, "model": model_name,
                        "runtime": config.runtime.value, "threads": config.threads,
                        "executed_in": "tflite"}
                folder = out / "models" / model_name
                if (model_name, FLOAT, FLOAT) in todo_keys:
                    path = folder / "fp32.tflite"
                    recipe = Recipe(mode=Mode.FP32)
                    convert.save(convert.convert(model(), recipe), str(path), recipe)
                    yield from submit(path, {**base, "mode": FLOAT, "column": FLOAT, "tflite_path": str(path),
                                             "recipe": recipe.to_dict()})
                for mode in config.modes:
                    todo_columns = [c for c in config.columns if (model_name, mode.value, c) in todo_keys]
                    if not todo_columns:
                        continue
                    calibrated = None
                    calibrate_s = None
                    for column in todo_columns:
                        recipe = config.recipe(mode, column)
                        path = folder / f"{mode.value}_{column}.tflite"
                        rec = {**base, "mode": mode.value, "column": column, "tflite_path": str(path),
                               "recipe": recipe.to_dict()}
                        start = time.perf_counter()
                        try:
                            if recipe.calibrator is None:
                                tflite = convert.convert(model(), recipe, calibration_data=x_cal)
                            else:
                                if calibrated is None:
                                    calibrated = calibrated_mod.calibrate(model(), recipe, calibration_data=x_cal)
                                    calibrate_s = time.perf_counter() - start
                                    start = time.perf_counter()
                                tflite = calibrated_mod.export(calibrated, recipe)
                        except TfquantError as e:
                            log(f"{model_name:>14} {mode.value:<8} {column:<20} not produced: {e}")
                            yield NvidiaCalibrationRecord(**rec, error=str(e))
                            continue
                        convert.save(tflite, str(path), recipe)
                        if recipe.calibrator is not None:
                            rec["range_fallbacks"] = len(convert.read_ranges(tflite)["fallbacks"])
                        rec["convert_seconds" if recipe.calibrator is None else "export_seconds"] = round(
                            time.perf_counter() - start, 3)
                        if recipe.calibrator is not None:
                            rec["calibrate_seconds"] = round(calibrate_s, 3)
                            rec["statistics_seconds"] = round(calibrated.statistics.seconds, 3)
                        yield from submit(path, rec)
                        yield from finish(block=False)
            yield from finish(block=True)
        finally:
            pool.close()


def run_nvidia_calibration(
    config: NvidiaCalibrationConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) the study into ``out_dir``; returns all records of the run."""
    out = Path(out_dir)
    return run_study(NvidiaCalibration(config, out), out, log=log)


def results_markdown(records: RecordSet, config: NvidiaCalibrationConfig) -> str:
    """One table per mode: rows = models, columns = float + calibrators; best per row bold."""
    from tfquant.evaluation import markdown_table

    lines = header(
        f"NVIDIA calibration study on the zoo ({config.dataset} test split)",
        "Top-1 accuracy. Every cell ran in the LiteRT interpreter (`executed_in: tflite`, "
        f"{config.runtime.value}, {config.threads} thread(s)) on "
        f"{'the whole test split' if config.limit is None else f'the first {config.limit} test examples'}; "
        f"calibration: {config.num_calibration_examples} training images (seed "
        f"{config.calibration_seed}); weights per-channel max. `converter` = the converter's own "
        "min/max calibration; the other columns are tfquant calibrators whose ranges were "
        "written into the model. **Bold**: best quantized column of the row (ties all bold). "
        "`=X`: the exported model is identical to column X's (evaluated once). "
        "`(N²)`: N tensors kept their [min, max] because the calibrator's clip would have "
        "saturated most of their values (see tfquant.calibration.base.clip_to_observed).")
    notes = Footnotes()
    for mode in config.modes:
        columns = ["model", FLOAT, *config.columns]
        rows = []
        for model in config.models:
            row: dict[str, Any] = {"model": model}
            f = records.ok((model, FLOAT, FLOAT))
            if f is not None:
                row[FLOAT] = f"{f.accuracy:.4f}"
            accs = {}
            for c in config.columns:
                r = records.get((model, mode.value, c))
                if r is None:
                    continue
                if r.failed:
                    row[c] = notes.failed(f"{model} / {mode.value} / {c}", r.error)
                    continue
                accs[c] = r.accuracy
                row[c] = f"{r.accuracy:.4f}" + (f" =`{r.same_model_as}`" if r.same_model_as else "")
                if r.range_fallbacks:
                    row[c] += f" ({r.range_fallbacks}²)"
            if accs:
                best = max(accs.values())
                for c, a in accs.items():
                    if a == best:
                        row[c] = f"**{row[c]}**"
            rows.append(row)
        lines += ["", f"## {mode.value}", "", markdown_table(rows, columns).rstrip("\n")]
    return "\n".join(lines + notes.lines()) + "\n"
