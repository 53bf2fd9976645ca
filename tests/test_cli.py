"""CLI smoke tests and every user-facing error of the CLI (one line, exit 2, no output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfquant.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fmnist_npz(tmp_path_factory) -> Path:
    """200 real Fashion-MNIST test images as an npz dataset (x_train/x_test splits)."""
    from tfquant.data.fashion_mnist import load_fashion_mnist

    x, y = load_fashion_mnist("test")
    path = tmp_path_factory.mktemp("npz") / "fm.npz"
    np.savez(path, x_train=x[:100], y_train=y[:100], x_test=x[100:300], y_test=y[100:300])
    return path


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, fmnist_npz) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cnn_int8.tflite"
    rc = main([
        "convert", "--model", "zoo:cnn", "--mode", "int8", "--calibration_data", f"npz:{fmnist_npz}",
        "--num_calibration_examples", "50", "--out", str(out),
    ])
    assert rc == 0
    return out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_convert_writes_model_and_recipe(int8_model: Path) -> None:
    assert int8_model.stat().st_size > 0
    recipe = json.loads(int8_model.with_suffix(".recipe.json").read_text())
    assert recipe["mode"] == "int8" and recipe["num_calibration_examples"] == 50


def test_evaluate_matches_keras_on_npz(int8_model: Path, fmnist_npz: Path, tmp_path: Path) -> None:
    from tfquant import models

    out = tmp_path / "r.json"
    rc = main([
        "evaluate", "--tflite", str(int8_model), "--dataset", f"npz:{fmnist_npz}",
        "--latency_runs", "3", "--output", str(out),
    ])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n_examples"] == 200 and result["executed_in"] == "tflite"
    assert result["latency_ms_min"] <= result["latency_ms_median"] <= result["latency_ms_p90"]
    with np.load(fmnist_npz) as d:
        keras_acc = float(np.mean(np.argmax(models.build("cnn").predict(d["x_test"], verbose=0), -1) == d["y_test"]))
    assert abs(result["accuracy"] - keras_acc) <= 0.03
    assert result["recipe"]["mode"] == "int8"


def test_inspect_shows_int8_tensors_and_recipe(int8_model: Path, capsys) -> None:
    assert main(["inspect", str(int8_model)]) == 0
    text = capsys.readouterr().out
    assert "int8" in text and "CONV_2D" in text and '"mode": "int8"' in text


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_convert_with_a_calibrator_and_inspect_shows_who_chose_each_range(
    mode: str, fmnist_npz: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / f"cnn_{mode}_entropy.tflite"
    rc = main([
        "convert", "--model", "zoo:cnn", "--mode", mode, "--calibrator", "entropy",
        "--calibration_data", f"npz:{fmnist_npz}", "--num_calibration_examples", "50", "--out", str(out),
    ])
    assert rc == 0
    assert json.loads(out.with_suffix(".recipe.json").read_text())["calibrator"] == "entropy"
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    section = text[text.index("activation ranges"):]
    rows = [line for line in section.splitlines() if " int8 " in line or " int16 " in line]
    assert rows and sum("entropy" in line for line in rows) >= 3
    assert main(["inspect", "--json", str(out)]) == 0
    ranges = json.loads(capsys.readouterr().out)["ranges"]["activations"]
    assert {v["calibrator"] for v in ranges.values()} == {"entropy"}


def test_inspect_of_a_default_model_names_the_converter_as_the_source(int8_model: Path, capsys) -> None:
    assert main(["inspect", str(int8_model)]) == 0
    assert "the TFLite converter's own min/max calibration" in capsys.readouterr().out


def test_qat_fine_tunes_exports_4_bit_weights_and_checks_fidelity(fmnist_npz: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cnn_qat4.tflite"
    rc = main([
        "qat", "--model", "zoo:cnn", "--train_data", f"npz:{fmnist_npz}", "--calibration_data",
        f"npz:{fmnist_npz}", "--num_calibration_examples", "50", "--epochs", "1", "--weight_bits", "4",
        "--eval_data", f"npz:{fmnist_npz}", "--seed", "3", "--out", str(out),
    ])
    assert rc == 0
    record = json.loads(out.with_suffix(".qat.json").read_text())
    assert record["weight_bits"] == 4 and record["train_examples"] == 100 and record["seed"] == 3
    assert record["finetune_recipe_choice"] == "auto" and record["learning_rate_source"] == "zoo"
    assert record["fidelity"]["agreement"] >= 0.95
    from tfquant import qat

    levels = qat.weight_levels(str(out))
    assert levels and all(-7 <= w.qmin and w.qmax <= 7 for w in levels)  # the 4-bit grid
    from tfquant.convert.metadata import read_bytes

    assert json.loads(read_bytes(out.read_bytes(), "tfquant_qat").decode()) == record


def test_qat_user_errors_are_one_line(fmnist_npz: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["qat", "--train_data", f"npz:{fmnist_npz}", "--calibration_data", f"npz:{fmnist_npz}",
            "--epochs", "1"]
    assert main(base + ["--model", "zoo:cnn", "--out", "m.onnx"]) == 2
    assert ".tflite" in _one_line_error(capsys)
    unlabelled = tmp_path / "x_only.npz"
    np.savez(unlabelled, x=np.load(fmnist_npz)["x_train"])
    bad_train = ["qat", "--train_data", f"npz:{unlabelled}", "--calibration_data", f"npz:{unlabelled}",
                 "--epochs", "1", "--model", "zoo:cnn", "--out", "m.tflite"]
    assert main(bad_train) == 2
    assert "no labels" in _one_line_error(capsys)
    assert not (tmp_path / "m.tflite").exists()


def test_corrupt_tflite_is_one_line_error_and_no_output(tmp_path: Path, fmnist_npz: Path, capsys) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    out = tmp_path / "r.json"
    assert main(["evaluate", "--tflite", str(bad), "--dataset", f"npz:{fmnist_npz}", "--output", str(out)]) == 2
    assert "tflite" in _one_line_error(capsys)
    assert not out.exists()


def test_missing_tflite(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nope.tflite")]) == 2
    assert "nope.tflite" in _one_line_error(capsys)


def test_shape_mismatch_is_one_line_error(int8_model: Path, tmp_path: Path, capsys) -> None:
    npz = tmp_path / "rgb.npz"
    np.savez(npz, x=np.zeros((4, 32, 32, 3), np.float32), y=np.zeros(4, np.int64))
    out = tmp_path / "r.json"
    assert main(["evaluate", "--tflite", str(int8_model), "--dataset", f"npz:{npz}", "--output", str(out)]) == 2
    line = _one_line_error(capsys)
    assert "32, 32, 3" in line and "28, 28, 1" in line
    assert not out.exists()


def test_nan_calibration_data_leaves_no_model(tmp_path: Path, capsys) -> None:
    npz = tmp_path / "nan.npz"
    x = np.zeros((20, 28, 28, 1), np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(npz, x=x, y=np.zeros(20, np.int64))
    out = tmp_path / "m.tflite"
    rc = main(["convert", "--model", "zoo:cnn", "--mode", "int8", "--calibration_data", f"npz:{npz}",
               "--num_calibration_examples", "10", "--out", str(out)])
    assert rc == 2
    assert "nan" in _one_line_error(capsys).lower()
    assert list(tmp_path.iterdir()) == [npz]


def test_empty_dataset(tmp_path: Path, int8_model: Path, capsys) -> None:
    npz = tmp_path / "empty.npz"
    np.savez(npz, x=np.zeros((0, 28, 28, 1), np.float32), y=np.zeros(0, np.int64))
    assert main(["evaluate", "--tflite", str(int8_model), "--dataset", f"npz:{npz}"]) == 2
    assert "empty" in _one_line_error(capsys).lower() or "0 examples" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["convert", "--model", "zoo:nope", "--mode", "fp32", "--out", "x.tflite"], "nope"),
        (["convert", "--model", "zoo:cnn", "--mode", "int8", "--out", "x.tflite"], "--calibration_data"),
        (["convert", "--model", "/no/such/model.keras", "--mode", "fp32", "--out", "x.tflite"], "model.keras"),
        (["convert", "--model", "zoo:cnn", "--mode", "int8", "--calibration_data", "mnist2",
          "--out", "x.tflite"], "mnist2"),
        (["convert", "--model", "zoo:cnn", "--mode", "fp32", "--io_dtype", "int8", "--out", "x.tflite"], "io_dtype"),
        (["convert", "--model", "zoo:cnn", "--mode", "fp32", "--calibrator", "entropy", "--out", "x.tflite"],
         "int8 and int16x8"),
        (["convert", "--model", "zoo:cnn", "--mode", "int8", "--calibrator", "entropy", "--percentile", "99.9",
          "--calibration_data", "fashion_mnist", "--out", "x.tflite"], "percentile"),
        (["convert", "--model", "zoo:cnn", "--mode", "int8", "--calibrator", "percentile", "--percentile", "150",
          "--calibration_data", "fashion_mnist", "--out", "x.tflite"], "(0, 100]"),
        (["convert", "--model", "zoo:cnn", "--mode", "int16x8", "--calibrator", "max", "--activation_scheme",
          "affine", "--calibration_data", "fashion_mnist", "--out", "x.tflite"], "symmetric"),
    ],
)
def test_user_errors_are_one_line(argv: list[str], needle: str, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in _one_line_error(capsys)
    assert not (tmp_path / "x.tflite").exists()


def test_flag_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--model", "zoo:cnn", "--mode", "int4", "--out", "x.tflite"])
    assert exc.value.code == 2
    line = _one_line_error(capsys)
    assert "int4" in line and "int16x8" in line


def test_real_process_exit_status_and_single_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tfquant", "inspect", str(tmp_path / "missing.tflite")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # TensorFlow's start-up noise is muted too
    assert lines[0].startswith("error: ") and "missing.tflite" in lines[0]


def test_cli_finetune_schedules_are_the_library_ones() -> None:
    from tfquant import cli
    from tfquant import qat

    assert cli.FINETUNE_SCHEDULES == qat.FINETUNE_SCHEDULES


@pytest.mark.parametrize("flag", ["--finetune_schedule", "--finetune_recipe"])
def test_finetune_schedule_flag_and_its_earlier_name(flag: str) -> None:
    from tfquant import cli

    argv = ["qat", "--model", "zoo:cnn", "--train_data", "fashion_mnist", "--calibration_data",
            "fashion_mnist", "--epochs", "1", "--out", "/tmp/x.tflite"]
    assert cli.build_parser().parse_args(argv).finetune_schedule == "auto"
    assert cli.build_parser().parse_args(argv + [flag, "whitepaper"]).finetune_schedule == "whitepaper"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv + [flag, "fast"])
