"""`convert` with default flags on models and data outside the zoo (issue 13).

Every small model x every mode (MobileNetV2: see ``MNV2_MODES``) with ``--calibration_data
npz:calib.npz`` (256 unlabelled images, no ``--num_calibration_examples``), every calibrator
on the SE-CNN, unlabelled image-folder calibration, custom layers, and the calibration-count
errors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.outside_zoo import builders as B
from tests.outside_zoo.helpers import Run, cli, one_line_error, read_json, tflite_of

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]
MODELS = ["se_cnn", "dw_block", "layernorm", "softmax", "custom"]
# keras.applications MobileNetV2 (155 layers): each conversion costs 15-40 s on 2 cores, almost
# all of it in TFLiteConverter's Keras -> SavedModel export, so it gets only default int8
# here; the input-contract tests add an int8 conversion with --preprocess, and the
# keras.applications coverage script (issue 13) runs every family in every mode.
MNV2_MODES = ["int8"]
CALIBRATORS = ["max", "moving_average", "percentile", "entropy", "mse", "aciq"]


def _model(request: pytest.FixtureRequest, name: str) -> Path:
    return request.getfixturevalue(name)


def _check_default_count(run: Run) -> None:
    """Issue 13 item 1: all 256 calibration images are used, and one line says so."""
    recipe = read_json(tflite_of(run).with_suffix(".recipe.json"))
    assert recipe["num_calibration_examples"] == B.N_CALIB, recipe
    said = [line for line in run.lines if str(B.N_CALIB) in line and "calibrat" in line.lower()
            and re.search(r"\b(all|every)\b", line.lower())]
    assert said, f"expected a line saying all {B.N_CALIB} examples are used\n{run.explain()}"




def _matrix() -> list:
    params = []
    for name in MODELS:
        for mode in MODES:
            params.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    for mode in MNV2_MODES:
        params.append(pytest.param("mnv2", mode, id=f"mnv2-{mode}"))
    return params


@pytest.mark.parametrize(("name", "mode"), _matrix())
def test_convert_every_model_every_mode_with_default_flags(
    request: pytest.FixtureRequest, convert_once: Callable[..., Run], name: str, mode: str
) -> None:
    run = convert_once(_model(request, name), mode)
    out = tflite_of(run)
    recipe = read_json(out.with_suffix(".recipe.json"))
    assert recipe["mode"] == mode
    assert any(line.startswith("wrote ") for line in run.lines), run.explain()
    if mode in ("int8", "int16x8"):
        _check_default_count(run)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
@pytest.mark.parametrize("calibrator", CALIBRATORS)
def test_convert_se_cnn_with_every_calibrator(
    se_cnn: Path, files: dict[str, Path], convert_once: Callable[..., Run],
    evaluate_once: Callable[..., dict[str, Any]], mode: str, calibrator: str,
) -> None:
    run = convert_once(se_cnn, mode, "--calibrator", calibrator)
    out = tflite_of(run)
    recipe = read_json(out.with_suffix(".recipe.json"))
    assert recipe["calibrator"] == calibrator and recipe["mode"] == mode
    _check_default_count(run)
    # Every calibrator keeps the SE-CNN within 3 points of its float .tflite on test.npz.
    dataset = f"npz:{files['test']}"
    float_acc = evaluate_once(tflite_of(convert_once(se_cnn, "fp32")), dataset)["accuracy"]
    accuracy = evaluate_once(out, dataset)["accuracy"]
    assert accuracy >= float_acc - 0.03, (calibrator, mode, accuracy, float_acc)
    # The calibrator's ranges are what the model holds (inspect reads them back).
    inspected = cli("inspect", "--json", str(out))
    assert inspected.rc == 0, inspected.explain()
    assert '"ranges"' in inspected.out and calibrator.split("_")[0] in inspected.out, inspected.out[:2000]


def test_convert_with_a_flat_folder_of_unlabelled_images(
    se_cnn: Path, files: dict[str, Path], convert_once: Callable[..., Run]
) -> None:
    run = convert_once(se_cnn, "int8", calibration=f"folder:{files['gray_flat']}")
    recipe = read_json(tflite_of(run).with_suffix(".recipe.json"))
    assert recipe["num_calibration_examples"] == B.N_CALIB, recipe


def test_custom_layer_without_custom_objects_names_the_class(
    custom: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "custom.tflite"
    run = cli("convert", "--model", str(custom), "--mode", "fp32", "--out", str(out))
    line = one_line_error(run)
    assert "ChannelScale" in line and "--custom_objects" in line, line
    assert not out.exists() and not out.with_suffix(".recipe.json").exists()


def test_custom_objects_accepts_a_module_name(
    custom: Path, my_layers_py: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--custom_objects pkg.module`` (importable module) works like the file path."""
    monkeypatch.syspath_prepend(str(my_layers_py.parent))
    out = tmp_path / "custom_mod.tflite"
    run = cli("convert", "--model", str(custom), "--mode", "fp32", "--custom_objects", "my_layers",
              "--out", str(out))
    assert tflite_of(run) == out


def test_custom_objects_file_that_does_not_exist_is_one_line_error(custom: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.tflite"
    run = cli("convert", "--model", str(custom), "--mode", "fp32",
              "--custom_objects", str(tmp_path / "nope.py"), "--out", str(out))
    line = one_line_error(run)
    assert "nope.py" in line and "unrecognized arguments" not in line, line
    assert not out.exists()


def test_asking_for_more_calibration_examples_than_exist_is_one_line_error(
    se_cnn: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "too_many.tflite"
    run = cli("convert", "--model", str(se_cnn), "--mode", "int8", "--calibration_data",
              f"npz:{files['calib']}", "--num_calibration_examples", "5000", "--out", str(out))
    line = one_line_error(run)
    assert "5000" in line and "256" in line, line
    assert not out.exists() and not out.with_suffix(".recipe.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_explicit_calibration_count_below_the_file_size_is_used(
    se_cnn: Path, convert_once: Callable[..., Run]
) -> None:
    run = convert_once(se_cnn, "int8", "--num_calibration_examples", "100")
    recipe = read_json(tflite_of(run).with_suffix(".recipe.json"))
    assert recipe["num_calibration_examples"] == 100
    assert not any(re.search(r"\b256\b", line) and "calibrat" in line.lower() for line in run.lines), run.explain()
