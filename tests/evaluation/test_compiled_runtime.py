"""evaluate --runtime compiled_cpu: LiteRT's CompiledModel API gives the interpreter's results.

On a small Keras model built here (float32 and int8 with int8 I/O) and on the zoo's trained
CNN (int8, 300 Fashion-MNIST test images): the same predictions, so the same accuracy, and
latency measured by the same timer. compiled_gpu / compiled_npu need an accelerator this
machine lacks: one-line errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.conftest import TinyModels
from tfquant.cli import main
from tfquant.errors import TfquantError
from tfquant.evaluation import measure_latency, predict


@pytest.mark.parametrize("model", ["fp32", "int8_io"])
def test_compiled_cpu_predicts_like_the_interpreter(tiny: TinyModels, model: str) -> None:
    path = getattr(tiny, model)
    expected = predict(path, tiny.x[:100], runtime="xnnpack")
    got = predict(path, tiny.x[:100], runtime="compiled_cpu", num_threads=2)
    np.testing.assert_array_equal(got, expected)


def test_latency_of_the_compiled_model(tiny: TinyModels) -> None:
    lat = measure_latency(tiny.int8, runtime="compiled_cpu", runs=5, warmup=1)
    assert lat.runtime == "compiled_cpu" and lat.runs == 5 and 0 < lat.min_ms <= lat.median_ms


@pytest.mark.parametrize("runtime", ["compiled_gpu", "compiled_npu"])
def test_missing_accelerator_is_one_line(tiny: TinyModels, runtime: str) -> None:
    try:
        predict(tiny.fp32, tiny.x[:2], runtime=runtime)
    except TfquantError as e:
        assert "\n" not in str(e) and f"--runtime {runtime}" in str(e) and "compiled_cpu" in str(e)
    else:  # a machine with a GPU / NPU accelerator: then it must agree with the interpreter
        np.testing.assert_allclose(
            predict(tiny.fp32, tiny.x[:20], runtime=runtime), predict(tiny.fp32, tiny.x[:20]), atol=1e-2
        )


def test_zoo_cnn_accuracy_equal_on_both_runtimes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "cnn_int8.tflite"
    assert main(["convert", "--model", "zoo:cnn", "--mode", "int8", "--calibration_data", "fashion_mnist",
                 "--num_calibration_examples", "100", "--out", str(out)]) == 0
    results = {}
    for runtime in ("xnnpack", "compiled_cpu"):
        assert main(["evaluate", "--tflite", str(out), "--dataset", "fashion_mnist", "--limit", "300",
                     "--runtime", runtime, "--latency_runs", "5", "--output", str(tmp_path / f"{runtime}.json")]) == 0
        results[runtime] = json.loads((tmp_path / f"{runtime}.json").read_text())
    capsys.readouterr()
    assert results["compiled_cpu"]["accuracy"] == results["xnnpack"]["accuracy"] > 0.5
    assert results["compiled_cpu"]["runtime"] == "compiled_cpu" and results["compiled_cpu"]["latency_ms_median"] > 0
