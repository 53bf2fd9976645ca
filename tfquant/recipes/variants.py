"""Named recipes: the variants the main job compares, by the names users see in tables."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from tfquant.errors import TfquantError
from tfquant.qtypes import Granularity, Mode
from tfquant.recipes.recipe import Recipe

VARIANTS: Mapping[str, Recipe] = MappingProxyType(
    {
        "fp32": Recipe(mode=Mode.FP32),
        "fp16": Recipe(mode=Mode.FP16),
        "dynamic": Recipe(mode=Mode.DYNAMIC),
        "int8_per_channel": Recipe(mode=Mode.INT8, weight_granularity=Granularity.PER_CHANNEL),
        "int8_per_tensor": Recipe(mode=Mode.INT8, weight_granularity=Granularity.PER_TENSOR),
        "int16x8": Recipe(mode=Mode.INT16X8),
    }
)


def variant(name: str) -> Recipe:
    """Returns the variant (named recipe) called ``name`` (e.g. ``int8_per_channel``)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise TfquantError(
            f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}"
        ) from None
