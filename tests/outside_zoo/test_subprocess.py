"""The documented commands as real processes: exit codes and a clean stderr (issue 13 item 5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.outside_zoo import builders as B

ROOT = Path(__file__).resolve().parents[2]
# TensorFlow / absl / CUDA start-up chatter: glog-style "E0000 00:00:..." lines, cuda stubs,
# oneDNN notices, absl's InitializeLog banner.
NOISE = re.compile(r"^[EWIF]\d{4} |cuInit|cuda|oneDNN|absl::|tensorflow/|TF_ENABLE_ONEDNN_OPTS", re.I)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["PYTHONPATH"] = str(ROOT)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(
        [sys.executable, "-m", "tfquant", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


def test_convert_int8_as_a_process_exits_0_with_clean_stderr(
    se_cnn: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "se_int8.tflite"
    proc = _run("convert", "--model", str(se_cnn), "--mode", "int8",
                "--calibration_data", f"npz:{files['calib']}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.with_suffix(".recipe.json").is_file()
    noise = [line for line in proc.stderr.splitlines() if NOISE.search(line)]
    assert noise == [], proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("wrote "), proc.stdout


def test_error_as_a_process_is_one_line_and_exit_2(
    se_cnn: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "too_many.tflite"
    proc = _run("convert", "--model", str(se_cnn), "--mode", "int8", "--calibration_data",
                f"npz:{files['calib']}", "--num_calibration_examples", "5000", "--out", str(out))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(B.N_CALIB) in lines[0], proc.stderr
    assert not out.exists()
