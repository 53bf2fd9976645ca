"""NVIDIA's calibration study on the zoo: one int8 / int16x8 model per calibrator, measured in
the LiteRT interpreter.

Wu et al. 2020 ("Integer Quantization for Deep Learning Inference", arXiv 2004.09602),
Table 3's question on our models: which activation calibrator keeps a model closest to
float? Rows are zoo models; columns are float (the fp32 .tflite), ``tflite`` (the TFLite
converter's own min/max calibration), and tfquant's calibrators (max, entropy, four
percentiles, MSE, ACIQ), all with per-channel max weights. For each model and mode the
statistics are gathered once (:func:`tfquant.convert.calibrated.calibrate`) and each column
is exported from them, then every .tflite runs over the whole test split in the interpreter.

Models that come out identical (same tensors, scales and data; e.g. at 16 bits entropy
often picks the max) are evaluated once; the record says which column it shares. Accuracy is
evaluated in ``workers`` processes side by side (accuracy does not depend on load; no latency
is measured here). One JSON record per model x mode x column is appended to
``results.jsonl`` as soon as it is measured, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.study.provenance import open_run
from tfquant.io_utils import append_jsonl, read_jsonl, write_text_atomic
from tfquant.qtypes import Mode, Runtime
from tfquant.recipes import Recipe

RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"
FLOAT = "float"
TFLITE_DEFAULT = "tflite"

COLUMNS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        TFLITE_DEFAULT: {},
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
"""Column name -> recipe fields. The first nine after ``tflite`` are the paper's columns."""

DEFAULT_COLUMNS: tuple[str, ...] = (
    TFLITE_DEFAULT, "max", "entropy", "percentile_99.9", "percentile_99.99",
    "percentile_99.999", "percentile_99.9999", "mse", "aciq",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalibrationSweepConfig:
    """What the sweep runs. ``limit`` trims the test split (smoke runs only)."""

    models: tuple[str, ...]
    modes: tuple[Mode, ...] = (Mode.INT8, Mode.INT16X8)
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    runtime: Runtime = Runtime.XNNPACK
    threads: int = 1
    batch_size: int = 256
    workers: int = 2
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise TfquantError("no models to run; pass --models with at least one zoo model")
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown:
            raise TfquantError(
                f"unknown column(s) {unknown}; choose from: {', '.join(COLUMNS)}"
            )
        modes = tuple(Mode.parse(m, what="mode") for m in self.modes)
        if any(not m.needs_calibration for m in modes):
            raise TfquantError("the calibration sweep runs modes int8 and int16x8 only")
        object.__setattr__(self, "modes", modes)
        object.__setattr__(self, "runtime", Runtime.parse(self.runtime, what="runtime"))
        if self.runtime is Runtime.DELEGATE:
            raise TfquantError("the sweep runs xnnpack or builtin; evaluate a delegate with 'python -m tfquant evaluate'")
        if self.workers < 1:
            raise TfquantError(f"workers must be >= 1, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["modes"] = [m.value for m in self.modes]
        d["runtime"] = self.runtime.value
        return d

    def recipe(self, mode: Mode, column: str) -> Recipe:
        return Recipe(
            mode=mode,
            num_calibration_examples=self.num_calibration_examples,
            calibration_seed=self.calibration_seed,
            calibration_data=self.dataset,
            **COLUMNS[column],
        )


def _key(r: Mapping[str, Any]) -> tuple[str, str, str]:
    return (r["model"], r["mode"], r["column"])


def run_calibration_sweep(
    config: CalibrationSweepConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> list[dict[str, Any]]:
    """Runs (or resumes) the sweep into ``out_dir``; returns all records of the run."""
    from tfquant import convert, data, models
    from tfquant.calibration.statistics import DEFAULT_EMA_CONSTANT
    from tfquant.convert import calibrated as calibrated_mod
    from tfquant.evaluation import AccuracyPool, computation_fingerprint, file_size

    out = Path(out_dir)
    open_run(out, {
        "config": config.to_dict(),
        "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in config.models},
        "ema_constant": DEFAULT_EMA_CONSTANT,
    })
    results_path = out / RESULTS_JSONL
    done = {_key(r) for r in read_jsonl(results_path) if "error" not in r}
    x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
    log(f"test set: {info.name}/test, {len(x_test)} examples; evaluating with {config.workers} worker(s)")
    x_cal = data.calibration_set(
        config.dataset, config.num_calibration_examples, seed=config.calibration_seed,
        data_dir=config.data_dir,
    )
    pool = AccuracyPool(x_test, y_test, workers=config.workers, runtime=config.runtime,
                        num_threads=config.threads, batch_size=config.batch_size)
    # (future, fingerprint, group): group[0] owns the evaluation, group[1:] are identical models
    pending: list[tuple[Any, str, list[dict[str, Any]]]] = []
    finished: dict[str, tuple[str, Any]] = {}  # fingerprint -> (owner column, accuracy)

    def write(r: dict[str, Any], acc: Any) -> None:
        full = {**r, "accuracy": acc.accuracy, "n_examples": acc.n_examples,
                "eval_seconds": round(acc.seconds, 3)}
        append_jsonl(results_path, full)
        done.add(_key(full))
        same = f" (same model as {full['same_model_as']})" if full.get("same_model_as") else ""
        log(f"{full['model']:>14} {full['mode']:<8} {full['column']:<20} top-1 "
            f"{acc.accuracy:.4f}  {full['size_bytes'] / 1024:7.1f} KiB{same}")

    def finish(block: bool) -> None:
        """Appends the records of finished evaluations (all of them when ``block``)."""
        for item in list(pending):
            future, fp, group = item
            if not block and not future.done():
                continue
            pending.remove(item)
            try:
                acc = future.result()
            except TfquantError as e:
                for r in group:
                    append_jsonl(results_path, {**r, "error": str(e)})
                log(f"{group[0]['model']:>14} {group[0]['mode']:<8} {group[0]['column']:<20} failed: {e}")
                continue
            finished[fp] = (group[0]["column"], acc)
            for r in group:
                write(r, acc)

    def submit(path: Path, rec: dict[str, Any]) -> None:
        """Queues ``path`` for evaluation, or attaches it to an identical model's group."""
        rec["size_bytes"] = file_size(path)
        fp = computation_fingerprint(str(path))
        if fp in finished:
            owner, acc = finished[fp]
            write({**rec, "same_model_as": owner}, acc)
            return
        for _, other, group in pending:
            if other == fp:
                group.append({**rec, "same_model_as": group[0]["column"]})
                return
        pending.append((pool.submit(str(path)), fp, [rec]))

    try:
        for model_name in _progress.progress(config.models, desc="calibration sweep", unit="model"):
            keras_model: list[Any] = []

            def model(name: str = model_name) -> Any:
                if not keras_model:
                    keras_model.append(models.build(name))
                return keras_model[0]

            base = {"experiment": "nvidia_calibration", "model": model_name,
                    "runtime": config.runtime.value, "threads": config.threads,
                    "executed_in": "tflite"}
            folder = out / "models" / model_name
            if (model_name, FLOAT, FLOAT) not in done:
                path = folder / "fp32.tflite"
                recipe = Recipe(mode=Mode.FP32)
                convert.save(convert.convert(model(), recipe), str(path), recipe)
                submit(path, {**base, "mode": FLOAT, "column": FLOAT, "tflite_path": str(path),
                              "recipe": recipe.to_dict()})
            for mode in config.modes:
                todo = [c for c in config.columns if (model_name, mode.value, c) not in done]
                if not todo:
                    continue
                calibrated = None
                calibrate_s = None
                for column in todo:
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
                                calibrated = calibrated_mod.calibrate(
                                    model(), recipe, calibration_data=x_cal
                                )
                                calibrate_s = time.perf_counter() - start
                                start = time.perf_counter()
                            tflite = calibrated_mod.export(calibrated, recipe)
                    except TfquantError as e:
                        append_jsonl(results_path, {**rec, "error": str(e)})
                        log(f"{model_name:>14} {mode.value:<8} {column:<20} not produced: {e}")
                        continue
                    convert.save(tflite, str(path), recipe)
                    if recipe.calibrator is not None:
                        rec["range_fallbacks"] = len(convert.read_ranges(tflite)["fallbacks"])
                    rec["convert_seconds" if recipe.calibrator is None else "export_seconds"] = round(
                        time.perf_counter() - start, 3)
                    if recipe.calibrator is not None:
                        rec["calibrate_seconds"] = round(calibrate_s, 3)
                        rec["statistics_seconds"] = round(calibrated.statistics.seconds, 3)
                    submit(path, rec)
                    finish(block=False)
        finish(block=True)
    finally:
        pool.close()
    records = read_jsonl(results_path)
    write_text_atomic(out / RESULTS_MD, results_markdown(records, config))
    return records


def results_markdown(records: Sequence[Mapping[str, Any]], config: CalibrationSweepConfig) -> str:
    """One table per mode: rows = models, columns = float + calibrators; best per row bold."""
    from tfquant.evaluation import markdown_table

    by_key = {_key(r): r for r in records}
    lines = [
        f"# NVIDIA calibration study on the zoo ({config.dataset} test split)",
        "",
        "Top-1 accuracy. Every cell ran in the LiteRT interpreter (`executed_in: tflite`, "
        f"{config.runtime.value}, {config.threads} thread(s)) on "
        f"{'the whole test split' if config.limit is None else f'the first {config.limit} test examples'}; "
        f"calibration: {config.num_calibration_examples} training images (seed "
        f"{config.calibration_seed}); weights per-channel max. `tflite` = the converter's own "
        "min/max calibration; the other columns are tfquant calibrators whose ranges were "
        "written into the model. **Bold**: best quantized column of the row (ties all bold). "
        "`=X`: the exported model is identical to column X's (evaluated once). "
        "`(N²)`: N tensors kept their [min, max] because the calibrator's clip would have "
        "saturated most of their values (see tfquant.calibration.base.clip_to_observed).",
    ]
    errors: list[str] = []
    for mode in config.modes:
        columns = ["model", FLOAT, *config.columns]
        rows = []
        for model in config.models:
            row: dict[str, Any] = {"model": model}
            f = by_key.get((model, FLOAT, FLOAT))
            if f and "error" not in f:
                row[FLOAT] = f"{f['accuracy']:.4f}"
            accs = {}
            for c in config.columns:
                r = by_key.get((model, mode.value, c))
                if r is None:
                    continue
                if "error" in r:
                    row[c] = "failed¹"
                    errors.append(f"- {model} / {mode.value} / {c}: {r['error']}")
                    continue
                accs[c] = r["accuracy"]
                row[c] = f"{r['accuracy']:.4f}" + (f" =`{r['same_model_as']}`" if r.get("same_model_as") else "")
                if r.get("range_fallbacks"):
                    row[c] += f" ({r['range_fallbacks']}²)"
            if accs:
                best = max(accs.values())
                for c, a in accs.items():
                    if a == best:
                        row[c] = f"**{row[c]}**"
            rows.append(row)
        lines += ["", f"## {mode.value}", "", markdown_table(rows, columns).rstrip("\n")]
    if errors:
        lines += ["", "¹ Not produced or not runnable (the reason, as tfquant reported it):", ""] + errors
    return "\n".join(lines) + "\n"
