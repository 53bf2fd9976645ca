"""Every user mistake raises TfquantError with a message naming the problem and the fix."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.conftest import TinyModels, convert_keras
from tfquant.errors import TfquantError
from tfquant.evaluation import (
    delegated_op_count,
    evaluate_accuracy,
    file_size,
    inspect_model,
    load_interpreter,
    predict,
)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match=r"does not exist.*python -m tfquant convert"):
        load_interpreter(tmp_path / "nope.tflite")
    with pytest.raises(TfquantError, match="does not exist"):
        inspect_model(tmp_path / "nope.tflite")
    with pytest.raises(TfquantError, match="no such file"):
        file_size(tmp_path / "nope.tflite")


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(TfquantError, match="is not a file"):
        load_interpreter(tmp_path)


@pytest.mark.parametrize("kind", ["random", "truncated_half", "truncated_tail", "empty"])
def test_corrupt_files(tiny: TinyModels, tmp_path: Path, kind: str) -> None:
    good = tiny.fp32.read_bytes()
    data = {
        "random": np.random.default_rng(0).bytes(4096),
        "truncated_half": good[: len(good) // 2],
        "truncated_tail": good[:-16],
        "empty": b"",
    }[kind]
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(data)
    for fn in (load_interpreter, inspect_model):
        with pytest.raises(TfquantError, match=r"is not a valid \.tflite model.*re-export it with 'python -m tfquant convert'") as info:
            fn(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(TfquantError, match=r"is not a valid \.tflite model"):
        evaluate_accuracy(data or b"", np.zeros((1, 28, 28, 1), np.float32), np.zeros(1, np.int64))


def test_shape_mismatch_names_both_shapes_and_the_fix(tiny: TinyModels) -> None:
    x = np.zeros((4, 32, 32, 3), np.float32)
    with pytest.raises(TfquantError) as info:
        evaluate_accuracy(tiny.fp32, x, np.zeros(4, np.int64))
    message = str(info.value)
    assert "(32, 32, 3)" in message and "(28, 28, 1)" in message and "--image_size" in message
    with pytest.raises(TfquantError, match=r"\(28, 28\)"):
        predict(tiny.fp32, np.zeros((4, 28, 28), np.float32))


def test_empty_x(tiny: TinyModels) -> None:
    with pytest.raises(TfquantError, match="x is empty"):
        evaluate_accuracy(tiny.fp32, np.zeros((0, 28, 28, 1), np.float32), np.zeros(0, np.int64))
    with pytest.raises(TfquantError, match="x is empty"):
        predict(tiny.fp32, np.zeros((0, 28, 28, 1), np.float32))


def test_length_mismatch(tiny: TinyModels) -> None:
    with pytest.raises(TfquantError, match="x has 5 examples but y has 4 labels"):
        evaluate_accuracy(tiny.fp32, tiny.x[:5], tiny.y[:4])


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((3, 28, 28, 1), np.uint8), np.zeros(3, np.int64), "dtype uint8.*float"),
        (np.zeros((3, 28, 28, 1), np.float32), np.eye(3, 10), r"one-hot.*argmax"),
        (np.zeros((3, 28, 28, 1), np.float32), np.array([0.0, 1.0, 2.0]), "integer class labels"),
        (np.zeros((3, 28, 28, 1), np.float32), np.array([0, 3, 10]), r"labels span \[0, 10\].*10 classes"),
    ],
)
def test_bad_data(tiny: TinyModels, x: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        evaluate_accuracy(tiny.fp32, x, y)


def test_output_not_batch_by_classes(tmp_path: Path) -> None:
    import tensorflow as tf

    keras = tf.keras
    model = keras.Sequential([keras.layers.Input((4, 4, 1)), keras.layers.Conv2D(2, 1)])
    path = convert_keras(model, tmp_path / "feature_map.tflite")
    with pytest.raises(TfquantError, match=r"outputs shape \(2, 4, 4, 2\), not \(batch, num_classes\)"):
        evaluate_accuracy(path, np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, np.int64))
    assert predict(path, np.zeros((2, 4, 4, 1), np.float32)).shape == (2, 4, 4, 2)


def test_delegate_library_that_cannot_load(tiny: TinyModels, capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(TfquantError) as info:
        load_interpreter(tiny.fp32, runtime="delegate")
    message = str(info.value)
    assert "libhexagon_interface.so" in message and "Qualcomm Android" in message
    assert "adb" in message and "benchmark_model" in message
    with pytest.raises(TfquantError, match="/no/such/libdelegate.so"):
        evaluate_accuracy(
            tiny.fp32, tiny.x[:2], tiny.y[:2], runtime="delegate", delegate_path="/no/such/libdelegate.so"
        )
    libm = ctypes.util.find_library("m")
    assert libm is not None
    with pytest.raises(TfquantError, match=r"not a LiteRT external delegate.*tflite_plugin_create_delegate"):
        delegated_op_count(tiny.fp32, runtime="delegate", delegate_path=libm)
    # Checked before LiteRT's Delegate is built, so no finalizer traceback is printed.
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"num_threads": 0}, "num_threads must be an integer >= 1"),
        ({"runtime": "tpu"}, "unknown runtime 'tpu'; choose one of: xnnpack, builtin, delegate"),
        ({"delegate_path": "libx.so"}, "only used with runtime 'delegate'"),
    ],
)
def test_bad_options(tiny: TinyModels, kwargs: dict, match: str) -> None:
    with pytest.raises(TfquantError, match=match):
        evaluate_accuracy(tiny.fp32, tiny.x[:2], tiny.y[:2], **kwargs)


def test_model_of_wrong_type() -> None:
    with pytest.raises(TfquantError, match="must be a .tflite path or the model's bytes"):
        load_interpreter(123)  # type: ignore[arg-type]
