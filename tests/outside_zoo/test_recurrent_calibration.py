"""Float-input recurrent models in int8 / int16x8 (found after the default-flags sweep).

TensorFlow 2.21's calibrator kills the process (segmentation fault in ``_feed_tensors``) on the
WHILE loop of a GRU / SimpleRNN with a fixed batch; such a model is refused with one line
before the converter runs, and the fixes the line names (``unroll=True``, LSTM, dynamic mode)
convert.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfquant
import tfquant._env  # noqa: F401  (before TensorFlow)
from tfquant.convert.options import looped_recurrent_layers
from tfquant.errors import TfquantError


def _model(layer_fn):
    import tf_keras as keras

    inp = keras.Input((5, 3), batch_size=1)
    return keras.Model(inp, keras.layers.Dense(2)(layer_fn(keras)(inp)))


def _data(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 5, 3)).astype(np.float32)


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_a_looped_gru_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path, mode: str) -> None:
    model = _model(lambda k: k.layers.GRU(4, name="gru_a"))
    out = tmp_path / "m.tflite"
    with pytest.raises(TfquantError, match=r"'gru_a'.*WHILE.*unroll=True") as info:
        tfquant.quantize(model, mode=mode, calibration_data=_data(), out=out)
    assert "\n" not in str(info.value) and not out.exists()


def test_which_recurrent_layers_loop() -> None:
    looped = _model(lambda k: k.layers.Bidirectional(k.layers.SimpleRNN(3, name="srnn")))
    assert any("srnn" in name for name in looped_recurrent_layers(looped))
    assert looped_recurrent_layers(_model(lambda k: k.layers.LSTM(3))) == []
    assert looped_recurrent_layers(_model(lambda k: k.layers.GRU(3, unroll=True))) == []


def test_the_named_fixes_convert(tmp_path: Path) -> None:
    unrolled = _model(lambda k: k.layers.GRU(4, unroll=True))
    tflite = tfquant.quantize(unrolled, mode="int8", calibration_data=_data(), out=tmp_path / "u.tflite")
    assert (tmp_path / "u.tflite").stat().st_size > 0 and tflite is not None
    looped = _model(lambda k: k.layers.GRU(4))
    tfquant.quantize(looped, mode="dynamic", out=tmp_path / "d.tflite")
    assert (tmp_path / "d.tflite").stat().st_size > 0
