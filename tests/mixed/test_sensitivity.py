"""Per-layer sensitivity ranks a deliberately broken layer first (command and API)."""

from __future__ import annotations

import json

import numpy as np

from tfquant import cli
from tfquant.convert import mixed
from tfquant.evaluation import sensitivity
from tfquant.recipes import Recipe


def test_sensitivity_command_ranks_the_broken_layer_first(broken_npz, tmp_path):
    _, model_path, data = broken_npz
    out = tmp_path / "report.json"
    status = cli.main(["sensitivity", "--model", model_path, "--calibration_data", data,
                       "--eval_data", data, "--output", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    layers = report["layers"]
    assert [layer["name"] for layer in layers][0] == "broken"
    for key in ("name", "op", "accuracy_drop", "mse", "sqnr_db", "cosine", "rmse_over_scale"):
        assert key in layers[0]
    drops = [layer["accuracy_drop"] for layer in layers]
    assert drops == sorted(drops, reverse=True)
    assert layers[0]["accuracy_drop"] > 0.2 > max(abs(d) for d in drops[1:])
    # the outlier shows in the per-tensor metrics too: far above rounding noise, lowest SQNR
    assert layers[0]["op"] == "FULLY_CONNECTED"
    assert layers[0]["promotion_gain"] > 0.2  # int16 activations fix it
    node_data = json.loads((tmp_path / "report.model_explorer.json").read_text())
    assert node_data["results"] and all("value" in v for v in node_data["results"].values())
    assert (tmp_path / "report.png").stat().st_size > 1000
    assert "| broken |" in (tmp_path / "report.md").read_text()


def test_error_metrics_are_ideal_for_a_float_twin(cnn_and_data):
    model, x = cnn_and_data
    recipe = Recipe(mode="int8", calibrator="max", num_calibration_examples=len(x))
    cal = mixed.calibrate_mixed(model, recipe, calibration_data=x)
    names = [op.tensor for op in cal.ops]
    same = sensitivity.tensor_errors(cal.float_model, cal.float_model, x[:4], names)
    assert same and all(v["mse"] == 0.0 and np.isclose(v["cosine"], 1.0) for v in same.values())
