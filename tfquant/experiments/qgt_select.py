"""Choosing QGT's λ and finish on validation images, never on the test split (issue 9).

The QGT study's defaults (:class:`tfquant.experiments.qgt.QgtStudyConfig`: λ per bit width,
the finish fraction) are chosen here. Every candidate fine-tunes the BN-folded zoo model
exactly as the study's ``qgt`` cell does (:func:`tfquant.algorithms.qgt_train.finetune_weights`:
the first ``train_examples`` training images, the same schedule, seed and grid), is rounded on
its frozen grid (:func:`~tfquant.algorithms.qgt_train.hard_quantize`) and is scored on the
**validation slice**: images ``[TRAIN_EXAMPLES, TRAIN_EXAMPLES + validation_examples)`` of the
training file (the zoo's 5,000 held-out images, :data:`tfquant.models.train.VAL_EXAMPLES`:
never trained on, by the zoo or by any fine-tune, and not the test split, which this module
never loads). Every record keeps the index range it was scored on.

Two stages per bit width:

1. ``lambda``: every λ of ``lambdas`` with the finish ``qgt_finish_fraction`` x ``qgt_finish_factor``.
2. ``finish``: each fraction of ``finish_fractions`` at stage 1's best λ.

The chosen setting of a bit width is the candidate (of both stages) with the highest
validation accuracy of the hard-quantized model (ties: the first in cell order, i.e. the
smaller λ, then stage 1). Accuracies are measured in TensorFlow (``sim``: sub-8-bit weights
with float activations have no TFLite kernel). results.md lists every candidate, the choice
and the rule.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.errors import TfquantError
from tfquant.models.train import TRAIN_EXAMPLES, VAL_EXAMPLES
from tfquant.simulation.spec import EXECUTED_IN_SIM
from tfquant.study import RESULTS_JSONL, Record, RecordSet, Study, header, load_records, logged, run_study, section
from tfquant.study.settings import Sized, check_zoo_models, is_int, is_number, positive_int

__all__ = [
    "EXPERIMENT", "FINISH", "LAMBDA", "SIZES", "SPLIT", "QgtSelectConfig", "QgtSelectRecord", "SelectCell",
    "chosen", "results_markdown", "run_qgt_select", "validation_range", "validation_split",
]

EXPERIMENT = "qgt_select"
LAMBDA, FINISH = "lambda", "finish"
"""The two stages: a λ sweep at the default finish, then finish fractions at the best λ."""
FLOAT = "float"
"""The reference cell: the BN-folded float model on the validation slice (``bits`` None)."""
SPLIT = "validation"

SIZES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smoke": MappingProxyType({
        "bits": (2,), "lambdas": ((2, 10.0), (2, 30.0)), "finish_fractions": (0.3,), "epochs": 1.0,
        "train_examples": 384, "validation_examples": 300,
    }),
})
"""Named sizes: ``smoke`` (what the tests run)."""


def validation_range(validation_examples: int) -> tuple[int, int]:
    """``[start, stop)`` of the validation slice in the training file: right after the
    :data:`TRAIN_EXAMPLES` images every fine-tune may use."""
    return TRAIN_EXAMPLES, TRAIN_EXAMPLES + validation_examples


def validation_split(dataset: str, validation_examples: int, *, data_dir: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The validation images, their labels and their index range in the training file.

    Reads the ``train`` split only (the test split is never loaded here).

    Raises:
      TfquantError: The training file is too short for the slice.
    """
    from tfquant import data

    start, stop = validation_range(validation_examples)
    x_all, y_all, _ = data.load_numpy(dataset, "train", data_dir=data_dir)
    if len(x_all) < stop:
        raise TfquantError(f"{dataset} has {len(x_all)} training images; the validation slice needs "
                           f"images {start}..{stop - 1}; pass a smaller validation_examples")
    return np.array(x_all[start:stop]), np.asarray(y_all[start:stop]), (start, stop)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QgtSelectConfig(Sized):
    """What the selection runs.

    Attributes:
      model: The zoo model fine-tuned (one).
      bits: Weight bit widths, each in [2, 8].
      lambdas: Stage 1's candidates, (bits, λ) pairs; every bit width needs at least one.
      finish_fractions: Stage 2's finish fractions, tried at stage 1's best λ (may be empty).
      qgt_finish_fraction, qgt_finish_factor: Stage 1's finish (as in the QGT study).
      grid_scale, qgt_ramp_fraction, epochs, batch_size, learning_rate_scale, seed,
      train_examples, dataset, data_dir, eval_batch_size: As in
        :class:`tfquant.experiments.qgt.QgtStudyConfig` (the same fine-tune).
      validation_examples: Size of the validation slice, at most :data:`VAL_EXAMPLES`.
    """

    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = SIZES
    model: str = "cnn"
    bits: tuple[int, ...] = (2, 4)
    lambdas: tuple[tuple[int, float], ...] = ((2, 10.0), (2, 30.0), (2, 100.0), (4, 3.0), (4, 10.0), (4, 30.0))
    finish_fractions: tuple[float, ...] = (0.3,)
    qgt_finish_fraction: float = 0.5
    qgt_finish_factor: float = 1000.0
    grid_scale: str = "mse"
    qgt_ramp_fraction: float = 1.0
    epochs: float = 3.0
    batch_size: int | None = None
    learning_rate_scale: float = 0.5
    seed: int = 0
    train_examples: int | None = None
    validation_examples: int = VAL_EXAMPLES
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        from tfquant.algorithms.weight_grid import check_scale

        check_zoo_models([self.model])
        bits = tuple(dict.fromkeys(self.bits)) if not isinstance(self.bits, (str, int)) else ()
        if not bits or any(not is_int(b) or not 2 <= b <= 8 for b in bits):
            raise TfquantError(f"bits must be a non-empty list of integers in [2, 8], got {self.bits!r}")
        object.__setattr__(self, "bits", tuple(int(b) for b in bits))
        try:
            pairs = tuple((int(b), float(lam)) for b, lam in self.lambdas)
        except (TypeError, ValueError):
            raise TfquantError(f"lambdas must be (bits, λ) pairs, e.g. 2:10,2:30; got {self.lambdas!r}") from None
        if any(not math.isfinite(lam) or lam <= 0 for _, lam in pairs):
            raise TfquantError(f"every λ must be a finite number > 0, got {self.lambdas!r}")
        missing = [b for b in self.bits if b not in {p[0] for p in pairs}]
        if missing:
            raise TfquantError(f"no λ candidate for bit width(s) {missing}; add BITS:LAMBDA entries for them")
        object.__setattr__(self, "lambdas", tuple(dict.fromkeys(p for p in pairs if p[0] in self.bits)))
        fractions = tuple(self.finish_fractions)
        for f in (*fractions, self.qgt_finish_fraction):
            if not is_number(f) or not 0.0 <= f < 1.0:
                raise TfquantError(f"finish fractions must be numbers in [0, 1), got {f!r}")
        object.__setattr__(self, "finish_fractions",
                           tuple(float(f) for f in dict.fromkeys(fractions) if f != self.qgt_finish_fraction))
        factor = self.qgt_finish_factor
        if not is_number(factor) or not math.isfinite(factor) or factor < 1.0:
            raise TfquantError(f"qgt_finish_factor must be a finite number >= 1, got {factor!r}")
        check_scale(self.grid_scale)
        if not is_number(self.epochs) or not math.isfinite(self.epochs) or self.epochs <= 0:
            raise TfquantError(f"epochs must be a number > 0, got {self.epochs!r}")
        positive_int(self.validation_examples, "validation_examples")
        if self.validation_examples > VAL_EXAMPLES:
            raise TfquantError(f"validation_examples={self.validation_examples} exceeds the {VAL_EXAMPLES} "
                               "held-out training images; use at most that")
        for name in ("train_examples", "batch_size"):
            positive_int(getattr(self, name), name, none_means="the default")
        if (self.train_examples or 0) > TRAIN_EXAMPLES:
            raise TfquantError(f"train_examples={self.train_examples} would reach the validation slice; "
                               f"use at most {TRAIN_EXAMPLES}")
        positive_int(self.eval_batch_size, "eval_batch_size")
        if not is_int(self.seed) or self.seed < 0:
            raise TfquantError(f"seed must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bits"], d["lambdas"], d["finish_fractions"] = (list(self.bits), [list(p) for p in self.lambdas],
                                                         list(self.finish_fractions))
        return d


@dataclasses.dataclass(frozen=True)
class SelectCell:
    """One candidate: ``stage`` ``lambda`` (``value`` = λ) or ``finish`` (``value`` = fraction)."""

    model: str
    bits: int | None
    stage: str
    value: float

    @property
    def key(self) -> tuple[str, int | None, str, float]:
        return (self.model, self.bits, self.stage, self.value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QgtSelectRecord(Record):
    """One candidate's validation score (the results.jsonl fields).

    ``data_file`` / ``data_range``: the file and the ``[start, stop)`` indices it was scored
    on; ``train_range``: the images it was fine-tuned on (disjoint).
    """

    experiment: str = EXPERIMENT
    model: str
    bits: int | None
    stage: str
    value: float
    qgt_strength: float | None = None
    qgt_finish_fraction: float | None = None
    qgt_finish_factor: float | None = None
    grid_scale: str | None = None
    split: str = SPLIT
    data_file: str | None = None
    data_range: list[int] | None = None
    train_range: list[int] | None = None
    executed_in: str | None = None
    n_examples: int | None = None
    accuracy: float | None = None
    float_accuracy: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    train_loss: float | None = None

    @property
    def key(self) -> tuple[str, int | None, str, float]:
        return (self.model, self.bits, self.stage, self.value)

    def writes_none(self, name: str) -> bool:
        """``bits`` is always written (null: the float reference)."""
        return name == "bits"


def _ok(records: Sequence[Any], bits: int, stage: str | None = None) -> list[Any]:
    return [r for r in records if r.bits == bits and not r.failed and r.accuracy is not None
            and (stage is None or r.stage == stage)]


def _best(records: Sequence[Any]) -> Any | None:
    """The highest ``accuracy``; ties: the first (cell order)."""
    return max(records, key=lambda r: r.accuracy, default=None)


def chosen(records: Sequence[Any], config: QgtSelectConfig) -> dict[int, Any]:
    """``{bits: record}``: per bit width the candidate with the best validation accuracy of the
    hard-quantized model (ties: the first in cell order); bit widths with no result are left out."""
    order = {c.key: i for i, c in enumerate(QgtSelectStudy(config).cells())}
    ranked = sorted((r for r in records if r.key in order), key=lambda r: order[r.key])
    out = {}
    for b in config.bits:
        best = _best(_ok(ranked, b))
        if best is not None:
            out[b] = best
    return out


class QgtSelectStudy(Study[SelectCell, QgtSelectRecord]):
    """The selection as a :class:`~tfquant.study.Study` (one record per candidate)."""

    name: ClassVar[str] = EXPERIMENT
    record_type: ClassVar[type[Record]] = QgtSelectRecord

    def __init__(self, config: QgtSelectConfig) -> None:
        self.config = config

    def fingerprint(self) -> Mapping[str, Any]:
        from tfquant.study.settings import zoo_fingerprint

        return zoo_fingerprint(self.config.to_dict(), [self.config.model])

    def cells(self) -> Sequence[SelectCell]:
        c = self.config
        return [SelectCell(c.model, None, FLOAT, 0.0)] + [SelectCell(c.model, b, LAMBDA, lam) for b in c.bits for bb, lam in c.lambdas if bb == b] + [
            SelectCell(c.model, b, FINISH, f) for b in c.bits for f in c.finish_fractions]

    def markdown(self, records: RecordSet) -> str:
        return results_markdown(list(records), self.config)

    def measure(self, todo: Sequence[SelectCell], log: Callable[[str], None]) -> Iterator[QgtSelectRecord]:
        yield from logged(self._measure(todo, log), log, _log_line)

    def _measure(self, todo: Sequence[SelectCell], log: Callable[[str], None]) -> Iterator[QgtSelectRecord]:
        from tfquant import _env  # noqa: F401  (before TensorFlow)
        import tf_keras as keras

        from tfquant import data, models
        from tfquant.algorithms.bn_fold import fold_batch_norms
        from tfquant.algorithms.qgt_train import finetune_weights, hard_quantize
        from tfquant.evaluation.keras_accuracy import KerasAccuracy, quiet_retracing
        from tfquant.experiments.qgt.cells import schedule

        c = self.config
        n_train = c.train_examples or TRAIN_EXAMPLES
        x_all, y_all, _ = data.load_numpy(c.dataset, "train", data_dir=c.data_dir)
        x_train, y_train = np.array(x_all[:n_train]), np.array(y_all[:n_train])
        x_val, y_val, (start, stop) = validation_split(c.dataset, c.validation_examples, data_dir=c.data_dir)
        log(f"selection: fine-tuning on training images 0..{n_train - 1}, scoring on validation images "
            f"{start}..{stop - 1} of the training file (the test split is not loaded)")
        evaluate = KerasAccuracy(x_val, y_val, c.eval_batch_size)
        keras.backend.clear_session()
        folded = fold_batch_norms(models.build(c.model))
        plan = schedule(c, c.model, n_train)  # type: ignore[arg-type]  (duck-typed: epochs, batch_size, LR scale)
        earlier = list(load_records(self, self.out_dir)) if (self.out_dir / RESULTS_JSONL).is_file() else []
        base = dict(model=c.model, grid_scale=c.grid_scale, split=SPLIT, data_file=f"{c.dataset}/train",
                    data_range=[start, stop], train_range=[0, n_train], executed_in=EXECUTED_IN_SIM,
                    n_examples=len(x_val), qgt_finish_factor=c.qgt_finish_factor)
        with quiet_retracing():
            for cell in sorted(todo, key=lambda k: (k.stage != FLOAT, k.stage != LAMBDA)):  # stage 1 first
                rec = dict(base, bits=cell.bits, stage=cell.stage, value=cell.value)
                if cell.stage == FLOAT:
                    yield QgtSelectRecord(**rec, accuracy=evaluate(folded))
                    continue
                if cell.stage == LAMBDA:
                    lam, finish = cell.value, c.qgt_finish_fraction
                else:
                    best = _best(_ok(earlier, cell.bits, LAMBDA))
                    if best is None:
                        yield QgtSelectRecord(**rec, error=f"no stage-1 (λ) result at {cell.bits} bits to take "
                                              "the best λ from; re-run to measure the λ candidates first")
                        continue
                    lam, finish = best.qgt_strength, cell.value
                tuned, stats = finetune_weights(
                    folded, "qgt", cell.bits, x_train, y_train, plan=plan, seed=c.seed, qgt_strength=lam,
                    qgt_ramp_fraction=c.qgt_ramp_fraction, scale=c.grid_scale, qgt_finish_fraction=finish,
                    qgt_finish_factor=c.qgt_finish_factor, label=f"select w{cell.bits} λ={lam:g} finish={finish:g}",
                    log=log)
                hard = hard_quantize(tuned, cell.bits, scale=c.grid_scale, grid=stats.get("grid"))
                out = QgtSelectRecord(**rec, qgt_strength=lam, qgt_finish_fraction=finish, accuracy=evaluate(hard),
                                      float_accuracy=evaluate(tuned), steps=stats["steps"],
                                      train_seconds=stats["train_seconds"], train_loss=stats["train_loss"])
                earlier.append(out)
                yield out


def _log_line(r: QgtSelectRecord) -> str:
    tag = f"{r.model} w{r.bits} {r.stage}={r.value:g}"
    if r.failed:
        return f"{tag} failed: {r.error}"
    if r.stage == FLOAT:
        return f"{r.model} float: validation {r.accuracy:.4f}"
    return (f"{tag} λ={r.qgt_strength:g} finish={r.qgt_finish_fraction:g}: validation {r.accuracy:.4f} "
            f"(float {r.float_accuracy:.4f}, {r.train_seconds:.0f} s)")


def results_markdown(records: Sequence[QgtSelectRecord], config: QgtSelectConfig) -> str:
    """Every candidate's validation accuracy per bit width, the choice and the rule."""
    from tfquant.evaluation import markdown_table

    start, stop = validation_range(config.validation_examples)
    n_train = config.train_examples or TRAIN_EXAMPLES
    pick = chosen(records, config)
    lines = header("QGT: λ and finish chosen on validation images", (
        f"{config.model}, BN folded, grid `{config.grid_scale}`: each candidate is the QGT fine-tune of the "
        f"study (`experiments/qgt.py`: {config.epochs:g} epochs on training images 0..{n_train - 1}, seed "
        f"{config.seed}), rounded on its frozen grid and scored on **validation images {start}..{stop - 1} "
        f"of the training file** ({stop - start} images, never trained on; the test split is never loaded). "
        f"Stage `lambda`: each λ with the finish over the last {config.qgt_finish_fraction:g} of the steps "
        f"(λ x{config.qgt_finish_factor:g}); stage `finish`: other finish fractions at stage 1's best λ. "
        "`validation (hard)`: the QGT model rounded on its grid; `before rounding`: the same model in float. "
        "All accuracies `sim` (TensorFlow: b-bit weights, float activations; no TFLite kernel exists). "
        f"One image is {100 / (stop - start):.2f} pt; the binomial standard error near 0.88 is "
        f"{100 * math.sqrt(0.88 * 0.12 / (stop - start)):.2f} pt."))
    ref = next((r for r in records if r.stage == FLOAT and not r.failed), None)
    lines += ["", (f"Float (BN-folded, nothing quantized) on the same validation images: {ref.accuracy:.4f} (sim)."
                   if ref else "Float on the validation images: not measured.")]
    order = {c.key: i for i, c in enumerate(QgtSelectStudy(config).cells())}
    for b in config.bits:
        rows = []
        for r in sorted((r for r in records if r.bits == b and r.key in order), key=lambda r: order[r.key]):
            mark = " **chosen**" if pick.get(b) is r else ""
            if r.failed:
                rows.append({"stage": r.stage, "validation (hard)": f"failed: {r.error}"})
                continue
            rows.append({"stage": r.stage + mark, "λ": f"{r.qgt_strength:g}",
                         "finish": f"{r.qgt_finish_fraction:g} x{r.qgt_finish_factor:g}",
                         "validation (hard)": f"{r.accuracy:.4f} (sim)",
                         "before rounding": f"{r.float_accuracy:.4f} (sim)",
                         "rounding cost (pt)": f"{100 * (r.float_accuracy - r.accuracy):+.2f}",
                         "vs float (pt)": f"{100 * (r.accuracy - ref.accuracy):+.2f}" if ref else "",
                         "train s": f"{r.train_seconds:.0f}"})
        why = ("not chosen: no candidate finished" if b not in pick else
               f"chosen in this run: λ = {pick[b].qgt_strength:g}, finish {pick[b].qgt_finish_fraction:g} x"
               f"{pick[b].qgt_finish_factor:g} -- the highest validation accuracy of the hard-quantized model "
               f"({pick[b].accuracy:.4f}); rule: best validation accuracy, ties to the first candidate listed.")
        columns = ["stage", "λ", "finish", "validation (hard)", "vs float (pt)", "before rounding",
                   "rounding cost (pt)", "train s"]
        lines += section(f"{b}-bit weights", markdown_table(rows, columns).rstrip("\n") if rows else "(no candidates measured)",
                         why)
    return "\n".join(lines).rstrip() + "\n"


def run_qgt_select(config: QgtSelectConfig, out_dir: str | Path, *,
                   log: Callable[[str], None] = _progress.write) -> list[dict[str, Any]]:
    """Runs (or resumes) the selection into ``out_dir`` (config.json, results.jsonl, results.md);
    returns all records (JSON form)."""
    return [r.to_json() for r in run_study(QgtSelectStudy(config), out_dir, log=log)]
