"""Measuring the QGT study: the :class:`~tfquant.study.Study` of PTQ vs plain QAT vs QGT.

Fine-tuning runs on :func:`tfquant.algorithms.qgt_train.finetune_weights` (the one training
loop); float Keras models are evaluated by :class:`tfquant.evaluation.keras_accuracy.KerasAccuracy`;
the QGT model's .tflite is read back with :func:`tfquant.qat.export.weight_levels`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import numpy as np
import tf_keras as keras

from tfquant import progress as _progress
from tfquant.algorithms.qgt import bottleneck_fields, float32_size_bytes, layer_residuals, packed_size_bytes
from tfquant.algorithms.qgt_train import cached_finetune, grid_steps, hard_quantize
from tfquant.errors import TfquantError
from tfquant.evaluation.keras_accuracy import KerasAccuracy, quiet_retracing
from tfquant.experiments.qgt import cells as qg
from tfquant.experiments.qgt.report import results_markdown
from tfquant.simulation.spec import EXECUTED_IN_SIM, SimSpec
from tfquant.study import RESULTS_JSONL, Record, RecordSet, Study, load_records, logged, run_study
from tfquant.study.data import load_study_data
from tfquant.study.settings import zoo_fingerprint


OUTPUT_ERROR_EXAMPLES = 512


def _log_line(rec: qg.QgtRecord) -> str:
    tag = f"{rec.model:>13} {'w' + str(rec.bits) if rec.bits else '':>3} {rec.cell:<17}"
    if rec.failed:
        return f"{tag} failed: {rec.error}"
    if rec.accuracy is not None:
        return f"{tag} top-1 {rec.accuracy:.4f} " + (f"({rec.executed_in})" if rec.executed_in else "")
    if rec.cell == qg.SIZE:
        return f"{tag} {rec.packed_bytes} B packed vs {rec.float32_bytes} B float32 ({rec.ratio:.2f}x)"
    worst = min(rec.layers or [], key=lambda r: r["rank"])
    return f"{tag} worst layer {worst['layer']} ({worst['loss_pt']:+.2f} pt alone), ΣR {rec.residual_sum:.4f}"


class QgtStudy(Study[qg.BitsCell, qg.QgtRecord]):
    """The QGT study as a :class:`~tfquant.study.Study`.

    Args:
      config: What to run.
      tensorboard_dir, checkpoint_dir: If set, TensorBoard logs / per-epoch checkpoints of
        every fine-tune under ``<dir>/<model>/w<b>_<method>/`` (not part of the fingerprint).
    """

    name: ClassVar[str] = qg.EXPERIMENT
    record_type: ClassVar[type[Record]] = qg.QgtRecord

    def __init__(self, config: qg.QgtStudyConfig, *, tensorboard_dir: str | Path | None = None,
                 checkpoint_dir: str | Path | None = None) -> None:
        self.config = config
        self.tensorboard_dir, self.checkpoint_dir = tensorboard_dir, checkpoint_dir

    def fingerprint(self) -> Mapping[str, Any]:
        return zoo_fingerprint(self.config.to_dict(), self.config.models)

    def cells(self) -> Sequence[qg.BitsCell]:
        c = self.config
        return [qg.BitsCell(m, None, qg.FLOAT) for m in c.models] + [
            qg.BitsCell(m, b, cell) for m in c.models for b in c.bits for cell in c.cells()]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown([r.to_json() for r in records], self.config)

    def run(self, out_dir: str | Path, log: Callable[[str], None]) -> RecordSet:
        """Runs (or resumes) the study into ``out_dir``."""
        if (Path(out_dir) / RESULTS_JSONL).is_file():
            done = load_records(self, out_dir).done_keys()
            if all(c.key in done for c in self.cells()):
                log(f"{out_dir}: every record is present; nothing to run")
        with quiet_retracing():
            return run_study(self, out_dir, log=log)

    def measure(self, todo: Sequence[qg.BitsCell], log: Callable[[str], None]) -> Iterator[qg.QgtRecord]:
        config = self.config
        n_train = config.train_examples or qg.TRAIN_EXAMPLES
        d = load_study_data(config.dataset, data_dir=config.data_dir, limit=config.limit, train_examples=n_train,
                            num_calibration_examples=config.num_calibration_examples if config.export_tflite else None,
                            calibration_seed=config.calibration_seed)
        x_test, y_test, x_train, y_train, x_cal = d.x_test, d.y_test, d.x_train, d.y_train, d.x_cal
        log(f"test set: {d.info.name}/test, {len(x_test)} examples; fine-tuning on {n_train} training images")
        evaluate = KerasAccuracy(x_test, y_test, config.eval_batch_size)
        keys = {c.key for c in todo}
        for model_name in _progress.progress(config.models, desc="QGT study", unit="model"):
            if any(k[0] == model_name for k in keys):
                yield from logged(self._model(model_name, keys, (x_test, y_test), (x_train, y_train), x_cal,
                                              evaluate, log), log, _log_line)

    def _model(self, model_name: str, keys: set[tuple[Any, ...]], test: tuple[np.ndarray, np.ndarray],
               train: tuple[np.ndarray, np.ndarray], x_cal: np.ndarray | None,
               evaluate: KerasAccuracy, log: Callable[[str], None]) -> Iterator[qg.QgtRecord]:
        """The records of one model's cells in ``keys`` (the cells to do)."""
        from tfquant import models, simulation
        from tfquant.algorithms.bn_fold import fold_batch_norms

        config = self.config
        keras.backend.clear_session()
        evaluate.clear()
        folded = fold_batch_norms(models.build(model_name))
        plan = qg.schedule(config, model_name, len(train[0]))
        probe = train[0][:OUTPUT_ERROR_EXAMPLES]  # training images for rounding_output_error
        folder = self.models_dir / model_name

        def sim_accuracy(model: keras.Model, spec: SimSpec, calibration_data: np.ndarray | None = None) -> float:
            """Top-1 of ``simulation.simulate(model, spec)``: what ``simulation.evaluate`` gives."""
            return evaluate(simulation.simulate(model, spec, calibration_data=calibration_data))

        scale = config.grid_scale

        def weight_accuracy(model: keras.Model, bits: int, spec: SimSpec, grid: Mapping[str, Any] | None = None) -> float:
            """b-bit weights, float activations: the simulation (max grid) or the hard rounding on the grid."""
            if scale == "max" and grid is None:
                return sim_accuracy(model, spec)
            return evaluate(hard_quantize(model, bits, scale=scale, grid=grid))

        base: dict[str, Any] = dict(model=model_name, n_examples=len(test[0]))
        if (model_name, None, qg.FLOAT) in keys:
            yield qg.QgtRecord(**base, cell=qg.FLOAT, executed_in=EXECUTED_IN_SIM, accuracy=evaluate(folded),
                            bn_folded=True)
        for bits in config.bits:
            cell = dict(base, bits=bits)
            spec = config.weight_spec(bits)
            if (model_name, bits, qg.SIZE) in keys:
                packed, full = packed_size_bytes(folded, bits), float32_size_bytes(folded)
                yield qg.QgtRecord(**cell, cell=qg.SIZE, packed_bytes=packed, float32_bytes=full,
                                ratio=full / packed, bn_folded=True, per_channel_scales=True)
            if (model_name, bits, qg.PTQ) in keys:
                yield qg.QgtRecord(**cell, cell=qg.PTQ, executed_in=EXECUTED_IN_SIM, grid_scale=scale,
                                accuracy=weight_accuracy(folded, bits, spec), spec=spec.to_dict())
            if (model_name, bits, qg.BOTTLENECK_FLOAT) in keys:
                yield qg.QgtRecord(**cell, cell=qg.BOTTLENECK_FLOAT, executed_in=EXECUTED_IN_SIM, of="trained",
                                **bottleneck_fields(folded, bits, evaluate, probe, scale=scale))
            tuned: dict[str, keras.Model] = {}
            grids: dict[str, Any] = {}
            for method in qg.METHODS:
                needs = [c for c in config.cells() if (model_name, bits, c) in keys
                         and (c == method or (method == qg.QGT and c in (qg.BOTTLENECK_QGT, *qg.TFLITE_CELLS)))]
                if not needs:
                    continue
                model, stats, weights = self._tuned(folded, model_name, bits, method, plan, train, log)
                tuned[method], grids[method] = model, stats.get("grid")
                if (model_name, bits, method) in keys:
                    yield qg.QgtRecord(**cell, cell=method, executed_in=EXECUTED_IN_SIM, grid_scale=scale,
                                    accuracy=weight_accuracy(model, bits, spec, stats.get("grid")),
                                    float_accuracy=evaluate(model),
                                    residual_sum=sum(layer_residuals(model, bits, scale=scale,
                                                                     grid=stats.get("grid")).values()),
                                    spec=spec.to_dict(), weights_path=str(weights),
                                    **{k: v for k, v in stats.items() if k not in ("epoch_logs", "grid")})
            if qg.QGT not in tuned:
                continue
            qgt_model = tuned[qg.QGT]
            if (model_name, bits, qg.BOTTLENECK_QGT) in keys:
                yield qg.QgtRecord(**cell, cell=qg.BOTTLENECK_QGT, executed_in=EXECUTED_IN_SIM, of="qgt",
                                **bottleneck_fields(qgt_model, bits, evaluate, probe, scale=scale, grid=grids[qg.QGT]))
            if not config.export_tflite:
                continue
            steps = grid_steps(qgt_model, bits, scale=scale, grid=grids[qg.QGT])
            hard = hard_quantize(qgt_model, bits, grid=steps)
            if (model_name, bits, qg.QGT_A8_SIM) in keys:
                a8 = SimSpec(weight_bits=bits, activation_bits=8)
                yield qg.QgtRecord(**cell, cell=qg.QGT_A8_SIM, executed_in=EXECUTED_IN_SIM,
                                accuracy=sim_accuracy(hard, a8, calibration_data=x_cal),
                                spec=a8.to_dict(), num_calibration_examples=len(x_cal))
            if (model_name, bits, qg.QGT_TFLITE) in keys:
                yield self._tflite(hard, cell, bits, folder, test, x_cal, steps)

    def _tuned(self, folded: keras.Model, model_name: str, bits: int, method: str, plan: Any,
               train: tuple[np.ndarray, np.ndarray], log: Callable[[str], None]
               ) -> tuple[keras.Model, dict[str, Any], Path]:
        """The fine-tuned model of ``method`` at ``bits``: loaded from the run folder, or trained
        (:func:`~tfquant.algorithms.qgt_train.finetune_weights`) and saved there."""
        config = self.config
        weights = self.models_dir / model_name / f"w{bits}_{method}.h5"
        sub = Path(model_name) / f"w{bits}_{method}"
        model, stats = cached_finetune(
            weights, folded, method, bits, train[0], train[1], plan=plan, seed=config.seed,
            qgt_strength=config.strength(bits) if method == qg.QGT else None,
            qgt_ramp_fraction=config.qgt_ramp_fraction, scale=config.grid_scale,
            qgt_finish_fraction=config.qgt_finish_fraction, qgt_finish_factor=config.qgt_finish_factor,
            label=f"{model_name} w{bits} {method}", log=log,
            tensorboard_dir=Path(self.tensorboard_dir) / sub if self.tensorboard_dir else None,
            checkpoint_dir=Path(self.checkpoint_dir) / sub if self.checkpoint_dir else None,
        )
        return model, stats, weights

    def _tflite(self, hard: keras.Model, cell: Mapping[str, Any], bits: int, folder: Path,
                test: tuple[np.ndarray, np.ndarray], x_cal: np.ndarray | None,
                steps: Mapping[str, np.ndarray]) -> qg.QgtRecord:
        """``qgt_tflite``: the hard-quantized QGT model as an int8 .tflite, evaluated in LiteRT,
        its int8 weights checked to hold at most 2^b - 1 values per channel, and its
        per-channel scales compared with the grid ``steps`` it was rounded on
        (``grid_scale_max_rel_error``, :func:`grid_scale_error`)."""
        from tfquant.evaluation import convert_and_evaluate, file_size
        from tfquant.qat.export import grid_levels

        config = self.config
        recipe = config.recipe()
        path = folder / f"w{bits}_qgt.tflite"
        rec = dict(cell, cell=qg.QGT_TFLITE, executed_in=qg.EXECUTED_IN_TFLITE, recipe=recipe.to_dict(),
                   tflite_path=str(path), runtime=config.runtime.value, threads=config.threads)
        try:
            tflite, acc = convert_and_evaluate(hard, recipe, path, test[0], test[1], calibration_data=x_cal,
                                               runtime=config.runtime, num_threads=config.threads,
                                               batch_size=config.eval_batch_size)
            levels = grid_levels(tflite, bits)
            scale_error = grid_scale_error(tflite, hard, steps, bits)
        except TfquantError as e:
            return qg.QgtRecord(**rec, error=str(e))
        return qg.QgtRecord(**rec, accuracy=acc.accuracy, n_correct=acc.n_correct, size_bytes=file_size(path),
                            grid_scale=config.grid_scale, grid_scale_max_rel_error=scale_error, **levels)


def grid_scale_error(tflite: bytes, hard: keras.Model, steps: Mapping[str, np.ndarray], bits: int) -> float:
    """Largest relative difference between a .tflite's int8 weight scales and the b-bit grid.

    The int8 converter stores a kernel on the grid {k·Δ_c} with scale s_c = max|Q_c| / 127 =
    q_max·Δ_c / 127 (q_max = 2^(b-1) - 1) when some weight of channel c is at ±q_max·Δ_c;
    each .tflite weight tensor is matched to the Keras kernel of the same size and channel
    count whose grid fits it best, over its channels with a weight at ±q_max·Δ_c (inf if
    none has one: the kernel is not on that grid).
    """
    from tfquant.algorithms.weight_grid import kernel_of
    from tfquant.qat.export import weight_levels

    qmax = 2 ** (bits - 1) - 1
    kernels = {}
    for layer in hard.layers:
        found = kernel_of(layer)
        if found is not None and layer.name in steps:
            w = found[0].numpy()
            delta = np.asarray(steps[layer.name], np.float64).reshape(-1)
            full = np.isclose(np.max(np.abs(w.reshape(-1, delta.size)), axis=0), qmax * delta, rtol=1e-5)  # channels last
            kernels[layer.name] = (w.size, delta, full)
    worst = 0.0
    for t in weight_levels(tflite):
        s = np.asarray(t.scales)
        errs = [float(np.max(np.abs(s[full] * 127 / qmax - delta[full]) / delta[full])) if full.any() else math.inf
                for n, delta, full in kernels.values() if n == int(np.prod(t.shape)) and delta.size == s.size]
        if not errs:
            raise TfquantError(f"no kernel matches .tflite weight tensor {t.tensor!r} {t.shape}")
        worst = max(worst, min(errs))
    return worst


def run_qgt_study(
    config: qg.QgtStudyConfig,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = _progress.write,
    tensorboard_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) the study into ``out_dir``; returns all records (JSON form).

    Layout: ``config.json`` (config, weights' sha256, provenance of every invocation),
    ``results.jsonl``, ``models/<model>/w<b>_{qat,qgt}.h5`` (+ ``.train.json``
    with the training statistics), ``models/<model>/w<b>_qgt.tflite`` (+ recipe) when
    exporting, ``results.md``. See :class:`QgtStudy` for the arguments.

    Raises:
      TfquantError: ``out_dir`` holds a run with a different config; data or model errors.
        A conversion that fails is recorded with an ``error`` instead.
    """
    study = QgtStudy(config, tensorboard_dir=tensorboard_dir, checkpoint_dir=checkpoint_dir)
    return [r.to_json() for r in study.run(out_dir, log)]
