"""`evaluate` and `inspect` with default flags on .tflite files converted from a user's models.

Accuracy properties on the 300 test digits: the fp32 .tflite agrees with Keras; fp16 and
dynamic are within 2 points of it; int8 and int16x8 within 3 points; an image folder of the
same digits (8-bit PNGs) gives the same accuracy as the npz within 2 points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.outside_zoo import builders as B
from tests.outside_zoo.helpers import Run, cli, one_line_error, tflite_of

TRAINED = ["se_cnn", "dw_block", "layernorm", "softmax", "custom"]
TOLERANCE = {"fp16": 0.02, "dynamic": 0.02, "int8": 0.03, "int16x8": 0.03}


def _params() -> list:
    params = []
    for name in TRAINED:
        for mode, tol in TOLERANCE.items():
            params.append(pytest.param(name, mode, tol, id=f"{name}-{mode}"))
    return params


@pytest.mark.parametrize(("name", "mode", "tolerance"), _params())
def test_quantized_accuracy_is_close_to_float_on_npz(
    request: pytest.FixtureRequest,
    convert_once: Callable[..., Run],
    evaluate_once: Callable[..., dict[str, Any]],
    files: dict[str, Path],
    float_accuracy: dict[str, float],
    name: str,
    mode: str,
    tolerance: float,
) -> None:
    model = request.getfixturevalue(name)
    dataset = f"npz:{files['test']}"
    fp32 = evaluate_once(tflite_of(convert_once(model, "fp32")), dataset)
    quant = evaluate_once(tflite_of(convert_once(model, mode)), dataset)
    assert fp32["n_examples"] == quant["n_examples"] == B.N_TEST
    assert abs(fp32["accuracy"] - float_accuracy[name]) <= 0.01, (fp32["accuracy"], float_accuracy[name])
    assert fp32["accuracy"] >= 0.8, f"{name} did not train: {fp32['accuracy']}"
    assert quant["accuracy"] >= fp32["accuracy"] - tolerance, (mode, quant["accuracy"], fp32["accuracy"])


def test_evaluate_output_json_fields(
    se_cnn: Path, convert_once: Callable[..., Run], evaluate_once: Callable[..., dict[str, Any]],
    files: dict[str, Path],
) -> None:
    tflite = tflite_of(convert_once(se_cnn, "fp16"))
    result = evaluate_once(tflite, f"npz:{files['test']}")
    assert result["tflite_path"] == str(tflite)
    assert result["dataset"] == f"npz:{files['test']}"
    assert result["n_examples"] == B.N_TEST and 0.0 <= result["accuracy"] <= 1.0
    assert result["executed_in"] == "tflite"
    assert result["size_bytes"] == tflite.stat().st_size
    assert 0 < result["latency_ms_min"] <= result["latency_ms_median"] <= result["latency_ms_p90"]
    assert result["recipe"]["mode"] == "fp16"
    run = result["_run"]
    assert f"top-1 {result['accuracy']:.4f} on {B.N_TEST}" in run.out, run.explain()


@pytest.mark.parametrize("mode", ["fp32", "int8", "int16x8"])
def test_folder_of_pngs_gives_the_npz_accuracy(
    se_cnn: Path, convert_once: Callable[..., Run], evaluate_once: Callable[..., dict[str, Any]],
    files: dict[str, Path], mode: str,
) -> None:
    tflite = tflite_of(convert_once(se_cnn, mode))
    on_npz = evaluate_once(tflite, f"npz:{files['test']}")
    on_folder = evaluate_once(tflite, f"folder:{files['gray_labelled']}")
    assert on_folder["n_examples"] == B.N_TEST
    assert abs(on_folder["accuracy"] - on_npz["accuracy"]) <= 0.02, (on_folder["accuracy"], on_npz["accuracy"])
    float_on_folder = evaluate_once(tflite_of(convert_once(se_cnn, "fp32")), f"folder:{files['gray_labelled']}")
    assert on_folder["accuracy"] >= float_on_folder["accuracy"] - 0.03, (on_folder, float_on_folder)


def test_evaluate_on_npz_without_labels_is_one_line_error(
    se_cnn: Path, convert_once: Callable[..., Run], files: dict[str, Path], tmp_path: Path
) -> None:
    tflite = tflite_of(convert_once(se_cnn, "fp32"))
    out = tmp_path / "r.json"
    run = cli("evaluate", "--tflite", str(tflite), "--dataset", f"npz:{files['calib']}", "--output", str(out))
    line = one_line_error(run)
    assert "label" in line.lower(), line
    assert not out.exists()


def test_evaluate_on_flat_folder_without_classes_is_one_line_error(
    se_cnn: Path, convert_once: Callable[..., Run], files: dict[str, Path], tmp_path: Path
) -> None:
    tflite = tflite_of(convert_once(se_cnn, "fp32"))
    out = tmp_path / "r.json"
    run = cli("evaluate", "--tflite", str(tflite), "--dataset", f"folder:{files['gray_flat']}",
              "--output", str(out))
    line = one_line_error(run)
    assert "label" in line.lower() or "class" in line.lower(), line
    assert not out.exists()


def test_evaluate_mobilenet_v2_random_weights_runs(
    mnv2: Path, convert_once: Callable[..., Run], evaluate_once: Callable[..., dict[str, Any]],
    files: dict[str, Path],
) -> None:
    """Untrained keras.applications model: evaluation runs on every example (no accuracy claim)."""
    result = evaluate_once(tflite_of(convert_once(mnv2, "int8")), f"npz:{files['test_rgb']}")
    assert result["n_examples"] == B.N_TEST and result["recipe"]["mode"] == "int8"


# ------------------------------------------------------------------------------------- inspect


def test_inspect_int8_se_cnn_shows_the_gate_ops_int8_tensors_and_recipe(
    se_cnn: Path, convert_once: Callable[..., Run]
) -> None:
    tflite = tflite_of(convert_once(se_cnn, "int8"))
    run = cli("inspect", str(tflite))
    assert run.rc == 0, run.explain()
    for op in ("CONV_2D", "MUL", "LOGISTIC", "ADD", "MEAN"):
        assert op in run.out, (op, run.out[:3000])
    assert "int8" in run.out and '"mode": "int8"' in run.out


@pytest.mark.parametrize("name", ["se_cnn", "dw_block", "layernorm", "softmax", "mnv2"])
def test_inspect_json_of_int8_models(
    request: pytest.FixtureRequest, convert_once: Callable[..., Run], name: str
) -> None:
    tflite = tflite_of(convert_once(request.getfixturevalue(name), "int8"))
    run = cli("inspect", "--json", str(tflite))
    assert run.rc == 0, run.explain()
    report = json.loads(run.out)
    assert report["size_bytes"] == tflite.stat().st_size
    assert report["op_counts"] and all(n > 0 for n in report["op_counts"].values())
    variable = [t for t in report["tensors"] if not t["constant"]]
    int8 = [t for t in variable if t["dtype"] == "int8"]
    assert int8 and all(len(t["scales"]) >= 1 and t["scales"][0] > 0 for t in int8)
    assert [t["dtype"] for t in report["inputs"]] == ["float32"]


def test_inspect_json_includes_the_embedded_recipe(
    se_cnn: Path, convert_once: Callable[..., Run]
) -> None:
    tflite = tflite_of(convert_once(se_cnn, "fp16"))
    run = cli("inspect", "--json", str(tflite))
    assert run.rc == 0, run.explain()
    report = json.loads(run.out)
    assert report.get("recipe", {}).get("mode") == "fp16", sorted(report)
