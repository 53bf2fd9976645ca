"""The whitepaper PTQ tables' cells, sizes, config and record kinds (see the package docstring)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, Mode, Runtime
from tfquant.recipes import Recipe
from tfquant.simulation.spec import EXECUTED_IN_SIM, EXECUTED_IN_TFLITE, SimSpec, WeightScheme
from tfquant.study import TIE_PT, ModelCell, Record  # noqa: F401  (TIE_PT: a threshold of the claims)
from tfquant.study.settings import Sized, ZooStudySettings, check_zoo_models, interpreter_runtime

NAME = EXPERIMENT = "whitepaper_ptq"
SPREAD = "weight_range_spread"
"""The ``cell`` of a model's weight-range spread record (no accuracy, no executed_in)."""

# Thresholds of the claims, in accuracy points (pt = 0.01 top-1).
NEAR_FLOAT_PT = 2.0
"""'Within X pt of float': the whitepaper's headline (8-bit PTQ within 2% of float)."""
COLLAPSE_PT = 10.0
"""A cell 'collapses' when it loses more than this many points."""
SIM_TFLITE_PT = 1.0
"""The simulation 'agrees' with the interpreter when their accuracies differ by <= this."""
LARGE_SPREAD = 100.0
"""A max/min channel-range ratio of 100 (two orders of magnitude), the ImageNet-MobileNet regime."""
MIN_RANK_CORRELATION = 0.5
"""Spearman correlation above which 'per-layer loss follows the spread' counts as held."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cell:
    """One column of the tables: where it runs and what it quantizes.

    Attributes:
      table: ``A`` .. ``D`` (see the module docstring).
      title: Column heading.
      executed_in: ``tflite`` (``mode`` / ``weight_granularity`` give the recipe) or ``sim``
        (``spec`` is the :class:`~tfquant.simulation.SimSpec`).
    """

    table: str
    title: str
    executed_in: str
    mode: Mode | None = None
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    spec: SimSpec | None = None

    def __post_init__(self) -> None:
        assert (self.executed_in == EXECUTED_IN_TFLITE) == (self.mode is not None)
        assert (self.executed_in == EXECUTED_IN_SIM) == (self.spec is not None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"table": self.table, "title": self.title, "executed_in": self.executed_in}
        if self.mode is not None:
            d.update(mode=self.mode.value, weight_granularity=self.weight_granularity.value)
        if self.spec is not None:
            d["spec"] = self.spec.to_dict()
        return d


_ASYM, _SYM = WeightScheme.ASYMMETRIC, WeightScheme.SYMMETRIC
_PER_TENSOR, _PER_CHANNEL = Granularity.PER_TENSOR, Granularity.PER_CHANNEL


def _tflite(table: str, title: str, mode: Mode, granularity: Granularity = _PER_CHANNEL) -> Cell:
    return Cell(table=table, title=title, executed_in=EXECUTED_IN_TFLITE, mode=mode,
                weight_granularity=granularity)


def _sim(table: str, title: str, **spec: Any) -> Cell:
    return Cell(table=table, title=title, executed_in=EXECUTED_IN_SIM, spec=SimSpec(**spec))


FLOAT = "float"
CELLS: Mapping[str, Cell] = MappingProxyType({
    FLOAT: _tflite("A", "float", Mode.FP32),
    # Table A: 8-bit weights, float activations.
    "w8_asym_per_tensor": _sim("A", "asym per-layer (per-tensor)", weight_scheme=_ASYM,
                               weight_granularity=_PER_TENSOR, activation_bits=None),
    "w8_sym_per_channel": _sim("A", "sym per-channel", weight_scheme=_SYM,
                               weight_granularity=_PER_CHANNEL, activation_bits=None),
    "w8_asym_per_channel": _sim("A", "asym per-channel", weight_scheme=_ASYM,
                                weight_granularity=_PER_CHANNEL, activation_bits=None),
    "w8_dynamic_range": _tflite("A", "TFLite dynamic range", Mode.DYNAMIC),
    # Table B: 8-bit weights (symmetric, TFLite's grid) and 8-bit affine activations.
    "w8a8_per_channel": _tflite("B", "int8 per-channel", Mode.INT8),
    "w8a8_per_channel_sim": _sim("B", "int8 per-channel", weight_granularity=_PER_CHANNEL),
    "w8a8_per_tensor": _tflite("B", "int8 per-layer (per-tensor)", Mode.INT8, _PER_TENSOR),
    "w8a8_per_tensor_sim": _sim("B", "int8 per-layer (per-tensor)", weight_granularity=_PER_TENSOR),
    # Table C: 4-bit weights, 8-bit activations.
    "w4a8_asym_per_tensor": _sim("C", "asym per-layer (per-tensor)", weight_bits=4, weight_scheme=_ASYM,
                                 weight_granularity=_PER_TENSOR),
    "w4a8_asym_per_channel": _sim("C", "asym per-channel", weight_bits=4, weight_scheme=_ASYM,
                                  weight_granularity=_PER_CHANNEL),
    "w4a8_sym_per_channel": _sim("C", "sym per-channel", weight_bits=4, weight_scheme=_SYM,
                                 weight_granularity=_PER_CHANNEL),
    # Table D: 8-bit symmetric per-channel weights, 4-bit affine per-tensor activations.
    "w8a4_per_channel": _sim("D", "W8A4 sym per-channel", activation_bits=4),
})
"""Cell name -> :class:`Cell`; every record's ``cell`` is one of these (or :data:`SPREAD`)."""

RENAMED_CELLS: Mapping[str, str] = MappingProxyType({
    "w8_asym_per_layer": "w8_asym_per_tensor",
    "w8a8_per_layer": "w8a8_per_tensor",
    "w8a8_per_layer_sim": "w8a8_per_tensor_sim",
    "w4a8_asym_per_layer": "w4a8_asym_per_tensor",
})
"""Cell names of runs before the vocabulary change (paper "per-layer" = per-tensor) -> now."""

SIZES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smoke": MappingProxyType({"models": ("cnn",), "limit": 300, "num_calibration_examples": 100}),
    "short": MappingProxyType({"models": ("cnn", "mobilenet_v1", "resnet"), "limit": 2000}),
})
"""Named sizes: ``smoke`` (what the tests run) and ``short`` (the main job's version)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperPtqConfig(Sized, ZooStudySettings):
    """What the tables run: :class:`ZooStudySettings` plus the runtime;
    ``of_size(name, **overrides)`` gives a named size (:data:`SIZES`)."""

    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = SIZES
    workers: int = 1
    runtime: Runtime = Runtime.XNNPACK

    def __post_init__(self) -> None:
        super().__post_init__()
        check_zoo_models(self.models)
        object.__setattr__(self, "runtime", interpreter_runtime(self.runtime, what="the PTQ tables"))

    def recipe(self, cell: Cell) -> Recipe:
        """The conversion recipe of a tflite cell (calibration provenance filled in)."""
        assert cell.mode is not None
        return Recipe.for_mode(cell.mode, weight_granularity=cell.weight_granularity, dataset=self.dataset,
                               num_calibration_examples=self.num_calibration_examples,
                               calibration_seed=self.calibration_seed)


WhitepaperPtqCell = ModelCell
"""One cell: a :data:`CELLS` column (or :data:`SPREAD`) of ``model``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhitepaperPtqRecord(Record):
    """What a table cell measured (field names are the results.jsonl keys)."""

    experiment: str
    model: str
    cell: str
    table: str
    executed_in: str
    accuracy: float | None = None
    n_examples: int | None = None
    n_correct: int | None = None
    eval_seconds: float | None = None
    spec: dict[str, Any] | None = None
    num_calibration_examples: int | None = None
    float_weight_layers: list[str] | None = None
    recipe: dict[str, Any] | None = None
    tflite_path: str | None = None
    runtime: str | None = None
    threads: int | None = None
    convert_seconds: float | None = None
    size_bytes: int | None = None
    int8_weight_tensors: int | None = None
    float_weight_tensors: list[str] | None = None
    int8_weight_fraction: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpreadRecord(Record):
    """A model's per-channel weight-range spread (:func:`weight_range_spread`'s fields)."""

    experiment: str
    model: str
    cell: str = SPREAD
    layers: int | None = None
    channels: int | None = None
    median_ratio: float | None = None
    max_ratio: float | None = None
    max_ratio_layer: str | None = None
    zeroed_channels_w8: int | None = None
    zeroed_channels_w4: int | None = None
    dead_channels: int | None = None
    per_layer: dict[str, float] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.cell)


