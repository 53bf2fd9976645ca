"""The main job: every zoo model x every TFLite variant, measured in the LiteRT interpreter.

For each model the float Keras model is converted once per variant (``fp32``, ``fp16``,
``dynamic``, ``int8_per_channel``, ``int8_per_tensor``, ``int16x8``; see
:data:`tfquant.recipes.VARIANTS`), and each .tflite is run in the interpreter under each
runtime (XNNPACK and the builtin kernels) over the whole test split: top-1 accuracy, file
size, single-image latency (median / p90 / min after warm-up) and how many ops the delegate
took. Cells: model x variant x runtime, plus each model's Keras reference
(``keras_fp32`` / ``tensorflow``); one :class:`PtqZooRecord` per cell, run and resumed by
:func:`tfquant.study.run_study` into ``<results_dir>/<run_name>/ptq_zoo/``.

Each model's cells run on one Ray worker (conversion and accuracy; several models side by
side: accuracy does not depend on load); latency is measured afterwards, in the runner's
latency phase, one cell at a time per node with nothing else of the run busy
(:meth:`PtqZoo.measure_on_idle_node`), so latencies are taken on an otherwise idle machine.
When XNNPACK takes none of a model's ops (int16x8), the XNNPACK cell's accuracy is the builtin
cell's run (the same kernels compute the same logits), measured once. Every accuracy measured
goes to the run's accuracy log (:mod:`tfquant.evaluation.reuse`), where nvidia_calibration
finds the models the two experiments share.

Every number here comes from the TFLite interpreter (``executed_in: tflite``) except the
Keras reference accuracy, which runs in TensorFlow (``executed_in: keras``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.qtypes import Runtime
from tfquant.recipes import VARIANTS, Recipe, variant
from tfquant.study import Footnotes, Record, RecordSet, Study, run_study
from tfquant.study.settings import ZooStudySettings, interpreter_runtime

NAME = "ptq_zoo"
KERAS = "keras_fp32"
"""The variant of a model's Keras reference cell (runtime ``tensorflow``)."""
TENSORFLOW = "tensorflow"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PtqZooConfig(ZooStudySettings):
    """What the main job runs: :class:`ZooStudySettings` plus variants, runtimes and latency."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    runtimes: tuple[Runtime, ...] = (Runtime.XNNPACK, Runtime.BUILTIN)
    latency_warmup: int = 20
    latency_runs: int = 100

    def __post_init__(self) -> None:
        for name in self.variants:
            variant(name)  # raises on an unknown name
        object.__setattr__(self, "runtimes", tuple(interpreter_runtime(r, what="the main job") for r in self.runtimes))
        super().__post_init__()

    def recipe_for(self, name: str) -> Recipe:
        return variant(name).replace(
            num_calibration_examples=self.num_calibration_examples,
            calibration_seed=self.calibration_seed,
            calibration_data=self.dataset,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PtqZooCell:
    """One cell: ``variant`` of ``model`` under ``runtime`` (or the Keras reference)."""

    model: str
    variant: str
    runtime: str
    threads: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.variant, self.runtime, self.threads)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PtqZooRecord(Record):
    """What one cell measured (field names are the results.jsonl keys).

    ``convert_seconds`` is ``null`` when the .tflite on disk was reused.
    """

    always_written: ClassVar[frozenset[str]] = frozenset({"convert_seconds"})

    model: str
    variant: str
    runtime: str
    threads: int
    executed_in: str
    accuracy: float | None = None
    n_examples: int | None = None
    size_bytes: int | None = None
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_min: float | None = None
    latency_runs: int | None = None
    delegated_ops: int | None = None
    total_ops: int | None = None
    eval_seconds: float | None = None
    convert_seconds: float | None = None
    tflite_path: str | None = None
    recipe: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.variant, self.runtime, int(self.threads))

    def writes_none(self, name: str) -> bool:
        return super().writes_none(name) and self.executed_in == "tflite"


def _ensure_tflite(
    path: Path, recipe: Recipe, build_model: Callable[[], Any], calibration: Callable[[], np.ndarray]
) -> float | None:
    """Converts unless ``path`` already holds a model made by the same recipe.

    Returns the conversion seconds, or None when the model on disk was reused.
    """
    from tfquant import convert

    if path.exists():
        try:
            if convert.read_recipe(str(path)) == recipe:
                return None
        except TfquantError:
            pass  # a corrupt leftover: convert again
    start = time.perf_counter()
    cal = calibration() if recipe.mode.needs_calibration else None
    tflite = convert.convert(build_model(), recipe, calibration_data=cal)
    convert.save(tflite, str(path), recipe)
    return time.perf_counter() - start


def _accuracy_runtime(path: Path, runtime: str, runtimes: set[str], threads: int) -> str:
    """The runtime whose accuracy run also gives ``runtime``'s accuracy for the model at ``path``.

    XNNPACK that takes none of the model's ops (int16x8: XNNPACK has no int16 kernels) leaves
    every op to the builtin kernels, the very computation of the ``builtin`` cell, so the
    accuracy run is shared with that cell when it is in the same batch (same logits, same
    accuracy; latency and the delegated-op count are still measured per cell).
    """
    from tfquant import evaluation

    if runtime != Runtime.XNNPACK.value or Runtime.BUILTIN.value not in runtimes:
        return runtime
    try:
        delegated, _ = evaluation.delegated_op_count(str(path), runtime=Runtime.XNNPACK, num_threads=threads)
    except TfquantError:
        return runtime  # the evaluation reports the failure for this cell
    return Runtime.BUILTIN.value if delegated == 0 else runtime


class _SharedAccuracy:
    """Accuracy of one converted model under each runtime of its cells, each computation run once.

    A runtime's accuracy comes from the run's accuracy log when another experiment (or an
    earlier run) measured the same model on the same data and settings, else from one
    evaluation per distinct computation (:func:`_accuracy_runtime`), which is then logged.
    """

    def __init__(self, path: Path, runtimes: set[str], evaluator: Any, accuracy_log: Any, *, threads: int) -> None:
        from tfquant.evaluation import reuse

        self.path, self.runtimes, self.evaluator, self.log, self.threads = path, runtimes, evaluator, accuracy_log, threads
        self.fingerprint = reuse.fingerprint(path)
        self.runs: dict[str, Any] = {}

    def __call__(self, runtime: str) -> Any:
        key = self.log.key(self.fingerprint, runtime)
        logged = self.log.get(key)
        if logged is not None:  # this run's accuracy log has it (see reuse.py)
            return logged
        rt = _accuracy_runtime(self.path, runtime, self.runtimes, self.threads)
        if rt not in self.runs:
            self.runs[rt] = self.evaluator.accuracy(str(self.path), runtime=Runtime.parse(rt, what="runtime"))
        self.log.put(key, self.runs[rt])
        return self.runs[rt]


class PtqZoo(Study[PtqZooCell, PtqZooRecord]):
    """The main job as a study (see the module docstring); ``out`` holds the .tflite files."""

    name = NAME
    record_type = PtqZooRecord

    def __init__(self, config: PtqZooConfig, out: Path) -> None:
        self.config, self.out = config, out

    def fingerprint(self) -> Mapping[str, Any]:
        from tfquant import models

        return {
            "config": self.config.to_dict(),
            "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in self.config.models},
        }

    def cells(self) -> list[PtqZooCell]:
        c = self.config
        out = []
        for m in c.models:
            out.append(PtqZooCell(model=m, variant=KERAS, runtime=TENSORFLOW, threads=c.threads))
            out += [PtqZooCell(model=m, variant=v, runtime=rt.value, threads=c.threads)
                    for v in c.variants for rt in c.runtimes]
        return out

    def _failed(self, cell: PtqZooCell, recipe: Recipe, error: Exception) -> PtqZooRecord:
        return PtqZooRecord(model=cell.model, variant=cell.variant, runtime=cell.runtime,
                            threads=cell.threads, error=str(error), recipe=recipe.to_dict(),
                            executed_in="tflite")

    def measure(self, todo: Sequence[PtqZooCell], log: Callable[[str], None]) -> Iterator[PtqZooRecord]:
        from tfquant import data, evaluation, models

        config = self.config
        x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
        log(f"test set: {info.name}/test, {len(x_test)} examples")
        cal_cache: list[np.ndarray] = []

        def calibration() -> np.ndarray:
            if not cal_cache:
                cal_cache.append(data.calibration_set(
                    config.dataset, config.num_calibration_examples,
                    seed=config.calibration_seed, data_dir=config.data_dir))
            return cal_cache[0]

        from tfquant.evaluation.reuse import LOG_NAME as ACCURACY_LOG, AccuracyLog

        evaluator = evaluation.Evaluator(x_test, y_test, num_threads=config.threads, batch_size=config.batch_size)
        accuracy_log = AccuracyLog(self.out.parent / ACCURACY_LOG, x_test, y_test, runtime=Runtime.XNNPACK.value,
                                   threads=config.threads, batch_size=config.batch_size)
        for model_name in _progress.progress(config.models, desc="PTQ zoo", unit="model"):
            mine = [c for c in todo if c.model == model_name]
            if not mine:
                continue
            keras_cache: list[Any] = []

            def build_model(name: str = model_name) -> Any:
                if not keras_cache:
                    keras_cache.append(models.build(name))
                return keras_cache[0]

            for cell in mine:
                if cell.variant == KERAS:
                    logits = build_model().predict(x_test, batch_size=config.batch_size, verbose=0)
                    acc = float(np.mean(np.argmax(logits, axis=-1) == y_test))
                    yield PtqZooRecord(model=model_name, variant=KERAS, runtime=TENSORFLOW,
                                       threads=cell.threads, accuracy=acc, n_examples=int(len(y_test)),
                                       executed_in="keras")
                    log(f"{model_name:>14} keras_fp32       (TF)      top-1 {acc:.4f}")
            # Convert and measure accuracy here; latency comes later, on an otherwise idle node
            # (measure_on_idle_node: the runner's latency phase).
            for variant_name in config.variants:
                pending = [c for c in mine if c.variant == variant_name]
                if not pending:
                    continue
                recipe = config.recipe_for(variant_name)
                path = self.out / "models" / model_name / f"{variant_name}.tflite"
                try:
                    convert_s = _ensure_tflite(path, recipe, build_model, calibration)
                except TfquantError as e:
                    # A variant the converter or runtime cannot produce (e.g. an op with no
                    # int16 kernel) is a result too: record why, and go on with the rest.
                    for cell in pending:
                        yield self._failed(cell, recipe, e)
                    log(f"{model_name:>14} {variant_name:<16} not produced: {e}")
                    continue
                accuracy_of = _SharedAccuracy(path, {c.runtime for c in pending}, evaluator, accuracy_log,
                                              threads=config.threads)
                for cell in pending:
                    yield self._accuracy(cell, recipe, path, convert_s, accuracy_of, log)

    def _accuracy(self, cell: PtqZooCell, recipe: Recipe, path: Path, convert_s: float | None,
                  accuracy_of: _SharedAccuracy, log: Callable[[str], None]) -> PtqZooRecord:
        """A converted cell's accuracy, size and delegated ops (latency still to measure)."""
        from tfquant import evaluation

        config, runtime = self.config, Runtime.parse(cell.runtime, what="runtime")
        try:
            acc = accuracy_of(cell.runtime)
            delegated, total = evaluation.delegated_op_count(str(path), runtime=runtime, num_threads=config.threads)
        except TfquantError as e:
            log(f"{cell.model:>14} {cell.variant:<16} {cell.runtime:<8} failed: {e}")
            return self._failed(cell, recipe, e)
        rec = PtqZooRecord(
            model=cell.model, variant=cell.variant, runtime=cell.runtime, threads=config.threads,
            accuracy=acc.accuracy, n_examples=acc.n_examples, size_bytes=evaluation.file_size(path),
            delegated_ops=delegated, total_ops=total, eval_seconds=round(acc.seconds, 3),
            convert_seconds=None if convert_s is None else round(convert_s, 3),
            tflite_path=str(path), recipe=recipe.to_dict(), executed_in="tflite",
        )
        log(f"{cell.model:>14} {cell.variant:<16} {cell.runtime:<8} top-1 {acc.accuracy:.4f}  "
            f"{rec.size_bytes / 1024:8.1f} KiB  delegated {delegated}/{total} ops (latency: in the latency phase)")
        return rec

    def needs_idle_node(self, record: PtqZooRecord) -> bool:
        """Converted, measured cells still need their latency (taken on an otherwise idle node)."""
        return record.executed_in == "tflite" and not record.failed and record.latency_runs is None

    def measure_on_idle_node(self, record: PtqZooRecord) -> PtqZooRecord:
        """``record`` with its single-image latency (the runner calls this one cell per node at a time)."""
        from tfquant import data, evaluation

        config, runtime = self.config, Runtime.parse(record.runtime, what="runtime")
        t0 = time.perf_counter()
        try:
            sample, _, _ = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=1)
            lat = evaluation.measure_latency(
                str(record.tflite_path), runtime=runtime, num_threads=config.threads,
                warmup=config.latency_warmup, runs=config.latency_runs, sample=sample[:1],
            )
        except TfquantError as e:
            return dataclasses.replace(record, error=str(e))
        return dataclasses.replace(
            record, latency_ms_median=lat.median_ms, latency_ms_p90=lat.p90_ms, latency_ms_min=lat.min_ms,
            latency_runs=lat.runs, eval_seconds=round((record.eval_seconds or 0.0) + time.perf_counter() - t0, 3),
        )

    def failed_record(self, cell: PtqZooCell, error: str) -> PtqZooRecord:
        recipe = None if cell.variant == KERAS else self.config.recipe_for(cell.variant).to_dict()
        return PtqZooRecord(model=cell.model, variant=cell.variant, runtime=cell.runtime, threads=cell.threads,
                            error=error, recipe=recipe, executed_in="keras" if cell.variant == KERAS else "tflite")

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(records, self.config)


def run_ptq_zoo(
    config: PtqZooConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) the main job into ``out_dir``; returns all records of the run."""
    out = Path(out_dir)
    return run_study(PtqZoo(config, out), out, log=log)


def results_markdown(records: RecordSet, config: PtqZooConfig) -> str:
    """One row per model x variant: accuracy, size and latency per runtime, Δ vs TFLite fp32."""
    from tfquant.evaluation import markdown_table

    def get(model: str, var: str, rt: str) -> Any:
        return records.get((model, var, rt, config.threads))

    rts = [rt.value for rt in config.runtimes]
    columns = ["model", "variant", "size KiB"]
    for rt in rts:
        columns += [f"top-1 {rt}", f"Δ vs fp32 {rt}", f"median ms {rt}", f"p90 ms {rt}", f"delegated {rt}"]
    rows: list[dict[str, Any]] = []
    notes = Footnotes()
    for model in config.models:
        keras = records.ok((model, KERAS, TENSORFLOW, config.threads))
        if keras:
            rows.append({"model": model, "variant": "keras_fp32 (TF)", **{f"top-1 {rt}": f"{keras.accuracy:.4f}" for rt in rts}})
        for var in config.variants:
            row: dict[str, Any] = {"model": model, "variant": var}
            for rt in rts:
                r = get(model, var, rt)
                if r is None:
                    continue
                if r.failed:
                    row[f"top-1 {rt}"] = notes.failed(f"{model} / {var} / {rt}", r.error)
                    continue
                base = records.ok((model, "fp32", rt, config.threads))
                row["size KiB"] = f"{r.size_bytes / 1024:.1f}"
                row[f"top-1 {rt}"] = f"{r.accuracy:.4f}"
                if base is not None:
                    row[f"Δ vs fp32 {rt}"] = f"{(r.accuracy - base.accuracy) * 100:+.2f} pt"
                row[f"median ms {rt}"] = f"{r.latency_ms_median:.3f}"
                row[f"p90 ms {rt}"] = f"{r.latency_ms_p90:.3f}"
                row[f"delegated {rt}"] = f"{r.delegated_ops}/{r.total_ops}"
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
    return "\n".join(lines + notes.lines()) + "\n"
