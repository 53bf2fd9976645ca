"""autoquant on a small model: meets its budget (by promoting the broken layer to int16) or
says so in one line, exits 2 and writes nothing under OUT's name."""

from __future__ import annotations

import json

from tfquant import cli


def _args(model_path, data, out, *extra):
    return ["autoquant", "--model", model_path, "--calibration_data", data, "--eval_data", data,
            "--out", str(out), *extra]


def test_autoquant_meets_its_budget_by_promotion(broken_npz, tmp_path):
    _, model_path, data = broken_npz
    out = tmp_path / "auto.tflite"
    assert cli.main(_args(model_path, data, out, "--max_drop", "0.1", "--latency_runs", "3")) == 0
    log = json.loads((tmp_path / "auto.steps.json").read_text())
    assert log["met"] and log["float_accuracy_val"] - log["accuracy_val"] <= 0.1
    kinds = [s["kind"] for s in log["steps"]]
    assert kinds[:6] == ["calibrator"] * 6  # every calibrator tried once
    assert all(s["drop"] > 0.1 for s in log["steps"][:6])  # none of them is enough
    kept = [s for s in log["steps"] if s["kept"] and s["kind"] == "promote"]
    assert kept and "broken" in kept[0]["layers"]["int16x8"]  # int16 first, and it helped
    assert all(s["latency_ms"] is not None and s["size_bytes"] > 0 for s in log["steps"])
    recipe = json.loads((tmp_path / "auto.recipe.json").read_text())
    assert any(r.get("precision") == "int16x8" for r in recipe["layer_rules"])
    assert out.stat().st_size > 0 and "| promote |" in (tmp_path / "auto.steps.md").read_text()
    assert log["accuracy_report"] is not None and log["n_report"] + log["n_val"] == 200


def test_autoquant_exits_2_when_the_budget_cannot_be_met(broken_npz, tmp_path, capsys):
    _, model_path, data = broken_npz
    out = tmp_path / "none.tflite"
    status = cli.main(_args(model_path, data, out, "--max_drop", "0.0", "--max_promotions", "0",
                            "--latency_runs", "0"))
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the budget of 0 cannot be met")
    assert not list(tmp_path.glob("none*"))


def test_autoquant_allow_qat_tries_qat_after_promotion(broken_npz, tmp_path, capsys):
    _, model_path, data = broken_npz
    out = tmp_path / "qat.tflite"
    status = cli.main(_args(model_path, data, out, "--max_drop", "0.0", "--max_promotions", "0",
                            "--latency_runs", "0", "--allow_qat", "--train_data", data, "--qat_epochs", "1"))
    err = capsys.readouterr().err
    assert " qat: top-1 " in err  # the QAT step ran after the calibrators missed
    if status == 0:
        assert (tmp_path / "qat.qat.json").is_file() and out.is_file()
        assert json.loads((tmp_path / "qat.steps.json").read_text())["steps"][-1]["kind"] == "qat"
    else:
        assert status == 2 and not list(tmp_path.glob("qat*"))
