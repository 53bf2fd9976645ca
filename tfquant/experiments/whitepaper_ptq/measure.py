"""Measuring the whitepaper PTQ cells: the :class:`~tfquant.study.Study` and its run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.experiments.whitepaper_ptq.cells import (
    CELLS,
    NAME,
    SPREAD,
    SpreadRecord,
    WhitepaperPtqCell,
    WhitepaperPtqConfig,
    WhitepaperPtqRecord,
)
from tfquant.qtypes import Mode
from tfquant.study import Pending, Record, RecordSet, Study, logged, run_study
from tfquant.study.settings import zoo_fingerprint


class WhitepaperPtq(Study[WhitepaperPtqCell, Record]):
    """The PTQ tables as a study (see the module docstring)."""

    name = NAME
    record_type = WhitepaperPtqRecord

    def __init__(self, config: WhitepaperPtqConfig) -> None:
        self.config = config

    def fingerprint(self) -> Mapping[str, Any]:
        return zoo_fingerprint(self.config.to_dict(), self.config.models,
                               {name: cell.to_dict() for name, cell in CELLS.items()})

    def cells(self) -> list[WhitepaperPtqCell]:
        return [WhitepaperPtqCell(model=m, cell=c) for m in self.config.models for c in (SPREAD, *CELLS)]

    def parse_record(self, d: Mapping[str, Any]) -> Record:
        return (SpreadRecord if d.get("cell") == SPREAD else WhitepaperPtqRecord).from_json(d)

    def markdown(self, records: RecordSet) -> str:
        from tfquant.experiments.whitepaper_ptq.report import results_markdown

        return results_markdown(records, self.config)

    def measure(self, todo: Sequence[WhitepaperPtqCell], log: Callable[[str], None]) -> Iterator[Record]:
        from tfquant import data
        from tfquant.evaluation import Evaluator

        config = self.config
        x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir, limit=config.limit)
        log(f"test set: {info.name}/test, {len(x_test)} examples")
        x_cal = data.calibration_set(config.dataset, config.num_calibration_examples,
                                     seed=config.calibration_seed, data_dir=config.data_dir)
        pool = Evaluator(x_test, y_test, runtime=config.runtime, num_threads=config.threads,
                         batch_size=config.batch_size)
        try:
            yield from logged(self._records(todo, x_test, y_test, x_cal, pool), log, _log_line)
        finally:
            pool.close()

    def _records(self, todo: Sequence[WhitepaperPtqCell], x_test: Any, y_test: Any, x_cal: Any,
                 pool: Any) -> Iterator[Record]:
        from tfquant import models

        pending: Pending[Record] = Pending()
        for model_name in _progress.progress(self.config.models, desc="whitepaper PTQ", unit="model"):
            mine = [c.cell for c in todo if c.model == model_name]
            if not mine:
                continue
            model = models.build(model_name)
            for name in mine:
                rec = self._cell(model, model_name, name, x_test, y_test, x_cal, pool, pending)
                if rec is not None:
                    yield rec
                yield from pending.ready()
        yield from pending.ready(block=True)

    def _cell(self, model: Any, model_name: str, name: str, x_test: Any, y_test: Any, x_cal: Any,
              pool: Any, pending: Pending[Record]) -> Record | None:
        """Measures a spread or sim cell, or converts a tflite cell and queues it (returns None)."""
        from tfquant import convert, simulation
        from tfquant.algorithms.bn_fold import per_channel_weight_ranges
        from tfquant.evaluation import file_size
        from tfquant.evaluation.weight_spread import weight_range_spread
        from tfquant.evaluation.weight_storage import int8_weight_share

        config = self.config
        if name == SPREAD:
            try:
                return SpreadRecord(experiment=NAME, model=model_name,
                                    **weight_range_spread(per_channel_weight_ranges(model)))
            except TfquantError as e:
                return SpreadRecord(experiment=NAME, model=model_name, error=str(e))
        cell = CELLS[name]
        rec: dict[str, Any] = {"experiment": NAME, "model": model_name, "cell": name, "table": cell.table,
                               "executed_in": cell.executed_in}
        start = time.perf_counter()
        if cell.spec is not None:
            rec.update(spec=cell.spec.to_dict(),
                       num_calibration_examples=len(x_cal) if cell.spec.quantizes_activations else 0)
            try:
                rec.update(simulation.evaluate_fields(model, cell.spec, x_test, y_test, calibration_data=x_cal,
                                                      batch_size=config.batch_size))
            except TfquantError as e:
                return WhitepaperPtqRecord(**rec, error=str(e))
            return WhitepaperPtqRecord(**rec, eval_seconds=round(time.perf_counter() - start, 3))
        recipe = config.recipe(cell)
        path = self.models_dir / model_name / f"{name}.tflite"
        rec.update(recipe=recipe.to_dict(), tflite_path=str(path), runtime=config.runtime.value,
                   threads=config.threads)
        try:
            tflite = convert.convert_and_save(model, recipe, path, calibration_data=x_cal)
        except TfquantError as e:
            return WhitepaperPtqRecord(**rec, error=str(e))
        rec.update(convert_seconds=round(time.perf_counter() - start, 3), size_bytes=file_size(path))
        if recipe.mode is Mode.DYNAMIC:
            rec.update(int8_weight_share(tflite))
        pending.add(pool.submit(str(path)),
                    done=lambda acc: WhitepaperPtqRecord(**rec, accuracy=acc.accuracy, n_examples=acc.n_examples,
                                                         n_correct=acc.n_correct,
                                                         eval_seconds=round(acc.seconds, 3)),
                    failed=lambda e: WhitepaperPtqRecord(**rec, error=str(e)))
        return None


def _log_line(rec: Record) -> str:
    """The progress line of ``rec``."""
    if rec.failed:
        return f"{rec.model:>14} {rec.cell:<22} failed: {rec.error}"
    if isinstance(rec, SpreadRecord):
        return (f"{rec.model:>14} {SPREAD:<22} median {rec.median_ratio:.2f}, max "
                f"{rec.max_ratio:.2f} ({rec.max_ratio_layer})")
    return f"{rec.model:>14} {rec.cell:<22} top-1 {rec.accuracy:.4f}  ({rec.executed_in})"


def run_whitepaper_ptq(
    config: WhitepaperPtqConfig, out_dir: str | Path, *, log: Callable[[str], None] = _progress.write
) -> RecordSet:
    """Runs (or resumes) the PTQ tables into ``out_dir``; returns all records of the run.

    Layout: ``config.json`` (config, cell definitions, weights' sha256, provenance of every
    run into the folder), ``results.jsonl`` (one record per model x cell, plus one
    :data:`SPREAD` record per model), ``models/<model>/<cell>.tflite`` (+ recipe) for the
    tflite cells, ``results.md``.

    Raises:
      TfquantError: ``out_dir`` holds a run with a different config; data or model errors.
        A cell that cannot be produced or evaluated is recorded with an ``error`` instead.
    """
    return run_study(WhitepaperPtq(config), out_dir, log=log)
