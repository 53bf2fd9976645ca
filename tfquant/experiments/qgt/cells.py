"""The QGT study as data: cells, sizes, config, the record of a cell."""

from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from tfquant.algorithms.qgt_train import Schedule
from tfquant.algorithms.weight_grid import check_scale
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode, Runtime
from tfquant.recipes import Recipe
from tfquant.models.train import TRAIN_EXAMPLES
from tfquant.simulation.spec import EXECUTED_IN_TFLITE, SimSpec
from tfquant.study import TIE_PT, Record
from tfquant.study.settings import Sized, bit_width_map, check_zoo_models, interpreter_runtime, positive_int

__all__ = [
    "BIT_CELLS",
    "BOTTLENECK_FLOAT",
    "BOTTLENECK_QGT",
    "DEFAULTS_CHOSEN_BY",
    "EXECUTED_IN_TFLITE",
    "EXPERIMENT",
    "FLOAT",
    "METHODS",
    "PTQ",
    "QAT",
    "QGT",
    "QGT_A8_SIM",
    "QGT_TFLITE",
    "SIZE",
    "SIZES",
    "TFLITE_CELLS",
    "TIE_PT",
    "TRAIN_EXAMPLES",
    "BitsCell",
    "QgtRecord",
    "QgtStudyConfig",
    "schedule",
]

EXPERIMENT = "qgt"

FLOAT, SIZE, PTQ, QAT, QGT = "float", "size", "ptq", "qat", "qgt"
BOTTLENECK_FLOAT, BOTTLENECK_QGT = "bottleneck_float", "bottleneck_qgt"
QGT_A8_SIM, QGT_TFLITE = "qgt_a8_sim", "qgt_tflite"
METHODS = (QAT, QGT)
"""The two fine-tuning methods."""
BIT_CELLS = (SIZE, PTQ, BOTTLENECK_FLOAT, QAT, QGT, BOTTLENECK_QGT)
"""Cells measured for every model x bits (plus :data:`TFLITE_CELLS` when exporting)."""
TFLITE_CELLS = (QGT_A8_SIM, QGT_TFLITE)


DEFAULTS_CHOSEN_BY = (
    "chosen on validation images only: the cnn's QGT fine-tune for each candidate λ (and finish "
    "fraction) scored on images 55,000..59,999 of the training file (never trained on; the test split "
    "not loaded) by `experiments/qgt_select.py`, committed as `experiments/results/full/qgt_select/` (+ "
    "`full/qgt_select_w4_low/`: smaller λ at 4 bits, where the first sweep's best was its smallest)")
"""How the study's default λ and finish were chosen (results.md says it when a run uses them)."""

SIZES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smoke": MappingProxyType({
        "models": ("cnn",), "bits": (2,), "epochs": 1.0, "train_examples": 384,
        "limit": 300, "num_calibration_examples": 100,
    }),
    "short": MappingProxyType({"models": ("cnn",), "bits": (2, 4), "epochs": 0.5, "limit": 2000}),
})
"""Named sizes (the script's --smoke / --short): ``smoke`` (what the tests run) and ``short`` (the main job's version)."""


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QgtStudyConfig(Sized):
    """What the study runs.

    Attributes:
      models: Zoo models (rows).
      bits: Weight bit widths, each in [2, 8] (the simulation's range).
      dataset, data_dir: Data spec (as in :mod:`tfquant.data`) and its folder.
      epochs: Fine-tuning length of QAT and QGT in passes over ``train_examples`` (may be
        fractional: 0.5 = half the steps of one epoch).
      train_examples: Fine-tune on the first N training images; None = the zoo's 55,000.
      batch_size: Images per step; None = the batch size the model was trained with.
      learning_rate_scale: Peak LR = this x the model's training peak LR
        (:data:`tfquant.models.train.DEFAULT_CONFIGS`), cosine-decayed to 0.
      qgt_strength: Final λ of the QGT regulariser per bit width, ``{bits: λ}`` (a mapping
        or (bits, λ) pairs; one number = the same λ for every bit width); every entry of
        ``bits`` needs one. Defaults: 30 at 2 bits and 1 at 4 bits, with the MSE grid and the
        finish below: the best hard-quantized validation accuracy of the cnn among λ in
        {10, 30, 100} (2 bits) and {0.1, 0.3, 1, 3, 10, 30} (4 bits), finish fraction 0.5 vs 0.3
        (:data:`DEFAULTS_CHOSEN_BY`; :mod:`tfquant.experiments.qgt_select`). Single seed; the
        test split played no part.
      qgt_ramp_fraction: λ grows linearly over this fraction of the steps, in [0, 1].
      grid_scale: Each kernel's per-channel grid step Δ_c: ``max`` (max|W_c| / q_max) or
        ``mse`` (the MSE-optimal range, :func:`tfquant.algorithms.weight_grid.mse_scale`),
        for every cell (PTQ, QAT, QGT's regulariser, the hard rounding and the .tflite).
      qgt_finish_fraction, qgt_finish_factor: QGT's finish (issue 9): for this last fraction
        of the steps the grid is frozen and λ grows geometrically by the factor
        (:class:`tfquant.algorithms.qgt.QGTRegularizer`); 0 = no finish.
      seed: ``keras.utils.set_random_seed`` before every fine-tune (and the data order).
      limit: Evaluate on the first N test images; None = the whole test split.
      export_tflite: Also convert the hard-quantized QGT model to int8 .tflite (cells
        ``qgt_a8_sim`` and ``qgt_tflite``).
      num_calibration_examples, calibration_seed: Activation calibration of those cells.
      runtime, threads: LiteRT interpreter of ``qgt_tflite``.
      eval_batch_size: Examples per forward pass in evaluation.
    """

    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = SIZES
    models: tuple[str, ...] = ("cnn", "mobilenet_v1")
    bits: tuple[int, ...] = (2, 4)
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    epochs: float = 3.0
    train_examples: int | None = None
    batch_size: int | None = None
    learning_rate_scale: float = 0.5
    qgt_strength: Mapping[int, float] | Sequence[tuple[int, float]] | float = (
        (2, 30.0), (4, 1.0),
    )
    qgt_ramp_fraction: float = 1.0
    grid_scale: str = "mse"
    qgt_finish_fraction: float = 0.5
    qgt_finish_factor: float = 1000.0
    seed: int = 0
    limit: int | None = None
    export_tflite: bool = True
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    runtime: Runtime = Runtime.XNNPACK
    threads: int = 1
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.models, str) or not self.models:
            raise TfquantError("no models to run; pass --models with at least one zoo model")
        check_zoo_models(self.models)
        object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))
        if isinstance(self.bits, (str, int)) or not self.bits:
            raise TfquantError(f"bits must be a non-empty list of integers in [2, 8], got {self.bits!r}")
        bad = [b for b in self.bits if not _is_int(b) or not 2 <= b <= 8]
        if bad:
            raise TfquantError(
                f"bits {bad} are not simulated; weight bit widths must be integers in [2, 8]"
            )
        object.__setattr__(self, "bits", tuple(dict.fromkeys(int(b) for b in self.bits)))
        if not _is_number(self.epochs) or not math.isfinite(self.epochs) or self.epochs <= 0:
            raise TfquantError(f"epochs must be a number > 0 (fractions allowed), got {self.epochs!r}")
        object.__setattr__(self, "epochs", float(self.epochs))
        scale = self.learning_rate_scale
        if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
            raise TfquantError(f"learning_rate_scale must be a finite number > 0, got {scale!r}")
        object.__setattr__(self, "learning_rate_scale", float(scale))
        object.__setattr__(self, "qgt_strength", self._checked_strengths())
        ramp = self.qgt_ramp_fraction
        if not _is_number(ramp) or not 0.0 <= ramp <= 1.0:
            raise TfquantError(f"qgt_ramp_fraction must be a number in [0, 1], got {ramp!r}")
        object.__setattr__(self, "qgt_ramp_fraction", float(ramp))
        check_scale(self.grid_scale)
        finish, factor = self.qgt_finish_fraction, self.qgt_finish_factor
        if not _is_number(finish) or not 0.0 <= finish < 1.0:
            raise TfquantError(f"qgt_finish_fraction must be a number in [0, 1), got {finish!r}")
        if not _is_number(factor) or not math.isfinite(factor) or factor < 1.0:
            raise TfquantError(f"qgt_finish_factor must be a finite number >= 1, got {factor!r}")
        object.__setattr__(self, "qgt_finish_fraction", float(finish))
        object.__setattr__(self, "qgt_finish_factor", float(factor))
        for name in ("num_calibration_examples", "threads", "eval_batch_size"):
            positive_int(getattr(self, name), name)
        for name in ("seed", "calibration_seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise TfquantError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("train_examples", "batch_size", "limit"):
            positive_int(getattr(self, name), name, none_means="the default")
        if self.train_examples is not None and self.train_examples > TRAIN_EXAMPLES:
            raise TfquantError(
                f"train_examples={self.train_examples} exceeds the zoo's {TRAIN_EXAMPLES} training "
                "images (the rest of the train split is its validation set); use at most that"
            )
        if not isinstance(self.export_tflite, bool):
            raise TfquantError(f"export_tflite must be True or False, got {self.export_tflite!r}")
        object.__setattr__(self, "runtime", interpreter_runtime(self.runtime, what="the QGT study"))

    def _checked_strengths(self) -> tuple[tuple[int, float], ...]:
        return bit_width_map(self.qgt_strength, self.bits, name="qgt_strength",
                             example="e.g. {2: 10000, 4: 10}, or one number for every bit width")

    def selected_defaults(self) -> bool:
        """Whether this run's λ (for each of its bit widths) and finish are the defaults, i.e. the
        values chosen on validation images (:data:`DEFAULTS_CHOSEN_BY`)."""
        field = {f.name: f.default for f in dataclasses.fields(self)}
        default_strength = dict(field["qgt_strength"])
        return (all(default_strength.get(b) == lam for b, lam in self.qgt_strength)
                and (self.grid_scale, self.qgt_finish_fraction, self.qgt_finish_factor, self.qgt_ramp_fraction)
                == (field["grid_scale"], field["qgt_finish_fraction"], field["qgt_finish_factor"],
                    field["qgt_ramp_fraction"]))

    def strength(self, bits: int) -> float:
        """Final λ of the QGT regulariser at ``bits``."""
        return dict(self.qgt_strength)[bits]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["models"], d["bits"] = list(self.models), list(self.bits)
        d["runtime"] = self.runtime.value
        d["qgt_strength"] = {str(b): lam for b, lam in self.qgt_strength}
        return d

    def cells(self) -> tuple[str, ...]:
        """The cells of one model x bits."""
        return BIT_CELLS + (TFLITE_CELLS if self.export_tflite else ())

    def weight_spec(self, bits: int) -> SimSpec:
        """b-bit symmetric per-channel weights, float activations (PTQ and hard quantization)."""
        return SimSpec(weight_bits=bits, activation_bits=None)

    def recipe(self) -> Recipe:
        """The int8 conversion recipe of ``qgt_tflite`` (calibration provenance filled in)."""
        return Recipe.for_mode(Mode.INT8, dataset=self.dataset, num_calibration_examples=self.num_calibration_examples,
                               calibration_seed=self.calibration_seed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QgtRecord(Record):
    """One model x bits x cell (``bits`` is None for the float cell); the results.jsonl fields.

    ``recipe`` is the quantization :class:`~tfquant.recipes.Recipe` of ``qgt_tflite``.
    """

    experiment: str = EXPERIMENT
    model: str
    bits: int | None = None
    cell: str
    executed_in: str | None = None
    n_examples: int | None = None
    accuracy: float | None = None
    bn_folded: bool | None = None
    packed_bytes: int | None = None
    float32_bytes: int | None = None
    ratio: float | None = None
    per_channel_scales: bool | None = None
    spec: Mapping[str, Any] | None = None
    of: str | None = None
    baseline_accuracy: float | None = None
    residual_sum: float | None = None
    layers: list[Mapping[str, Any]] | None = None
    float_accuracy: float | None = None
    weights_path: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    train_examples: int | None = None
    train_seconds: float | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    qgt_strength: float | None = None
    qgt_ramp_steps: int | None = None
    grid_scale: str | None = None
    grid_scale_max_rel_error: float | None = None
    num_calibration_examples: int | None = None
    recipe: Mapping[str, Any] | None = None
    tflite_path: str | None = None
    runtime: str | None = None
    threads: int | None = None
    n_correct: int | None = None
    size_bytes: int | None = None
    weight_levels: list[Mapping[str, Any]] | None = None
    max_distinct_per_channel: int | None = None
    allowed_levels: int | None = None
    on_b_bit_grid: bool | None = None

    @property
    def key(self) -> tuple[str, int | None, str]:
        return (self.model, self.bits, self.cell)

    def writes_none(self, name: str) -> bool:
        """``bits`` is always written (null: the float cell, which has no bit width)."""
        return name == "bits"


@dataclasses.dataclass(frozen=True)
class BitsCell:
    """A study cell: one model x bit width (None for ``float``) x cell."""

    model: str
    bits: int | None
    cell: str

    @property
    def key(self) -> tuple[str, int | None, str]:
        return (self.model, self.bits, self.cell)


def schedule(config: QgtStudyConfig, model_name: str, n_train: int) -> Schedule:
    """Steps = round(epochs x n_train / batch), split into ceil(epochs) progress epochs."""
    from tfquant.models.train import DEFAULT_CONFIGS

    trained = DEFAULT_CONFIGS[model_name]
    return Schedule.for_epochs(config.epochs, n_train, batch_size=config.batch_size or trained.batch_size,
                               learning_rate=config.learning_rate_scale * trained.learning_rate)
