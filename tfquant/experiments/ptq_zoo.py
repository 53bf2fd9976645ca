"""The main job: every zoo model x every TFLite variant, measured in the LiteRT interpreter.

For each model the float Keras model is converted once per variant (``fp32``, ``fp16``,
``dynamic``, ``int8_per_channel``, ``int8_per_tensor``, ``int16x8``; see
:data:`tfquant.recipes.VARIANTS`), and each .tflite is run in the interpreter under each
runtime (XNNPACK and the builtin kernels) over the whole test split: top-1 accuracy, file
size, single-image latency (median / p90 / min after warm-up) and how many ops the delegate
took. One JSON record per model x variant x runtime is appended to ``results.jsonl`` as soon
as it is measured, so an interrupted run loses nothing it finished and a re-run resumes where
it stopped. ``results.md`` is rewritten (atomically) from the records at the end.

Per model, accuracy runs first for every variant x runtime, ``workers`` models side by side
(:class:`~tfquant.evaluation.AccuracyPool`; accuracy does not depend on load), then latency
is measured one cell at a time with the pool idle, so latencies are taken on an otherwise
idle machine as before.

Every number here comes from the TFLite interpreter (``executed_in: tflite``) except the
Keras reference accuracy, which runs in TensorFlow (``executed_in: keras``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.io_utils import append_jsonl, read_jsonl, write_text_atomic
from tfquant.qtypes import Runtime
from tfquant.recipes import VARIANTS, Recipe, variant

RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PtqMatrixConfig:
    """What the main job runs. ``limit`` trims the test split (smoke runs only)."""

    models: tuple[str, ...]
    variants: tuple[str, ...] = tuple(VARIANTS)
    runtimes: tuple[Runtime, ...] = (Runtime.XNNPACK, Runtime.BUILTIN)
    threads: int = 1
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    batch_size: int = 256
    latency_warmup: int = 20
    latency_runs: int = 100
    limit: int | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        for name in self.variants:
            variant(name)  # raises on an unknown name
        object.__setattr__(self, "runtimes", tuple(Runtime.parse(r, what="runtime") for r in self.runtimes))
        if Runtime.DELEGATE in self.runtimes:
            raise TfquantError("the main job runs xnnpack and builtin; evaluate a delegate with 'python -m tfquant evaluate --runtime delegate'")
        if not self.models:
            raise TfquantError("no models to run; pass --models with at least one zoo model")
        if self.workers < 1:
            raise TfquantError(f"workers must be >= 1, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["runtimes"] = [r.value for r in self.runtimes]
        return d

    def recipe_for(self, name: str) -> Recipe:
        return variant(name).replace(
            num_calibration_examples=self.num_calibration_examples,
            calibration_seed=self.calibration_seed,
            calibration_data=self.dataset,
        )


def _key(record: dict[str, Any]) -> tuple[str, str, str, int]:
    return (record["model"], record["variant"], record["runtime"], int(record["threads"]))


def _error_record(
    model: str, variant_name: str, runtime: Runtime, config: PtqMatrixConfig, recipe: Recipe, error: Exception
) -> dict[str, Any]:
    """A cell that could not be produced or run, with the one-line reason."""
    return {
        "model": model, "variant": variant_name, "runtime": runtime.value, "threads": config.threads,
        "error": str(error), "recipe": recipe.to_dict(), "executed_in": "tflite",
    }


def _ensure_tflite(
    path: Path, recipe: Recipe, build_model: Callable[[], Any], calibration: Callable[[], np.ndarray]
) -> tuple[float | None, bool]:
    """Converts unless ``path`` already holds a model made by the same recipe.

    Returns (conversion seconds or None when reused, whether it was converted now).
    """
    from tfquant import convert

    if path.exists():
        try:
            if convert.read_recipe(str(path)) == recipe:
                return None, False
        except TfquantError:
            pass  # a corrupt leftover: convert again
    start = time.perf_counter()
    cal = calibration() if recipe.mode.needs_calibration else None
    tflite = convert.convert(build_model(), recipe, calibration_data=cal)
    convert.save(tflite, str(path), recipe)
    return time.perf_counter() - start, True


def run_ptq_matrix(
    config: PtqMatrixConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> list[dict[str, Any]]:
    """Runs (or resumes) the matrix into ``out_dir``; returns all records of the run."""
    from tfquant import data, evaluation, models
    from tfquant.study.provenance import open_run

    out = Path(out_dir)
    fingerprint = {
        "config": config.to_dict(),
        "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in config.models},
    }
    open_run(out, fingerprint)
    results_path = out / RESULTS_JSONL
    # Failed cells are retried on a re-run; finished ones are kept and skipped.
    done = {_key(r) for r in read_jsonl(results_path) if "error" not in r}

    x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
    log(f"test set: {info.name}/test, {len(x_test)} examples")
    cal_cache: list[np.ndarray] = []

    def calibration() -> np.ndarray:
        if not cal_cache:
            cal_cache.append(
                data.calibration_set(
                    config.dataset, config.num_calibration_examples,
                    seed=config.calibration_seed, data_dir=config.data_dir,
                )
            )
        return cal_cache[0]

    pool = evaluation.AccuracyPool(
        x_test, y_test, workers=config.workers, num_threads=config.threads, batch_size=config.batch_size
    )
    try:
        for model_name in _progress.progress(config.models, desc="PTQ matrix", unit="model"):
            keras_cache: list[Any] = []

            def build_model(name: str = model_name) -> Any:
                if not keras_cache:
                    keras_cache.append(models.build(name))
                return keras_cache[0]

            keras_key = (model_name, "keras_fp32", "tensorflow", config.threads)
            if keras_key not in done:
                logits = build_model().predict(x_test, batch_size=config.batch_size, verbose=0)
                acc = float(np.mean(np.argmax(logits, axis=-1) == y_test))
                rec = {
                    "model": model_name, "variant": "keras_fp32", "runtime": "tensorflow",
                    "threads": config.threads, "accuracy": acc, "n_examples": int(len(y_test)),
                    "executed_in": "keras",
                }
                append_jsonl(results_path, rec)
                done.add(keras_key)
                log(f"{model_name:>14} keras_fp32       (TF)      top-1 {acc:.4f}")

            # 1. convert; 2. accuracy of every cell, side by side in the pool; 3. latency, one
            # cell at a time once the pool is idle (latency needs an otherwise idle machine).
            cells: list[tuple[str, Recipe, Path, float | None, Runtime, Any]] = []
            for variant_name in config.variants:
                recipe = config.recipe_for(variant_name)
                path = out / "models" / model_name / f"{variant_name}.tflite"
                pending = [rt for rt in config.runtimes if (model_name, variant_name, rt.value, config.threads) not in done]
                if not pending:
                    continue
                try:
                    convert_s, _ = _ensure_tflite(path, recipe, build_model, calibration)
                except TfquantError as e:
                    # A variant the converter or runtime cannot produce (e.g. an op with no
                    # int16 kernel) is a result too: record why, and go on with the rest.
                    for runtime in pending:
                        append_jsonl(results_path, _error_record(model_name, variant_name, runtime, config, recipe, e))
                    log(f"{model_name:>14} {variant_name:<16} not produced: {e}")
                    continue
                for runtime in pending:
                    cells.append((variant_name, recipe, path, convert_s, runtime, pool.submit(str(path), runtime=runtime)))
            concurrent.futures.wait([cell[-1] for cell in cells])
            for variant_name, recipe, path, convert_s, runtime, future in cells:
                t0 = time.perf_counter()
                try:
                    acc = future.result()
                    lat = evaluation.measure_latency(
                        str(path), runtime=runtime, num_threads=config.threads,
                        warmup=config.latency_warmup, runs=config.latency_runs, sample=x_test[:1],
                    )
                    delegated, total = evaluation.delegated_op_count(
                        str(path), runtime=runtime, num_threads=config.threads
                    )
                except TfquantError as e:
                    append_jsonl(results_path, _error_record(model_name, variant_name, runtime, config, recipe, e))
                    log(f"{model_name:>14} {variant_name:<16} {runtime.value:<8} failed: {e}")
                    continue
                rec = {
                    "model": model_name,
                    "variant": variant_name,
                    "runtime": runtime.value,
                    "threads": config.threads,
                    "accuracy": acc.accuracy,
                    "n_examples": acc.n_examples,
                    "size_bytes": evaluation.file_size(path),
                    "latency_ms_median": lat.median_ms,
                    "latency_ms_p90": lat.p90_ms,
                    "latency_ms_min": lat.min_ms,
                    "latency_runs": lat.runs,
                    "delegated_ops": delegated,
                    "total_ops": total,
                    "eval_seconds": round(acc.seconds + time.perf_counter() - t0, 3),
                    "convert_seconds": None if convert_s is None else round(convert_s, 3),
                    "tflite_path": str(path),
                    "recipe": recipe.to_dict(),
                    "executed_in": "tflite",
                }
                append_jsonl(results_path, rec)
                done.add(_key(rec))
                log(
                    f"{model_name:>14} {variant_name:<16} {runtime.value:<8} top-1 {acc.accuracy:.4f}  "
                    f"{rec['size_bytes'] / 1024:8.1f} KiB  median {lat.median_ms:7.3f} ms  "
                    f"delegated {delegated}/{total} ops"
                )
    finally:
        pool.close()
    records = read_jsonl(results_path)
    write_text_atomic(out / RESULTS_MD, results_markdown(records, config))
    return records


def results_markdown(records: Sequence[dict[str, Any]], config: PtqMatrixConfig) -> str:
    """One row per model x variant: accuracy, size and latency per runtime, Δ vs TFLite fp32."""
    from tfquant.evaluation import markdown_table

    by_key = {
        (r["model"], r["variant"], r["runtime"]): r
        for r in records
        if int(r.get("threads", 1)) == config.threads
    }
    rts = [rt.value for rt in config.runtimes]
    columns = ["model", "variant", "size KiB"]
    for rt in rts:
        columns += [f"top-1 {rt}", f"Δ vs fp32 {rt}", f"median ms {rt}", f"p90 ms {rt}", f"delegated {rt}"]
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for model in config.models:
        keras = by_key.get((model, "keras_fp32", "tensorflow"))
        if keras:
            rows.append({"model": model, "variant": "keras_fp32 (TF)", **{f"top-1 {rt}": f"{keras['accuracy']:.4f}" for rt in rts}})
        for var in config.variants:
            row: dict[str, Any] = {"model": model, "variant": var}
            for rt in rts:
                r = by_key.get((model, var, rt))
                if r is None:
                    continue
                if "error" in r:
                    errors.append(f"- {model} / {var} / {rt}: {r['error']}")
                    row[f"top-1 {rt}"] = "failed¹"
                    continue
                base = by_key.get((model, "fp32", rt))
                row["size KiB"] = f"{r['size_bytes'] / 1024:.1f}"
                row[f"top-1 {rt}"] = f"{r['accuracy']:.4f}"
                if base is not None and "error" not in base:
                    row[f"Δ vs fp32 {rt}"] = f"{(r['accuracy'] - base['accuracy']) * 100:+.2f} pt"
                row[f"median ms {rt}"] = f"{r['latency_ms_median']:.3f}"
                row[f"p90 ms {rt}"] = f"{r['latency_ms_p90']:.3f}"
                row[f"delegated {rt}"] = f"{r['delegated_ops']}/{r['total_ops']}"
            if len(row) > 2:
                rows.append(row)
    lines = [
        f"# Main job: zoo x TFLite variants ({config.dataset} test split)",
        "",
        "Every cell ran in the LiteRT interpreter (`executed_in: tflite`) with "
        f"{config.threads} thread(s), except the `keras_fp32 (TF)` rows, which ran in TensorFlow "
        "(`executed_in: keras`). Latency: single-image invoke() after warm-up, on the machine "
        "that ran the job (see config.json), not an ARM phone. `delegated`: ops taken by the "
        "XNNPACK delegate / all ops (0 means the builtin kernels ran everything).",
        "",
        markdown_table(rows, columns).rstrip("\n"),
    ]
    if errors:
        lines += ["", "¹ Not produced or not runnable (the reason, as tfquant reported it):", ""] + errors
    return "\n".join(lines) + "\n"
