"""The whitepaper's quantization-aware-training tables on the zoo, each cell tflite or sim.

Krishnamoorthi 2018 ("Quantizing deep convolutional networks for efficient inference: A
whitepaper", arXiv 1806.08342), the tables that need QAT, on the zoo models tfmot can wrap
(cnn, mobilenet_v1, mobilenet_v2, resnet; the ViT is not wrappable, see :data:`WRAP_CHECK`).
Every cell is measured either in the LiteRT interpreter (``executed_in: tflite``) or in
TensorFlow fake quantization (``executed_in: sim``), never a mix:

* Table A, 8 bits: float; PTQ int8 per-channel (tflite); QAT int8 per-channel, exported
  with :func:`tfquant.qat.export_tflite` (tflite), with the QAT Keras model's top-1
  agreement with its .tflite (:func:`tfquant.qat.compare`).
* Table B, 4-bit weights / 8-bit activations: PTQ per-layer and per-channel (sim,
  :mod:`tfquant.simulation`, symmetric narrow-range weights: the grid QAT trains on); QAT
  per-channel (tflite: the converter stores 4-bit per-channel QAT kernels as INT4 and
  LiteRT runs them; the agreement is recorded) and QAT per-layer (sim). Per-layer weights
  must carry one scale for the *folded* kernel γW/σ, which tfmot's BN handling cannot do
  (a per-tensor scale cannot absorb a BatchNormalization, and inference-folding BN first
  leaves a Conv2D followed by a ReLU layer, whose weight fake quant tfmot's
  ``LayerReLUQuantize`` transform replaces by a no-op), so per-layer QAT uses the BN-folded
  QAT layers with correction + freeze; those do not export, hence sim.
* Table C, low-bit activations: PTQ W8A4 (sim); QAT W8A4 and QAT W4A8 (sim: the QAT Keras
  model itself, whose fake-quant graph is the simulation; TFLite has no 4-bit activation
  kernels). The W4A8 QAT cell is the Keras side of Table B's exported QAT per-channel run.
* Table D, BN folding ablation (models with conv + BN pairs): QAT with the naive fold
  (weights folded with batch statistics, no correction, no freeze) vs the whitepaper's
  correction + freeze after N steps, each at 8-bit and 4-bit weights
  (:mod:`tfquant.qat.bn_correction`: the BN-folded layers of
  :mod:`tfquant.algorithms.bn_fold_qat` fake-quantize their folded kernels with their own
  ``weight_quantizer``; tfmot fake-quantizes everything else). Evaluated as Keras models
  (sim): the folded kernels carry no tfmot weight fake quant, so they do not export.

Fine-tuning (:func:`tfquant.qat.finetune`): Tables A-C use NVIDIA's recipe
(:func:`tfquant.qat.nvidia_recipe`: Adam at 1% of the original learning rate,
cosine decay, 10% of the original schedule = 1 epoch for every zoo model, from calibrated
activation ranges); Table D the whitepaper's (:func:`tfquant.qat.whitepaper_recipe`:
SGD with momentum from the float checkpoint) for the same number of epochs, so the two arms
differ only in the fold. ``train_examples`` caps the training images per epoch (the
default and the short and smoke presets fine-tune on a prefix of the zoo's 55,000 training
images; the ``full`` preset on all of them). Before fine-tuning, every QAT model is checked
to fake-quantize every kernel (:func:`tfquant.qat.annotate.float_kernels`; since
:func:`~tfquant.qat.quantize_for_training` raises on a kernel left in float, this is
a second guard); one that does not is recorded as an error rather than measured under a
label it does not deserve.

One JSON record per model x cell is appended to ``results.jsonl`` as soon as it is
measured, so an interrupted run resumes; ``results.md`` is rewritten from the records at
the end, including a "Did the paper's findings hold?" section computed from them
(:func:`findings`).
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfquant import progress as _progress
from tfquant.evaluation import fidelity
from tfquant.errors import TfquantError
from tfquant.study.provenance import open_run
from tfquant.experiments.whitepaper_ptq import HELD, NOT_HELD, NOT_TESTED, PARTLY, Finding
from tfquant.io_utils import (
    append_jsonl,
    read_jsonl,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from tfquant.qtypes import Granularity, Mode, Runtime
from tfquant.recipes import Recipe
from tfquant.simulation.spec import EXECUTED_IN_SIM, SimSpec

EXPERIMENT = "whitepaper_qat"
RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"
EXECUTED_IN_TFLITE = "tflite"
QAT_MODELS: tuple[str, ...] = ("cnn", "mobilenet_v1", "mobilenet_v2", "resnet")
"""The zoo models tfmot can wrap (the ViT's attention, LayerNorm and position embedding
have no quantize config)."""
UNWRAPPABLE_MODELS: tuple[str, ...] = ("vit",)
WRAP_CHECK = "tfmot_wrap"
"""The ``cell`` of the record that says why a zoo model is not in the tables (the error
:func:`tfquant.qat.quantize_for_training` raises on it)."""
NOT_APPLICABLE = "not_applicable"
"""Key of a record for a cell that does not apply to its model (Table D without BN)."""
NO_BN = "no Conv2D / DepthwiseConv2D + BatchNormalization pair to fold"
ZOO_TRAIN_EXAMPLES = 55_000
"""The zoo trained on the first 55,000 training images (:mod:`tfquant.models.train`)."""

# Thresholds of the findings, in accuracy points (pt = 0.01 top-1).
QAT_NEAR_FLOAT_PT = 1.0
"""'Within X pt of float': the whitepaper's headline for 8-bit QAT (within 1%)."""
RECOVERED_FRACTION = 0.5
"""4-bit QAT 'recovers most of the PTQ loss' when it wins back at least this share of it."""
MIN_PTQ_LOSS_PT = 1.0
"""Below this 4-bit PTQ loss there is too little to recover for the claim to be tested."""
TIE_PT = 0.2
"""'A is at least as good as B' allows A to be this many points below B (test-set noise)."""
MIN_AGREEMENT = 0.99
"""QAT Keras model vs its .tflite: top-1 agreement the issue asks for (fidelity)."""
_EPS = 1e-9  # thresholds are inclusive: 20 images of 10,000 is 0.2 pt, not 0.2000000000000046


class BnFold(str, enum.Enum):
    """How a QAT run treats batch normalization.

    ``tfmot``: tfmot keeps each BN after its conv, trains it with batch statistics and
    fake-quantizes the unfolded kernel; the converter folds γ/σ into the per-channel scales
    at export (tfmot's default). ``naive`` / ``corrected``: BN-folded QAT layers
    (:mod:`tfquant.qat.bn_correction`), the two arms of the whitepaper's ablation
    (Sec. 3.2.2). On a model without conv + BN pairs there is nothing to fold and a folded
    run is plain tfmot QAT.
    """

    TFMOT = "tfmot"
    NAIVE = "naive"
    CORRECTED = "corrected"

    def __str__(self) -> str:
        return self.value


class RecipePreset(str, enum.Enum):
    """The fine-tuning recipe of a run: :func:`~tfquant.qat.nvidia_recipe` or
    :func:`~tfquant.qat.whitepaper_recipe`."""

    NVIDIA = "nvidia"
    WHITEPAPER = "whitepaper"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, kw_only=True)
class QatRun:
    """One fine-tune: what the QAT model simulates and how it treats BN.

    Attributes:
      weight_bits: b of the symmetric narrow-range weight grid.
      activation_bits: b of the affine per-tensor activation grid.
      weight_granularity: One weight scale per output channel or per tensor.
      bn_fold: See :class:`BnFold`.
      recipe: The fine-tuning recipe it starts from (:func:`finetune_recipe` sets its BN
        correction and freeze from ``bn_fold``).
    """

    weight_bits: int
    activation_bits: int = 8
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    bn_fold: BnFold = BnFold.TFMOT
    recipe: RecipePreset = RecipePreset.NVIDIA

    @property
    def name(self) -> str:
        """E.g. ``w4a8_per_channel`` or ``w8a8_per_channel_corrected_whitepaper``."""
        name = f"w{self.weight_bits}a{self.activation_bits}_{self.weight_granularity.value}"
        if self.bn_fold is not BnFold.TFMOT:
            name += f"_{self.bn_fold.value}"
        if self.recipe is not RecipePreset.NVIDIA:
            name += f"_{self.recipe.value}"
        return name

    def to_dict(self) -> dict[str, Any]:
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "weight_granularity": self.weight_granularity.value, "bn_fold": self.bn_fold.value,
                "recipe": self.recipe.value}


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
    return QatRun(weight_bits=bits, bn_fold=fold, recipe=RecipePreset.WHITEPAPER)


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
    # Table D: BN folding ablation (the whitepaper's recipe, QAT Keras models).
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

PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smoke": MappingProxyType({"models": ("cnn",), "train_examples": 256, "limit": 300,
                               "num_calibration_examples": 100}),
    "short": MappingProxyType({"models": ("cnn", "mobilenet_v1"), "train_examples": 4096,
                               "limit": 2000}),
    "full": MappingProxyType({"models": QAT_MODELS, "train_examples": None}),
})
"""Named sizes: ``smoke`` (what the tests run), ``short`` (the main job's version: Tables A
and B on cnn and mobilenet_v1) and ``full`` (NVIDIA's whole schedule on every image). The
default config sits between: every model and cell, :data:`DEFAULT_TRAIN_EXAMPLES` images."""
DEFAULT_TRAIN_EXAMPLES = 16_384


def _positive_int(value: Any, name: str, *, none_means: str | None = None) -> None:
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        extra = f" or None ({none_means})" if none_means else ""
        raise TfquantError(f"{name} must be a positive integer{extra}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperQatConfig:
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
        min(200, half the fine-tuning steps) (200 is the whitepaper recipe's default).
      seed: Seed of every fine-tune (shuffle order, dropout).
      num_calibration_examples / calibration_seed: The calibration images (training split)
        for PTQ int8, the simulation's activation ranges and the QAT models' starting
        activation ranges.
      limit: Evaluate on the first N test images; None: the whole test split.
    """

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
        from tfquant.models import ZOO

        if isinstance(self.models, str) or not self.models:
            raise TfquantError("no models to run; pass --models with at least one of: "
                               f"{', '.join(QAT_MODELS)}")
        for m in self.models:
            if m in UNWRAPPABLE_MODELS:
                raise TfquantError(
                    f"zoo model {m!r} cannot be wrapped for QAT by tfmot (its attention, "
                    "LayerNormalization and position embedding have no quantize config); "
                    f"choose from: {', '.join(QAT_MODELS)}")
            if m not in ZOO or m not in QAT_MODELS:
                raise TfquantError(f"unknown zoo model {m!r}; choose from: {', '.join(QAT_MODELS)}")
        object.__setattr__(self, "models", tuple(self.models))
        if isinstance(self.cells, str) or not self.cells:
            raise TfquantError(f"no cells to run; choose from: {', '.join(CELLS)}")
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown:
            raise TfquantError(f"unknown cell(s) {unknown}; choose from: {', '.join(CELLS)}")
        object.__setattr__(self, "cells", tuple(c for c in CELLS if c in self.cells))
        object.__setattr__(self, "runtime", Runtime.parse(self.runtime, what="runtime"))
        if self.runtime is Runtime.DELEGATE:
            raise TfquantError("the tables run xnnpack or builtin; evaluate a delegate with "
                               "'python -m tfquant evaluate'")
        _positive_int(self.train_examples, "train_examples", none_means=f"all {ZOO_TRAIN_EXAMPLES}")
        if self.train_examples is not None and self.train_examples > ZOO_TRAIN_EXAMPLES:
            raise TfquantError(
                f"train_examples must be at most {ZOO_TRAIN_EXAMPLES} (the zoo's training "
                f"images; the rest is its validation split), got {self.train_examples}")
        _positive_int(self.epochs, "epochs", none_means="NVIDIA's 10% of the original schedule")
        _positive_int(self.freeze_bn_after_steps, "freeze_bn_after_steps",
                      none_means="min(200, half the steps)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TfquantError(f"seed must be an integer, got {self.seed!r}")
        for name in ("num_calibration_examples", "threads", "batch_size"):
            _positive_int(getattr(self, name), name)
        _positive_int(self.limit, "limit", none_means="whole test split")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "WhitepaperQatConfig":
        """The config of preset ``name`` (:data:`PRESETS`), with ``overrides`` applied."""
        if name not in PRESETS:
            raise TfquantError(f"unknown preset {name!r}; choose from: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(models=list(self.models), cells=list(self.cells), runtime=self.runtime.value)
        return d

    def ptq_recipe(self, cell: Cell) -> Recipe:
        """The conversion recipe of a PTQ tflite cell (calibration provenance filled in)."""
        assert cell.mode is not None
        calibrated = cell.mode.needs_calibration
        return Recipe(
            mode=cell.mode,
            weight_granularity=Granularity.PER_CHANNEL,
            num_calibration_examples=self.num_calibration_examples,
            calibration_seed=self.calibration_seed,
            calibration_data=self.dataset if calibrated else None,
        )


def finetune_recipe(run: QatRun, model_name: str, *, total_steps: int, folds: bool = True,
                    freeze_bn_after_steps: int | None = None) -> Any:
    """The :class:`~tfquant.qat.FinetuneRecipe` of ``run`` on zoo model ``model_name``.

    The run's preset for the model's original training
    (:data:`tfquant.models.train.DEFAULT_CONFIGS`), with the BN handling of its fold: the
    corrected fold freezes after ``freeze_bn_after_steps`` steps (None: min(200,
    total_steps // 2), at least 1); the naive fold never freezes; tfmot's BN layers keep
    the preset's freeze (NVIDIA: none). ``folds=False`` (the model has no conv + BN pair)
    turns a folded run into plain QAT: no correction, no freeze.
    """
    from tfquant import qat
    from tfquant.qat.recipes import WHITEPAPER_FREEZE_BN_AFTER_STEPS
    from tfquant.models.train import DEFAULT_CONFIGS

    original = DEFAULT_CONFIGS[model_name]
    if run.recipe is RecipePreset.NVIDIA:
        recipe = qat.nvidia_recipe(original)
    else:
        recipe = qat.whitepaper_recipe(original, bn_correction=False)
    if run.bn_fold is BnFold.TFMOT:
        return recipe
    if run.bn_fold is BnFold.NAIVE or not folds:
        return recipe.replace(bn_correction=False, freeze_bn_after_steps=None)
    freeze = freeze_bn_after_steps or max(1, min(WHITEPAPER_FREEZE_BN_AFTER_STEPS, total_steps // 2))
    return recipe.replace(bn_correction=True, freeze_bn_after_steps=freeze)


def stored_weight_types(tflite: bytes) -> dict[str, int]:
    """How many weight tensors of conv / depthwise / fully-connected ops the flatbuffer stores
    as each type (``INT4``, ``INT8``, ``FLOAT32``), read from the schema (LiteRT unpacks INT4
    to int8 at load, so the interpreter cannot tell)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    weight_ops = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
    model = schema.Model.GetRootAsModel(tflite, 0)
    graph = model.Subgraphs(0)
    out: dict[str, int] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if ops.get(builtin) not in weight_ops:
            continue
        tensor = graph.Tensors(op.Inputs(1))
        kind = names.get(tensor.Type(), str(tensor.Type()))
        out[kind] = out.get(kind, 0) + 1
    return out


def _key(r: Mapping[str, Any]) -> tuple[str, str]:
    return (r["model"], r["cell"])


def _keras_accuracy(qat_model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    """Top-1 accuracy of a (QAT) Keras model in inference mode."""
    logits = np.asarray(qat_model.predict(x, batch_size=batch_size, verbose=0))
    return float(np.count_nonzero(logits.argmax(axis=1) == y)) / len(y)


def _has_batch_norm_pairs(model: Any) -> bool:
    """Whether ``model`` has a Conv2D / DepthwiseConv2D + BN pair the QAT fold replaces."""
    import tf_keras as keras

    from tfquant.algorithms import foldable_pairs

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return any(type(model.get_layer(p.layer)) in kinds for p in foldable_pairs(model))


def _wrap_check(model_name: str) -> dict[str, Any]:
    """Why tfmot cannot wrap ``model_name`` (the untrained architecture is enough to ask)."""
    from tfquant import models
    from tfquant import qat

    try:
        qat.quantize_for_training(models.build_architecture(model_name))
    except TfquantError as e:
        return {"experiment": EXPERIMENT, "model": model_name, "cell": WRAP_CHECK,
                "wrappable": False, "reason": str(e)}
    return {"experiment": EXPERIMENT, "model": model_name, "cell": WRAP_CHECK, "wrappable": True}


@dataclasses.dataclass(frozen=True)
class _Data:
    """The arrays of a run: test set, fine-tuning set, calibration images."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_cal: np.ndarray


def _ptq_record(model: Any, name: str, config: WhitepaperQatConfig, arrays: _Data,
                folder: Path) -> dict[str, Any]:
    """The measurements of a float / PTQ cell (a .tflite or a simulation).

    Raises:
      TfquantError: conversion, simulation or evaluation failed.
    """
    from tfquant import convert, simulation
    from tfquant.evaluation import evaluate_accuracy, file_size

    cell = CELLS[name]
    start = time.perf_counter()
    if cell.spec is not None:
        needs_cal = cell.spec.quantizes_activations
        result = simulation.evaluate(model, cell.spec, arrays.x_test, arrays.y_test,
                                     calibration_data=arrays.x_cal if needs_cal else None,
                                     batch_size=config.batch_size)
        return {"spec": cell.spec.to_dict(),
                "num_calibration_examples": len(arrays.x_cal) if needs_cal else 0,
                "accuracy": result.accuracy, "n_examples": result.n_examples,
                "n_correct": result.n_correct,
                "float_weight_layers": list(result.float_weight_layers),
                "seconds": round(time.perf_counter() - start, 3)}
    recipe = config.ptq_recipe(cell)
    path = folder / f"{name}.tflite"
    tflite = convert.convert(model, recipe,
                             calibration_data=arrays.x_cal if recipe.mode.needs_calibration else None)
    convert.save(tflite, str(path), recipe)
    acc = evaluate_accuracy(path, arrays.x_test, arrays.y_test, runtime=config.runtime,
                            num_threads=config.threads, batch_size=config.batch_size)
    return {"recipe": recipe.to_dict(), "tflite_path": str(path), "size_bytes": file_size(path),
            "runtime": config.runtime.value, "threads": config.threads,
            "accuracy": acc.accuracy, "n_examples": acc.n_examples, "n_correct": acc.n_correct,
            "seconds": round(time.perf_counter() - start, 3)}


def _qat_records(
    model: Any,
    model_name: str,
    run: QatRun,
    names: Sequence[str],
    *,
    folds: bool,
    config: WhitepaperQatConfig,
    arrays: _Data,
    folder: Path,
    log: Callable[[str], None],
    verbose: bool,
    tensorboard_dir: str | Path | None,
    checkpoint_dir: str | Path | None,
) -> list[dict[str, Any]]:
    """One fine-tune and the records of the cells ``names`` that read it (errors included).

    Quantize (tfmot, or BN-folded layers when the run folds and the model has BN), check that
    every kernel is fake-quantized, measure the Keras accuracy at the start, fine-tune,
    export and compare when a tflite cell reads the run, and evaluate the Keras model for the
    sim cells.
    """
    from tfquant import qat
    from tfquant.qat import bn_correction
    from tfquant.qat.annotate import float_kernels
    from tfquant.evaluation import file_size
    from tfquant.models.train import DEFAULT_CONFIGS

    original = DEFAULT_CONFIGS[model_name]
    epochs = config.epochs or qat.nvidia_recipe(original).epochs_for(original.epochs)
    steps = epochs * -(-len(arrays.x_train) // original.batch_size)
    recipe = finetune_recipe(run, model_name, total_steps=steps, folds=folds,
                             freeze_bn_after_steps=config.freeze_bn_after_steps)
    folded = run.bn_fold is not BnFold.TFMOT and folds
    common: dict[str, Any] = {
        "experiment": EXPERIMENT, "model": model_name, "qat": run.to_dict(),
        "bn_folded_layers": folded, "recipe": recipe.to_dict(), "epochs": epochs,
        "train_examples": len(arrays.x_train), "seed": config.seed,
        "num_calibration_examples": len(arrays.x_cal)}

    def cell_records(**fields: Any) -> list[dict[str, Any]]:
        return [{**common, "cell": n, "table": CELLS[n].table,
                 "executed_in": CELLS[n].executed_in, **fields} for n in names]

    freeze = recipe.freeze_bn_after_steps
    bn = run.bn_fold.value if folded else ("tfmot" if folds else "none in the model")
    log(f"{model_name:>13} QAT {run.name}: {recipe.name} recipe, {epochs} epoch(s) x {steps // epochs} "
        f"steps on {len(arrays.x_train)} images, BN {bn}"
        + (f", freeze after {freeze} steps" if freeze else ""))
    start = time.perf_counter()
    try:
        kwargs = dict(weight_bits=run.weight_bits, activation_bits=run.activation_bits,
                      weight_granularity=run.weight_granularity, calibration_data=arrays.x_cal)
        if folded:
            qat_model = bn_correction.quantize_folded_for_training(model, recipe, **kwargs)
        else:
            qat_model = qat.quantize_for_training(model, **kwargs)
        unquantized = float_kernels(qat_model)
        if unquantized:
            raise TfquantError(
                f"QAT left the kernels of {', '.join(unquantized)} without a weight fake quant, "
                "so the cell would not be what it says")
        common["keras_accuracy_before_finetune"] = _keras_accuracy(
            qat_model, arrays.x_test, arrays.y_test, config.batch_size)
        sub = Path(model_name) / run.name
        result = qat.finetune(
            qat_model, recipe, arrays.x_train, arrays.y_train, epochs=epochs, seed=config.seed,
            log_dir=Path(tensorboard_dir) / sub if tensorboard_dir else None,
            checkpoint_dir=Path(checkpoint_dir) / sub if checkpoint_dir else None,
            verbose=verbose)
    except TfquantError as e:
        return cell_records(error=str(e))
    common.update(steps=result.steps, train_seconds=result.seconds,
                  train_loss=list(result.loss), train_accuracy=list(result.accuracy),
                  bn_frozen_at_step=result.bn_frozen_at_step)
    out: list[dict[str, Any]] = []
    exported = [n for n in names if CELLS[n].executed_in == EXECUTED_IN_TFLITE]
    export: dict[str, Any] = {}
    if exported:
        path = folder / f"{exported[0]}.tflite"
        try:
            tflite = qat.export_tflite(qat_model)
            write_bytes_atomic(path, tflite)
            write_json_atomic(path.with_suffix(".qat.json"), {
                "qat": run.to_dict(), "finetune_recipe": recipe.to_dict(), "epochs": epochs,
                "train_examples": len(arrays.x_train), "seed": config.seed})
            report = fidelity.compare(qat_model, tflite, arrays.x_test, arrays.y_test,
                                 batch_size=config.batch_size, runtime=config.runtime)
        except TfquantError as e:
            out += [r for r in cell_records(error=str(e)) if r["cell"] in exported]
        else:
            common["keras_accuracy"] = report.keras_accuracy
            export = {"tflite_path": str(path), "size_bytes": file_size(path),
                      "weight_storage": stored_weight_types(tflite), "agreement": report.agreement,
                      "max_abs_logit_diff": report.max_abs_logit_diff,
                      "first_divergent_layer": report.first_divergent_layer,
                      "runtime": config.runtime.value, "accuracy": report.tflite_accuracy}
    if "keras_accuracy" not in common:
        common["keras_accuracy"] = _keras_accuracy(qat_model, arrays.x_test, arrays.y_test,
                                                   config.batch_size)
    n = len(arrays.y_test)
    seconds = round(time.perf_counter() - start, 3)
    for rec in cell_records(n_examples=n, seconds=seconds):
        if rec["executed_in"] == EXECUTED_IN_TFLITE:
            if not export:
                continue  # its error record is in ``out`` already
            rec.update(export)
        else:
            rec["accuracy"] = rec["keras_accuracy"]
            if export:
                rec["same_run_as"] = exported[0]
        rec["n_correct"] = int(round(rec["accuracy"] * n))
        out.append(rec)
    return out


def run_whitepaper_qat(
    config: WhitepaperQatConfig,
    out_dir: str | Path,
    *,
    log: Callable[[str], None] = _progress.write,
    verbose: bool = True,
    tensorboard_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) the QAT tables into ``out_dir``; returns all records of the run.

    Layout: ``config.json`` (config, cell definitions, weights' sha256, provenance of every
    run into the folder), ``results.jsonl`` (one record per model x cell -- a Table D cell
    of a model without BN is recorded as ``not_applicable`` -- plus a :data:`WRAP_CHECK`
    record per unwrappable zoo model), ``models/<model>/<cell>.tflite`` with its recipe
    (PTQ: ``.recipe.json``; QAT: ``.qat.json`` = the run, the fine-tuning recipe, epochs,
    images, seed), ``results.md``.

    Args:
      config: What to run.
      out_dir: The run folder.
      log: Progress lines: one per cell and one per fine-tune.
      verbose: Let :func:`~tfquant.qat.finetune` print one line per epoch.
      tensorboard_dir: If set, TensorBoard scalars of each fine-tune in
        ``<dir>/<model>/<run>``.
      checkpoint_dir: If set, a checkpoint per epoch of each fine-tune in
        ``<dir>/<model>/<run>``.

    Raises:
      TfquantError: ``out_dir`` holds a run with a different config; data or model errors.
        A cell that cannot be produced or evaluated is recorded with an ``error`` instead.
    """
    from tfquant import _env  # noqa: F401  (before TensorFlow)

    import tf_keras as keras

    from tfquant import data, models

    out = Path(out_dir)
    open_run(out, {
        "config": config.to_dict(),
        "cells": {name: CELLS[name].to_dict() for name in config.cells},
        "weights_sha256": {m: models.trained_info(m).get("weights_sha256") for m in config.models},
    })
    results_path = out / RESULTS_JSONL
    done = {_key(r) for r in read_jsonl(results_path) if "error" not in r}

    def record(rec: dict[str, Any]) -> None:
        append_jsonl(results_path, rec)
        head = f"{rec['model']:>13} {rec['cell']:<26}"
        if "error" in rec:
            log(f"{head} failed: {rec['error']}")
            return
        done.add(_key(rec))
        if rec["cell"] == WRAP_CHECK:
            log(f"{head} wrappable: {rec['wrappable']}")
        elif NOT_APPLICABLE in rec:
            log(f"{head} n/a: {rec[NOT_APPLICABLE]}")
        else:
            extra = f"  agreement {rec['agreement']:.4f}" if "agreement" in rec else ""
            log(f"{head} top-1 {rec['accuracy']:.4f}  ({rec['executed_in']}){extra}")

    for name in UNWRAPPABLE_MODELS:
        if (name, WRAP_CHECK) not in done:
            record(_wrap_check(name))

    x_test, y_test, info = data.load_numpy(config.dataset, "test", data_dir=config.data_dir,
                                           limit=config.limit)
    x_train, y_train, _ = data.load_numpy(config.dataset, "train", data_dir=config.data_dir,
                                          limit=config.train_examples or ZOO_TRAIN_EXAMPLES)
    arrays = _Data(
        x_test=x_test, y_test=np.asarray(y_test), x_train=np.array(x_train),
        y_train=np.array(y_train),
        x_cal=data.calibration_set(config.dataset, config.num_calibration_examples,
                                   seed=config.calibration_seed, data_dir=config.data_dir))
    log(f"test set: {info.name}/test, {len(x_test)} examples; fine-tuning on "
        f"{len(arrays.x_train)} training images; {len(arrays.x_cal)} calibration images")

    for model_name in _progress.progress(config.models, desc="whitepaper QAT", unit="model"):
        todo = [c for c in config.cells if (model_name, c) not in done]
        if not todo:
            continue
        keras.backend.clear_session()
        gc.collect()
        model = models.build(model_name)
        folds = _has_batch_norm_pairs(model)
        base = {"experiment": EXPERIMENT, "model": model_name}
        if not folds:
            for name in [c for c in todo if CELLS[c].requires_batch_norm]:
                record({**base, "cell": name, "table": CELLS[name].table, NOT_APPLICABLE: NO_BN})
            todo = [c for c in todo if not CELLS[c].requires_batch_norm]
        folder = out / "models" / model_name
        for name in [c for c in todo if CELLS[c].qat is None]:
            cell = CELLS[name]
            rec = {**base, "cell": name, "table": cell.table, "executed_in": cell.executed_in}
            try:
                record({**rec, **_ptq_record(model, name, config, arrays, folder)})
            except TfquantError as e:
                record({**rec, "error": str(e)})
        runs: dict[QatRun, list[str]] = {}
        for name in todo:
            if CELLS[name].qat is not None:
                runs.setdefault(CELLS[name].qat, []).append(name)
        for run, names in runs.items():
            for rec in _qat_records(model, model_name, run, names, folds=folds, config=config,
                                    arrays=arrays, folder=folder, log=log, verbose=verbose,
                                    tensorboard_dir=tensorboard_dir, checkpoint_dir=checkpoint_dir):
                record(rec)
    records = read_jsonl(results_path)
    write_text_atomic(out / RESULTS_MD, results_markdown(records, config))
    return records


# ----------------------------------------------------------------------------- findings


def _accuracies(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    return {_key(r): float(r["accuracy"]) for r in records
            if "error" not in r and r.get("cell") in CELLS and "accuracy" in r}


def _signed(pt: float | None) -> str:
    return "n/a" if pt is None else f"{pt + 0.0:+.2f} pt"


def _verdict(results: Mapping[str, bool | None], text: Mapping[str, str]) -> tuple[str, str]:
    """(ours, verdict) of a claim that must hold on every measured case (None: not measured)."""
    measured = [k for k, v in results.items() if v is not None]
    ours = "; ".join(f"{k} {text[k]}" for k in text) or "no records"
    if not measured:
        return ours, NOT_TESTED
    failed = [k for k in measured if not results[k]]
    if not failed:
        return ours, HELD
    ours += f" (fails on {', '.join(failed)})"
    return ours, NOT_HELD if len(failed) == len(measured) else PARTLY


def findings(records: Sequence[Mapping[str, Any]], models: Sequence[str]) -> list[Finding]:
    """The paper's qualitative QAT claims, each tested on ``records`` with a stated threshold.

    Changes are in points (pt) of top-1 against the fp32 .tflite of the same model.
    Thresholds: :data:`QAT_NEAR_FLOAT_PT`, :data:`RECOVERED_FRACTION`,
    :data:`MIN_PTQ_LOSS_PT`, :data:`TIE_PT`, :data:`MIN_AGREEMENT`.
    """
    acc = _accuracies(records)
    by_key = {_key(r): r for r in records if "error" not in r}
    out: list[Finding] = []

    def pt(m: str, cell: str, ref: str = FLOAT) -> float | None:
        """Points of ``cell`` minus ``ref`` (negative: a loss)."""
        if (m, cell) not in acc or (m, ref) not in acc:
            return None
        return 100.0 * (acc[(m, cell)] - acc[(m, ref)])

    # 8-bit QAT near float.
    res, text = {}, {}
    for m in models:
        d = pt(m, "qat_w8a8_per_channel")
        if d is not None:
            res[m], text[m] = d >= -QAT_NEAR_FLOAT_PT - _EPS, _signed(d)
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"8-bit QAT (int8 per-channel, tflite) within {QAT_NEAR_FLOAT_PT:g} pt of float on every model",
        "QAT brings 8-bit models to within 1% of float", ours, verdict))
    # QAT >= PTQ at 8 bits.
    res, text = {}, {}
    for m in models:
        d = pt(m, "qat_w8a8_per_channel", "ptq_w8a8_per_channel")
        if d is not None:
            res[m], text[m] = d >= -TIE_PT - _EPS, f"QAT - PTQ {_signed(d)}"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"8-bit QAT >= 8-bit PTQ (both int8 per-channel, tflite; tie within {TIE_PT:g} pt)",
        "QAT recovers what PTQ loses", ours, verdict))
    # 4-bit QAT recovers most of the PTQ loss.
    res, text = {}, {}
    for m in models:
        ptq, q = pt(m, "ptq_w4a8_per_channel"), pt(m, "qat_w4a8_per_channel")
        if ptq is None or q is None:
            continue
        if -ptq < MIN_PTQ_LOSS_PT - _EPS:
            res[m], text[m] = None, (f"PTQ {_signed(ptq)}, QAT {_signed(q)} (PTQ loses < "
                                     f"{MIN_PTQ_LOSS_PT:g} pt: nothing to recover, not counted)")
            continue
        recovered = (q - ptq) / -ptq
        res[m] = recovered >= RECOVERED_FRACTION - _EPS
        text[m] = f"PTQ {_signed(ptq)}, QAT {_signed(q)}, recovered {100 * recovered:.0f}%"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"4-bit weights: QAT per-channel (tflite) recovers at least {100 * RECOVERED_FRACTION:g}% "
        f"of the PTQ per-channel (sim) loss, where PTQ loses >= {MIN_PTQ_LOSS_PT:g} pt",
        "MobileNet-v1: PTQ collapses (0.001-0.02), QAT per-channel 0.65 (float 0.709); "
        "ResNet-v1-50 QAT 0.732 (float 0.752)", ours, verdict))
    # Per-channel >= per-layer at 4-bit QAT.
    res, text = {}, {}
    for m in models:
        d = pt(m, "qat_w4a8_per_channel", "qat_w4a8_per_layer")
        if d is not None:
            res[m], text[m] = d >= -TIE_PT - _EPS, f"per-channel - per-layer {_signed(d)}"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"4-bit QAT: per-channel (tflite) >= per-layer (sim; BN-folded layers) weights (tie "
        f"within {TIE_PT:g} pt)",
        "per-channel weights are what make 4-bit weights workable", ours, verdict))
    # Low-bit activations hurt more than low-bit weights (QAT, sim).
    res, text = {}, {}
    for m in models:
        a4, w4 = pt(m, "qat_w8a4_per_channel"), pt(m, "qat_w4a8_per_channel_sim")
        if a4 is None or w4 is None:
            continue
        res[m] = a4 < w4 - TIE_PT - _EPS
        text[m] = f"W8A4 {_signed(a4)} vs W4A8 {_signed(w4)}"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"low-bit activations hurt more than low-bit weights: QAT W8A4 loses more than QAT "
        f"W4A8 (both sim), by > {TIE_PT:g} pt",
        "MobileNet-v1 QAT W8A4 0.64 vs W4A8 0.65 (float 0.709)", ours, verdict))
    # QAT improves on PTQ at 4-bit activations.
    res, text = {}, {}
    for m in models:
        d = pt(m, "qat_w8a4_per_channel", "ptq_w8a4_per_channel")
        if d is not None:
            res[m], text[m] = d >= -TIE_PT - _EPS, f"QAT - PTQ {_signed(d)}"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"W8A4: QAT >= PTQ (both sim; tie within {TIE_PT:g} pt)",
        "MobileNet-v1 PTQ 0.48 -> QAT 0.64", ours, verdict))
    # BN correction + freeze >= naive fold.
    res, text = {}, {}
    for m in models:
        for bits in (8, 4):
            d = pt(m, f"qat_w{bits}a8_bn_corrected", f"qat_w{bits}a8_naive_fold")
            if d is not None:
                k = f"{m} W{bits}"
                res[k], text[k] = d >= -TIE_PT - _EPS, f"correction - naive {_signed(d)}"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"BN correction + freeze >= naive folding (QAT, sim; tie within {TIE_PT:g} pt)",
        "correction and freezing beat the naive fold (Sec. 3.2.2)", ours, verdict))
    # Sanity: the export computes what QAT simulated.
    res, text = {}, {}
    for m in models:
        for cell in ("qat_w8a8_per_channel", "qat_w4a8_per_channel"):
            r = by_key.get((m, cell))
            if r is not None and "agreement" in r:
                k = f"{m} {cell.removeprefix('qat_')}"
                res[k], text[k] = r["agreement"] >= MIN_AGREEMENT, f"{r['agreement']:.4f}"
    ours, verdict = _verdict(res, text)
    out.append(Finding(
        f"(sanity, not a paper claim) every QAT export agrees with its QAT Keras model on "
        f">= {100 * MIN_AGREEMENT:g}% of top-1 predictions", "-", ours, verdict))
    return out


# ----------------------------------------------------------------------------- markdown


_PAPER_ROWS: Mapping[str, Sequence[Mapping[str, str]]] = MappingProxyType({
    "B": (
        {"model": "paper: MobileNet-v1 (ImageNet)", FLOAT: "0.709", "ptq_w4a8_per_channel": "0.001-0.02",
         "qat_w4a8_per_channel": "0.65"},
        {"model": "paper: ResNet-v1-50 (ImageNet)", FLOAT: "0.752", "qat_w4a8_per_channel": "0.732"},
    ),
    "C": ({"model": "paper: MobileNet-v1 (ImageNet)", FLOAT: "0.709", "ptq_w8a4_per_channel": "0.48",
           "qat_w8a4_per_channel": "0.64", "qat_w4a8_per_channel_sim": "0.65"},),
})

_TABLE_NOTES = MappingProxyType({
    "A": ("Symmetric int8 weights, affine per-tensor int8 activations. PTQ: the converter "
          "calibrated on the calibration images. QAT: tfmot's default 8-bit scheme started "
          "from max-calibrated activation ranges on the same images, fine-tuned with NVIDIA's "
          "recipe, exported with `export_tflite` (every op int8). `agreement` = top-1 "
          "agreement of the QAT Keras model with its .tflite on the test images, `QAT Keras` "
          "= the QAT Keras model's own accuracy. tfmot fake-quantizes the *unfolded* kernels "
          "(per channel; per tensor for depthwise and dense kernels in its default scheme) and "
          "keeps the BN layers, whose γ/σ the converter folds into the per-channel scales."),
    "B": ("Symmetric narrow-range 4-bit weights (15 levels, the grid QAT trains on), affine "
          "per-tensor 8-bit activations. PTQ runs in the simulation (max ranges, BN folded). "
          "QAT per-channel: tfmot with our 4-bit configs (unfolded kernels, per-channel "
          "depthwise too), exported; `stored` = how the flatbuffer stores the conv / dense "
          "kernels (INT4: packed 4-bit, which LiteRT runs). QAT per-layer: one scale per "
          "*folded* kernel needs the BN-folded QAT layers (correction + freeze, NVIDIA's "
          "recipe otherwise; plain tfmot QAT on a model without BN), which the converter "
          "cannot export, so it is the QAT Keras model (sim). tfmot itself cannot do it: a "
          "per-tensor scale cannot absorb a BatchNormalization, and folding BN for inference "
          "first leaves each conv read directly by a ReLU layer, whose weight fake quant "
          "tfmot's `LayerReLUQuantize` transform silently replaces by a no-op."),
    "C": ("4-bit affine per-tensor activations run only in simulation: PTQ W8A4 in "
          "`tfquant.simulation` (max ranges), QAT W8A4 and W4A8 as the QAT Keras models "
          "(tfmot fake quants, EMA ranges from calibrated starts). QAT W4A8 is the Keras "
          "side of Table B's QAT per-channel run, evaluated on the same images. `start` = "
          "the QAT Keras model before fine-tuning (calibrated ranges, float weights on the "
          "grid: a PTQ model in tfmot's placement of fake quants)."),
    "D": ("BN-folded QAT layers (`tfquant.qat.bn_correction` over "
          "`tfquant.algorithms.bn_fold_qat`): each conv + BN pair is one layer that "
          "fake-quantizes its folded kernel with its own symmetric per-channel quantizer "
          "(straight-through gradient); tfmot fake-quantizes the other kernels and the "
          "activations. Naive: weights γW/σ_B with batch statistics, no correction, "
          "statistics never frozen. Correction + freeze: weights γW/σ with the moving σ, "
          "output scaled by σ/σ_B until the freeze, then the moving statistics freeze "
          "(`freeze` = the step it froze after). Both arms fine-tune with the whitepaper's recipe (SGD, "
          "momentum 0.9, constant 10% of the original learning rate) from the same "
          "calibrated activation ranges, and are evaluated as Keras models (sim). "
          "`start` = the Keras accuracy before fine-tuning (identical for both arms: in "
          "inference both folds compute conv(x, Q(γW/σ)) + β - γμ/σ)."),
})


def _cell_text(r: Mapping[str, Any] | None, errors: list[str]) -> str:
    if r is None:
        return ""
    if "error" in r:
        errors.append(f"- {r['model']} / {r['cell']}: {r['error']}")
        return "failed¹"
    return f"{r['accuracy']:.4f} ({r['executed_in']})"


def _shown(field: str, fmt: str) -> Callable[[Mapping[str, Any]], str]:
    """A record's ``field`` formatted with ``fmt`` ("" when the record lacks it)."""
    return lambda r: fmt.format(r[field]) if r.get(field) is not None else ""


def _storage(r: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(r.get("weight_storage", {}).items()))


_START = _shown("keras_accuracy_before_finetune", "{:.4f} (sim)")
_EXTRA_COLUMNS: Mapping[str, Sequence[tuple[str, str, str, Callable[[Mapping[str, Any]], str]]]] = (
    MappingProxyType({
        "A": (("keras_w8", "QAT Keras", "qat_w8a8_per_channel", _shown("keras_accuracy", "{:.4f} (sim)")),
              ("agree_w8", "agreement", "qat_w8a8_per_channel", _shown("agreement", "{:.4f}"))),
        "B": (("agree_w4", "agreement", "qat_w4a8_per_channel", _shown("agreement", "{:.4f}")),
              ("stored_w4", "stored", "qat_w4a8_per_channel", _storage)),
        "C": (("start_a4", "QAT W8A4 start", "qat_w8a4_per_channel", _START),
              ("start_w4", "QAT W4A8 start", "qat_w4a8_per_channel_sim", _START)),
        "D": (("start_w8", "start W8", "qat_w8a8_naive_fold", _START),
              ("start_w4", "start W4", "qat_w4a8_naive_fold", _START),
              ("freeze_w8", "freeze W8", "qat_w8a8_bn_corrected", _shown("bn_frozen_at_step", "step {}")),
              ("freeze_w4", "freeze W4", "qat_w4a8_bn_corrected", _shown("bn_frozen_at_step", "step {}"))),
    }))
"""Per table: (column key, heading, the cell whose record it reads, how to show it)."""


def results_markdown(records: Sequence[Mapping[str, Any]], config: WhitepaperQatConfig) -> str:
    """Tables A-D, what ran where, the ViT note and the findings, from ``records``."""
    from tfquant.evaluation import markdown_table

    by_key = {_key(r): r for r in records}
    n_test = "the whole test split" if config.limit is None else f"the first {config.limit} test images"
    n_train = config.train_examples or ZOO_TRAIN_EXAMPLES
    epochs = ("NVIDIA's 10% of the original schedule (1 epoch for every zoo model)"
              if config.epochs is None else f"{config.epochs} epoch(s)")
    lines = [
        f"# Whitepaper QAT tables on the zoo ({config.dataset})",
        "",
        "Krishnamoorthi 2018 (arXiv 1806.08342), the tables that need quantization-aware "
        f"training. Top-1 accuracy on {n_test}. Every cell says where it ran: `(tflite)` = a "
        f".tflite in the LiteRT interpreter ({config.runtime.value}); `(sim)` = fake "
        "quantization in TensorFlow (PTQ: `tfquant.simulation` on the BN-folded model; QAT: "
        "the QAT Keras model itself). `float` is the fp32 .tflite. Fine-tuning: "
        f"{epochs} on the first {n_train} training images, batch 128, seed {config.seed}; "
        "NVIDIA's recipe (Adam, 1% of the original learning rate, cosine decay, from "
        "calibrated activation ranges) except in Table D. Calibration: "
        f"{config.num_calibration_examples} training images (seed {config.calibration_seed}). "
        "Rows starting with `paper:` are the whitepaper's ImageNet numbers.",
    ]
    errors: list[str] = []
    for table, heading in TABLES.items():
        names = [n for n in config.cells if CELLS[n].table == table]
        if not names:
            continue
        if table != "A" and FLOAT in config.cells:
            names = [FLOAT, *names]
        extras = [e for e in _EXTRA_COLUMNS.get(table, ()) if e[2] in names]
        headers = {"model": "model", **{n: CELLS[n].title for n in names},
                   **{key: title for key, title, _, _ in extras}}
        rows = []
        for model in config.models:
            row: dict[str, Any] = {"model": model}
            for n in names:
                r = by_key.get((model, n))
                row[n] = "n/a (no BN)" if r is not None and NOT_APPLICABLE in r else _cell_text(r, errors)
            for key, _, source, show in extras:
                r = by_key.get((model, source))
                if r is not None and "error" not in r and NOT_APPLICABLE not in r:
                    row[key] = show(r)
            rows.append(row)
        for paper in _PAPER_ROWS.get(table, ()):
            rows.append({"model": paper["model"],
                         **{n: f"{v} (paper)" for n, v in paper.items() if n in names}})
        columns = ["model", *names, *(key for key, _, _, _ in extras)]
        lines += ["", f"## {heading}", "", _TABLE_NOTES[table], "",
                  markdown_table(rows, columns, headers=headers).rstrip("\n")]
    lines += ["", "## What ran where", ""] + _where_lines(records, config)
    lines += ["", "## Did the paper's findings hold?", "",
              f"Computed from the records above; pt = accuracy points against the model's float "
              f"cell. Thresholds: 8-bit QAT near float <= {QAT_NEAR_FLOAT_PT:g} pt; 4-bit QAT "
              f"'recovers most' = wins back >= {100 * RECOVERED_FRACTION:g}% of a PTQ loss of "
              f">= {MIN_PTQ_LOSS_PT:g} pt; ties within {TIE_PT:g} pt; export agreement >= "
              f"{100 * MIN_AGREEMENT:g}%. On {n_test}, one test image is "
              f"{100.0 / (config.limit or 10000):.2f} pt; fine-tuning from one seed, so "
              "differences of a few tenths of a point between QAT cells are within run-to-run "
              "noise.", ""]
    for f in findings(records, config.models):
        lines.append(f"- **{f.verdict}**: {f.claim}. Paper: {f.paper}. Ours: {f.ours}.")
    if errors:
        lines += ["", "¹ Not produced or not runnable (the reason, as tfquant reported it):", ""] + errors
    return "\n".join(lines) + "\n"


def _where_lines(records: Sequence[Mapping[str, Any]], config: WhitepaperQatConfig) -> list[str]:
    by_backend: dict[str, list[str]] = {}
    for name in config.cells:
        by_backend.setdefault(CELLS[name].executed_in, []).append(f"`{name}`")
    lines = [
        f"- **tflite** (LiteRT interpreter, {config.runtime.value}): "
        + (", ".join(by_backend.get(EXECUTED_IN_TFLITE, [])) or "none") + ". Each .tflite is "
        "under `models/<model>/` with its recipe (`.recipe.json` for PTQ, `.qat.json` for "
        "QAT: the run, the fine-tuning recipe, epochs, images, seed).",
        "- **sim** (fake quantization in TensorFlow): "
        + (", ".join(by_backend.get(EXECUTED_IN_SIM, [])) or "none") + ". 4-bit activations "
        "have no TFLite kernels, sub-8-bit PTQ weights are simulated on the same grid the QAT "
        "models train on, and the BN-folded QAT layers carry no weight fake quant the "
        "converter could read (methods.md, 'Where TFLite stops').",
    ]
    for r in records:
        if r.get("cell") == WRAP_CHECK and not r.get("wrappable", True):
            lines.append(f"- **{r['model']}** is not in these tables: tfmot cannot wrap it for QAT. "
                         f"`quantize_for_training` says: {r['reason']}")
    return lines
