"""Input contract: ``--preprocess`` / ``--input_mean`` / ``--input_std`` (issue 13 item 4).

Calibrated from an unlabelled RGB image folder (pixels decoded to [0, 1]); the recipe records
the contract; ``evaluate`` without flags applies it (same accuracy as passing the flags
explicitly). Visibility: ``contract.keras`` was trained on [-1, 1] inputs and loses most of its
accuracy when fed [0, 1] pixels, and an int8 model calibrated on [0, 1] instead of [-1, 1]
would clip half of the input range (its input zero point would sit at -128).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.outside_zoo.helpers import Run, cli, read_json, tflite_of


CONTRACT_FLAGS = {
    "preset": ("--preprocess", "mobilenet_v2"),
    "mean_std": ("--input_mean", "0.5", "--input_std", "0.5"),
}


def _input_contract(tflite: Path) -> dict[str, Any]:
    recipe = read_json(tflite.with_suffix(".recipe.json"))
    assert isinstance(recipe.get("input"), dict), recipe
    return recipe["input"]


def _quantized_input(tflite: Path) -> dict[str, Any]:
    """The int8 tensor the float input is quantized into (first non-constant int8 tensor of
    the input's shape)."""
    run = cli("inspect", "--json", str(tflite))
    assert run.rc == 0, run.explain()
    report = json.loads(run.out)
    shape = report["inputs"][0]["shape"]
    for t in report["tensors"]:
        if not t["constant"] and t["dtype"] == "int8" and t["shape"] == shape:
            return t
    raise AssertionError(f"no int8 tensor of the input shape {shape} in {tflite}")


@pytest.mark.parametrize("flags", list(CONTRACT_FLAGS), ids=list(CONTRACT_FLAGS))
def test_recipe_records_the_contract(
    contract: Path, files: dict[str, Path], convert_once: Callable[..., Run], flags: str
) -> None:
    run = convert_once(contract, "int8", *CONTRACT_FLAGS[flags], calibration=f"folder:{files['rgb_flat']}")
    text = json.dumps(_input_contract(tflite_of(run)))
    if flags == "preset":
        assert "mobilenet_v2" in text, text
    else:
        assert "0.5" in text, text


@pytest.mark.parametrize(("flags", "mode"), [("preset", "fp32"), ("preset", "int8"), ("mean_std", "int8")])
def test_evaluate_applies_the_recorded_contract(
    contract: Path, files: dict[str, Path], convert_once: Callable[..., Run],
    evaluate_once: Callable[..., dict[str, Any]], float_accuracy: dict[str, float], mode: str,
    flags: str,
) -> None:
    tflite = tflite_of(convert_once(contract, mode, *CONTRACT_FLAGS[flags],
                                    calibration=f"folder:{files['rgb_flat']}"))
    dataset = f"folder:{files['rgb_labelled']}"
    implicit = evaluate_once(tflite, dataset)
    explicit = evaluate_once(tflite, dataset, *CONTRACT_FLAGS[flags])
    assert implicit["accuracy"] == explicit["accuracy"]
    # Trained on [-1, 1]: with the contract applied it keeps its float accuracy (int8 within
    # 3 points shows calibration applied it too); fed [0, 1] it would be far lower.
    assert implicit["accuracy"] >= float_accuracy["contract"] - 0.03, (implicit["accuracy"], float_accuracy)
    assert float_accuracy["contract"] - float_accuracy["contract_fed_0_1"] >= 0.2, float_accuracy


def test_evaluate_flags_override_the_recorded_contract(
    contract: Path, files: dict[str, Path], convert_once: Callable[..., Run],
    evaluate_once: Callable[..., dict[str, Any]], float_accuracy: dict[str, float],
) -> None:
    tflite = tflite_of(convert_once(contract, "fp32", *CONTRACT_FLAGS["preset"],
                                    calibration=f"folder:{files['rgb_flat']}"))
    raw = evaluate_once(tflite, f"folder:{files['rgb_labelled']}", "--preprocess", "none")
    assert abs(raw["accuracy"] - float_accuracy["contract_fed_0_1"]) <= 0.02, (raw["accuracy"], float_accuracy)


def test_keras_applications_mobilenet_v2_calibrated_in_minus_one_to_one(
    mnv2: Path, files: dict[str, Path], convert_once: Callable[..., Run],
    evaluate_once: Callable[..., dict[str, Any]],
) -> None:
    run = convert_once(mnv2, "int8", *CONTRACT_FLAGS["preset"], calibration=f"folder:{files['rgb_flat']}")
    tflite = tflite_of(run)
    assert "mobilenet_v2" in json.dumps(_input_contract(tflite))
    # Calibrated on [-1, 1]: the input's int8 grid is centred (zero point near 0), where
    # [0, 1] pixels would give -128; its span 255 * scale is ~2.
    q = _quantized_input(tflite)
    assert abs(q["zero_points"][0]) <= 2 and abs(255 * q["scales"][0] - 2.0) <= 0.05, q
    dataset = f"folder:{files['rgb_labelled']}"
    implicit = evaluate_once(tflite, dataset)
    explicit = evaluate_once(tflite, dataset, *CONTRACT_FLAGS["preset"])
    assert implicit["accuracy"] == explicit["accuracy"] and implicit["n_examples"] == 300


def test_without_a_contract_the_input_grid_covers_zero_to_one(
    mnv2: Path, convert_once: Callable[..., Run]
) -> None:
    """The control for the test above: default flags, pixels in [0, 1] -> zero point -128."""
    q = _quantized_input(tflite_of(convert_once(mnv2, "int8")))
    assert q["zero_points"][0] == -128 and abs(255 * q["scales"][0] - 1.0) <= 0.05, q
