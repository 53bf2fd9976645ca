"""The main job's script at smoke size, as a user runs it (a subprocess, trained weights)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tfquant.io_utils import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_ptq_zoo_smoke_writes_records_and_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "experiments/ptq_zoo.py", "--smoke", "--results_dir", str(tmp_path),
         "--run_name", "smoke", "--variants", "fp32,int8_per_channel,int8_per_tensor"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "smoke" / "ptq_zoo"  # one name: script, module and results folder
    records = read_jsonl(run / "results.jsonl")
    assert all(r["schema_version"] == 1 for r in records)
    measured = [r for r in records if r["executed_in"] == "tflite"]
    assert len(measured) == 3 * 2  # variants x runtimes
    by = {(r["variant"], r["runtime"]): r for r in measured}
    # The trained cnn is far above chance in every variant on real Fashion-MNIST images.
    assert all(r["accuracy"] > 0.8 for r in measured)
    # int8 models are about 4x smaller than float.
    assert by[("int8_per_channel", "xnnpack")]["size_bytes"] < 0.35 * by[("fp32", "xnnpack")]["size_bytes"]
    assert (run / "models" / "cnn" / "int8_per_tensor.recipe.json").exists()
    table = (run / "results.md").read_text()
    assert "| cnn | int8_per_tensor |" in table
    assert "| cnn | int8_per_tensor |" in proc.stdout  # the table is printed too


def test_ptq_zoo_rejects_unknown_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "experiments/ptq_zoo.py", "--models", "lenet", "--results_dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "unknown zoo model 'lenet'" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_nvidia_calibration_smoke_covers_every_column_in_the_interpreter(tmp_path: Path) -> None:
    from tfquant.experiments.nvidia_calibration import DEFAULT_COLUMNS

    argv = [sys.executable, "experiments/nvidia_calibration.py", "--smoke", "--results_dir", str(tmp_path),
            "--run_name", "smoke"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "smoke" / "nvidia_calibration"
    records = read_jsonl(run / "results.jsonl")
    cells = {(r["mode"], r["column"]): r for r in records}
    expected = {("float", "float")} | {(m, c) for m in ("int8", "int16x8") for c in DEFAULT_COLUMNS}
    assert set(cells) == expected
    for r in records:
        assert "error" not in r, r
        assert r["executed_in"] == "tflite" and r["n_examples"] == 300
        assert r["accuracy"] > 0.75  # trained cnn on real images, whatever the calibrator
    # the calibrators wrote their ranges into the models they name
    from tfquant import convert

    ranges = convert.read_ranges(cells[("int8", "entropy")]["tflite_path"])
    assert {v["calibrator"] for v in ranges["activations"].values()} == {"entropy"}
    assert convert.read_ranges(cells[("int8", "converter")]["tflite_path"]) is None
    # calibrators that clip give models different from max's
    assert cells[("int8", "percentile_99.9")].get("same_model_as") != "max"
    table = (run / "results.md").read_text()
    assert "## int8" in table and "## int16x8" in table and "| cnn |" in table and "**" in table
    # a re-run resumes: nothing is measured again
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(read_jsonl(run / "results.jsonl")) == len(records)
