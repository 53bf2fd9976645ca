"""User mistakes raise TfquantError with a one-line message naming the problem and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.convert.conftest import INPUT_SHAPE, N_CAL, recipe
from tfquant import convert
from tfquant.errors import TfquantError
from tfquant.qtypes import Mode
from tfquant.recipes import Recipe


def _raises(match: str, fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(TfquantError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert ";" in message, f"no fix in: {message}"  # problem; fix
    return message


@pytest.fixture(scope="module")
def corrupt_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corrupt")
    files = {}
    for suffix in (".keras", ".h5"):
        files[suffix] = d / f"model{suffix}"
        files[suffix].write_bytes(b"\x00garbage, not a model" * 10)
    return files


@pytest.mark.parametrize("fn", ["load_model", "convert"])
def test_missing_model_path(fn: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.keras")
    if fn == "load_model":
        _raises(r"does not exist", convert.load_model, missing)
    else:
        _raises(r"does not exist", convert.convert, missing, recipe(mode=Mode.FP32))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_corrupt_model_file(corrupt_files: dict[str, Path], suffix: str) -> None:
    path = str(corrupt_files[suffix])
    message = _raises(
        r"could not load a Keras model from .*check the file", convert.load_model, path
    )
    assert path in message
    _raises(r"could not load a Keras model", convert.convert, path, recipe(mode=Mode.FP32))


def test_unknown_suffix_and_empty_directory(tmp_path: Path) -> None:
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"x")
    _raises(r"has suffix '\.onnx'", convert.load_model, str(odd))
    _raises(r"holds no saved_model\.pb", convert.load_model, str(tmp_path))


@pytest.mark.parametrize("mode", [Mode.INT8, Mode.INT16X8])
def test_calibration_data_missing(cnn: Any, mode: Mode) -> None:
    _raises(
        rf"mode {mode} needs calibration_data; pass float32 inputs of shape \(N, 8, 8, 1\)",
        convert.convert,
        cnn,
        recipe(mode=mode),
    )


def test_calibration_data_with_nan_or_inf(cnn: Any, cal_data: np.ndarray) -> None:
    bad = cal_data.copy()
    bad[7, 0, 0, 0] = np.nan
    bad[9, 1, 2, 0] = np.inf
    message = _raises(
        r"NaN/Inf values in 2 of 250 examples \(first at index 7\)",
        convert.convert,
        cnn,
        recipe(mode=Mode.INT8),
        calibration_data=bad,
    )
    assert "clean or drop" in message


def test_calibration_data_empty(cnn: Any) -> None:
    _raises(
        r"calibration_data is empty",
        convert.convert,
        cnn,
        recipe(mode=Mode.INT8),
        calibration_data=np.zeros((0, *INPUT_SHAPE), np.float32),
    )


@pytest.mark.parametrize(
    "shape",
    [(N_CAL, 8, 8), (N_CAL, 8, 8, 3), (N_CAL, 28, 28, 1), (8, 8, 1)],
    ids=["no-channel", "3-channels", "wrong-size", "single-example"],
)
def test_calibration_shape_mismatch_names_both_shapes(cnn: Any, shape: tuple[int, ...]) -> None:
    data = np.zeros(shape, np.float32)
    message = _raises(
        r"calibration_data has shape .* but the model input is \(None, 8, 8, 1\)",
        convert.convert,
        cnn,
        recipe(mode=Mode.INT8),
        calibration_data=data,
    )
    assert f"has shape {shape}" in message


def test_calibration_data_must_be_floating(cnn: Any) -> None:
    _raises(
        r"dtype uint8.*/ 255",
        convert.convert,
        cnn,
        recipe(mode=Mode.INT8),
        calibration_data=np.zeros((N_CAL, *INPUT_SHAPE), np.uint8),
    )


def test_calibration_size_must_match_recipe(cnn: Any, cal_data: np.ndarray) -> None:
    _raises(
        r"has 100 examples but recipe\.num_calibration_examples is 250.*"
        r"num_calibration_examples=100",
        convert.convert,
        cnn,
        recipe(mode=Mode.INT8),
        calibration_data=cal_data[:100],
    )


@pytest.mark.parametrize(
    "mode,io_dtype",
    [("fp32", "int8"), ("int16x8", "int8"), ("int8", "int16"), ("dynamic", "int16")],
)
def test_io_dtype_inconsistent_with_mode(mode: str, io_dtype: str) -> None:
    _raises(rf"io_dtype {io_dtype} needs mode", Recipe, mode=mode, io_dtype=io_dtype)


def test_wrong_argument_types(cnn: Any) -> None:
    _raises(r"recipe must be a tfquant Recipe", convert.convert, cnn, {"mode": "fp32"})
    _raises(
        r"model must be a tf\.keras\.Model or a path",
        convert.convert,
        object(),
        recipe(mode=Mode.FP32),
    )


def test_converter_failure_is_one_line_naming_the_op() -> None:
    import tensorflow as tf

    inputs = tf.keras.Input((16,))
    outputs = tf.keras.layers.Lambda(lambda t: tf.math.erf(t))(inputs)  # not a TFLite builtin
    model = tf.keras.Model(inputs, outputs)
    message = _raises(
        r"TFLite converter failed for mode fp32: 'tf\.Erf' op is neither a custom op nor a "
        r"flex op; replace the op",
        convert.convert,
        model,
        recipe(mode=Mode.FP32),
    )
    assert len(message) < 400


def test_conversion_prints_nothing(
    cnn: Any, cal_data: np.ndarray, capfd: pytest.CaptureFixture[str]
) -> None:
    print("before", flush=True)
    convert.convert(cnn, recipe(mode=Mode.INT8), calibration_data=cal_data)
    print("after", flush=True)
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    assert err == ""


def test_ragged_calibration_data(cnn: Any) -> None:
    ragged = [np.zeros((8, 8, 1)), np.zeros((4, 4, 1))]
    _raises(
        r"could not be read as an array",
        convert.convert,
        cnn,
        recipe(mode=Mode.INT8),
        calibration_data=ragged,
    )


def test_model_without_defined_input(cal_data: np.ndarray) -> None:
    import tensorflow as tf

    unbuilt = tf.keras.Sequential([tf.keras.layers.Dense(4)])
    _raises(
        r"no defined input; build it with tf\.keras\.Input",
        convert.convert,
        unbuilt,
        recipe(mode=Mode.INT8),
        calibration_data=cal_data,
    )


def test_two_input_model(cal_data: np.ndarray) -> None:
    import tensorflow as tf

    a, b = tf.keras.Input((4,)), tf.keras.Input((4,))
    model = tf.keras.Model([a, b], tf.keras.layers.Add()([a, b]))
    _raises(
        r"the model has 2 inputs",
        convert.convert,
        model,
        recipe(mode=Mode.INT8),
        calibration_data=cal_data,
    )


def test_load_model_rejects_a_non_model(
    monkeypatch: pytest.MonkeyPatch, corrupt_files: dict[str, Path]
) -> None:
    import tensorflow as tf

    monkeypatch.setattr(tf.keras.models, "load_model", lambda *a, **k: object())
    _raises(r"loaded as object, not a Keras model", convert.load_model, str(corrupt_files[".h5"]))


@pytest.fixture(scope="module")
def unusual_savedmodels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A SavedModel without a serving_default signature, and one with a corrupt .pb."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("unusual")
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(d / "no_signature"))
    corrupt = d / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x00not a protobuf\xff" * 8)
    return {"no_signature": d / "no_signature", "corrupt": corrupt}


def test_savedmodel_without_serving_default(
    unusual_savedmodels: dict[str, Path], cal_data: np.ndarray
) -> None:
    _raises(
        r"has no 'serving_default' signature",
        convert.convert,
        str(unusual_savedmodels["no_signature"]),
        recipe(mode=Mode.INT8),
        calibration_data=cal_data,
    )


def test_corrupt_savedmodel(unusual_savedmodels: dict[str, Path], cal_data: np.ndarray) -> None:
    path = str(unusual_savedmodels["corrupt"])
    _raises(
        r"could not load SavedModel .*complete SavedModel",
        convert.convert,
        path,
        recipe(mode=Mode.INT8),
        calibration_data=cal_data,
    )
    _raises(r"could not load SavedModel", convert.convert, path, recipe(mode=Mode.FP32))
