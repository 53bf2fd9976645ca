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


from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.experiments.whitepaper_qat import cells as wq
from tfquant.experiments.whitepaper_qat.report import results_markdown
from tfquant.qat.bn_correction import BnFold, has_foldable_pairs
from tfquant.qat.export import stored_weight_types
from tfquant.recipes import Recipe
from tfquant.study import Record, RecordSet, Study, logged, run_study
from tfquant.study.data import StudyData, load_study_data
from tfquant.study.settings import zoo_fingerprint

def _wrap_check(model_name: str) -> wq.WhitepaperQatRecord:
    """Why tfmot cannot wrap ``model_name`` (the untrained architecture is enough to ask)."""
    from tfquant import models, qat

    try:
        qat.quantize_for_training(models.build_architecture(model_name))
    except TfquantError as e:
        return wq.WhitepaperQatRecord(model=model_name, cell=wq.WRAP_CHECK, wrappable=False, reason=str(e))
    return wq.WhitepaperQatRecord(model=model_name, cell=wq.WRAP_CHECK, wrappable=True)


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

    def fingerprint(self) -> Mapping[str, Any]:
        return zoo_fingerprint(self.config.to_dict(), self.config.models,
                               {name: wq.CELLS[name].to_dict() for name in self.config.cells})

    def cells(self) -> Sequence[wq.ModelCell]:
        return ([wq.ModelCell(m, wq.WRAP_CHECK) for m in wq.UNWRAPPABLE_MODELS]
                + [wq.ModelCell(m, c) for m in self.config.models for c in self.config.cells])

    def markdown(self, records: RecordSet) -> str:
        return results_markdown([r.to_json() for r in records], self.config)

    def measure(self, todo: Sequence[wq.ModelCell], log: Callable[[str], None]) -> Iterator[wq.WhitepaperQatRecord]:
        return logged(self._records(todo, log), log, _log_line)

    def _records(self, todo: Sequence[wq.ModelCell], log: Callable[[str], None]) -> Iterator[wq.WhitepaperQatRecord]:
        import tf_keras as keras

        from tfquant import models

        config = self.config
        for cell in todo:
            if cell.cell == wq.WRAP_CHECK:
                yield _wrap_check(cell.model)
        todo_of = {m: [c.cell for c in todo if c.model == m and c.cell != wq.WRAP_CHECK]
                   for m in config.models}
        if not any(todo_of.values()):
            return
        arrays = load_study_data(config.dataset, data_dir=config.data_dir, limit=config.limit,
                                 train_examples=config.train_examples or wq.ZOO_TRAIN_EXAMPLES,
                                 num_calibration_examples=config.num_calibration_examples,
                                 calibration_seed=config.calibration_seed)
        log(f"test set: {arrays.info.name}/test, {len(arrays.x_test)} examples; fine-tuning on "
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
                    yield wq.WhitepaperQatRecord(model=model_name, cell=name, table=wq.CELLS[name].table,
                                                 not_applicable=wq.NO_BN)
                names = [c for c in names if not wq.CELLS[c].requires_batch_norm]
            for name in [c for c in names if wq.CELLS[c].qat is None]:
                yield self._ptq_record(model, model_name, name, arrays)
            runs: dict[wq.QatRun, list[str]] = {}
            for name in names:
                if wq.CELLS[name].qat is not None:
                    runs.setdefault(wq.CELLS[name].qat, []).append(name)
            for run, run_cells in runs.items():
                yield from self._qat_records(model, model_name, run, run_cells, folds=folds, arrays=arrays, log=log)

    def _ptq_record(self, model: Any, model_name: str, name: str, arrays: StudyData) -> wq.WhitepaperQatRecord:
        """A float / PTQ cell: a .tflite from the converter, or a simulation."""
        from tfquant import simulation
        from tfquant.evaluation import convert_and_evaluate, file_size

        config, cell = self.config, wq.CELLS[name]
        base = dict(model=model_name, cell=name, table=cell.table, executed_in=cell.executed_in)
        start = time.perf_counter()
        try:
            if cell.spec is not None:
                fields = simulation.evaluate_fields(model, cell.spec, arrays.x_test, arrays.y_test,
                                                    calibration_data=arrays.x_cal, batch_size=config.batch_size)
                return wq.WhitepaperQatRecord(**base, **fields, seconds=round(time.perf_counter() - start, 3))
            assert cell.mode is not None
            recipe = Recipe.for_mode(cell.mode, dataset=config.dataset,
                                     num_calibration_examples=config.num_calibration_examples,
                                     calibration_seed=config.calibration_seed)
            path = self.models_dir / model_name / f"{name}.tflite"
            _, acc = convert_and_evaluate(model, recipe, path, arrays.x_test, arrays.y_test,
                                          calibration_data=arrays.x_cal, runtime=config.runtime,
                                          num_threads=config.threads, batch_size=config.batch_size)
        except TfquantError as e:
            return wq.WhitepaperQatRecord(**base, error=str(e))
        return wq.WhitepaperQatRecord(
            **base, recipe=recipe.to_dict(), tflite_path=str(path), size_bytes=file_size(path),
            runtime=config.runtime.value, threads=config.threads, accuracy=acc.accuracy,
            n_examples=acc.n_examples, n_correct=acc.n_correct,
            seconds=round(time.perf_counter() - start, 3))

    def _qat_records(self, model: Any, model_name: str, run: wq.QatRun, names: Sequence[str], *,
                     folds: bool, arrays: StudyData, log: Callable[[str], None]) -> list[wq.WhitepaperQatRecord]:
        """One fine-tune (:func:`tfquant.qat.train_qat`) and the records of the cells ``names``
        that read it: its export (:func:`tfquant.qat.export_and_compare`) for a tflite cell,
        the QAT Keras model for a sim cell (errors included)."""
        from tfquant import qat
        from tfquant.evaluation import file_size
        from tfquant.models.train import DEFAULT_CONFIGS
        from tfquant.qat.pipeline import keras_accuracy

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
            path = self.models_dir / model_name / f"{exported[0]}.tflite"
            try:
                tflite, report = qat.export_run(
                    trained, path, arrays.x_test, arrays.y_test, batch_size=config.batch_size,
                    runtime=config.runtime, started=start, record=dict(
                        model=f"zoo:{model_name}", train_data=config.dataset, eval_data=config.dataset,
                        calibration_data=config.dataset, calibration_seed=config.calibration_seed,
                        weight_bits=run.weight_bits, activation_bits=run.activation_bits,
                        weight_granularity=run.weight_granularity.value,
                        bn_fold=run.bn_fold.value if folded else BnFold.TFMOT.value, epochs=epochs,
                        seed=config.seed, train_examples=len(arrays.x_train),
                        num_calibration_examples=len(arrays.x_cal), finetune_recipe_choice=run.schedule.value,
                        finetune_recipe=schedule.to_dict(), original_learning_rate=original.learning_rate,
                        learning_rate_source="zoo"))
            except TfquantError as e:
                out += [r for r in records(error=str(e)) if r.cell in exported]
            else:
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
    return [r.to_json() for r in run_study(study, out_dir, log=log)]
