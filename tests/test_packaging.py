"""`pip install .` gives the library (with the zoo weights) and the `tfquant` command."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Builds the wheel from the checkout and installs it (no deps: they are in this venv)."""
    tmp = tmp_path_factory.mktemp("pkg")
    wheels, target = tmp / "wheels", tmp / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp)
    (wheel,) = wheels.glob("tfquant-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "tfquant/models/weights/cnn.weights.h5" in names
    assert "tfquant/models/weights/manifest.json" in names
    assert "tfquant = tfquant.cli:main" in entry_points
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp)
    return target


def _run(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    return subprocess.run([str(target / "bin" / "tfquant"), *args], capture_output=True, text=True,
                          env=env, cwd=target.parent, timeout=300)


def test_installed_command_runs_the_installed_library(installed: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)
    where = subprocess.run([sys.executable, "-c", "import tfquant; print(tfquant.__file__)"],
                           capture_output=True, text=True, env=env, cwd=installed.parent, check=True)
    assert Path(where.stdout.strip()).is_relative_to(installed)
    help_ = _run(installed, "--help")
    assert help_.returncode == 0 and "convert" in help_.stdout and "inspect" in help_.stdout


def test_installed_command_has_the_cli_errors(installed: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    res = _run(installed, "inspect", str(bad))
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "corrupt.tflite" in lines[0]


def test_installed_zoo_model_loads_its_weights(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn_fp16.tflite"
    res = _run(installed, "convert", "--model", "zoo:cnn", "--mode", "fp16", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file() and out.stat().st_size > 100_000
