"""Quiet CPU runs: TensorFlow / CUDA / LiteRT start-up notices are dropped, real output is not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfquant import _quiet

ROOT = Path(__file__).resolve().parents[1]
# What TF 2.21 / ai-edge-litert 2.3 print on a machine without a GPU (copied from real runs).
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796517846.524110    4123 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796517846.524384    4123 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796517852.425157    4200 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "E0000 00:00:1718300000.000000    1 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
    "Attempting to register factory for plugin cuDNN when one has already been registered",
    "W0000 00:00:1718300000.000000    1 py_utils.cc:38] TF-TRT Warning: Could not find TensorRT",
]
REAL = [
    "error: model file 'x.tflite' does not exist; check the path",
    "E0000 00:00:1796517852.425157    4200 some_kernel.cc:12] Invalid argument: real C++ error",
    "/tmp/script.py:3: UserWarning: a real warning",
    "W1206 00:47:20.000000 1406 app.py:254] a TensorFlow warning",
    "Traceback (most recent call last):",
]
NOISE = re.compile(r"cuInit|cuda|oneDNN|TF-TRT|Unable to register|absl::InitializeLog|XNNPACK", re.I)


def test_known_startup_lines_are_recognised_and_real_lines_are_not() -> None:
    for line in STARTUP:
        assert _quiet.is_startup_line(line + "\n"), line
    for line in REAL:
        assert not _quiet.is_startup_line(line), line
    # With a CUDA driver installed a failing cuInit means something: it is kept.
    assert not _quiet.is_startup_line(STARTUP[3], cuda_driver=True)


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


FILTER_SCRIPT = f"""
    import os, sys, warnings
    from tfquant import _quiet
    lines = {STARTUP + REAL!r}
    with _quiet.filtered_stderr():
        for line in lines:
            os.write(2, (line + "\\n").encode())
        warnings.warn("inside the window")
        print("to stdout", flush=True)
    print("after", file=sys.stderr)
"""


def test_filter_drops_only_startup_lines_and_keeps_order() -> None:
    proc = _run_python(FILTER_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err[: len(REAL)] == REAL
    assert "UserWarning: inside the window" in err[len(REAL)]
    assert err[-1] == "after"
    assert not any(NOISE.search(line) for line in err), err
    assert proc.stdout == "to stdout\n"
    shown = _run_python(FILTER_SCRIPT, env={_quiet.ENV_VAR: "0"})  # off: everything shown
    assert all(line in shown.stderr for line in STARTUP + REAL)


def test_library_entry_is_quiet_after_device_use_and_keeps_warnings() -> None:
    proc = _run_python("""
        import sys, warnings
        from tfquant import _quiet
        _quiet.import_tensorflow()
        import numpy as np, tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)  # devices listed, context not started
        tf.Variable(tf.ones((2, 2))).assign_add(tf.ones((2, 2)))  # first op and variable
        from tfquant.evaluation import predict
        print(predict(_quiet._one_op_model(), np.array([-1.0, 2.0], np.float32)).tolist())
        warnings.warn("a real warning")
        print("error: a real error line", file=sys.stderr)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.0, 2.0]"
    assert "UserWarning: a real warning" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: a real error line"
    assert not NOISE.search(proc.stderr), proc.stderr


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quiet") / "relu.tflite"
    path.write_bytes(_quiet._one_op_model())
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (_quiet.ENV_VAR, "TFQUANT_PROGRESS")}
    return subprocess.run(
        [sys.executable, "-m", "tfquant", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**env, "PYTHONPATH": str(ROOT)},
    )


def test_cli_inspect_and_convert_print_no_startup_lines(small_tflite: Path, tmp_path: Path) -> None:
    proc = _cli("inspect", str(small_tflite))
    assert proc.returncode == 0, proc.stderr
    assert "RELU" in proc.stdout
    assert proc.stderr == ""

    out = tmp_path / "cnn_dynamic.tflite"
    proc = _cli("convert", "--model", "zoo:cnn", "--mode", "dynamic", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}") and out.is_file()
    assert not NOISE.search(proc.stderr), proc.stderr  # progress lines may be there, no notices
    # A CLI error is still its one line: tests/test_cli.py::test_real_process_exit_status_and_single_line.
