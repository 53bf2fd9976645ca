"""Recipe data: JSON round trip, strict keys, consistency checks."""

from __future__ import annotations

import json

import pytest

from tfquant import VARIANTS, Granularity, IODType, Mode, Recipe, TfquantError, variant


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_round_trip_through_json(name: str) -> None:
    r = VARIANTS[name]
    assert Recipe.from_json(r.to_json()) == r


def test_strings_are_parsed_to_enums() -> None:
    r = Recipe(mode="INT8", weight_granularity="per_tensor", io_dtype="int8")
    assert r.mode is Mode.INT8
    assert r.weight_granularity is Granularity.PER_TENSOR
    assert r.io_dtype is IODType.INT8
    assert json.loads(r.to_json())["mode"] == "int8"


def test_unknown_key_is_rejected_with_allowed_keys() -> None:
    with pytest.raises(TfquantError, match="unknown recipe key.*'modee'.*allowed keys"):
        Recipe.from_dict({"mode": "int8", "modee": "x"})


def test_unknown_mode_lists_allowed_modes() -> None:
    with pytest.raises(TfquantError, match="unknown mode 'int4'; choose one of: fp32, fp16"):
        Recipe(mode="int4")


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"mode": "fp32", "io_dtype": "int8"}, "io_dtype int8 needs mode int8"),
        ({"mode": "int8", "io_dtype": "int16"}, "io_dtype int16 needs mode int16x8"),
        ({"mode": "int8", "num_calibration_examples": 0}, "positive integer"),
        ({"mode": "int8", "num_calibration_examples": True}, "positive integer"),
    ],
)
def test_inconsistent_recipes_are_rejected(kwargs: dict, msg: str) -> None:
    with pytest.raises(TfquantError, match=msg):
        Recipe(**kwargs)


def test_bad_json_and_missing_mode_and_version() -> None:
    with pytest.raises(TfquantError, match="not valid JSON"):
        Recipe.from_json("{")
    with pytest.raises(TfquantError, match="no 'mode'"):
        Recipe.from_json("{}")
    with pytest.raises(TfquantError, match="must be an object"):
        Recipe.from_json("[1]")
    with pytest.raises(TfquantError, match="recipe_version 99"):
        Recipe.from_dict({"mode": "int8", "recipe_version": 99})


def test_unknown_variant() -> None:
    assert variant("int16x8").mode is Mode.INT16X8
    with pytest.raises(TfquantError, match="unknown variant 'int4'"):
        variant("int4")


def test_recipe_is_frozen() -> None:
    r = Recipe(mode="int8")
    with pytest.raises(Exception):
        r.mode = Mode.FP32  # type: ignore[misc]
    assert r.replace(mode="fp16").mode is Mode.FP16


def test_for_mode_records_the_calibration_draw_only_when_the_mode_calibrates() -> None:
    int8 = Recipe.for_mode(Mode.INT8, weight_granularity=Granularity.PER_TENSOR, dataset="fashion_mnist",
                           num_calibration_examples=100, calibration_seed=3)
    assert int8 == Recipe(mode=Mode.INT8, weight_granularity=Granularity.PER_TENSOR, num_calibration_examples=100,
                          calibration_seed=3, calibration_data="fashion_mnist")
    fp32 = Recipe.for_mode(Mode.FP32, dataset="fashion_mnist", num_calibration_examples=100, calibration_seed=3)
    assert fp32.calibration_data is None and fp32.weight_granularity is Granularity.PER_CHANNEL
