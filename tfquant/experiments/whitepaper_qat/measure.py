"""Measuring the whitepaper QAT cells: the :class:`~tfquant.study.Study` of the tables.

Every QAT cell runs the QAT package's stages (:func:`tfquant.qat.train_qat`,
:func:`tfquant.qat.export_and_compare`) and writes a :class:`tfquant.qat.QatRecord` beside
its .tflite; PTQ cells convert (:func:`tfquant.convert.convert`) or simulate
(:func:`tfquant.simulation.evaluate`).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.experiments.whitepaper_qat import cells as wq
from tfquant.experiments.whitepaper_qat.report import results_markdown
from tfquant.qat.bn_correction import BnFold, has_foldable_pairs
from tfquant.qat.export import stored_weight_types
from tfquant.recipes import Recipe
from tfquant.study import Record, RecordSet, Study, run_study

def _wrap_check(model_name: str) -> wq.WhitepaperQatRecord:
    """Why tfmot cannot wrap ``model_name`` (the untrained architecture is enough to ask)."""
    from tfquant import models, qat

    try:
        qat.quantize_for_training(models.build_architecture(model_name))
    except TfquantError as e:
        return wq.WhitepaperQatRecord(model=model_name, cell=wq.WRAP_CHECK, wrappable=False, reason=str(e))
    return wq.WhitepaperQatRecord(model=model_name, cell=wq.WRAP_CHECK, wrappable=True)


@dataclasses.dataclass(frozen=True)
class _Data:
    """The arrays of a run: test set, fine-tuning set, calibration images."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_cal: np.ndarray


def _log_line(rec: wq.WhitepaperQatRecord) -> str:
    head = f"{rec.model:>13} {rec.cell:<26}"
    if rec.failed:
        return f"{head} failed: {rec.error}"
    if rec.cell == wq.WRAP_CHECK:
        return f"{head} wrappable: {rec.wrappable}"
    if rec.not_applicable is not None:
        return f"{head} n/a: {rec.not_applicable}"
    extra = f"  agreement {rec.agreement:.4f}" if rec.agreement is not None else ""
    return f"{head} top-1 {rec.accuracy:.4f}  ({rec.executed_in}){extra}"


class WhitepaperQat(Study[wq.ModelCell, wq.WhitepaperQatRecord]):
    """The QAT tables as a :class:`~tfquant.study.Study`: cells from :data:`CELLS` x models.

    Args:
      config: What to run.
      verbose: Let :func:`~tfquant.qat.finetune` print one line per epoch.
      tensorboard_dir, checkpoint_dir: If set, TensorBoard scalars / a checkpoint per epoch
        of each fine-tune in ``<dir>/<model>/<run>`` (not part of the fingerprint: they do not
        change results).
    """

    name: ClassVar[str] = wq.EXPERIMENT
    record_type: ClassVar[type[Record]] = wq.WhitepaperQatRecord

    def __init__(self, config: wq.WhitepaperQatConfig, *, verbose: bool = True,
                 tensorboard_dir: str | Path | None = None,
                 checkpoint_dir: str | Path | None = None) -> None:
        self.config, self.verbose = config, verbose
        self.tensorboard_dir, self.checkpoint_dir = tensorboard_dir, checkpoint_dir
        self._folder = Path(".")

    def fingerprint(self) -> Mapping[str, Any]:
        from tfquant import models

        return {"config": self.config.to_dict(),
                "cells": {name: wq.CELLS[name].to_dict() for name in self.config.cells},
                "weights_sha256": {m: models.trained_info(m).get("weights_sha256")
                                   for m in self.config.models}}

    def cells(self) -> Sequence[wq.ModelCell]:
        return ([wq.ModelCell(m, wq.WRAP_CHECK) for m in wq.UNWRAPPABLE_MODELS]
                + [wq.ModelCell(m, c) for m in self.config.models for c in self.config.cells])

    def markdown(self, records: RecordSet) -> str:
        return results_markdown([r.to_json() for r in records], self.config)

    def run(self, out_dir: str | Path, log: Callable[[str], None]) -> RecordSet:
        """Runs (or resumes) the study into ``out_dir``."""
        self._folder = Path(out_dir) / "models"
        return run_study(self, out_dir, log=log)

    def measure(self, todo: Sequence[wq.ModelCell], log: Callable[[str], None]) -> Iterator[wq.WhitepaperQatRecord]:
        import tf_keras as keras

        from tfquant import data, models

        config = self.config
        for cell in todo:
            if cell.cell == wq.WRAP_CHECK:
                yield self._logged(_wrap_check(cell.model), log)
        todo_of = {m: [c.cell for c in todo if c.model == m and c.cell != wq.WRAP_CHECK]
                   for m in config.models}
        if not any(todo_of.values()):
            return
        x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir,
                                               limit=config.limit)
        x_train, y_train, _ = data.load_numpy(config.dataset, "train", data_dir=config.data_dir,
                                              limit=config.train_examples or wq.ZOO_TRAIN_EXAMPLES)
        arrays = _Data(
            x_test=x_test, y_test=np.asarray(y_test), x_train=np.array(x_train),
            y_train=np.array(y_train),
            x_cal=data.calibration_set(config.dataset, config.num_calibration_examples,
                                       seed=config.calibration_seed, data_dir=config.data_dir))
        log(f"test set: {info.name}/test, {len(x_test)} examples; fine-tuning on "
            f"{len(arrays.x_train)} training images; {len(arrays.x_cal)} calibration images")
        for model_name in _progress.progress(config.models, desc="whitepaper QAT", unit="model"):
            names = todo_of[model_name]
            if not names:
                continue
            keras.backend.clear_session()
            gc.collect()
            model = models.build(model_name)
            folds = has_foldable_pairs(model)
            if not folds:
                for name in [c for c in names if wq.CELLS[c].requires_batch_norm]:
                    yield self._logged(wq.WhitepaperQatRecord(
                        model=model_name, cell=name, table=wq.CELLS[name].table, not_applicable=wq.NO_BN), log)
                names = [c for c in names if not wq.CELLS[c].requires_batch_norm]
            for name in [c for c in names if wq.CELLS[c].qat is None]:
                yield self._logged(self._ptq_record(model, model_name, name, arrays), log)
            runs: dict[wq.QatRun, list[str]] = {}
            for name in names:
                if wq.CELLS[name].qat is not None:
                    runs.setdefault(wq.CELLS[name].qat, []).append(name)
            for run, run_cells in runs.items():
                for rec in self._qat_records(model, model_name, run, run_cells, folds=folds,
                                             arrays=arrays, log=log):
                    yield self._logged(rec, log)

    @staticmethod
    def _logged(rec: wq.WhitepaperQatRecord, log: Callable[[str], None]) -> wq.WhitepaperQatRecord:
        log(_log_line(rec))
        return rec

    def _ptq_record(self, model: Any, model_name: str, name: str, arrays: _Data) -> wq.WhitepaperQatRecord:
        """A float / PTQ cell: a .tflite from the converter, or a simulation."""
        from tfquant import convert, simulation
        from tfquant.evaluation import evaluate_accuracy, file_size

        config, cell = self.config, wq.CELLS[name]
        base = dict(model=model_name, cell=name, table=cell.table, executed_in=cell.executed_in)
        start = time.perf_counter()
        try:
            if cell.spec is not None:
                x_cal = arrays.x_cal if cell.spec.quantizes_activations else None
                result = simulation.evaluate(model, cell.spec, arrays.x_test, arrays.y_test,
                                             calibration_data=x_cal, batch_size=config.batch_size)
                return wq.WhitepaperQatRecord(
                    **base, spec=cell.spec.to_dict(),
                    num_calibration_examples=0 if x_cal is None else len(x_cal),
                    accuracy=result.accuracy, n_examples=result.n_examples,
                    n_correct=result.n_correct, float_weight_layers=list(result.float_weight_layers),
                    seconds=round(time.perf_counter() - start, 3))
            assert cell.mode is not None
            calibrated = cell.mode.needs_calibration
            recipe = Recipe(mode=cell.mode, weight_granularity=wq._PER_CHANNEL,
                            num_calibration_examples=config.num_calibration_examples,
                            calibration_seed=config.calibration_seed,
                            calibration_data=config.dataset if calibrated else None)
            path = self._folder / model_name / f"{name}.tflite"
            tflite = convert.convert(model, recipe, calibration_data=arrays.x_cal if calibrated else None)
            convert.save(tflite, str(path), recipe)
            acc = evaluate_accuracy(path, arrays.x_test, arrays.y_test, runtime=config.runtime,
                                    num_threads=config.threads, batch_size=config.batch_size)
        except TfquantError as e:
            return wq.WhitepaperQatRecord(**base, error=str(e))
        return wq.WhitepaperQatRecord(
            **base, recipe=recipe.to_dict(), tflite_path=str(path), size_bytes=file_size(path),
            runtime=config.runtime.value, threads=config.threads, accuracy=acc.accuracy,
            n_examples=acc.n_examples, n_correct=acc.n_correct,
            seconds=round(time.perf_counter() - start, 3))

    def _qat_records(self, model: Any, model_name: str, run: wq.QatRun, names: Sequence[str], *,
                     folds: bool, arrays: _Data, log: Callable[[str], None]) -> list[wq.WhitepaperQatRecord]:
        """One fine-tune (:func:`tfquant.qat.train_qat`) and the records of the cells ``names``
        that read it: its export (:func:`tfquant.qat.export_and_compare`) for a tflite cell,
        the QAT Keras model for a sim cell (errors included)."""
        from tfquant import qat
        from tfquant.evaluation import file_size
        from tfquant.io_utils import write_bytes_atomic, write_text_atomic
        from tfquant.models.train import DEFAULT_CONFIGS
        from tfquant.qat.pipeline import keras_accuracy
        from tfquant.qat.record import json_ready

        config, original = self.config, DEFAULT_CONFIGS[model_name]
        epochs = config.epochs or qat.nvidia_schedule(original).epochs_for(original.epochs)
        steps = epochs * -(-len(arrays.x_train) // original.batch_size)
        schedule = wq.finetune_schedule(run, model_name, total_steps=steps, folds=folds,
                                     freeze_bn_after_steps=config.freeze_bn_after_steps)
        folded = run.bn_fold is not BnFold.TFMOT and folds
        common: dict[str, Any] = dict(
            model=model_name, qat=run.to_dict(), bn_folded_layers=folded, recipe=schedule.to_dict(),
            epochs=epochs, train_examples=len(arrays.x_train), seed=config.seed,
            num_calibration_examples=len(arrays.x_cal))

        def records(**fields: Any) -> list[wq.WhitepaperQatRecord]:
            return [wq.WhitepaperQatRecord(**common, cell=n, table=wq.CELLS[n].table,
                                        executed_in=wq.CELLS[n].executed_in, **fields) for n in names]

        freeze = schedule.freeze_bn_after_steps
        bn = run.bn_fold.value if folded else ("tfmot" if folds else "none in the model")
        log(f"{model_name:>13} QAT {run.name}: {schedule.name} schedule, {epochs} epoch(s) x "
            f"{steps // epochs} steps on {len(arrays.x_train)} images, BN {bn}"
            + (f", freeze after {freeze} steps" if freeze else ""))
        sub = Path(model_name) / run.name
        start = time.perf_counter()
        try:
            trained = qat.train_qat(
                model, arrays.x_train, arrays.y_train, arrays.x_cal, schedule=schedule,
                epochs=epochs, seed=config.seed,
                spec=qat.QatSpec(weight_bits=run.weight_bits, activation_bits=run.activation_bits,
                                 weight_granularity=run.weight_granularity),
                bn_fold=run.bn_fold if folded else BnFold.TFMOT,
                start_data=(arrays.x_test, arrays.y_test, config.batch_size),
                log_dir=Path(self.tensorboard_dir) / sub if self.tensorboard_dir else None,
                checkpoint_dir=Path(self.checkpoint_dir) / sub if self.checkpoint_dir else None,
                verbose=self.verbose)
        except TfquantError as e:
            return records(error=str(e))
        result = trained.finetune
        common.update(keras_accuracy_before_finetune=trained.start_accuracy, steps=result.steps,
                      train_seconds=result.seconds, train_loss=list(result.loss),
                      train_accuracy=list(result.accuracy), bn_frozen_at_step=result.bn_frozen_at_step)
        out: list[wq.WhitepaperQatRecord] = []
        exported = [n for n in names if wq.CELLS[n].executed_in == wq.EXECUTED_IN_TFLITE]
        export: dict[str, Any] = {}
        if exported:
            path = self._folder / model_name / f"{exported[0]}.tflite"
            try:
                tflite, report = qat.export_and_compare(
                    trained.qat_model, arrays.x_test, arrays.y_test, batch_size=config.batch_size,
                    runtime=config.runtime)
            except TfquantError as e:
                out += [r for r in records(error=str(e)) if r.cell in exported]
            else:
                write_bytes_atomic(path, tflite)
                write_text_atomic(path.with_suffix(".qat.json"), qat.QatRecord(
                    model=f"zoo:{model_name}", train_data=config.dataset, eval_data=config.dataset,
                    calibration_data=config.dataset, calibration_seed=config.calibration_seed,
                    weight_bits=run.weight_bits, activation_bits=run.activation_bits,
                    weight_granularity=run.weight_granularity.value,
                    bn_fold=run.bn_fold.value if folded else BnFold.TFMOT.value, epochs=epochs,
                    seed=config.seed, train_examples=len(arrays.x_train),
                    num_calibration_examples=len(arrays.x_cal),
                    finetune_recipe_choice=run.schedule.value, finetune_recipe=schedule.to_dict(),
                    original_learning_rate=original.learning_rate, learning_rate_source="zoo",
                    from_logits=trained.from_logits,
                    train_seconds=round(time.perf_counter() - start, 1),
                    finetune=json_ready(result), qat_accuracy=report.tflite_accuracy,
                    accuracy_data=f"{report.n_examples} eval examples",
                    fidelity=json_ready(report)).to_json())
                common["keras_accuracy"] = report.keras_accuracy
                export = dict(tflite_path=str(path), size_bytes=file_size(path),
                              weight_storage=stored_weight_types(tflite), agreement=report.agreement,
                              max_abs_logit_diff=report.max_abs_logit_diff,
                              first_divergent_layer=report.first_divergent_layer,
                              runtime=config.runtime.value, accuracy=report.tflite_accuracy)
        if "keras_accuracy" not in common:
            common["keras_accuracy"] = keras_accuracy(
                trained.qat_model, arrays.x_test, arrays.y_test, batch_size=config.batch_size)
        n = len(arrays.y_test)
        seconds = round(time.perf_counter() - start, 3)
        for rec in records(n_examples=n, seconds=seconds):
            if rec.executed_in == wq.EXECUTED_IN_TFLITE:
                if not export:
                    continue  # its error record is in ``out`` already
                rec = dataclasses.replace(rec, **export)
            else:
                rec = dataclasses.replace(rec, accuracy=rec.keras_accuracy,
                                          same_run_as=exported[0] if export else None)
            out.append(dataclasses.replace(rec, n_correct=int(round(rec.accuracy * n))))
        return out


def run_whitepaper_qat(
    config: wq.WhitepaperQatConfig,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = _progress.write,
    verbose: bool = True,
    tensorboard_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) the QAT tables into ``out_dir``; returns all records (JSON form).

    Layout: ``config.json`` (config, cell definitions, weights' sha256, provenance of every
    run into the folder), ``results.jsonl`` (one :class:`WhitepaperQatRecord` per model x
    cell -- a Table D cell of a model without BN is recorded as ``not_applicable`` -- plus a
    :data:`WRAP_CHECK` record per unwrappable zoo model), ``models/<model>/<cell>.tflite``
    with its ``.recipe.json`` (PTQ) or ``.qat.json`` (QAT: a :class:`tfquant.qat.QatRecord`),
    ``results.md``. See :class:`WhitepaperQat` for the arguments.

    Raises:
      TfquantError: ``out_dir`` holds a run with a different config; data or model errors.
        A cell that cannot be produced or evaluated is recorded with an ``error`` instead.
    """
    study = WhitepaperQat(config, verbose=verbose, tensorboard_dir=tensorboard_dir,
                          checkpoint_dir=checkpoint_dir)
    return [r.to_json() for r in study.run(out_dir, log)]
