"""The conversion recipe: a frozen, typed description of how a .tflite was produced.

A recipe is data. It round-trips through JSON (unknown keys are rejected, so a typo in a
hand-written recipe fails loudly), is saved as ``<model>.recipe.json`` beside every .tflite
and is embedded in the flatbuffer's metadata under the name ``tfquant_recipe``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, IODType, Mode

RECIPE_VERSION = 1


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
    """

    mode: Mode
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    io_dtype: IODType = IODType.FLOAT32
    num_calibration_examples: int = 1000
    calibration_seed: int = 0
    calibration_data: str | None = None

    def __post_init__(self) -> None:
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

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"recipe_version": RECIPE_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            d[field.name] = value.value if hasattr(value, "value") else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        d = dict(d)
        version = d.pop("recipe_version", RECIPE_VERSION)
        if version != RECIPE_VERSION:
            raise TfquantError(
                f"recipe_version {version!r} is not supported (this tfquant reads "
                f"{RECIPE_VERSION}); re-create the recipe with this version"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TfquantError(
                f"unknown recipe key(s) {unknown}; allowed keys: {sorted(known)}"
            )
        if "mode" not in d:
            raise TfquantError("recipe has no 'mode'; add e.g. \"mode\": \"int8\"")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise TfquantError(f"recipe is not valid JSON ({e}); fix the file") from None
        if not isinstance(d, dict):
            raise TfquantError("recipe JSON must be an object with a 'mode' key")
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)
