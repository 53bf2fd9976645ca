"""The cells of the whitepaper QAT tables as data: columns, runs, sizes, config, record."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

from tfquant.errors import TfquantError
from tfquant.qat.bn_correction import BnFold
from tfquant.qat.schedules import ScheduleName
from tfquant.qtypes import Granularity, Mode, Runtime
from tfquant.models.train import TRAIN_EXAMPLES as ZOO_TRAIN_EXAMPLES
from tfquant.simulation.spec import EXECUTED_IN_SIM, EXECUTED_IN_TFLITE, SimSpec
from tfquant.study import TIE_PT, ModelCell, Record  # noqa: F401  (TIE_PT: a threshold of the claims)
from tfquant.study.settings import Sized, check_qat_models, interpreter_runtime, positive_int
from tfquant.zoo_names import QAT_ZOO, UNWRAPPABLE_ZOO

__all__ = [
    "CELLS",
    "EXECUTED_IN_TFLITE",
    "EXPERIMENT",
    "FLOAT",
    "NO_BN",
    "NOT_APPLICABLE",
    "QAT_MODELS",
    "SIZES",
    "TABLES",
    "UNWRAPPABLE_MODELS",
    "WRAP_CHECK",
    "Cell",
    "ModelCell",
    "QatRun",
    "WhitepaperQatConfig",
    "WhitepaperQatRecord",
    "finetune_schedule",
]

EXPERIMENT = "whitepaper_qat"
RESULTS_MD = "results.md"
QAT_MODELS: tuple[str, ...] = QAT_ZOO
"""The zoo models tfmot can wrap (the ViT's attention, LayerNorm and position embedding
have no quantize config)."""
UNWRAPPABLE_MODELS: tuple[str, ...] = UNWRAPPABLE_ZOO
WRAP_CHECK = "tfmot_wrap"
"""The ``cell`` of the record that says why a zoo model is not in the tables (the error
:func:`tfquant.qat.quantize_for_training` raises on it)."""
NOT_APPLICABLE = "not_applicable"
"""Key of a record for a cell that does not apply to its model (Table D without BN)."""
NO_BN = "no Conv2D / DepthwiseConv2D + BatchNormalization pair to fold"

# Thresholds of the claims, in accuracy points (pt = 0.01 top-1).
QAT_NEAR_FLOAT_PT = 1.0
"""'Within X pt of float': the whitepaper's headline for 8-bit QAT (within 1%)."""
RECOVERED_FRACTION = 0.5
"""4-bit QAT 'recovers most of the PTQ loss' when it wins back at least this share of it."""
MIN_PTQ_LOSS_PT = 1.0
"""Below this 4-bit PTQ loss there is too little to recover for the claim to be tested."""
MIN_AGREEMENT = 0.99
"""QAT Keras model vs its .tflite: top-1 agreement the issue asks for (fidelity)."""
_EPS = 1e-9  # thresholds are inclusive: 20 images of 10,000 is 0.2 pt, not 0.2000000000000046


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatRun:
    """One fine-tune: what the QAT model simulates, how it treats BN, its schedule.

    Attributes:
      weight_bits: b of the symmetric narrow-range weight grid.
      activation_bits: b of the affine per-tensor activation grid.
      weight_granularity: One weight scale per output channel or per tensor.
      bn_fold: See :class:`~tfquant.qat.BnFold`.
      schedule: The fine-tuning schedule it starts from (:func:`finetune_schedule` sets its
        BN correction and freeze from ``bn_fold``).
    """

    weight_bits: int
    activation_bits: int = 8
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    bn_fold: BnFold = BnFold.TFMOT
    schedule: ScheduleName = ScheduleName.NVIDIA

    @property
    def name(self) -> str:
        """E.g. ``w4a8_per_channel`` or ``w8a8_per_channel_corrected_whitepaper``."""
        name = f"w{self.weight_bits}a{self.activation_bits}_{self.weight_granularity.value}"
        if self.bn_fold is not BnFold.TFMOT:
            name += f"_{self.bn_fold.value}"
        if self.schedule is not ScheduleName.NVIDIA:
            name += f"_{self.schedule.value}"
        return name

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``recipe``: the schedule's name, the field's name in every record)."""
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "weight_granularity": self.weight_granularity.value, "bn_fold": self.bn_fold.value,
                "recipe": self.schedule.value}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cell:
    """One column of the tables: where it runs and what it quantizes.

    Exactly one of ``mode`` (a .tflite from the converter), ``spec`` (a simulated PTQ model)
    or ``qat`` (a fine-tuned QAT model: its export when ``executed_in`` is tflite, the Keras
    model itself when sim) is set.

    Attributes:
      table: ``A`` .. ``D`` (see the module docstring).
      title: Column heading.
      executed_in: ``tflite`` or ``sim``.
      requires_batch_norm: Only models with a conv + BN pair have this cell (Table D).
    """

    table: str
    title: str
    executed_in: str
    mode: Mode | None = None
    spec: SimSpec | None = None
    qat: QatRun | None = None
    requires_batch_norm: bool = False

    def __post_init__(self) -> None:
        assert sum(x is not None for x in (self.mode, self.spec, self.qat)) == 1, self
        assert self.executed_in in (EXECUTED_IN_TFLITE, EXECUTED_IN_SIM), self
        assert self.spec is None or self.executed_in == EXECUTED_IN_SIM, self
        assert self.mode is None or self.executed_in == EXECUTED_IN_TFLITE, self

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"table": self.table, "title": self.title, "executed_in": self.executed_in}
        if self.mode is not None:
            d["mode"] = self.mode.value
        if self.spec is not None:
            d["spec"] = self.spec.to_dict()
        if self.qat is not None:
            d["qat"] = self.qat.to_dict()
        return d


_TFL, _SIM = EXECUTED_IN_TFLITE, EXECUTED_IN_SIM
_PER_LAYER, _PER_CHANNEL = Granularity.PER_TENSOR, Granularity.PER_CHANNEL
_W8A8 = QatRun(weight_bits=8)
_W4A8 = QatRun(weight_bits=4)


def _ablation(bits: int, fold: BnFold) -> QatRun:
    return QatRun(weight_bits=bits, bn_fold=fold, schedule=ScheduleName.WHITEPAPER)


FLOAT = "float"
CELLS: Mapping[str, Cell] = MappingProxyType({
    FLOAT: Cell(table="A", title="float", executed_in=_TFL, mode=Mode.FP32),
    # Table A: 8 bits.
    "ptq_w8a8_per_channel": Cell(table="A", title="PTQ int8 per-channel", executed_in=_TFL, mode=Mode.INT8),
    "qat_w8a8_per_channel": Cell(table="A", title="QAT int8 per-channel", executed_in=_TFL, qat=_W8A8),
    # Table B: 4-bit weights, 8-bit activations.
    "ptq_w4a8_per_layer": Cell(table="B", title="PTQ per-layer", executed_in=_SIM,
                               spec=SimSpec(weight_bits=4, weight_granularity=_PER_LAYER)),
    "ptq_w4a8_per_channel": Cell(table="B", title="PTQ per-channel", executed_in=_SIM,
                                 spec=SimSpec(weight_bits=4)),
    "qat_w4a8_per_layer": Cell(table="B", title="QAT per-layer", executed_in=_SIM,
                               qat=QatRun(weight_bits=4, weight_granularity=_PER_LAYER,
                                          bn_fold=BnFold.CORRECTED)),
    "qat_w4a8_per_channel": Cell(table="B", title="QAT per-channel", executed_in=_TFL, qat=_W4A8),
    # Table C: low-bit activations (QAT cells are the Keras models).
    "ptq_w8a4_per_channel": Cell(table="C", title="PTQ W8A4", executed_in=_SIM,
                                 spec=SimSpec(activation_bits=4)),
    "qat_w8a4_per_channel": Cell(table="C", title="QAT W8A4", executed_in=_SIM,
                                 qat=QatRun(weight_bits=8, activation_bits=4)),
    "qat_w4a8_per_channel_sim": Cell(table="C", title="QAT W4A8", executed_in=_SIM, qat=_W4A8),
    # Table D: BN folding ablation (the whitepaper's schedule, QAT Keras models).
    "qat_w8a8_naive_fold": Cell(table="D", title="W8 naive fold", executed_in=_SIM,
                                requires_batch_norm=True, qat=_ablation(8, BnFold.NAIVE)),
    "qat_w8a8_bn_corrected": Cell(table="D", title="W8 correction + freeze", executed_in=_SIM,
                                  requires_batch_norm=True, qat=_ablation(8, BnFold.CORRECTED)),
    "qat_w4a8_naive_fold": Cell(table="D", title="W4 naive fold", executed_in=_SIM,
                                requires_batch_norm=True, qat=_ablation(4, BnFold.NAIVE)),
    "qat_w4a8_bn_corrected": Cell(table="D", title="W4 correction + freeze", executed_in=_SIM,
                                  requires_batch_norm=True, qat=_ablation(4, BnFold.CORRECTED)),
})
"""Cell name -> :class:`Cell`; every record's ``cell`` is one of these (or :data:`WRAP_CHECK`)."""

TABLES: Mapping[str, str] = MappingProxyType({
    "A": "Table A: 8-bit PTQ vs QAT",
    "B": "Table B: 4-bit weights, 8-bit activations",
    "C": "Table C: low-bit activations",
    "D": "Table D: BN folding during QAT (naive fold vs correction + freeze)",
})

SIZES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smoke": MappingProxyType({"models": ("cnn",), "train_examples": 256, "limit": 300,
                               "num_calibration_examples": 100}),
    "short": MappingProxyType({"models": ("cnn", "mobilenet_v1"), "train_examples": 4096,
                               "limit": 2000}),
    "full": MappingProxyType({"models": QAT_MODELS, "train_examples": None}),
})
"""Named sizes (the scripts' --smoke / --short / --full): ``smoke`` (what the tests run), ``short`` (the main job's version: Tables A
and B on cnn and mobilenet_v1) and ``full`` (NVIDIA's whole schedule on every image). The
default config sits between: every model and cell, :data:`DEFAULT_TRAIN_EXAMPLES` images."""
DEFAULT_TRAIN_EXAMPLES = 16_384


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperQatConfig(Sized):
    """What the tables run.

    Attributes:
      models: Zoo models (rows), a subset of :data:`QAT_MODELS`.
      cells: Cell names (columns) to run, a subset of :data:`CELLS`; Table D cells run only
        on models with a conv + BN pair.
      train_examples: Fine-tuning images per epoch, the first N of the zoo's 55,000
        training images; None: all 55,000.
      epochs: Fine-tuning epochs; None: NVIDIA's 10% of the model's original schedule
        (:data:`tfquant.models.train.DEFAULT_CONFIGS`), rounded, at least 1.
      freeze_bn_after_steps: Steps before the corrected fold freezes; None:
        min(200, half the fine-tuning steps) (200 is the whitepaper schedule's default).
      seed: Seed of every fine-tune (shuffle order, dropout).
      num_calibration_examples / calibration_seed: The calibration images (training split)
        for PTQ int8, the simulation's activation ranges and the QAT models' starting
        activation ranges.
      limit: Evaluate on the first N test images; None: the whole test split.
    """

    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = SIZES
    models: tuple[str, ...] = QAT_MODELS
    cells: tuple[str, ...] = tuple(CELLS)
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_examples: int | None = DEFAULT_TRAIN_EXAMPLES
    epochs: int | None = None
    freeze_bn_after_steps: int | None = None
    seed: int = 0
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    runtime: Runtime = Runtime.XNNPACK
    threads: int = 1
    batch_size: int = 256
    limit: int | None = None

    def __post_init__(self) -> None:
        check_qat_models(self.models)
        object.__setattr__(self, "models", tuple(self.models))
        if isinstance(self.cells, str) or not self.cells:
            raise TfquantError(f"no cells to run; choose from: {', '.join(CELLS)}")
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown:
            raise TfquantError(f"unknown cell(s) {unknown}; choose from: {', '.join(CELLS)}")
        object.__setattr__(self, "cells", tuple(c for c in CELLS if c in self.cells))
        object.__setattr__(self, "runtime", interpreter_runtime(self.runtime, what="the QAT tables"))
        positive_int(self.train_examples, "train_examples", none_means=f"all {ZOO_TRAIN_EXAMPLES}")
        if self.train_examples is not None and self.train_examples > ZOO_TRAIN_EXAMPLES:
            raise TfquantError(
                f"train_examples must be at most {ZOO_TRAIN_EXAMPLES} (the zoo's training "
                f"images; the rest is its validation split), got {self.train_examples}")
        positive_int(self.epochs, "epochs", none_means="NVIDIA's 10% of the original schedule")
        positive_int(self.freeze_bn_after_steps, "freeze_bn_after_steps",
                      none_means="min(200, half the steps)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TfquantError(f"seed must be an integer, got {self.seed!r}")
        for name in ("num_calibration_examples", "threads", "batch_size"):
            positive_int(getattr(self, name), name)
        positive_int(self.limit, "limit", none_means="whole test split")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``config`` of config.json)."""
        return {**dataclasses.asdict(self), "models": list(self.models), "cells": list(self.cells),
                "runtime": self.runtime.value}



@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperQatRecord(Record):
    """One model x cell (a measured cell, a not-applicable one, or the ViT's wrap check).

    The fields are those of results.jsonl; a cell fills the ones it has (``recipe`` is the
    quantization :class:`~tfquant.recipes.Recipe` of a PTQ .tflite and the fine-tuning
    schedule of a QAT cell, the name both always had in the records).
    """

    experiment: str = EXPERIMENT
    model: str
    cell: str
    table: str | None = None
    reason: str | None = None
    wrappable: bool | None = None
    not_applicable: str | None = None
    executed_in: str | None = None
    recipe: Mapping[str, Any] | None = None
    spec: Mapping[str, Any] | None = None
    qat: Mapping[str, Any] | None = None
    bn_folded_layers: bool | None = None
    epochs: int | None = None
    train_examples: int | None = None
    seed: int | None = None
    num_calibration_examples: int | None = None
    keras_accuracy_before_finetune: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    train_loss: list[float] | None = None
    train_accuracy: list[float] | None = None
    bn_frozen_at_step: int | None = None
    keras_accuracy: float | None = None
    tflite_path: str | None = None
    size_bytes: int | None = None
    weight_storage: Mapping[str, int] | None = None
    agreement: float | None = None
    max_abs_logit_diff: float | None = None
    first_divergent_layer: str | None = None
    runtime: str | None = None
    threads: int | None = None
    accuracy: float | None = None
    n_examples: int | None = None
    n_correct: int | None = None
    float_weight_layers: list[str] | None = None
    same_run_as: str | None = None
    seconds: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)

    def writes_none(self, name: str) -> bool:
        """``bn_frozen_at_step`` of a fine-tuned run and ``first_divergent_layer`` of an
        export comparison are written as null (never froze, nothing diverged)."""
        if name == "bn_frozen_at_step":
            return self.steps is not None
        return name == "first_divergent_layer" and self.agreement is not None


def finetune_schedule(run: QatRun, model_name: str, *, total_steps: int, folds: bool = True,
                      freeze_bn_after_steps: int | None = None) -> Any:
    """The :class:`~tfquant.qat.FinetuneSchedule` of ``run`` on zoo model ``model_name``: the
    run's named schedule for the model's original training
    (:data:`tfquant.models.train.DEFAULT_CONFIGS`) with the BN handling of its fold
    (:func:`tfquant.qat.bn_correction.with_bn_fold`)."""
    from tfquant import qat
    from tfquant.models.train import DEFAULT_CONFIGS
    from tfquant.qat.bn_correction import with_bn_fold

    original = DEFAULT_CONFIGS[model_name]
    schedule = (qat.nvidia_schedule(original) if run.schedule is ScheduleName.NVIDIA
                else qat.whitepaper_schedule(original, bn_correction=False))
    return with_bn_fold(schedule, run.bn_fold, total_steps=total_steps, folds=folds,
                        freeze_bn_after_steps=freeze_bn_after_steps)
