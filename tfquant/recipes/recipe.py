"""The conversion recipe: a frozen, typed description of how a .tflite was produced.

A recipe is data. It round-trips through JSON (unknown keys are rejected, so a typo in a
hand-written recipe fails loudly), is saved as ``<model>.recipe.json`` beside every .tflite
and is embedded in the flatbuffer's metadata under the name ``tfquant_recipe``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from tfquant.dataclass_json import from_json_dict, loads_object, to_json_dict
from tfquant.errors import TfquantError
from tfquant.recipes.inputs import InputContract
from tfquant.recipes.layers import LayerRule, parse_rules
from tfquant.qtypes import DEFAULT_PERCENTILE, check_percentile
from tfquant.qtypes import AciqPrior, ActivationScheme, Calibration, Granularity
from tfquant.qtypes import IODType, Mode, WeightCalibration
from tfquant.qtypes import BiasCorrection, WeightBitAllocation, check_weight_bits

RECIPE_VERSION = 1


_LOW_BIT_DEFAULTS = {"weight_bits": 8, "weight_bit_allocation": "uniform", "bias_correction": "none",
                     "channel_bits": None}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to convert a float model to .tflite.

    Attributes:
      mode: what the converter produces (see :class:`tfquant.qtypes.Mode`).
      weight_granularity: per-channel (TFLite's default for conv/dense) or per-tensor weight
        scales; only meaningful for int8, int16x8 and dynamic.
      io_dtype: dtype of the model's input/output tensors. int8 I/O requires mode int8,
        int16 I/O requires mode int16x8.
      num_calibration_examples: size of the calibration set (drawn from the training split
        with ``calibration_seed``) for int8/int16x8.
      calibration_seed: seed of the calibration draw.
      calibration_data: name of the dataset the calibration set is drawn from, for
        provenance (e.g. ``fashion_mnist``); ``None`` when the caller passed arrays.
      calibrator: how activation ranges are chosen (int8 / int16x8 only). ``None``: the
        TFLite converter's own min/max calibration ("TFLite default"); otherwise tfquant
        gathers statistics once and writes the chosen ranges into the model (see
        :mod:`tfquant.convert.calibrated`).
      percentile: the |x| percentile, for ``calibrator`` percentile (default 99.99).
      aciq_prior: laplace or gaussian, for ``calibrator`` aciq (default laplace).
      activation_scheme: affine (int8 default) or symmetric (z = 0; int16x8 always).
        Symmetric int8 needs a ``calibrator``.
      weight_calibrator: how weight bounds are chosen (max is TFLite's default); anything
        else needs a ``calibrator``.
      weight_percentile: the |w| percentile, for ``weight_calibrator`` percentile (default
        99.99).
      input: the input contract (:class:`tfquant.recipes.inputs.InputContract`): how an
        image in [0, 1] becomes the model's input. Calibration applied it; ``evaluate``
        applies it unless told otherwise. ``None``: the model takes [0, 1] images as they are.
      layer_rules: per-layer precision (:mod:`tfquant.recipes.layers`): ordered rules mapping
        layers / op types to int8, int16x8 or float and per-tensor calibrators (last match
        wins; ``mode`` is the precision of unmatched ops). Non-empty rules make a mixed model
        (:mod:`tfquant.convert.mixed`). Left out of the JSON when empty.
      weight_bits: int8 only: the mean bit width M of the conv / depthwise / dense weights,
        2..8. Below 8 each output channel is stored in int8 on its own b-bit grid with its
        own scale (:mod:`tfquant.convert.low_bit`). Needs a ``calibrator``.
      weight_bit_allocation: uniform (every channel at ``weight_bits``) or aciq
        (2^b_c ∝ α_c^(2/3), mean exactly ``weight_bits`` per tensor; per-channel weights).
      bias_correction: none, mean (the expected output shift of each channel folded into
        its bias, from the calibration statistics) or mean_std (also the weights' spread,
        through the channel scale).
      channel_bits: written by the conversion: weight tensor name -> the bit width of each
        of its output channels (what the model holds). A recipe that has it reproduces that
        allocation instead of computing one.
    """

    mode: Mode
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    io_dtype: IODType = IODType.FLOAT32
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    calibration_data: str | None = None
    calibrator: Calibration | None = None
    percentile: float | None = None
    aciq_prior: AciqPrior | None = None
    activation_scheme: ActivationScheme | None = None
    weight_calibrator: WeightCalibration = WeightCalibration.MAX
    weight_percentile: float | None = None
    input: InputContract | None = None
    layer_rules: tuple[LayerRule, ...] = ()
    weight_bits: int = 8
    weight_bit_allocation: WeightBitAllocation = WeightBitAllocation.UNIFORM
    bias_correction: BiasCorrection = BiasCorrection.NONE
    channel_bits: dict[str, tuple[int, ...]] | None = None

    def __post_init__(self) -> None:
        self._check_layer_rules()
        if isinstance(self.input, Mapping):
            object.__setattr__(self, "input", InputContract.from_dict(self.input))
        elif self.input is not None and not isinstance(self.input, InputContract):
            raise TfquantError(
                f"recipe input must be an input contract (mean, std, channel_order), got "
                f"{self.input!r}"
            )
        object.__setattr__(self, "mode", Mode.parse(self.mode, what="mode"))
        object.__setattr__(
            self,
            "weight_granularity",
            Granularity.parse(self.weight_granularity, what="weight granularity"),
        )
        object.__setattr__(self, "io_dtype", IODType.parse(self.io_dtype, what="io dtype"))
        if self.io_dtype is IODType.INT8 and self.mode is not Mode.INT8:
            raise TfquantError(
                f"io_dtype int8 needs mode int8 (got mode {self.mode}); use io_dtype float32"
            )
        if self.io_dtype is IODType.INT16 and self.mode is not Mode.INT16X8:
            raise TfquantError(
                f"io_dtype int16 needs mode int16x8 (got mode {self.mode}); use io_dtype float32"
            )
        if (
            isinstance(self.num_calibration_examples, bool)
            or not isinstance(self.num_calibration_examples, int)
            or self.num_calibration_examples < 1
        ):
            raise TfquantError(
                "num_calibration_examples must be a positive integer, got "
                f"{self.num_calibration_examples!r}"
            )
        self._check_calibration()
        self._check_low_bit()

    def _check_layer_rules(self) -> None:
        """Per-layer rules (issue 11): parsed, and only on the modes a mixed model has."""
        self._set("layer_rules", parse_rules(self.layer_rules))
        if not self.layer_rules:
            return
        if Mode.parse(self.mode, what="mode") not in (Mode.INT8, Mode.INT16X8):
            raise TfquantError(f"layer_rules need mode int8 or int16x8 (the unmatched ops' precision), not {self.mode}")
        if self.calibrator is None:
            raise TfquantError("layer_rules need an activation calibrator; add calibrator='max' (or another)")
        if IODType.parse(self.io_dtype, what="io dtype") is not IODType.FLOAT32:
            raise TfquantError("a mixed-precision recipe (layer_rules) keeps float32 I/O; use io_dtype float32")
        if WeightCalibration.parse(self.weight_calibrator, what="weight calibrator") is not WeightCalibration.MAX:
            raise TfquantError("layer_rules support weight_calibrator max only (per-channel max weights)")
        if self.weight_bits != 8 or self.bias_correction not in (BiasCorrection.NONE, "none"):
            raise TfquantError("layer_rules (a mixed model) keep 8-bit weights without bias correction; "
                               "drop weight_bits / bias_correction, or the layer_rules")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check_calibration(self) -> None:
        if self.calibrator is not None:
            self._set("calibrator", Calibration.parse(self.calibrator, what="calibrator"))
        if self.aciq_prior is not None:
            self._set("aciq_prior", AciqPrior.parse(self.aciq_prior, what="ACIQ prior"))
        if self.activation_scheme is not None:
            self._set(
                "activation_scheme",
                ActivationScheme.parse(self.activation_scheme, what="activation scheme"),
            )
        self._set(
            "weight_calibrator",
            WeightCalibration.parse(self.weight_calibrator, what="weight calibrator"),
        )
        tuned = (
            self.calibrator is not None
            or self.activation_scheme is not None
            or self.weight_calibrator is not WeightCalibration.MAX
        )
        if tuned and not self.mode.needs_calibration:
            raise TfquantError(
                f"calibrator options apply to modes int8 and int16x8, not {self.mode}; "
                "drop them or use mode int8"
            )
        if self.calibrator is None and (
            self.activation_scheme is ActivationScheme.SYMMETRIC
            or self.weight_calibrator is not WeightCalibration.MAX
        ):
            raise TfquantError(
                "symmetric activations and weight calibrators other than max need an "
                "activation calibrator; add calibrator='max' to keep the converter's ranges"
            )
        if self.mode is Mode.INT16X8 and self.activation_scheme is ActivationScheme.AFFINE:
            raise TfquantError(
                "int16x8 activations are symmetric in TFLite; use activation_scheme "
                "symmetric (or leave it unset)"
            )
        if self.calibrator is not None and self.activation_scheme is None:
            self._set(
                "activation_scheme",
                ActivationScheme.SYMMETRIC if self.mode is Mode.INT16X8 else ActivationScheme.AFFINE,
            )
        self._set("percentile", _check_percentile(
            self.percentile, needed=self.calibrator is Calibration.PERCENTILE, what="percentile"))
        self._set("weight_percentile", _check_percentile(
            self.weight_percentile,
            needed=self.weight_calibrator is WeightCalibration.PERCENTILE,
            what="weight_percentile",
        ))
        if self.calibrator is Calibration.ACIQ and self.aciq_prior is None:
            self._set("aciq_prior", AciqPrior.LAPLACE)
        elif self.calibrator is not Calibration.ACIQ and self.aciq_prior is not None:
            raise TfquantError(
                f"aciq_prior applies to calibrator aciq, not {self.calibrator}; drop it"
            )

    def _check_low_bit(self) -> None:
        self._set("weight_bits", check_weight_bits(self.weight_bits))
        self._set("weight_bit_allocation", WeightBitAllocation.parse(
            self.weight_bit_allocation, what="weight bit allocation"))
        self._set("bias_correction", BiasCorrection.parse(self.bias_correction, what="bias correction"))
        if self.channel_bits is not None:
            if not isinstance(self.channel_bits, Mapping):
                raise TfquantError(
                    "channel_bits must map weight tensor names to per-channel bit widths, got "
                    f"{type(self.channel_bits).__name__}"
                )
            self._set("channel_bits", {
                str(k): tuple(check_weight_bits(b, what=f"channel_bits[{k!r}]") for b in v)
                for k, v in self.channel_bits.items()
            })
        if not self.is_low_bit:
            return
        if self.mode is not Mode.INT8:
            raise TfquantError(
                f"weight_bits, weight_bit_allocation and bias_correction apply to mode int8, "
                f"not {self.mode}; use --mode int8"
            )
        if self.calibrator is None:
            raise TfquantError(
                "weight_bits below 8, bit allocation and bias correction need an activation "
                "calibrator (they rewrite the calibrated model); add --calibrator max to keep "
                "the converter's ranges"
            )
        if self.weight_granularity is Granularity.PER_TENSOR and (
            self.weight_bit_allocation is WeightBitAllocation.ACIQ
            or self.bias_correction is BiasCorrection.MEAN_STD
        ):
            raise TfquantError(
                "weight_bit_allocation aciq and bias_correction mean_std give every output "
                "channel its own scale, which needs per-channel weights; use "
                "--weight_granularity per_channel"
            )

    @property
    def is_low_bit(self) -> bool:
        """True when the weights are rewritten after conversion (sub-8-bit grids, an
        allocation or bias correction; :mod:`tfquant.convert.low_bit`)."""
        return (
            self.weight_bits != 8
            or self.weight_bit_allocation is not WeightBitAllocation.UNIFORM
            or self.bias_correction is not BiasCorrection.NONE
            or self.channel_bits is not None
        )

    @property
    def calibration_label(self) -> str:
        """Short name of the activation calibration: ``converter`` (the converter's own),
        ``max``, ``percentile_99.99``, ``aciq_laplace``, ..."""
        if self.calibrator is None:
            return "converter"
        if self.calibrator is Calibration.PERCENTILE:
            return f"percentile_{self.percentile:g}"
        if self.calibrator is Calibration.ACIQ:
            return f"aciq_{self.aciq_prior}"
        return str(self.calibrator)

    def to_dict(self) -> dict[str, Any]:
        d = to_json_dict(self, version_key="recipe_version", version=RECIPE_VERSION)
        if self.layer_rules:
            d["layer_rules"] = [rule.to_dict() for rule in self.layer_rules]
        else:
            d.pop("layer_rules", None)
        # The low-bit fields are left out at their defaults (8-bit grid, no correction), so a
        # recipe that does not use them serialises, and embeds, exactly as before they existed.
        for name, default in _LOW_BIT_DEFAULTS.items():
            if d.get(name) == default:
                d.pop(name)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        return cls(
            **from_json_dict(
                cls, d, what="recipe", version_key="recipe_version", version=RECIPE_VERSION,
                required=("mode",), hint="re-create the recipe with this version",
            )
        )

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(loads_object(text, what="recipe"))

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_mode(cls, mode: Mode, *, weight_granularity: Granularity = Granularity.PER_CHANNEL,
                 dataset: str, num_calibration_examples: int, calibration_seed: int) -> "Recipe":
        """The recipe of ``mode`` with a study's calibration draw: ``num_calibration_examples``
        images of ``dataset`` (seed ``calibration_seed``), recorded as the calibration data
        only when ``mode`` calibrates."""
        return cls(mode=mode, weight_granularity=weight_granularity,
                   num_calibration_examples=num_calibration_examples, calibration_seed=calibration_seed,
                   calibration_data=dataset if mode.needs_calibration else None)


def _check_percentile(value: object, *, needed: bool, what: str) -> float | None:
    if value is None:
        return DEFAULT_PERCENTILE if needed else None
    if not needed:
        raise TfquantError(f"{what} is set but its calibrator is not percentile; drop it")
    return check_percentile(value, what=what)
