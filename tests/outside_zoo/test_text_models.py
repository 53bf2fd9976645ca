"""Text classifiers (int32 token ids in), found by the default-flags sweep:

* a GRU over a dynamic batch: the converter's TensorList failure is one line whose fix works
  (the printed hint was the generic "replace the op with TFLite builtin ops");
* int8 / int16x8 cannot calibrate an integer input: the hint was "try mode int8";
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


def test_token_id_model_evaluates_like_keras_and_int8_says_use_dynamic(tmp_path: Path) -> None:
    from tests.outside_zoo.helpers import cli, one_line_error

    model = _bag_of_words()
    model.save(tmp_path / "bow.keras")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (37, 6)).astype(np.float32)  # npz x is float: ids as floats
    y = np.asarray(model(x.astype(np.int32))).argmax(1)  # labels the float model gets right
    y[:5] = (y[:5] + 1) % 3  # and 5 it gets wrong
    np.savez(tmp_path / "text.npz", x=x, y=y)
    spec = f"npz:{tmp_path / 'text.npz'}"
    out = tmp_path / "bow_fp32.tflite"
    tfquant.quantize(str(tmp_path / "bow.keras"), mode="fp32", out=out)
    assert tfquant.evaluate(out, spec)["accuracy"] == pytest.approx(32 / 37)
    bad = tmp_path / "bow_int8.tflite"
    err = one_line_error(cli("convert", "--model", str(tmp_path / "bow.keras"), "--calibration_data", spec,
                             "--out", str(bad)))
    assert "input is integer" in err and "--mode dynamic" in err and not bad.exists()
