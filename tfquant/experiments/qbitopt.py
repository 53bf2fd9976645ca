"""QBitOpt vs one-shot allocation vs uniform bits under an average weight-bit budget (issue 9).

For each CNN zoo model and budget B (average weight bits, parameter-weighted, met exactly):
QAT through :func:`tfquant.qat.run_qat` (the ``qat`` command's pipeline, ``--bit_budget B
--bit_allocation {fixed,oneshot,qbitopt}``) with the same schedule, data and seed, each run
exported to an int8 .tflite whose kernels sit on their own b_l-bit grids, and measured in the
LiteRT interpreter on the test split:

* ``fixed``   -- every kernel at B bits (uniform QAT);
* ``oneshot`` -- one allocation from the float model's gradient sensitivities (HAWQ-style);
* ``qbitopt`` -- re-allocated during QAT, frozen for the last 20% (our reconstruction of
  Peters et al. 2023, arXiv 2307.04535; :mod:`tfquant.qat.bit_allocation`).

Every record carries the per-layer bits, the achieved mean (``budget_met``: Σ n_l b_l =
B·Σ n_l exactly), the levels each kernel of the .tflite uses per channel (<= 2^b_l - 1), the
exact packed bytes (every kernel at b_l bits, densely packed, plus one float32 scale per
output channel, all other weights float32; of the BN-folded model) and the .tflite's bytes
(the converter packs kernels of <= 4 bits as INT4 and stores wider ones as int8). ``float`` is the Keras float model (``sim``: TensorFlow, nothing quantized).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.study import RESULTS_MD, Footnotes, Record, RecordSet, Study, logged, run_study, test_images
from tfquant.study.settings import zoo_fingerprint

NAME = "qbitopt"
FLOAT = "float"
METHODS = ("fixed", "oneshot", "qbitopt")
CNN_ZOO = ("cnn", "mobilenet_v1", "mobilenet_v2", "resnet")
GOAL_BUDGET, GOAL_POINTS = 3.0, 2.0
"""Issue 9, item 5: QBitOpt at a 3-bit budget within 2 points of float."""

SIZES: Mapping[str, Mapping[str, Any]] = {
    "smoke": {"models": ("cnn",), "budgets": (3.0,), "epochs": 1, "train_examples": 256, "limit": 200,
              "num_calibration_examples": 64},
    "short": {"models": ("cnn",), "budgets": (3.0,), "epochs": 1, "train_examples": 1024, "limit": 1000,
              "num_calibration_examples": 256},
}


@dataclasses.dataclass(frozen=True)
class QbitoptConfig:
    """What to run. ``train_examples``: the first N training images fine-tuned on;
    ``limit``: the first N test images (None: all)."""

    models: tuple[str, ...] = CNN_ZOO
    budgets: tuple[float, ...] = (3.0, 4.0)
    methods: tuple[str, ...] = METHODS
    epochs: int = 2
    train_examples: int | None = 16_384
    limit: int | None = None
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    seed: int = 0
    dataset: str = "fashion_mnist"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        from tfquant.algorithms.bit_budget import check_budget
        from tfquant.zoo_names import ZOO

        unknown = [m for m in self.models if m not in ZOO]
        if unknown:
            raise TfquantError(f"unknown zoo model(s) {unknown}; choose from: {', '.join(ZOO)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise TfquantError(f"unknown method(s) {bad}; choose from: {', '.join(METHODS)}")
        object.__setattr__(self, "budgets", tuple(check_budget(b) for b in self.budgets))
        if "fixed" in self.methods and any(not b.is_integer() for b in self.budgets):
            raise TfquantError("method fixed needs whole-bit budgets (e.g. 3,4); drop it or the fraction")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(models=list(self.models), budgets=list(self.budgets), methods=list(self.methods))
        return d


@dataclasses.dataclass(frozen=True)
class Cell:
    model: str
    budget: float | None
    cell: str

    @property
    def key(self) -> tuple[str, float | None, str]:
        return (self.model, self.budget, self.cell)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QbitoptRecord(Record):
    """One model x budget x method (``budget`` None for ``float``): the results.jsonl fields."""

    experiment: str = NAME
    model: str
    budget: float | None = None
    cell: str
    executed_in: str | None = None
    n_examples: int | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None
    layer_bits: Mapping[str, int] | None = None
    layer_params: Mapping[str, int] | None = None
    mean_weight_bits: float | None = None
    budget_met: bool | None = None
    max_levels: Mapping[str, int] | None = None
    levels_within_bits: bool | None = None
    on_grid: bool | None = None
    packed_bytes: int | None = None
    float32_bytes: int | None = None
    tflite_bytes: int | None = None
    allocation_history: Sequence[Mapping[str, Any]] | None = None
    train_seconds: float | None = None
    tflite_path: str | None = None

    @property
    def key(self) -> tuple[str, float | None, str]:
        return (self.model, self.budget, self.cell)

    def writes_none(self, name: str) -> bool:
        return name == "budget"


def _names_layer(tensor: str, layer: str) -> bool:
    """Whether a .tflite weight tensor (``cnn/quant_conv1/Conv2D;...``) is ``layer``'s kernel."""
    import re

    return any(part in (layer, f"quant_{layer}") for part in re.split(r"[/;]", tensor))


def _on_b_bit_grid(w: Any, bits: int) -> bool:
    """Whether every stored integer of ``w`` (a ``WeightLevels``) is k·g with |k| <= 2^(b-1) - 1.

    g = the gcd of the stored integers (7 for a 2-bit kernel the converter stores as {-7, 0, 7}).
    A count of levels alone cannot tell {-3..3} from {-7, -5, -2, 0, 2, 5, 7}; this can.
    """
    values = np.asarray(w.values, dtype=np.int64)
    ks = values // w.grid_step
    return bool(np.array_equal(ks * w.grid_step, values) and np.abs(ks).max() <= 2 ** (bits - 1) - 1)


def _line(r: QbitoptRecord) -> str:
    tag = f"{r.model:>13} {'' if r.budget is None else f'B={r.budget:g}':>5} {r.cell:<8}"
    if r.failed:
        return f"{tag} failed: {r.error}"
    extra = "" if r.layer_bits is None else f" bits {r.layer_bits} mean {r.mean_weight_bits:.4f}"
    return f"{tag} top-1 {r.accuracy:.4f} ({r.executed_in}){extra}"


class QbitoptStudy(Study[Cell, QbitoptRecord]):
    """The study (:func:`run_qbitopt`)."""

    name: ClassVar[str] = NAME
    record_type: ClassVar[type[Record]] = QbitoptRecord

    def __init__(self, config: QbitoptConfig) -> None:
        self.config = config

    def fingerprint(self) -> Mapping[str, Any]:
        return zoo_fingerprint(self.config.to_dict(), self.config.models)

    def cells(self) -> Sequence[Cell]:
        c = self.config
        return [Cell(m, None, FLOAT) for m in c.models] + [
            Cell(m, b, method) for m in c.models for b in c.budgets for method in c.methods]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown([r.to_json() for r in records], self.config)

    def measure(self, todo: Sequence[Cell], log: Callable[[str], None]) -> Iterator[QbitoptRecord]:
        from tfquant.study.data import load_study_data

        c = self.config
        d = load_study_data(c.dataset, data_dir=c.data_dir, limit=c.limit, train_examples=c.train_examples or 55_000,
                            num_calibration_examples=c.num_calibration_examples,
                            calibration_seed=c.calibration_seed)
        for model_name in _progress.progress(c.models, desc="QBitOpt study", unit="model"):
            cells = [cell for cell in todo if cell.model == model_name]
            if cells:
                yield from logged(self._model(model_name, cells, d), log, _line)

    def _model(self, model_name: str, cells: Sequence[Cell], d: Any) -> Iterator[QbitoptRecord]:
        import tf_keras as keras

        from tfquant import models, qat
        from tfquant.algorithms.bn_fold import fold_batch_norms
        from tfquant.algorithms.packed_size import float32_size_bytes, packed_size_bytes
        from tfquant.evaluation.keras_accuracy import KerasAccuracy
        from tfquant.io_utils import write_bytes_atomic
        from tfquant.models.train import DEFAULT_CONFIGS
        from tfquant.qat.export import weight_levels

        c = self.config
        keras.backend.clear_session()
        model = models.build(model_name)
        folded = fold_batch_norms(models.build(model_name))
        base = dict(model=model_name, n_examples=len(d.x_test))
        for cell in cells:
            if cell.cell == FLOAT:
                yield QbitoptRecord(**base, cell=FLOAT, executed_in="sim",
                                    accuracy=KerasAccuracy(d.x_test, d.y_test, 256)(model),
                                    float32_bytes=float32_size_bytes(folded))
                continue
            rec = dict(base, budget=cell.budget, cell=cell.cell)
            try:
                out = qat.run_qat(
                    model, d.x_train, d.y_train, d.x_cal, epochs=c.epochs, seed=c.seed,
                    x_eval=d.x_test, y_eval=d.y_test, original=DEFAULT_CONFIGS.get(model_name),
                    verbose=False, bit_budget=cell.budget, bit_allocation=cell.cell)
            except TfquantError as e:
                yield QbitoptRecord(**rec, error=str(e))
                continue
            r = out.record
            path = self.models_dir / model_name / f"b{cell.budget:g}_{cell.cell}.tflite"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, out.tflite)
            levels = weight_levels(out.tflite)
            max_levels, on_grid = {}, True
            for layer, b in r.layer_bits.items():
                hits = [w for w in levels if _names_layer(w.tensor, layer)]
                max_levels[layer] = max(w.max_distinct_per_channel for w in hits) if hits else -1
                on_grid = on_grid and bool(hits) and all(_on_b_bit_grid(w, b) for w in hits)
            total = sum(r.layer_bits[n] * r.layer_params[n] for n in r.layer_bits)
            yield QbitoptRecord(
                **rec, executed_in="tflite", accuracy=out.qat_accuracy,
                keras_accuracy=out.fidelity.keras_accuracy if out.fidelity is not None else None,
                layer_bits=dict(r.layer_bits), layer_params=dict(r.layer_params),
                mean_weight_bits=r.mean_weight_bits,
                budget_met=math.isclose(total, cell.budget * sum(r.layer_params.values()), abs_tol=1e-6),
                max_levels=max_levels,
                levels_within_bits=all(0 <= max_levels[n] <= 2 ** b - 1 for n, b in r.layer_bits.items()),
                on_grid=on_grid,
                packed_bytes=packed_size_bytes(folded, r.layer_bits),
                float32_bytes=float32_size_bytes(folded), tflite_bytes=len(out.tflite),
                allocation_history=list(r.allocation_history) if r.allocation_history else None,
                train_seconds=r.train_seconds, tflite_path=str(path))


def _get(records: Sequence[Mapping[str, Any]], model: str, budget: float | None, cell: str) -> Mapping[str, Any] | None:
    for r in records:
        if r["model"] == model and r.get("budget") == budget and r["cell"] == cell:
            return r
    return None


def results_markdown(records: Sequence[Mapping[str, Any]], config: QbitoptConfig) -> str:
    """results.md: accuracy table, allocation/size table, the goal, what ran where."""
    from tfquant.study.tables import accuracy_text

    notes = Footnotes()
    lines = [f"# QBitOpt vs one-shot vs uniform bits under an average weight-bit budget ({config.dataset})", "",
             f"Top-1 on {test_images(config.limit)}. QAT (`tfquant qat --bit_budget B --bit_allocation ...`): "
             f"{config.epochs} epoch(s) over {config.train_examples or 'all'} training images, the `auto` "
             "schedule, seed " f"{config.seed}; int8 activations, per-channel symmetric weights, each kernel on "
             "its own b-bit grid (b in 2..8) stored as int8; the parameter-weighted mean of the bits equals the "
             "budget exactly in every run (`budget met`). `fixed` = uniform bits, `oneshot` = one allocation "
             "from the float model's gradient sensitivities, `qbitopt` = re-allocated during QAT from "
             "gradient sensitivities, frozen for the last 20% (our reconstruction of arXiv 2307.04535).", ""]
    lines += ["## Accuracy", "", "| model | budget | float | " + " | ".join(config.methods) + " |",
              "|:---|---:|:---|" + ":---|" * len(config.methods)]
    for m in config.models:
        fl = _get(records, m, None, FLOAT)
        for b in config.budgets:
            cells = [accuracy_text(_get(records, m, b, meth), notes, f"{m} B={b:g} {meth}") for meth in config.methods]
            lines.append(f"| {m} | {b:g} | {accuracy_text(fl, notes, f'{m} float')} | " + " | ".join(cells) + " |")
    lines += ["", "## Allocation and size", "",
              "Bits per layer, the achieved mean, whether Σ n_l b_l = B Σ n_l exactly, the most "
              "int8 levels any channel of each kernel uses in the .tflite (must be <= 2^b - 1), whether every stored "
              "weight is an exact b-bit level (integers k·g with |k| <= 2^(b-1) - 1, g their gcd), exact packed bytes "
              "(kernels at their b bits + float32 scales + other weights float32, BN folded) vs float32, and the "
              ".tflite's bytes (the converter stores kernels of <= 4 bits as packed INT4, wider ones as int8).", "",
              "| model | budget | method | bits per layer | mean bits | budget met | levels <= 2^b-1 | on b-bit grid | packed bytes | float32 bytes | .tflite bytes |",
              "|:---|---:|:---|:---|---:|:---|:---|:---|---:|---:|---:|"]
    for m in config.models:
        for b in config.budgets:
            for meth in config.methods:
                r = _get(records, m, b, meth)
                if r is None or r.get("error"):
                    continue
                bits = ", ".join(f"{n} {v}" for n, v in r["layer_bits"].items())
                lines.append(f"| {m} | {b:g} | {meth} | {bits} | {r['mean_weight_bits']:.4f} | "
                             f"{'yes' if r['budget_met'] else 'NO'} | {'yes' if r['levels_within_bits'] else 'NO'} | "
                             f"{ {True: 'yes', False: 'NO'}.get(r.get('on_grid'), 'not checked')} | {r['packed_bytes']} | {r['float32_bytes']} | {r['tflite_bytes']} |")
    lines += ["", "## Goal: QBitOpt at a 3-bit budget within 2 points of float", ""]
    for m in config.models:
        fl, q = _get(records, m, None, FLOAT), _get(records, m, GOAL_BUDGET, "qbitopt")
        if fl is None or q is None or q.get("error") or fl.get("error"):
            lines.append(f"- {m}: not measured.")
            continue
        gap = round(100.0 * (fl["accuracy"] - q["accuracy"]), 6)  # 2.00 pt is within 2, not 2.0000000000000018
        verdict = "met" if gap <= GOAL_POINTS else "MISSED"
        lines.append(f"- {m}: float {fl['accuracy']:.4f}, QBitOpt B=3 {q['accuracy']:.4f} ({gap:+.2f} pt below "
                     f"float): {verdict}.")
    lines += ["", "## What ran where", "",
              "- **tflite** (LiteRT interpreter, xnnpack): every `fixed` / `oneshot` / `qbitopt` cell.",
              "- **sim** (TensorFlow): `float` only (the Keras float model, nothing quantized)."]
    lines += notes.lines()
    return "\n".join(lines) + "\n"


def run_qbitopt(config: QbitoptConfig, out_dir: str | Path, *,
                log: Callable[[str], None] = _progress.write) -> list[dict[str, Any]]:
    """Runs (or resumes) the study into ``out_dir``; returns every record (JSON form)."""
    return [r.to_json() for r in run_study(QbitoptStudy(config), out_dir, log=log)]


__all__ = ["CNN_ZOO", "METHODS", "NAME", "RESULTS_MD", "SIZES", "QbitoptConfig", "QbitoptRecord",
           "QbitoptStudy", "results_markdown", "run_qbitopt"]
