"""Text classifiers (int32 token ids in), found by the default-flags sweep:

* a GRU over a dynamic batch: the converter's TensorList failure is one line whose fix works
  (the printed hint was the generic "replace the op with TFLite builtin ops");
* int8 / int16x8 could not calibrate an integer input (the calibration data was fed as
  float); the ids are now fed as the model's integer type, so they convert and run;
* ``evaluate`` refused the int32 input of the dynamic-range / float .tflite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant
import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.errors import TfquantError


def test_gru_with_dynamic_batch_names_the_fix_and_the_fix_converts(tmp_path: Path) -> None:
    import tf_keras as keras

    inp = keras.Input((6,), dtype="int32")
    h = keras.layers.GRU(4)(keras.layers.Embedding(20, 4)(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    out = tmp_path / "gru.tflite"
    with pytest.raises(TfquantError, match=r"recurrent layer .*batch_size=1") as info:
        tfquant.quantize(model, mode="fp32", out=out)
    assert "\n" not in str(info.value) and not out.exists()
    fixed_in = keras.Input((6,), batch_size=1, dtype="int32")  # what the message says to do
    result = tfquant.quantize(keras.Model(fixed_in, model(fixed_in)), mode="fp32", out=out)
    assert result.path == out and out.stat().st_size > 0


def _bag_of_words():
    import tf_keras as keras

    inp = keras.Input((6,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 8)(inp))
    return keras.Model(inp, keras.layers.Dense(3)(h))


def test_token_id_model_evaluates_like_keras_and_converts_to_int8(tmp_path: Path) -> None:
    from tests.outside_zoo.helpers import cli, one_line_error, tflite_of

    model = _bag_of_words()
    model.save(tmp_path / "bow.keras")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, (37, 6))
    y = np.asarray(model(ids.astype(np.int32))).argmax(1)  # labels the float model gets right
    y[:5] = (y[:5] + 1) % 3  # and 5 it gets wrong
    np.savez(tmp_path / "text.npz", x=ids.astype(np.float32), y=y)  # ids as floats
    np.savez(tmp_path / "text_int.npz", x=ids.astype(np.int32), y=y)  # ids as int32
    spec = f"npz:{tmp_path / 'text.npz'}"
    out = tmp_path / "bow_fp32.tflite"
    tfquant.quantize(str(tmp_path / "bow.keras"), mode="fp32", out=out)
    assert tfquant.evaluate(out, spec)["accuracy"] == pytest.approx(32 / 37)
    for data, flags in (("text.npz", ()), ("text_int.npz", ("--mode", "int16x8")),
                        ("text_int.npz", ("--calibrator", "entropy"))):
        q = tmp_path / f"bow_{data}_{'_'.join(flags)}.tflite"
        tflite_of(cli("convert", "--model", str(tmp_path / "bow.keras"), *flags, "--calibration_data",
                      f"npz:{tmp_path / data}", "--out", str(q)))
        assert tfquant.inspect(q, as_dict=True)["inputs"][0]["dtype"] == "int32"
        assert tfquant.evaluate(q, f"npz:{tmp_path / data}")["accuracy"] >= (32 - 3) / 37
    np.savez(tmp_path / "half.npz", x=ids + 0.5, y=y)  # not ids: refused, nothing written
    bad = tmp_path / "bow_half.tflite"
    err = one_line_error(cli("convert", "--model", str(tmp_path / "bow.keras"), "--calibration_data",
                             f"npz:{tmp_path / 'half.npz'}", "--out", str(bad)))
    assert "not whole numbers" in err and not bad.exists(), err


def test_integer_calibration_inputs_are_checked_and_kept_integer() -> None:
    from tfquant.convert.representative import validate_calibration_data
    from tfquant.recipes import Recipe

    recipe = Recipe(mode="int8", num_calibration_examples=2)
    x = validate_calibration_data(np.array([[1.0, 7.0], [3.0, 0.0]]), recipe, (None, 2), np.dtype("int32"))
    assert x.dtype == np.int32 and x.tolist() == [[1, 7], [3, 0]]
    with pytest.raises(TfquantError, match=r"spans \[-1, 7\]"):
        validate_calibration_data(np.array([[1, 7], [-1, 0]]), recipe, (None, 2), np.dtype("uint8"))
    with pytest.raises(TfquantError, match="not whole numbers"):
        validate_calibration_data(np.array([[1.0, np.nan], [3.0, 0.0]]), recipe, (None, 2), np.dtype("int32"))
    floats = validate_calibration_data(np.array([[1.5, 7.0], [3.0, 0.0]]), recipe, (None, 2))
    assert floats.dtype == np.float32  # a float input takes any floats, as before
