"""What a simulated-quantization run quantizes: :class:`SimSpec` (data) and :class:`SimResult`.

A spec is a frozen, typed value that round-trips through a dict / JSON and rejects unknown
keys, like :class:`tfquant.recipes.Recipe`. Its defaults are TFLite's int8 scheme
(Krishnamoorthi 2018, arXiv 1806.08342, Sec. 2.1 and the TFLite int8 spec): 8-bit
symmetric narrow-range per-channel weights after inference BN folding, 8-bit affine
per-tensor activations with max (min/max) calibration, so ``SimSpec()`` simulates what
``convert.convert(model, Recipe(mode="int8"))`` executes.

Everything else the spec can say -- asymmetric weights, 2..7-bit weights, 2..16-bit or
per-channel activations, percentile ranges -- runs only here ("sim"), not in TFLite
(``shared/docs/methods.md``, "Where TFLite stops").
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from tfquant.dataclass_json import from_json_dict, loads_object, to_json_dict
from tfquant.errors import TfquantError
from tfquant.qtypes import DEFAULT_PERCENTILE, check_percentile
from tfquant.qtypes import ActivationScheme, Calibration, Granularity, WeightScheme

SPEC_VERSION = 1
WEIGHT_BITS = (2, 8)
ACTIVATION_BITS = (2, 16)
EXECUTED_IN_SIM = "sim"
"""A cell measured in TensorFlow fake quantization (a record's ``executed_in``)."""
EXECUTED_IN_TFLITE = "tflite"
"""A cell measured as a .tflite in the LiteRT interpreter."""
_CALIBRATIONS = (Calibration.MAX, Calibration.PERCENTILE)


def _check_int_in(value: object, lo: int, hi: int, what: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TfquantError(f"{what} must be an integer in [{lo}, {hi}], got {value!r}{hint}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimSpec:
    """How :func:`tfquant.simulation.simulate` fake-quantizes a float Keras model.

    Attributes:
      weight_bits: b for every Conv / DepthwiseConv2D / Dense kernel, 2..8.
      weight_scheme: symmetric (narrow range, z = 0) or asymmetric (affine).
      weight_granularity: one scale per output channel or one per kernel.
      activation_bits: b for every activation TFLite would quantize, 2..16; ``None`` keeps
        activations float (weight-only quantization).
      activation_scheme: affine (TFLite int8) or symmetric (z = 0, full range
        [-2^(b-1), 2^(b-1) - 1], as TFLite's int16 activations).
      activation_granularity: per_tensor (every deployable scheme) or per_channel (one
        range per channel of the last axis; simulation only).
      activation_calibration: max (observed [min, max] over the calibration set, what the
        TFLite converter does) or percentile (see ``percentile``).
      percentile: for percentile calibration, p in (0, 100]: amax is the upper edge of the
        bin of a 2048-bin histogram of |x| where the CDF reaches p / 100 (Wu et al. 2020,
        arXiv 2004.09602, Sec. 4.2); the range is [min, max] clipped to [-amax, amax].
        Defaults to 99.99 for percentile; must be unset for max.
      fold_bn: fold inference BatchNormalization into the preceding Conv / Dense before
        the weights are quantized, W' = γW/σ, b' = β + γ(b - μ)/σ, σ = sqrt(var + ε), as
        the TFLite converter does (whitepaper Sec. 3.2.2, inference fold).

    Raises:
      TfquantError: on any value outside the ranges above (one line naming it).
    """

    weight_bits: int = 8
    weight_scheme: WeightScheme = WeightScheme.SYMMETRIC
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    activation_bits: int | None = 8
    activation_scheme: ActivationScheme = ActivationScheme.AFFINE
    activation_granularity: Granularity = Granularity.PER_TENSOR
    activation_calibration: Calibration = Calibration.MAX
    percentile: float | None = None
    fold_bn: bool = True

    def __post_init__(self) -> None:
        _check_int_in(
            self.weight_bits, *WEIGHT_BITS, "weight_bits",
            "; sub-2-bit and over-8-bit weights are not simulated",
        )
        if self.activation_bits is not None:
            _check_int_in(
                self.activation_bits, *ACTIVATION_BITS, "activation_bits",
                "; use None for float activations",
            )
        self._set("weight_scheme", WeightScheme.parse(self.weight_scheme, what="weight_scheme"))
        self._set(
            "weight_granularity",
            Granularity.parse(self.weight_granularity, what="weight_granularity"),
        )
        self._set(
            "activation_scheme",
            ActivationScheme.parse(self.activation_scheme, what="activation_scheme"),
        )
        self._set(
            "activation_granularity",
            Granularity.parse(self.activation_granularity, what="activation_granularity"),
        )
        calibration = Calibration.parse(
            self.activation_calibration, what="activation_calibration"
        )
        if calibration not in _CALIBRATIONS:
            raise TfquantError(
                f"activation_calibration {calibration.value!r} is not simulated; choose one "
                f"of: {', '.join(c.value for c in _CALIBRATIONS)}"
            )
        self._set("activation_calibration", calibration)
        self._set("percentile", self._checked_percentile())
        if not isinstance(self.fold_bn, bool):
            raise TfquantError(f"fold_bn must be True or False, got {self.fold_bn!r}")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _checked_percentile(self) -> float | None:
        needed = self.activation_calibration is Calibration.PERCENTILE
        value = self.percentile
        if value is None:
            return DEFAULT_PERCENTILE if needed else None
        if not needed:
            raise TfquantError(
                f"percentile={value!r} is set but activation_calibration is "
                f"{self.activation_calibration.value}; drop it or use percentile calibration"
            )
        return check_percentile(value)

    @property
    def quantizes_activations(self) -> bool:
        return self.activation_bits is not None

    @property
    def label(self) -> str:
        """Short name for tables, e.g. ``w8_sym_pc_a8_aff_pt_max`` or ``w4_asym_pt_afloat``."""
        w = (
            f"w{self.weight_bits}_{'sym' if self.weight_scheme is WeightScheme.SYMMETRIC else 'asym'}"
            f"_{_short(self.weight_granularity)}"
        )
        if self.activation_bits is None:
            a = "afloat"
        else:
            cal = (
                "max" if self.activation_calibration is Calibration.MAX
                else f"p{self.percentile:g}"
            )
            scheme = "aff" if self.activation_scheme is ActivationScheme.AFFINE else "sym"
            a = f"a{self.activation_bits}_{scheme}_{_short(self.activation_granularity)}_{cal}"
        return f"{w}_{a}" + ("" if self.fold_bn else "_nofold")

    def to_dict(self) -> dict[str, Any]:
        return to_json_dict(self, version_key="spec_version", version=SPEC_VERSION)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SimSpec":
        kwargs = from_json_dict(cls, d, what="SimSpec", version_key="spec_version", version=SPEC_VERSION)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "SimSpec":
        return cls.from_dict(loads_object(text, what="SimSpec"))

    def replace(self, **changes: Any) -> "SimSpec":
        return dataclasses.replace(self, **changes)


def _short(g: Granularity) -> str:
    return "pc" if g is Granularity.PER_CHANNEL else "pt"


TFLITE_INT8 = SimSpec()
"""TFLite's int8 scheme: W8 symmetric per-channel, A8 affine per-tensor, max ranges, BN folded."""


@dataclasses.dataclass(frozen=True)
class SimResult:
    """Top-1 accuracy of a simulated model.

    Attributes:
      accuracy: Σ_i [argmax_k logits_ik == y_i] / N.
      n_examples: N.
      n_correct: Σ_i [argmax_k logits_ik == y_i].
      spec: the spec that was simulated.
      float_weight_layers: names of layers with weights that the simulation left float
        (anything but Conv1D/2D/3D, DepthwiseConv2D and Dense kernels, e.g. attention,
        LayerNormalization, embeddings); empty for the zoo's CNNs.
      executed_in: always ``"sim"`` (fake quantization in TensorFlow), never ``"tflite"``.
    """

    accuracy: float
    n_examples: int
    n_correct: int
    spec: SimSpec
    float_weight_layers: tuple[str, ...] = ()
    executed_in: str = EXECUTED_IN_SIM
