"""The experiment scripts' wrapper: one-line error and exit 2, else the table and the time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tfquant.errors import TfquantError
from tfquant.study.script import report_run

ROOT = Path(__file__).resolve().parents[2]


def test_error_is_one_line_and_exit_2(capsys) -> None:
    def run() -> Path:
        raise TfquantError("unknown zoo model 'lenet'; choose from: cnn")

    assert report_run("study", "results.md", run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown zoo model 'lenet'; choose from: cnn"]


def test_success_prints_the_table_and_the_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "results.md").write_text("| a | b |\n")

    assert report_run("study", "results.md", lambda: tmp_path) == 0
    out = capsys.readouterr().out
    assert "| a | b |" in out and "study finished in" in out and str(tmp_path) in out


_NO_TF = (  # runs a script with TensorFlow, tf_keras and tfmot unimportable
    "import runpy, sys\n"
    "for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization'):\n"
    "    sys.modules[m] = None\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize("script, args, message", [
    ("qgt.py", ["--bits", "3"], "error: qgt_strength has no λ for bit width(s) [3]"),
    ("qgt.py", ["--models", "lenet"], "error: unknown zoo model(s) ['lenet']"),
    ("whitepaper_ptq.py", ["--smoke", "--short"], "error: --smoke and --short are two sizes"),
    ("whitepaper_ptq.py", ["--models", "cnn,lenet"], "error: unknown zoo model(s) ['lenet']"),
    ("whitepaper_qat.py", ["--models", "vit"], "error: zoo model 'vit' cannot be wrapped for QAT"),
    ("ptq_zoo.py", ["--models", "lenet"], "error: unknown zoo model 'lenet'"),
    ("ptq_zoo.py", ["--variants", "int3"], "error: unknown variant 'int3'"),
    ("nvidia_calibration.py", ["--models", "cnn,lenet"], "error: unknown zoo model 'lenet'"),
    ("nvidia_calibration.py", ["--columns", "max,median"], "error: unknown column(s) ['median']"),
    ("nvidia_partial.py", ["--cases", "cnn"], "error: unknown or no case(s) ['cnn']"),
    ("aciq.py", ["--models", "vit"], "error: unknown CNN zoo model 'vit'"),
    ("qbitopt.py", ["--budgets", "three"], "error: --budgets must be numbers"),
    ("qbitopt.py", ["--models", "lenet"], "error: unknown zoo model(s) ['lenet']"),
    ("qbitopt.py", ["--methods", "greedy"], "error: unknown method(s) ['greedy']"),
    ("whitepaper_latency.py", ["--smoke", "--short"], "error: --smoke and --short are two sizes"),
    ("whitepaper_latency.py", ["--modes", "int4"], "error: unknown or no modes ['int4']"),
])
def test_bad_flags_fail_before_tensorflow_is_imported(tmp_path: Path, script: str, args: list[str],
                                                      message: str) -> None:
    """The scripts check their flags before the (slow) TensorFlow import: with TensorFlow
    unimportable a bad flag still gives its one-line error and exit 2."""
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TF, f"experiments/{script}", "--results_dir", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert not any(tmp_path.iterdir())
